"""The device inventory: one record per device, joining its factory identity and its registration.

A :class:`DeviceRecord` holds what the fleet is selected by (tenant, region, country, carrier,
SKU, policy group, labels), what the device reported (model, firmware, radio, serving PLMN)
and where it is in its life: ``manufactured → bootstrapped → active → suspended → retired``,
with the time of every move (``stage_history``).

:class:`InventoryRepository` follows the store's repository contract: synchronous methods
taking the store's ``Tx`` first, checking before writing (a refused change fails alone in a
group commit), returning frozen dataclasses. Every bulk change (relabel, move region, move
policy group) and every operator stage change appends one record to the audit log in the same
transaction, so a change that is not audited does not happen. Changes to records call the
``on_change`` hook (dynamic-group membership, :mod:`lifecycle.groups`) in that transaction too.

Labels live in ``lc_device_label`` only (one row per label), so ``label:pilot`` is an index
lookup and a bulk relabel of 100 000 devices is two set-based statements, not 100 000 JSON
rewrites.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import Row, bindparam, delete, func, insert, select, text, update

from lifecycle.selector import STAGES, Selector, where_clause
from lifecycle.tables import DEVICE, DEVICE_LABEL
from lifecycle.versions import version_key
from lwm2m.store import Page, Tx

_D = DEVICE.c
_L = DEVICE_LABEL.c
_CHUNK = 500
# Pre-built statements with bind parameters for the per-event paths (a registration, a
# report): SQLAlchemy then reuses their compiled form instead of building and hashing a new
# statement every time -- that per-statement work, not the database, was most of an event's
# cost (docs/BENCHMARKS.md, "Inventory selectors").
_GET = select(DEVICE).where(_D.endpoint == bindparam("endpoint"))
_EXISTS = select(_D.endpoint).where(_D.endpoint == bindparam("endpoint"))
_LABELS_OF = select(_L.endpoint, _L.name, _L.value).where(
    _L.endpoint.in_(bindparam("endpoints", expanding=True))
)
_INSERT_DEVICE = insert(DEVICE)
_UPDATE_DEVICE = update(DEVICE).where(_D.endpoint == bindparam("key"))
_INSERT_LABELS = insert(DEVICE_LABEL)
_DELETE_LABELS = delete(DEVICE_LABEL).where(_L.endpoint == bindparam("endpoint"))
MAX_PAGE = 1000
ANALYZE_AFTER = 1000
"""A bulk insert of at least this many records refreshes PostgreSQL's planner statistics."""

LABEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,62}")
MAX_LABEL_VALUE = 128

MANUFACTURED, BOOTSTRAPPED, ACTIVE, SUSPENDED, RETIRED = STAGES

OPERATOR_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    # action -> (stages it applies to, stage it moves to)
    "suspend": (frozenset({ACTIVE, BOOTSTRAPPED}), SUSPENDED),
    "resume": (frozenset({SUSPENDED}), ACTIVE),
    "retire": (frozenset({MANUFACTURED, BOOTSTRAPPED, ACTIVE, SUSPENDED}), RETIRED),
}
"""The moves an operator makes. The automatic ones (bootstrap finished, first registration)
only go forward from ``manufactured``/``bootstrapped``: a suspended or retired device that
registers stays suspended or retired -- that was an operator's decision."""

MOVABLE = ("region", "policy_group")
"""Attributes a bulk move may change (tenant is not: moving devices between tenants is an
admin's identity change, done on the factory identity)."""


class InventoryError(Exception):
    """Base of the inventory's errors; the message names the device and the fix."""


class UnknownDevice(InventoryError):
    def __init__(self, endpoint: str) -> None:
        super().__init__(
            f"no inventory record for device {endpoint!r}; it appears when its identity is "
            "imported or when it registers (`fleetloop inventory list`)"
        )
        self.endpoint = endpoint


class StageError(InventoryError):
    """A lifecycle move that the device's current stage does not allow."""


class InvalidChange(InventoryError):
    """A bulk change with a malformed label, attribute or value."""


