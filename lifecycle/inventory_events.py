"""The inventory as a running component: kept current by the DM server's events and by imports.

* ``Registered`` / ``Updated``: the record is created if needed -- joined with the device's
  factory identity (tenant, region, SKU, policy group, serial, IMEI, EID) when one exists --
  and marked registered, ``last_seen`` now; a ``manufactured``/``bootstrapped`` device moves
  to ``active``.
* ``Deregistered`` / ``Expired``: registered false.
* ``Notification`` / ``SendReceived``: the facts the inventory keeps (/3/0/0 manufacturer,
  /3/0/1 model, /3/0/3 firmware, /4/0/0 network bearer as the radio, /4/0/10 + /4/0/9 as the
  serving PLMN, /3443/x/1 EID) update the record -- only when one of them is in the content
  and only when it changed, so a battery-level observation every few seconds writes nothing.
  "Changed" is decided in memory against the facts last stored for the device: a composite
  notification repeats the firmware version with every other value, and reading the record
  to find it unchanged was the event path's main cost.
* An identity import through the API creates ``manufactured`` records, with the import
  file's inventory-only columns (country, carrier, plmn, iccid(s), labels ``k=v;flag``).

**Bootstrapped stage.** The bootstrap server records ``finished_at`` in ``bs_state`` when a
device's Bootstrap-Finish succeeds, possibly in another process, and publishes no event. So
instead of polling that table, the move is recorded at the device's next registration (its
first after bootstrapping, normally seconds later): the history gets ``bootstrapped`` at the
bootstrap's own ``finished_at`` time, then ``active`` at the registration -- exact times, no
scan, one lookup per registration of a device still in ``manufactured``. A device that reaches
the DM server without a finished bootstrap (factory-provisioned DM credentials) goes straight
from ``manufactured`` to ``active``.

Every write goes through the store's group commit from the event loop
(``store.write_nowait``), never blocking it; dynamic groups are updated in the same
transaction (:meth:`lifecycle.groups.GroupRegistry.on_change`).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select

from bootstrap.tables import IDENTITY, STATE
from lifecycle.groups import GroupRegistry
from lifecycle.inventory import (
    ACTIVE,
    BOOTSTRAPPED,
    MANUFACTURED,
    AuditLog,
    DeviceRecord,
    InvalidChange,
    InventoryRepository,
    parse_labels,
)
from lifecycle.service import DeviceRead, LifecycleService
from lwm2m.model import Node, Path, iter_leaves
from lwm2m.server import (
    Deregistered,
    Expired,
    Notification,
    Registered,
    Removed,
    SendReceived,
    Updated,
)
from lwm2m.store import Store, Tx
from objects.enums import NetworkBearer

_I = IDENTITY.c
_S = STATE.c
_CHUNK = 500
_IDENTITY_FIELDS = ("tenant", "region", "sku", "policy_group", "serial", "imei", "eid")
FACTS = ("manufacturer", "model", "firmware", "radio", "serving_plmn", "eid")
"""The record's attributes a device report sets (:func:`reported_facts`)."""


def radio_name(code: int) -> str:
    """/4/0/0 as a word for selectors (``nb-iot``, ``lte-fdd``); unknown codes stay numeric."""
    try:
        return NetworkBearer(code).name.lower().replace("_", "-")
    except ValueError:
        return f"bearer-{code}"


def reported_facts(content: Mapping[Path, Node]) -> dict[str, str]:
    """The inventory's facts found in a notification's or Send's content (module docstring)."""
    leaves: dict[tuple[int, ...], Any] = {}
    for path, node in content.items():
        for leaf_path, leaf in iter_leaves(node, path):
            leaves[leaf_path.ids] = leaf.value
    return facts_of(leaves)


def facts_of(leaves: Mapping[tuple[int, ...], Any]) -> dict[str, str]:
    """The inventory's facts among leaf values keyed by path ids (``(3, 0, 3)``)."""
    facts: dict[str, str] = {}
    for name, rid in (("manufacturer", 0), ("model", 1), ("firmware", 3)):
        text = leaves.get((3, 0, rid))
        if isinstance(text, str) and text.strip():
            facts[name] = text.strip()
    bearer = leaves.get((4, 0, 0))
    if isinstance(bearer, int):
        facts["radio"] = radio_name(bearer)
    mcc, mnc = leaves.get((4, 0, 10)), leaves.get((4, 0, 9))
    if isinstance(mcc, int) and isinstance(mnc, int) and 0 <= mcc < 1000 and 0 <= mnc < 1000:
        facts["serving_plmn"] = f"{mcc:03d}{mnc:02d}"
    for ids, value in leaves.items():
        if len(ids) == 3 and ids[0] == 3443 and ids[2] == 1 and isinstance(value, str) and value:
            facts["eid"] = value
    return facts


