"""Reported values: the latest value per endpoint and path, and timestamped history.

Values arrive from notifications, Send and reads, many per message and many messages per
second, so :meth:`TelemetryRepository.append` takes them in bulk: one ``executemany`` into the
history, one upsert per distinct path into ``reported_value``. The upsert only moves forward
in time (``WHERE excluded.at >= reported_value.at``), so a late-arriving older value (Send of
buffered measurements, a retransmitted notification) lands in the history without overwriting
a newer latest value, whatever the order in which batches commit.

Retention (issue 14 item 3): a device that reports without pause, or an attacker holding a
device's credentials, must not fill the database. :class:`RetentionPolicy` bounds the history
by age and by rows per device; :class:`TelemetryRetention` enforces it in the background in
bounded batches -- every DELETE removes at most ``batch`` rows in its own short transaction,
so neither SQLite's single writer nor a PostgreSQL table lock is held for a long time, and the
telemetry writes in between keep flowing. The latest values (``reported_value``) are never
pruned: they are one row per path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, func, or_, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert

from lwm2m.model import ROOT, ModelError, Path
from lwm2m.store.domain import ReportedValue, Source
from lwm2m.store.engine import Tx
from lwm2m.store.errors import CorruptRecord
from lwm2m.store.jsonvalue import value_from_json, value_to_json
from lwm2m.store.tables import REPORTED_VALUE, TELEMETRY

log = logging.getLogger("lwm2m.store.retention")

_L = REPORTED_VALUE.c
_H = TELEMETRY.c
# The five columns named (not the id), so the statement compiles to exactly the row's keys
# and runs on the driver's executemany (Tx.executemany_direct): SQLAlchemy's per-row
# parameter processing was most of the writer's CPU per notification (issue 13).
_INSERT_HISTORY = TELEMETRY.insert().values(
    {name: bindparam(name) for name in ("endpoint", "path", "value", "at", "source")}
)


def _sqlite_upsert() -> Insert:
    """``INSERT .. ON CONFLICT (endpoint, path) DO UPDATE .. WHERE newer`` (SQLite)."""
    ins = sqlite_insert(REPORTED_VALUE).values(
        {name: bindparam(name) for name in ("endpoint", "path", "value", "at", "source")}
    )
    return ins.on_conflict_do_update(
        index_elements=[_L.endpoint, _L.path],
        set_={"value": ins.excluded.value, "at": ins.excluded.at, "source": ins.excluded.source},
        where=ins.excluded.at >= _L.at,
    )


_SQLITE_UPSERT_LATEST = _sqlite_upsert()

# PostgreSQL: one statement over arrays instead of an executemany -- psycopg's per-row cost
# halved the throughput (measured: 25k vs 53k values/s on the benchmark machine).
_UNNEST = (
    "SELECT * FROM unnest(CAST(:endpoint AS text[]), CAST(:path AS text[]), "
    "CAST(:value AS text[]), CAST(:at AS float8[]), CAST(:source AS text[]))"
)
_PG_INSERT_HISTORY = text(f"INSERT INTO telemetry (endpoint, path, value, at, source) {_UNNEST}")
_PG_UPSERT_LATEST = text(
    f"INSERT INTO reported_value (endpoint, path, value, at, source) {_UNNEST} "
    "ON CONFLICT (endpoint, path) DO UPDATE SET value = excluded.value, at = excluded.at, "
    "source = excluded.source WHERE excluded.at >= reported_value.at"
)
_COLUMNS = ("endpoint", "path", "value", "at", "source")


def _columns(rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {name: [row[i] for row in rows] for i, name in enumerate(_COLUMNS)}


_SOURCE_TEXT = {source: source.value for source in Source}
_PATH_TEXTS: dict[Path, str] = {}
_PATH_TEXTS_MAX = 4096


def _path_text(path: Path) -> str:
    """``str(path)``, remembered: a fleet reports the same few paths over and over, and
    formatting one was a few percent of the writer's CPU per value (issue 13). Bounded:
    emptied when full."""
    text = _PATH_TEXTS.get(path)
    if text is None:
        if len(_PATH_TEXTS) >= _PATH_TEXTS_MAX:
            _PATH_TEXTS.clear()
        text = _PATH_TEXTS[path] = str(path)
    return text


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
        path_text = _path_text
        rows: list[tuple[str, str, str, float, str]] = [
            (v.endpoint, path_text(v.path), value_to_json(v.value), v.at, _SOURCE_TEXT[v.source])
            for v in values
        ]
        # One row per key (PostgreSQL refuses to touch a row twice per statement): the newest,
        # the later one of equal times, as the upsert's ``excluded.at >= at`` would leave it.
        latest = rows
        if len(rows) > 1:
            newest: dict[tuple[str, str], tuple[str, str, str, float, str]] = {}
            for row in rows:
                key = (row[0], row[1])
                seen = newest.get(key)
                if seen is None or row[3] >= seen[3]:
                    newest[key] = row
            if len(newest) < len(rows):
                latest = list(newest.values())
        if tx.dialect == "postgresql":
            if history:
                tx.execute(_PG_INSERT_HISTORY, _columns(rows))
            tx.execute(_PG_UPSERT_LATEST, _columns(latest))
            return
        if history:
            tx.executemany_tuples(_INSERT_HISTORY, _COLUMNS, rows)
        tx.executemany_tuples(_SQLITE_UPSERT_LATEST, _COLUMNS, latest)

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

    def prune_batch_older_than(self, tx: Tx, before: float, batch: int) -> int:
        """Delete at most ``batch`` history rows older than ``before`` (lowest ids first: the
        oldest rows of an append-only table), returning how many went."""
        victims = select(_H.id).where(_H.at < before).order_by(_H.id).limit(batch)
        ids = [int(i) for i in tx.execute(victims).scalars()]
        if not ids:
            return 0
        return int(tx.execute(delete(TELEMETRY).where(_H.id.in_(ids))).rowcount)

    def endpoints_over(self, tx: Tx, max_rows: int, limit: int = 1000) -> list[tuple[str, int]]:
        """Endpoints holding more than ``max_rows`` history rows, with their counts, biggest
        first (at most ``limit``)."""
        count = func.count().label("n")
        query = (
            select(_H.endpoint, count)
            .group_by(_H.endpoint)
            .having(func.count() > max_rows)
            .order_by(count.desc())
            .limit(limit)
        )
        return [(str(e), int(n)) for e, n in map(tuple, tx.execute(query))]

    def prune_batch_over_cap(self, tx: Tx, endpoint: str, keep: int, batch: int) -> int:
        """Delete at most ``batch`` of ``endpoint``'s oldest history rows beyond its newest
        ``keep``; returns how many went (0: the device is within its cap)."""
        cut = tx.execute(
            select(_H.at, _H.id)
            .where(_H.endpoint == endpoint)
            .order_by(_H.at.desc(), _H.id.desc())
            .offset(keep)
            .limit(1)
        ).first()
        if cut is None:
            return 0
        cut_at, cut_id = tuple(cut)
        older = or_(_H.at < cut_at, and_(_H.at == cut_at, _H.id <= cut_id))
        victims = (
            select(_H.id).where(_H.endpoint == endpoint, older).order_by(_H.at, _H.id).limit(batch)
        )
        ids = [int(i) for i in tx.execute(victims).scalars()]
        if not ids:
            return 0
        return int(tx.execute(delete(TELEMETRY).where(_H.id.in_(ids))).rowcount)

    def purge_endpoint(self, tx: Tx, endpoint: str) -> int:
        """Delete everything reported by ``endpoint`` (a retired device); returns rows deleted."""
        history = tx.execute(delete(TELEMETRY).where(_H.endpoint == endpoint)).rowcount
        latest = tx.execute(delete(REPORTED_VALUE).where(_L.endpoint == endpoint)).rowcount
        return int(history) + int(latest)


# -- retention ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How much history to keep: ``max_age`` seconds and ``max_rows_per_device`` rows (``None``:
    no bound of that kind), pruned every ``interval`` seconds ``batch`` rows per transaction."""

    max_age: float | None = 30 * 86400.0
    max_rows_per_device: int | None = 100_000
    interval: float = 60.0
    batch: int = 5000

    def __post_init__(self) -> None:
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(f"telemetry max age must be positive seconds, got {self.max_age}")
        if self.max_rows_per_device is not None and self.max_rows_per_device < 1:
            raise ValueError(
                f"telemetry rows per device must be at least 1, got {self.max_rows_per_device}"
            )
        if self.interval <= 0 or self.batch < 1:
            raise ValueError("retention interval and batch must be positive")

    @property
    def enabled(self) -> bool:
        return self.max_age is not None or self.max_rows_per_device is not None