class AuditLog(Protocol):
    """The store's audit log (``store.audit``, :mod:`lwm2m.store.audit`)."""

    def append(
        self,
        tx: Tx,
        *,
        actor: str,
        action: str,
        subject: str,
        now: float,
        token_id: str | None = None,
        tenant: str | None = None,
        endpoints: Sequence[str] = (),
        detail: Mapping[str, Any] | None = None,
        outcome: str = "ok",
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes something, for the audit record."""

    name: str
    token_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One device of the inventory (module docstring). ``labels`` maps name to value (``""``
    for a flag label); ``stage_history`` is ``((stage, at), ...)`` oldest first."""

    endpoint: str
    tenant: str | None = None
    region: str | None = None
    country: str | None = None
    carrier: str | None = None
    plmn: str | None = None
    sku: str | None = None
    policy_group: str | None = None
    serial: str | None = None
    imei: str | None = None
    eid: str | None = None
    iccids: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    stage: str = MANUFACTURED
    stage_history: tuple[tuple[str, float], ...] = ()
    model: str | None = None
    manufacturer: str | None = None
    firmware: str | None = None
    radio: str | None = None
    serving_plmn: str | None = None
    registered: bool = False
    last_seen: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def moved_to(self, stage: str, now: float) -> DeviceRecord:
        """This record in ``stage`` since ``now`` (the move appended to the history)."""
        return replace(
            self, stage=stage, stage_history=(*self.stage_history, (stage, now)), updated_at=now
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "tenant": self.tenant,
            "region": self.region,
            "country": self.country,
            "carrier": self.carrier,
            "plmn": self.plmn,
            "sku": self.sku,
            "policy_group": self.policy_group,
            "serial": self.serial,
            "imei": self.imei,
            "eid": self.eid,
            "iccids": list(self.iccids),
            "labels": dict(self.labels),
            "stage": self.stage,
            "stage_history": [{"stage": s, "at": at} for s, at in self.stage_history],
            "model": self.model,
            "manufacturer": self.manufacturer,
            "firmware": self.firmware,
            "radio": self.radio,
            "serving_plmn": self.serving_plmn,
            "registered": self.registered,
            "last_seen": self.last_seen,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk change did: the devices it touched (in endpoint order)."""

    action: str
    selector: str
    endpoints: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.endpoints)


def check_label(name: str, value: str = "") -> tuple[str, str]:
    if not LABEL_NAME.fullmatch(name):
        raise InvalidChange(
            f"label name {name!r} is not valid; use 1..63 letters, digits and _ . - / "
            "(starting with a letter or digit)"
        )
    if len(value) > MAX_LABEL_VALUE or any(ord(c) < 32 for c in value):
        raise InvalidChange(
            f"label {name!r}: the value must be at most {MAX_LABEL_VALUE} printable characters"
        )
    return name, value


def parse_labels(text: str) -> dict[str, str]:
    """``k=v;flag;k2=v2`` (the import CSV's ``labels`` column) as a label map."""
    labels: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition("=")
        labels.update([check_label(name.strip(), value.strip())])
    return labels


# -- rows -----------------------------------------------------------------------------------------


def _row(record: DeviceRecord) -> dict[str, Any]:
    return {
        "endpoint": record.endpoint,
        "tenant": record.tenant,
        "region": record.region,
        "country": record.country,
        "carrier": record.carrier,
        "plmn": record.plmn,
        "sku": record.sku,
        "policy_group": record.policy_group,
        "serial": record.serial,
        "imei": record.imei,
        "eid": record.eid,
        "iccids": json.dumps(list(record.iccids)),
        "stage": record.stage,
        "stage_history": json.dumps([list(m) for m in record.stage_history]),
        "model": record.model,
        "manufacturer": record.manufacturer,
        "firmware": record.firmware,
        "firmware_key": None if record.firmware is None else version_key(record.firmware),
        "radio": record.radio,
        "serving_plmn": record.serving_plmn,
        "registered": record.registered,
        "last_seen": record.last_seen,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _record(row: Row[Any], labels: Mapping[str, str]) -> DeviceRecord:
    m = row._mapping
    return DeviceRecord(
        endpoint=m["endpoint"],
        tenant=m["tenant"],
        region=m["region"],
        country=m["country"],
        carrier=m["carrier"],
        plmn=m["plmn"],
        sku=m["sku"],
        policy_group=m["policy_group"],
        serial=m["serial"],
        imei=m["imei"],
        eid=m["eid"],
        iccids=tuple(json.loads(m["iccids"] or "[]")),
        labels=dict(labels),
        stage=m["stage"],
        stage_history=tuple((str(s), float(at)) for s, at in json.loads(m["stage_history"])),
        model=m["model"],
        manufacturer=m["manufacturer"],
        firmware=m["firmware"],
        radio=m["radio"],
        serving_plmn=m["serving_plmn"],
        registered=bool(m["registered"]),
        last_seen=None if m["last_seen"] is None else float(m["last_seen"]),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
    )


def scoped(selector: Selector, tenants: frozenset[str] | None) -> Any:
    """The selector's WHERE, restricted to ``tenants`` (None: every tenant)."""
    condition = where_clause(selector)
    if tenants is not None:
        condition = condition & _D.tenant.in_(sorted(tenants))
    return condition


ChangeHook = Callable[[Tx, Sequence[DeviceRecord]], None]


class InventoryRepository:
    """Device records by endpoint and by selector (module docstring).

    ``audit`` is the store's audit log; ``on_change`` is called with the changed records after
    every write, in the same transaction (the group registry hooks in here).
    """

    def __init__(self, audit: AuditLog | None = None) -> None:
        self.audit = audit
        self.on_change: list[ChangeHook] = []

    # -- reading ----------------------------------------------------------------------------------
    def _labels(self, tx: Tx, endpoints: Sequence[str]) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {e: {} for e in endpoints}
        for start in range(0, len(endpoints), _CHUNK):
            chunk = list(endpoints[start : start + _CHUNK])
            rows = tx.execute(_LABELS_OF, {"endpoints": chunk})
            for endpoint, name, value in map(tuple, rows):
                found[endpoint][name] = value
        return found

    def get(self, tx: Tx, endpoint: str) -> DeviceRecord | None:
        row = tx.execute(_GET, {"endpoint": endpoint}).first()
        if row is None:
            return None
        return _record(row, self._labels(tx, [endpoint])[endpoint])

    def require(self, tx: Tx, endpoint: str) -> DeviceRecord:
        found = self.get(tx, endpoint)
        if found is None:
            raise UnknownDevice(endpoint)
        return found

    def get_many(self, tx: Tx, endpoints: Sequence[str]) -> list[DeviceRecord]:
        """The records of ``endpoints`` that exist, in endpoint order."""
        rows: list[Row[Any]] = []
        for start in range(0, len(endpoints), _CHUNK):
            chunk = list(endpoints[start : start + _CHUNK])
            rows.extend(tx.execute(select(DEVICE).where(_D.endpoint.in_(chunk))))
        rows.sort(key=lambda r: r._mapping["endpoint"])
        labels = self._labels(tx, [r._mapping["endpoint"] for r in rows])
        return [_record(r, labels[r._mapping["endpoint"]]) for r in rows]

    def select(
        self,
        tx: Tx,
        selector: Selector,
        tenants: frozenset[str] | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[DeviceRecord]:
        """One page of the matching devices in endpoint order; ``next_after`` continues it.

        ``tenants`` restricts the answer to those tenants' devices (None: all devices).
        """
        limit = max(1, min(limit, MAX_PAGE))
        query = select(DEVICE).where(scoped(selector, tenants))
        if after is not None:
            query = query.where(_D.endpoint > after)
        rows = list(tx.execute(query.order_by(_D.endpoint).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        labels = self._labels(tx, [r._mapping["endpoint"] for r in rows])
        items = tuple(_record(r, labels[r._mapping["endpoint"]]) for r in rows)
        return Page(items, items[-1].endpoint if more and items else None)

    def count(self, tx: Tx, selector: Selector, tenants: frozenset[str] | None = None) -> int:
        query = select(func.count()).select_from(DEVICE).where(scoped(selector, tenants))
        return int(tx.execute(query).scalar_one())

    def endpoints(
        self, tx: Tx, selector: Selector, tenants: frozenset[str] | None = None
    ) -> list[str]:
        """Every matching endpoint, in order (for snapshots and bulk changes)."""
        query = select(_D.endpoint).where(scoped(selector, tenants)).order_by(_D.endpoint)
        return [e for (e,) in tx.execute(query)]

    # -- writing ----------------------------------------------------------------------------------
    def upsert(
        self, tx: Tx, record: DeviceRecord, previous: DeviceRecord | None = None
    ) -> DeviceRecord:
        """Insert or replace ``record`` (its labels too); the change hooks see it.

        ``previous``: the stored record this one replaces, when the caller just read it (the
        event handlers do) -- saves the existence check and the label read.
        """
        self._write(tx, record, previous)
        self._changed(tx, [record])
        return record

    def upsert_many(self, tx: Tx, records: Sequence[DeviceRecord]) -> None:
        """Insert or replace several records in a few statements (imports, benchmarks)."""
        if not records:
            return
        endpoints = [r.endpoint for r in records]
        for start in range(0, len(endpoints), _CHUNK):
            chunk = endpoints[start : start + _CHUNK]
            tx.execute(delete(DEVICE_LABEL).where(_L.endpoint.in_(chunk)))
            tx.execute(delete(DEVICE).where(_D.endpoint.in_(chunk)))
        tx.execute(insert(DEVICE), [_row(r) for r in records])
        labels = [
            {"endpoint": r.endpoint, "name": n, "value": v}
            for r in records
            for n, v in r.labels.items()
        ]
        if labels:
            tx.execute(insert(DEVICE_LABEL), labels)
        if tx.dialect == "postgresql" and len(records) >= ANALYZE_AFTER:
            # Fresh planner statistics now, not when autovacuum gets round to it: with the
            # empty-table estimates PostgreSQL nested-loops a label selector (4 s -> 19 ms
            # measured at 100 000 devices right after a bulk load).
            tx.execute(text("ANALYZE lc_device, lc_device_label"))
        self._changed(tx, records)

    def _write(self, tx: Tx, record: DeviceRecord, previous: DeviceRecord | None = None) -> None:
        row = _row(record)
        if previous is not None:
            exists: object = True
            current = dict(previous.labels)
        else:
            exists = tx.execute(_EXISTS, {"endpoint": record.endpoint}).first()
            current = self._labels(tx, [record.endpoint])[record.endpoint] if exists else {}
        if exists is None:
            tx.execute(_INSERT_DEVICE, row)
        else:
            tx.execute(_UPDATE_DEVICE, {**row, "key": record.endpoint})
        if current != dict(record.labels):
            tx.execute(_DELETE_LABELS, {"endpoint": record.endpoint})
            if record.labels:
                tx.execute(
                    _INSERT_LABELS,
                    [
                        {"endpoint": record.endpoint, "name": n, "value": v}
                        for n, v in record.labels.items()
                    ],
                )

    def _changed(self, tx: Tx, records: Sequence[DeviceRecord]) -> None:
        for hook in self.on_change:
            hook(tx, records)

    def _audit(
        self,
        tx: Tx,
        actor: Actor,
        action: str,
        subject: str,
        now: float,
        endpoints: Sequence[str],
        detail: Mapping[str, Any],
        tenant: str | None = None,
    ) -> None:
        if self.audit is None:
            return
        self.audit.append(
            tx,
            actor=actor.name,
            action=action,
            subject=subject,
            now=now,
            token_id=actor.token_id,
            tenant=tenant,
            endpoints=tuple(endpoints),
            detail=dict(detail),
        )

    # -- lifecycle stage --------------------------------------------------------------------------
    def change_stage(
        self,
        tx: Tx,
        endpoint: str,
        action: str,
        *,
        actor: Actor,
        now: float,
        tenants: frozenset[str] | None = None,
    ) -> DeviceRecord:
        """``suspend``, ``resume`` or ``retire`` one device, audited.

        Raises :class:`UnknownDevice` (also for a device outside ``tenants``) or
        :class:`StageError` -- before writing anything.
        """
        if action not in OPERATOR_ACTIONS:
            raise StageError(f"unknown stage action {action!r}; use {', '.join(OPERATOR_ACTIONS)}")
        record = self.get(tx, endpoint)
        if record is None or (tenants is not None and record.tenant not in tenants):
            raise UnknownDevice(endpoint)
        allowed, target = OPERATOR_ACTIONS[action]
        if record.stage not in allowed:
            raise StageError(
                f"device {endpoint!r} is {record.stage}; {action} applies to a device that is "
                f"{' or '.join(s for s in STAGES if s in allowed)}"
            )
        moved = record.moved_to(target, now)
        self._write(tx, moved, record)
        self._audit(
            tx,
            actor,
            f"inventory.{action}",
            endpoint,
            now,
            [endpoint],
            {"from": record.stage, "to": target},
            tenant=record.tenant,
        )
        self._changed(tx, [moved])
        return moved

    # -- bulk changes -----------------------------------------------------------------------------
    def relabel(
        self,
        tx: Tx,
        selector: Selector,
        *,
        add: Mapping[str, str],
        remove: Iterable[str] = (),
        actor: Actor,
        now: float,
        tenants: frozenset[str] | None = None,
    ) -> BulkResult:
        """Set the labels ``add`` and drop the labels ``remove`` on every selected device."""
        checked = dict(check_label(n, v) for n, v in add.items())
        dropped = sorted({check_label(n)[0] for n in remove} - set(checked))
        if not checked and not dropped:
            raise InvalidChange("nothing to change: give labels to add (k=v) or to remove")
        endpoints = self.endpoints(tx, selector, tenants)
        names = sorted({*checked, *dropped})
        for start in range(0, len(endpoints), _CHUNK):
            chunk = endpoints[start : start + _CHUNK]
            tx.execute(delete(DEVICE_LABEL).where(_L.endpoint.in_(chunk), _L.name.in_(names)))
            if checked:
                tx.execute(
                    insert(DEVICE_LABEL),
                    [
                        {"endpoint": e, "name": n, "value": v}
                        for e in chunk
                        for n, v in checked.items()
                    ],
                )
            tx.execute(update(DEVICE).where(_D.endpoint.in_(chunk)).values(updated_at=now))
        detail = {"selector": str(selector), "add": checked, "remove": dropped}
        return self._bulk_done(tx, "inventory.relabel", selector, endpoints, actor, now, detail)

    def move(
        self,
        tx: Tx,
        selector: Selector,
        *,
        attribute: str,
        value: str,
        actor: Actor,
        now: float,
        tenants: frozenset[str] | None = None,
    ) -> BulkResult:
        """Set ``region`` or ``policy_group`` to ``value`` on every selected device."""
        if attribute not in MOVABLE:
            raise InvalidChange(f"cannot move {attribute!r}; movable: {', '.join(MOVABLE)}")
        if not value or len(value) > 64 or any(c.isspace() or ord(c) < 32 for c in value):
            raise InvalidChange(f"{attribute} must be 1..64 characters without spaces")
        endpoints = self.endpoints(tx, selector, tenants)
        for start in range(0, len(endpoints), _CHUNK):
            chunk = endpoints[start : start + _CHUNK]
            tx.execute(
                update(DEVICE)
                .where(_D.endpoint.in_(chunk))
                .values({attribute: value, "updated_at": now})
            )
        detail = {"selector": str(selector), attribute: value}
        action = f"inventory.move_{attribute}"
        return self._bulk_done(tx, action, selector, endpoints, actor, now, detail)

    def _bulk_done(
        self,
        tx: Tx,
        action: str,
        selector: Selector,
        endpoints: list[str],
        actor: Actor,
        now: float,
        detail: Mapping[str, Any],
    ) -> BulkResult:
        self._audit(tx, actor, action, str(selector) or "*", now, endpoints, detail)
        if self.on_change and endpoints:
            for start in range(0, len(endpoints), _CHUNK):
                self._changed(tx, self.get_many(tx, endpoints[start : start + _CHUNK]))
        return BulkResult(action, str(selector), tuple(endpoints))


__all__ = [
    "ACTIVE",
    "BOOTSTRAPPED",
    "MANUFACTURED",
    "MOVABLE",
    "OPERATOR_ACTIONS",
    "RETIRED",
    "SUSPENDED",
    "Actor",
    "AuditLog",
    "BulkResult",
    "DeviceRecord",
    "InvalidChange",
    "InventoryError",
    "InventoryRepository",
    "StageError",
    "UnknownDevice",
    "check_label",
    "parse_labels",
]
