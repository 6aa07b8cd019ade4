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
from sqlalchemy import select

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


class StateRepository:
    """Desired/reported state and config bundles (module docstring). Stateless."""

    # -- reading ---------------------------------------------------------------------------
    def desired(self, tx: Tx, endpoint: str) -> dict[Dimension, Desired]:
        rows = tx.execute(select(DESIRED).where(DESIRED.c.endpoint == endpoint))
        return {Dimension(r.dimension): _desired(r) for r in rows}

    def reported(self, tx: Tx, endpoint: str) -> dict[Dimension, Reported]:
        rows = tx.execute(select(REPORTED).where(REPORTED.c.endpoint == endpoint))
        return {Dimension(r.dimension): _reported(r) for r in rows}

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
        dims = set(values) | set(failures)
        if not dims:
            return []
        desired = self.desired(tx, endpoint)
        reported = self.reported(tx, endpoint)
        out: list[Recorded] = []
        for dim in sorted(dims, key=lambda d: d.value):
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
            if old is None:
                tx.execute(
                    REPORTED.insert(),
                    {
                        "endpoint": endpoint,
                        "dimension": dim.value,
                        "value": _dumps(value) if value is not None else None,
                        "observed_generation": observed,
                        "failed_generation": failed,
                        "detail": detail,
                        "reported_at": now,
                        "source": source,
                    },
                )
            elif new != old:
                tx.execute(
                    REPORTED.update()
                    .where(REPORTED.c.endpoint == endpoint, REPORTED.c.dimension == dim.value)
                    .values(
                        value=_dumps(value) if value is not None else None,
                        observed_generation=observed,
                        failed_generation=failed,
                        detail=detail,
                        reported_at=now,
                        source=source,
                    )
                )
            out.append(Recorded(dim, before, status(want, new), want.policy if want else None))
        return out

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
        row = tx.execute(select(CONFIG_BUNDLE).where(CONFIG_BUNDLE.c.name == name)).first()
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


__all__ = ["Change", "ConfigBundle", "DimensionView", "Recorded", "StateRepository"]
