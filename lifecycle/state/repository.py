"""Reads and writes of desired and reported state (``lc_desired``, ``lc_reported``) and of the
config bundle registry, inside the store's transactions.

Every write that an operator is told about commits through ``store.write`` (group commit) in
the same transaction as its audit record. :meth:`StateRepository.record` is where the
generation rule (:func:`lifecycle.state.dimensions.observed_after`) meets the database: a
verified report stamps ``observed_generation``, and the status before and after is returned so
callers can tell a drift as it happens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from sqlalchemy import Insert, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.state.dimensions import (
    Desired,
    Dimension,
    JsonValue,
    Policy,
    Reported,
    Status,
    observed_after,
    status,
)
from lifecycle.state.tables import CONFIG_BUNDLE, DESIRED, REPORTED
from lifecycle.tables import DEVICE
from lwm2m.store import Conflict, Tx

CHUNK = 500
"""Endpoints per ``IN (...)`` list: below SQLite's and PostgreSQL's parameter limits."""


_D = DESIRED.c
_R = REPORTED.c
# Pre-built statements with bind parameters: SQLAlchemy caches their compiled form, so the hot
# paths pay neither statement construction nor cache-key generation per call (measured: those
# were most of a small statement's cost).
_DESIRED_OF = select(DESIRED).where(_D.endpoint == bindparam("endpoint"))
_REPORTED_OF = select(REPORTED).where(_R.endpoint == bindparam("endpoint"))
_DESIRED_OF_MANY = select(DESIRED).where(_D.endpoint.in_(bindparam("endpoints", expanding=True)))
_REPORTED_OF_MANY = select(REPORTED).where(_R.endpoint.in_(bindparam("endpoints", expanding=True)))
_BUNDLE_OF = select(CONFIG_BUNDLE).where(CONFIG_BUNDLE.c.name == bindparam("name"))
_REPORTED_COLUMNS = (
    "value",
    "observed_generation",
    "failed_generation",
    "detail",
    "reported_at",
    "source",
)


def _upsert(insert: Any) -> Insert:
    """``INSERT .. ON CONFLICT (endpoint, dimension) DO UPDATE`` for the dialect's ``insert``."""
    ins = insert(REPORTED)
    result: Insert = ins.on_conflict_do_update(
        index_elements=[_R.endpoint, _R.dimension],
        set_={name: ins.excluded[name] for name in _REPORTED_COLUMNS},
    )
    return result


_UPSERT_REPORTED = {"sqlite": _upsert(sqlite_insert), "postgresql": _upsert(pg_insert)}


def reported_row(endpoint: str, reported: Reported, *, now: float, source: str) -> dict[str, Any]:
    """The ``lc_reported`` row of one dimension (for :meth:`StateRepository.write_reported`)."""
    return {
        "endpoint": endpoint,
        "dimension": reported.dimension.value,
        "value": _dumps(reported.value) if reported.value is not None else None,
        "observed_generation": reported.observed_generation,
        "failed_generation": reported.failed_generation,
        "detail": reported.detail,
        "reported_at": now,
        "source": source,
    }


def _dumps(value: JsonValue) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


@dataclass(frozen=True, slots=True)
class DimensionView:
    """One row of ``state show``: desired and reported side by side, with the status."""

    endpoint: str
    dimension: Dimension
    desired: Desired | None
    set_by: str | None
    set_at: float | None
    reported: Reported | None
    reported_at: float | None
    source: str | None
    status: Status