@dataclass(slots=True)
class RetentionStats:
    passes: int = 0
    deleted_by_age: int = 0
    deleted_by_cap: int = 0
    batches: int = 0
    last_pass_seconds: float = 0.0


Write = Callable[[Callable[[Tx], int]], Awaitable[int]]
Read = Callable[[Callable[[Tx], list[tuple[str, int]]]], Awaitable[list[tuple[str, int]]]]


class TelemetryRetention:
    """The background task enforcing a :class:`RetentionPolicy` through the store's writer.

    ``write``/``read`` are ``Store.write``/``Store.read``: each batch is one group-committed
    operation. A pass deletes by age until a batch comes back short, then trims every device
    over its row cap; between batches it yields (``pause``), so a big backlog is worked off
    over several seconds instead of in one statement.
    """

    def __init__(
        self,
        repository: TelemetryRepository,
        write: Write,
        read: Read,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float] = time.time,
        pause: float = 0.01,
    ) -> None:
        self._repo = repository
        self._write = write
        self._read = read
        self.policy = policy
        self._clock = clock
        self._pause = pause
        self._task: asyncio.Task[None] | None = None
        self.stats = RetentionStats()

    async def run_once(self) -> int:
        """One pass over the whole history; returns the rows deleted."""
        policy, repo = self.policy, self._repo
        started = time.monotonic()
        deleted = 0
        if policy.max_age is not None:
            before = self._clock() - policy.max_age
            while True:
                n = await self._write(
                    lambda tx: repo.prune_batch_older_than(tx, before, policy.batch)
                )
                self.stats.batches += 1
                self.stats.deleted_by_age += n
                deleted += n
                if n < policy.batch:
                    break
                await asyncio.sleep(self._pause)
        cap = policy.max_rows_per_device
        if cap is not None:
            over = await self._read(lambda tx: repo.endpoints_over(tx, cap))
            for endpoint, _count in over:

                def trim(tx: Tx, endpoint: str = endpoint) -> int:
                    return repo.prune_batch_over_cap(tx, endpoint, cap, policy.batch)

                while True:
                    n = await self._write(trim)
                    self.stats.batches += 1
                    self.stats.deleted_by_cap += n
                    deleted += n
                    if n < policy.batch:
                        break
                    await asyncio.sleep(self._pause)
        self.stats.passes += 1
        self.stats.last_pass_seconds = time.monotonic() - started
        if deleted:
            log.info(
                "telemetry retention pass",
                extra={
                    "deleted": deleted,
                    "seconds": round(self.stats.last_pass_seconds, 3),
                    "devices_over_cap": len(over) if cap is not None else 0,
                },
            )
        return deleted

    def start(self) -> None:
        if self.policy.enabled and self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="telemetry-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.policy.interval)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass is retried at the next interval
                log.exception("telemetry retention pass failed")
