"""Reported values: the latest value per endpoint and path, and timestamped history.

Values arrive from notifications, Send and reads, many per message and many messages per
second, so :meth:`TelemetryRepository.append` takes them in bulk: one ``executemany`` into the
history, one upsert per distinct path into ``reported_value``. The upsert only moves forward
in time (``WHERE excluded.at >= reported_value.at``), so a late-arriving older value (Send of
buffered measurements, a retransmitted notification) lands in the history without overwriting
a newer latest value, whatever the order in which batches commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert

from lwm2m.model import ROOT, ModelError, Path
from lwm2m.store.domain import ReportedValue, Source
from lwm2m.store.engine import Tx
from lwm2m.store.errors import CorruptRecord
from lwm2m.store.jsonvalue import value_from_json, value_to_json
from lwm2m.store.tables import REPORTED_VALUE, TELEMETRY

_L = REPORTED_VALUE.c
_H = TELEMETRY.c
_INSERT_HISTORY = TELEMETRY.insert()
_UPSERTS: dict[str, Insert] = {}


def _upsert(dialect: str) -> Insert:
    """``INSERT .. ON CONFLICT (endpoint, path) DO UPDATE .. WHERE newer`` for the dialect."""
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        ins = (
            pg_insert(REPORTED_VALUE) if dialect == "postgresql" else sqlite_insert(REPORTED_VALUE)
        )
        stmt = _UPSERTS[dialect] = ins.on_conflict_do_update(
            index_elements=[_L.endpoint, _L.path],
            set_={
                "value": ins.excluded.value,
                "at": ins.excluded.at,
                "source": ins.excluded.source,
            },
            where=ins.excluded.at >= _L.at,
        )
    return stmt


def _from_row(row: Row[Any]) -> ReportedValue:
    m = row._mapping
    try:
        path = Path.parse(m["path"])
        source = Source(m["source"])
    except (ModelError, ValueError) as err:
        raise CorruptRecord(f"reported value of {m['endpoint']} at {m['path']!r}: {err}") from err
    return ReportedValue(
        endpoint=m["endpoint"],
        path=path,
        value=value_from_json(m["value"]),
        at=float(m["at"]),
        source=source,
    )


def _under(column: Any, prefix: Path) -> Any:
    """``column`` is ``prefix`` or below it (``/3/1`` must not match ``/3/10``)."""
    text = str(prefix)
    return or_(column == text, column.like(text + "/%"))


class TelemetryRepository:
    """Append-only history plus a latest-value table, both keyed by endpoint and path."""

    def append(self, tx: Tx, values: Sequence[ReportedValue], *, history: bool = True) -> None:
        """Store ``values`` (any endpoints, any order); ``history=False`` updates latest only."""
        if not values:
            return
        rows: list[dict[str, Any]] = [
            {
                "endpoint": v.endpoint,
                "path": str(v.path),
                "value": value_to_json(v.value),
                "at": v.at,
                "source": v.source.value,
            }
            for v in values
        ]
        if history:
            tx.execute(_INSERT_HISTORY, rows)
        newest: dict[tuple[str, str], dict[str, Any]] = {}
        for (
            row
        ) in rows:  # one upsert per key: PostgreSQL refuses to touch a row twice per statement
            key = (row["endpoint"], row["path"])
            seen = newest.get(key)
            if seen is None or row["at"] >= seen["at"]:
                newest[key] = row
        tx.execute(_upsert(tx.dialect), list(newest.values()))

    def latest(self, tx: Tx, endpoint: str, prefix: Path = ROOT) -> list[ReportedValue]:
        """The latest value of every path of ``endpoint`` at or under ``prefix``, path order."""
        query = select(REPORTED_VALUE).where(_L.endpoint == endpoint)
        if not prefix.is_root:
            query = query.where(_under(_L.path, prefix))
        found = [_from_row(r) for r in tx.execute(query)]
        return sorted(found, key=lambda v: v.path)

    def latest_value(self, tx: Tx, endpoint: str, path: Path) -> ReportedValue | None:
        row = tx.execute(
            select(REPORTED_VALUE).where(_L.endpoint == endpoint, _L.path == str(path))
        ).first()
        return _from_row(row) if row is not None else None

    def history(
        self,
        tx: Tx,
        endpoint: str,
        path: Path,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[ReportedValue]:
        """Values of exactly ``path`` with ``since <= at < until``, in time order."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        query = select(TELEMETRY).where(_H.endpoint == endpoint, _H.path == str(path))
        if since is not None:
            query = query.where(_H.at >= since)
        if until is not None:
            query = query.where(_H.at < until)
        order = (_H.at.desc(), _H.id.desc()) if newest_first else (_H.at, _H.id)
        rows = tx.execute(query.order_by(*order).limit(limit))
        return [_from_row(r) for r in rows]

    def prune(self, tx: Tx, before: float) -> int:
        """Delete history older than ``before`` (latest values stay); returns rows deleted."""
        return int(tx.execute(delete(TELEMETRY).where(_H.at < before)).rowcount)

    def purge_endpoint(self, tx: Tx, endpoint: str) -> int:
        """Delete everything reported by ``endpoint`` (a retired device); returns rows deleted."""
        history = tx.execute(delete(TELEMETRY).where(_H.endpoint == endpoint)).rowcount
        latest = tx.execute(delete(REPORTED_VALUE).where(_L.endpoint == endpoint)).rowcount
        return int(history) + int(latest)