@dataclass(frozen=True, slots=True)
class Change:
    """A desired value written by :meth:`StateRepository.set_desired`."""

    endpoint: str
    dimension: Dimension
    generation: int
    changed: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :meth:`StateRepository.record` did to one dimension."""

    dimension: Dimension
    before: Status
    after: Status
    policy: Policy | None


@dataclass(frozen=True, slots=True)
class ConfigBundle:
    name: str
    content: bytes
    digest: str
    created_by: str
    created_at: float

    def decoded(self) -> Any:
        return cbor2.loads(self.content)


def _desired(row: Any) -> Desired:
    return Desired(
        Dimension(row.dimension), json.loads(row.value), int(row.generation), Policy(row.policy)
    )


def _reported(row: Any) -> Reported:
    return Reported(
        Dimension(row.dimension),
        json.loads(row.value) if row.value is not None else None,
        row.observed_generation,
        row.failed_generation,
        row.detail or "",
    )


def apply_report(
    desired: Mapping[Dimension, Desired],
    reported: Mapping[Dimension, Reported],
    values: Mapping[Dimension, dict[str, JsonValue] | None],
    failures: Mapping[Dimension, str] | None = None,
) -> list[tuple[Recorded, Reported, bool]]:
    """What recording ``values`` (and permanent ``failures`` of the current desired
    generation) does to a device's reported state, without I/O: per dimension, in dimension
    order, the status before and after, the new reported state and whether it differs from
    the old one (only those need writing). The generation rule is
    :func:`~lifecycle.state.dimensions.observed_after`."""
    failures = failures or {}
    out: list[tuple[Recorded, Reported, bool]] = []
    for dim in sorted(set(values) | set(failures), key=lambda d: d.value):
        want = desired.get(dim)
        old = reported.get(dim)
        before = status(want, old)
        value = values.get(dim, old.value if old else None)
        observed = observed_after(want, value, old.observed_generation if old else None)
        failed = old.failed_generation if old else None
        detail = old.detail if old else ""
        if dim in failures and want is not None:
            failed, detail = want.generation, failures[dim]
        elif want is not None and observed == want.generation:
            failed, detail = None, ""
        new = Reported(dim, value, observed, failed, detail)
        item = Recorded(dim, before, status(want, new), want.policy if want else None)
        out.append((item, new, old is None or new != old))
    return out


class StateRepository:
    """Desired/reported state and config bundles (module docstring). Stateless."""

    # -- reading ---------------------------------------------------------------------------
    def desired(self, tx: Tx, endpoint: str) -> dict[Dimension, Desired]:
        rows = tx.execute(_DESIRED_OF, {"endpoint": endpoint})
        return {Dimension(r.dimension): _desired(r) for r in rows}

    def reported(self, tx: Tx, endpoint: str) -> dict[Dimension, Reported]:
        rows = tx.execute(_REPORTED_OF, {"endpoint": endpoint})
        return {Dimension(r.dimension): _reported(r) for r in rows}

    def desired_of(self, tx: Tx, endpoints: Sequence[str]) -> dict[str, dict[Dimension, Desired]]:
        """The desired values of many endpoints (each present, empty when none is set)."""
        found: dict[str, dict[Dimension, Desired]] = {e: {} for e in endpoints}
        for group in _chunks(list(found)):
            for r in tx.execute(_DESIRED_OF_MANY, {"endpoints": list(group)}):
                found[str(r.endpoint)][Dimension(r.dimension)] = _desired(r)
        return found

    def reported_of(self, tx: Tx, endpoints: Sequence[str]) -> dict[str, dict[Dimension, Reported]]:
        """The reported values of many endpoints (each present, empty when none is kept)."""
        found: dict[str, dict[Dimension, Reported]] = {e: {} for e in endpoints}
        for group in _chunks(list(found)):
            for r in tx.execute(_REPORTED_OF_MANY, {"endpoints": list(group)}):
                found[str(r.endpoint)][Dimension(r.dimension)] = _reported(r)
        return found

    def view(self, tx: Tx, endpoint: str) -> list[DimensionView]:
        """Every dimension that has a desired or a reported value, in dimension order."""
        desired = {
            r.dimension: r
            for r in tx.execute(select(DESIRED).where(DESIRED.c.endpoint == endpoint))
        }
        reported = {
            r.dimension: r
            for r in tx.execute(select(REPORTED).where(REPORTED.c.endpoint == endpoint))
        }
        views = []
        for dim in Dimension:
            d, r = desired.get(dim.value), reported.get(dim.value)
            if d is None and r is None:
                continue
            want = _desired(d) if d is not None else None
            have = _reported(r) if r is not None else None
            views.append(
                DimensionView(
                    endpoint,
                    dim,
                    want,
                    d.set_by if d is not None else None,
                    d.set_at if d is not None else None,
                    have,
                    r.reported_at if r is not None else None,
                    r.source if r is not None else None,
                    status(want, have),
                )
            )
        return views

    def out_of_line(
        self, tx: Tx, endpoints: Sequence[str] | None, *, limit: int = 1000
    ) -> list[DimensionView]:
        """Dimensions whose status is pending, drifted, failed or unknown (``state drift``),
        for ``endpoints`` (None: every device with a desired value), endpoint order."""
        found: list[DimensionView] = []
        groups: Iterable[Sequence[str] | None] = (
            _chunks(sorted(endpoints)) if endpoints is not None else [None]
        )
        for group in groups:
            query = (
                select(
                    DESIRED,
                    REPORTED.c.value.label("r_value"),
                    REPORTED.c.observed_generation,
                    REPORTED.c.failed_generation,
                    REPORTED.c.detail,
                    REPORTED.c.reported_at,
                    REPORTED.c.source,
                )
                .select_from(
                    DESIRED.outerjoin(
                        REPORTED,
                        (REPORTED.c.endpoint == DESIRED.c.endpoint)
                        & (REPORTED.c.dimension == DESIRED.c.dimension),
                    )
                )
                .order_by(DESIRED.c.endpoint, DESIRED.c.dimension)
            )
            if group is not None:
                query = query.where(DESIRED.c.endpoint.in_(list(group)))
            for row in tx.execute(query):
                want = _desired(row)
                have = (
                    Reported(
                        want.dimension,
                        json.loads(row.r_value) if row.r_value is not None else None,
                        row.observed_generation,
                        row.failed_generation,
                        row.detail or "",
                    )
                    if row.reported_at is not None
                    else None
                )
                state = status(want, have)
                if state.out_of_line:
                    found.append(
                        DimensionView(
                            str(row.endpoint),
                            want.dimension,
                            want,
                            row.set_by,
                            row.set_at,
                            have,
                            row.reported_at,
                            row.source,
                            state,
                        )
                    )
                    if len(found) >= limit:
                        return found
        return found

    def tenants(self, tx: Tx, endpoints: Sequence[str]) -> dict[str, str | None]:
        """The tenant of each endpoint the inventory knows (absent: not in the inventory)."""
        found: dict[str, str | None] = {}
        for group in _chunks(list(endpoints)):
            rows = tx.execute(
                select(DEVICE.c.endpoint, DEVICE.c.tenant).where(DEVICE.c.endpoint.in_(list(group)))
            )
            found.update({str(r.endpoint): r.tenant for r in rows})
        return found

    # -- writing ---------------------------------------------------------------------------
    def set_desired(
        self,
        tx: Tx,
        endpoints: Sequence[str],
        values: Mapping[Dimension, dict[str, JsonValue]],
        *,
        policy: Policy,
        actor: str,
        now: float,
    ) -> list[Change]:
        """Set ``values`` on every endpoint. The generation grows by one where the value
        changed (a policy-only change keeps it: the device has nothing new to do)."""
        changes: list[Change] = []
        for group in _chunks(sorted(set(endpoints))):
            current = {
                (r.endpoint, r.dimension): r
                for r in tx.execute(
                    select(DESIRED).where(
                        DESIRED.c.endpoint.in_(list(group)),
                        DESIRED.c.dimension.in_([d.value for d in values]),
                    )
                )
            }
            inserts: list[dict[str, Any]] = []
            for endpoint in group:
                for dim, value in values.items():
                    text = _dumps(value)
                    row = current.get((endpoint, dim.value))
                    if row is None:
                        inserts.append(
                            {
                                "endpoint": endpoint,
                                "dimension": dim.value,
                                "value": text,
                                "generation": 1,
                                "policy": policy.value,
                                "set_by": actor,
                                "set_at": now,
                            }
                        )
                        changes.append(Change(endpoint, dim, 1, True))
                        continue
                    changed = row.value != text
                    generation = int(row.generation) + (1 if changed else 0)
                    if changed or row.policy != policy.value:
                        tx.execute(
                            DESIRED.update()
                            .where(DESIRED.c.endpoint == endpoint, DESIRED.c.dimension == dim.value)
                            .values(
                                value=text,
                                generation=generation,
                                policy=policy.value,
                                set_by=actor,
                                set_at=now,
                            )
                        )
                    changes.append(Change(endpoint, dim, generation, changed))
            if inserts:
                tx.execute(DESIRED.insert(), inserts)
        return changes

    def record(
        self,
        tx: Tx,
        endpoint: str,
        values: Mapping[Dimension, dict[str, JsonValue] | None],
        *,
        now: float,
        source: str,
        failures: Mapping[Dimension, str] | None = None,
    ) -> list[Recorded]:
        """Record verified reported values (and permanent failures of the current desired
        generation) of ``endpoint``; returns each dimension's status before and after."""
        failures = failures or {}
        if not values and not failures:
            return []
        desired = self.desired(tx, endpoint)
        reported = self.reported(tx, endpoint)
        out: list[Recorded] = []
        rows: list[dict[str, Any]] = []
        for item, new, changed in apply_report(desired, reported, values, failures):
            out.append(item)
            if changed:
                rows.append(reported_row(endpoint, new, now=now, source=source))
        self.write_reported(tx, rows)
        return out

    def write_reported(self, tx: Tx, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert ``lc_reported`` rows (:func:`reported_row`) in one executemany: the state
        observer computes them in memory and hands over only what changed."""
        if rows:
            tx.execute(_UPSERT_REPORTED[tx.dialect], list(rows))

    # -- config bundles --------------------------------------------------------------------
    def put_bundle(
        self, tx: Tx, name: str, content: Any, *, actor: str, now: float
    ) -> tuple[ConfigBundle, bool]:
        """Register bundle ``name`` (a JSON map, stored as a CBOR map); ``(bundle, created)``.
        Bundles are immutable: the same content again is a no-op, other content a Conflict."""
        encoded = cbor2.dumps(content, canonical=True)
        digest = hashlib.sha256(encoded).hexdigest()
        found = self.bundle(tx, name)
        if found is not None:
            if found.digest != digest:
                raise Conflict(
                    f"config bundle {name!r} already exists with other content (sha-256 "
                    f"{found.digest[:12]}...); bundles are immutable: register it under a new name"
                )
            return found, False
        tx.execute(
            CONFIG_BUNDLE.insert(),
            {
                "name": name,
                "content": encoded,
                "digest": digest,
                "created_by": actor,
                "created_at": now,
            },
        )
        return ConfigBundle(name, encoded, digest, actor, now), True

    def bundle(self, tx: Tx, name: str) -> ConfigBundle | None:
        row = tx.execute(_BUNDLE_OF, {"name": name}).first()
        if row is None:
            return None
        return ConfigBundle(
            row.name, bytes(row.content), row.digest, row.created_by, row.created_at
        )

    def bundles(self, tx: Tx) -> list[ConfigBundle]:
        rows = tx.execute(select(CONFIG_BUNDLE).order_by(CONFIG_BUNDLE.c.name))
        return [
            ConfigBundle(r.name, bytes(r.content), r.digest, r.created_by, r.created_at)
            for r in rows
        ]


__all__ = [
    "Change",
    "ConfigBundle",
    "DimensionView",
    "Recorded",
    "StateRepository",
    "apply_report",
    "reported_row",
]