# -- import extras --------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace(",", ";").split(";") if p.strip()]


def _extras_of(record: Mapping[str, Any]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for name in ("country", "carrier", "plmn"):
        value = record.get(name)
        if value is not None and str(value).strip():
            extras[name] = str(value).strip()
    iccids: list[str] = []
    for name in ("iccid", "iccids"):
        value = record.get(name)
        if isinstance(value, list):
            iccids.extend(str(v).strip() for v in value if str(v).strip())
        elif value is not None:
            iccids.extend(_split(str(value)))
    if iccids:
        extras["iccids"] = tuple(dict.fromkeys(iccids))
    labels = record.get("labels")
    if isinstance(labels, dict):
        extras["labels"] = parse_labels(
            ";".join(f"{k}={v}" if v not in (None, "") else str(k) for k, v in labels.items())
        )
    elif labels is not None and str(labels).strip():
        extras["labels"] = parse_labels(str(labels))
    return extras


def import_extras(content: str, format: str) -> dict[str, dict[str, Any]]:
    """endpoint -> the inventory-only columns of an identity import file (CSV or JSON).

    The bootstrap importer has validated the file's identities already; a malformed label is
    an :class:`~lifecycle.inventory.InvalidChange` naming the endpoint.
    """
    records: list[Mapping[str, Any]]
    if format == "json":
        doc = json.loads(content)
        if isinstance(doc, dict):
            doc = doc.get("identities", [])
        records = [r for r in doc if isinstance(r, dict)] if isinstance(doc, list) else []
    else:
        reader = csv.DictReader(io.StringIO(content))
        records = [{(k or "").strip().lower(): v for k, v in row.items()} for row in reader]
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        endpoint = str(record.get("endpoint") or "").strip()
        if not endpoint:
            continue
        try:
            extras = _extras_of(record)
        except InvalidChange as err:
            raise InvalidChange(f"{endpoint}: {err}") from None
        found[endpoint] = extras
    return found


# -- the component --------------------------------------------------------------------------------


class InventoryService:
    """Repository, groups and the event handlers, for one store (module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clock = clock
        self.audit: AuditLog | None = audit if audit is not None else getattr(store, "audit", None)
        self.repository = InventoryRepository(self.audit)
        self.groups = GroupRegistry(self.repository, self.audit)
        self.repository.on_change.append(self.groups.on_change)
        #: endpoint -> the facts its stored record holds, as last written or read by a report
        #: (set on the writer thread after the report's op ran; a stale entry only costs a
        #: write that finds nothing to change).
        self.facts: dict[str, dict[str, Any]] = {}
        self.reports_skipped = 0

    def attach(self, service: LifecycleService) -> None:
        """Subscribe the handlers (``fleetloop serve`` does this before the service starts)."""
        service.on(Registered, self.on_registered)
        service.on(Updated, self.on_updated)
        service.on(Deregistered, self.on_gone)
        service.on(Expired, self.on_gone)
        service.on(Removed, self.on_gone)
        service.on(Notification, self.on_reported)
        service.on(SendReceived, self.on_reported)
        service.on(DeviceRead, self.on_read)

    # -- handlers (quick: they only queue a write) ------------------------------------------------
    async def on_registered(self, event: Registered) -> None:
        now = self.clock()
        endpoint = event.endpoint
        self.store.write_nowait(lambda tx: self.seen(tx, endpoint, now))

    async def on_updated(self, event: Updated) -> None:
        now = self.clock()
        endpoint = event.endpoint
        self.store.write_nowait(lambda tx: self.seen(tx, endpoint, now))

    async def on_gone(self, event: Deregistered | Expired | Removed) -> None:
        now = self.clock()
        endpoint = event.endpoint
        self.store.write_nowait(lambda tx: self.gone(tx, endpoint, now))

    async def on_reported(self, event: Notification | SendReceived) -> None:
        await self._facts(event.endpoint, reported_facts(event.content))

    async def on_read(self, event: DeviceRead) -> None:
        """Values the lifecycle read itself (a newly registered device's first report)."""
        await self._facts(event.endpoint, facts_of({p.ids: v for p, v in event.values.items()}))

    async def _facts(self, endpoint: str, facts: dict[str, str]) -> None:
        if not facts:
            return
        known = self.facts.get(endpoint)
        if known is not None and all(known.get(k) == v for k, v in facts.items()):
            self.reports_skipped += 1
            return
        now = self.clock()
        self.store.write_nowait(lambda tx: self.report(tx, endpoint, facts, now))

    # -- operations (run in the group commit's transaction) ---------------------------------------
    def _identities(self, tx: Tx, endpoints: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        columns = [_I.endpoint, _I.created_at, *(_I[name] for name in _IDENTITY_FIELDS)]
        for start in range(0, len(endpoints), _CHUNK):
            chunk = list(endpoints[start : start + _CHUNK])
            for row in tx.execute(select(*columns).where(_I.endpoint.in_(chunk))):
                found[row._mapping["endpoint"]] = dict(row._mapping)
        return found

    def _new(self, endpoint: str, identity: Mapping[str, Any] | None, now: float) -> DeviceRecord:
        if identity is None:
            return DeviceRecord(endpoint, created_at=now, updated_at=now)
        born = float(identity["created_at"] or now)
        return DeviceRecord(
            endpoint,
            **{name: identity[name] for name in _IDENTITY_FIELDS},
            stage=MANUFACTURED,
            stage_history=((MANUFACTURED, born),),
            created_at=born,
            updated_at=now,
        )

    def _joined(self, record: DeviceRecord, identity: Mapping[str, Any] | None) -> DeviceRecord:
        """Fill attributes the record lacks from the identity (never overwrite: a bulk move
        of the region must survive the next registration)."""
        if identity is None:
            return record
        missing = {n: identity[n] for n in _IDENTITY_FIELDS if getattr(record, n) is None}
        present = {n: v for n, v in missing.items() if v is not None}
        return replace(record, **present) if present else record

    def seen(self, tx: Tx, endpoint: str, now: float) -> DeviceRecord:
        """A registration or update: joined, registered, last seen now, active if it was not."""
        stored = record = self.repository.get(tx, endpoint)
        identity = None
        if record is None or record.stage == MANUFACTURED or record.tenant is None:
            identity = self._identities(tx, [endpoint]).get(endpoint)
        if record is None:
            record = self._new(endpoint, identity, now)
            if identity is None:
                record = record.moved_to(ACTIVE, now)
        record = self._joined(record, identity)
        if record.stage == MANUFACTURED:
            finished = tx.execute(
                select(_S.finished_at).where(_S.endpoint == endpoint, _S.finished_at.is_not(None))
            ).scalar_one_or_none()
            if finished is not None:
                record = record.moved_to(BOOTSTRAPPED, float(finished))
        if record.stage in (MANUFACTURED, BOOTSTRAPPED):
            record = record.moved_to(ACTIVE, now)
        record = replace(record, registered=True, last_seen=now, updated_at=now)
        record = self.repository.upsert(tx, record, stored)
        self._remember_facts(tx, record)  # the first report then needs no read either
        return record

    def _remember_facts(self, tx: Tx, record: DeviceRecord) -> None:
        stored = {name: getattr(record, name) for name in FACTS}
        # Only once committed: a rolled-back write must not be remembered as stored.
        tx.after_commit(lambda: self.facts.__setitem__(record.endpoint, stored))

    def gone(self, tx: Tx, endpoint: str, now: float) -> None:
        record = self.repository.get(tx, endpoint)
        if record is not None and record.registered:
            self.repository.upsert(tx, replace(record, registered=False, updated_at=now), record)

    def report(self, tx: Tx, endpoint: str, facts: Mapping[str, str], now: float) -> None:
        record = self.repository.get(tx, endpoint)
        if record is None:
            record = self.seen(tx, endpoint, now)
        changes: dict[str, Any] = {k: v for k, v in facts.items() if getattr(record, k) != v}
        if record.eid is not None:
            # the factory's EID stands: a device reporting another one is a diagnostics
            # matter, not an inventory rewrite
            changes.pop("eid", None)
        if changes:
            record = self.repository.upsert(
                tx, replace(record, **changes, last_seen=now, updated_at=now), record
            )
        self._remember_facts(tx, record)

    # -- identity import --------------------------------------------------------------------------
    async def sync_import(
        self, extras: Mapping[str, Mapping[str, Any]], accepted: Iterable[str]
    ) -> int:
        """Give every newly imported identity a ``manufactured`` record, with the import
        file's inventory columns (``extras``, from :func:`import_extras`); existing records
        get those columns updated. Returns how many endpoints were synced."""
        endpoints = sorted(set(accepted))
        if not endpoints:
            return 0
        now = self.clock()

        def op(tx: Tx) -> int:
            identities = self._identities(tx, endpoints)
            existing = {r.endpoint: r for r in self.repository.get_many(tx, endpoints)}
            fresh: list[DeviceRecord] = []
            for endpoint in endpoints:
                more = extras.get(endpoint, {})
                record = existing.get(endpoint)
                if record is None:
                    fresh.append(
                        replace(self._new(endpoint, identities.get(endpoint), now), **more)
                    )
                elif more:
                    labels = {**record.labels, **more.get("labels", {})}
                    self.repository.upsert(
                        tx, replace(record, **{**more, "labels": labels}, updated_at=now)
                    )
            self.repository.upsert_many(tx, fresh)
            return len(endpoints)

        return await self.store.write(op)


__all__ = ["InventoryService", "import_extras", "radio_name", "reported_facts"]
