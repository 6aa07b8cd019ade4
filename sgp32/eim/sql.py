"""The eIM ledger on the store: `SqlLedger` (one transaction) and `EimStore` (async facade).

`EimStore.handle` runs a whole ESipa exchange as ONE `store.write` operation, so the answer the
IPA gets - a package, an acknowledgement - is committed before it is sent, and a crash between
the two at worst makes the IPA ask again: the package is re-sent with its original counter (it
is stored, never re-signed) and a result the IPA re-sends is matched as a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)

from lwm2m.store import Store, Tx
from lwm2m.store.audit import AuditLog
from sgp32.asn1 import decode_from_ipa
from sgp32.eim.core import DOWNLOAD_TRIGGER, Eim, Exchange
from sgp32.eim.ledger import OPEN_STATES
from sgp32.eim.model import (
    AssociationRecord,
    EuiccRecord,
    PackageRecord,
    PackageState,
    ProfileRecord,
    ProfileState,
    ResultRecord,
)
from sgp32.eim.tables import ASSOCIATION, ENDPOINT, EUICC, IPA_DATA, PACKAGE, PROFILE, RESULT
from sgp32.errors import Sgp32Error, UnknownEuicc
from sgp32.packages import Eco, Psmo

_E, _P, _R, _F, _A = EUICC.c, PACKAGE.c, RESULT.c, PROFILE.c, ASSOCIATION.c

_EUICC_BOUND: Select[Any] = select(
    _E.eid,
    _E.eim_id,
    _E.euicc_certificate,
    _E.eum_certificate,
    _A.association_token,
    _A.counter_value,
    _E.registered_at,
    _E.tenant,
).join_from(EUICC, ASSOCIATION, and_(_A.eid == _E.eid, _A.eim_id == _E.eim_id))
"""An eUICC with the counter and token of the eIM it is bound to (schema v2: per eIM)."""

# The statements of an ESipa exchange, built once with bind parameters: building a statement
# per call (its bind parameters, its cache key) cost more CPU than running it on SQLite
# (docs/BENCHMARKS.md "eSIM switch"). Names of SET/VALUES parameters must not be column names.
_OPEN = [s.value for s in OPEN_STATES]
_EUICC_BY_EID = _EUICC_BOUND.where(_E.eid == bindparam("k_eid"))
_EUICC_LOCKED = _EUICC_BY_EID.with_for_update(of=EUICC)
_EUICC_POLLED = _EUICC_BY_EID.add_columns(
    exists().where(_P.eid == _E.eid, _P.state.in_(_OPEN)).label("has_open")
)
_ASSOCIATION_ONE = select(ASSOCIATION).where(
    _A.eid == bindparam("k_eid"), _A.eim_id == bindparam("k_eim_id")
)
_NEXT_COUNTER = (
    update(ASSOCIATION)
    .where(_A.eid == bindparam("k_eid"), _A.eim_id == bindparam("k_eim_id"))
    .values(counter_value=_A.counter_value + 1)
    .returning(_A.counter_value)
)
_OPEN_PACKAGES = (
    select(PACKAGE)
    .where(_P.eid == bindparam("k_eid"), _P.state.in_(_OPEN))
    .order_by(_P.counter_value)
)
_NEXT_PACKAGE = _OPEN_PACKAGES.limit(1)
_PACKAGE_BY_TID = select(PACKAGE).where(
    _P.eid == bindparam("k_eid"), _P.transaction_id == bindparam("k_tid")
)
_PACKAGES = select(PACKAGE).where(_P.eid == bindparam("k_eid")).order_by(_P.counter_value)
_PACKAGE_FIELDS = [c.name for c in PACKAGE.c if c.name not in ("eid", "counter_value")]
_UPDATE_PACKAGE = (
    update(PACKAGE)
    .where(_P.eid == bindparam("k_eid"), _P.counter_value == bindparam("k_counter"))
    .values({name: bindparam(f"v_{name}") for name in _PACKAGE_FIELDS})
)
_PROFILES = select(PROFILE).where(_F.eid == bindparam("k_eid")).order_by(_F.iccid)
_DELETE_PROFILES = delete(PROFILE).where(_F.eid == bindparam("k_eid"))
_EID_OF = select(ENDPOINT.c.eid).where(ENDPOINT.c.endpoint == bindparam("k_endpoint"))
_ENDPOINTS = select(ENDPOINT.c.eid, ENDPOINT.c.endpoint)
_ENDPOINTS_OF = _ENDPOINTS.where(ENDPOINT.c.eid.in_(bindparam("k_eids", expanding=True)))
_IPA_DATA = select(IPA_DATA.c.der).where(IPA_DATA.c.eid == bindparam("k_eid"))


def _association(row: Row[Any]) -> AssociationRecord:
    return AssociationRecord(
        eid=row.eid,
        eim_id=row.eim_id,
        counter_value=row.counter_value,
        association_token=row.association_token,
        source=row.source,
        confirmed_at=row.confirmed_at,
        deleted_at=row.deleted_at,
    )


def _euicc(row: Row[Any]) -> EuiccRecord:
    return EuiccRecord(
        eid=row.eid,
        eim_id=row.eim_id,
        euicc_certificate=bytes(row.euicc_certificate),
        eum_certificate=bytes(row.eum_certificate),
        association_token=row.association_token,
        counter_value=row.counter_value,
        registered_at=row.registered_at,
        tenant=row.tenant,
    )


def _package(row: Row[Any]) -> PackageRecord:
    return PackageRecord(
        eid=row.eid,
        counter_value=row.counter_value,
        transaction_id=bytes(row.transaction_id),
        eim_id=row.eim_id,
        operations=tuple(json.loads(row.operations)),
        request_der=bytes(row.request_der),
        state=PackageState(row.state),
        created_at=row.created_at,
        actor=row.actor,
        delivered_at=row.delivered_at,
        result_at=row.result_at,
        result=json.loads(row.result) if row.result is not None else None,
    )


def _package_values(p: PackageRecord) -> dict[str, Any]:
    return {
        "eid": p.eid,
        "counter_value": p.counter_value,
        "transaction_id": p.transaction_id,
        "eim_id": p.eim_id,
        "operations": json.dumps(list(p.operations)),
        "request_der": p.request_der,
        "state": p.state.value,
        "created_at": p.created_at,
        "actor": p.actor,
        "delivered_at": p.delivered_at,
        "result_at": p.result_at,
        "result": json.dumps(p.result) if p.result is not None else None,
    }


class SqlLedger:
    """The `Ledger` of one store transaction; audit records go to the store's one audit log."""

    def __init__(self, tx: Tx, audit_log: AuditLog) -> None:
        self._tx = tx
        self._audit = audit_log

    def euicc(self, eid: str) -> EuiccRecord | None:
        row = self._tx.execute(_EUICC_BY_EID, {"k_eid": eid}).one_or_none()
        return _euicc(row) if row is not None else None

    def euicc_polled(self, eid: str) -> tuple[EuiccRecord | None, bool]:
        row = self._tx.execute(_EUICC_POLLED, {"k_eid": eid}).one_or_none()
        return (_euicc(row), bool(row.has_open)) if row is not None else (None, False)

    def lock_euicc(self, eid: str) -> EuiccRecord | None:
        """``SELECT ... FOR UPDATE OF eim_euicc`` on PostgreSQL; SQLite has one writer."""
        query = _EUICC_LOCKED if self._tx.dialect == "postgresql" else _EUICC_BY_EID
        row = self._tx.execute(query, {"k_eid": eid}).one_or_none()
        return _euicc(row) if row is not None else None

    def euiccs(
        self,
        tenant: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
        tenants: frozenset[str] | None = None,
        eim_id: str | None = None,
    ) -> list[EuiccRecord]:
        """By EID; `after`/`limit` page through them, `tenants` keeps only those tenants',
        `eim_id` only the eUICCs bound to that eIM."""
        query = _EUICC_BOUND.order_by(_E.eid)
        if eim_id is not None:
            query = query.where(_E.eim_id == eim_id)
        if tenant is not None:
            query = query.where(_E.tenant == tenant)
        if tenants is not None:
            query = query.where(_E.tenant.in_(sorted(tenants)))
        if after is not None:
            query = query.where(_E.eid > after)
        if limit is not None:
            query = query.limit(limit)
        return [_euicc(r) for r in self._tx.execute(query)]

    def add_euicc(self, record: EuiccRecord) -> None:
        self._tx.execute(
            insert(EUICC).values(
                eid=record.eid,
                eim_id=record.eim_id,
                euicc_certificate=record.euicc_certificate,
                eum_certificate=record.eum_certificate,
                association_token=record.association_token,
                counter_value=record.counter_value,
                registered_at=record.registered_at,
                tenant=record.tenant,
            )
        )
        self.put_association(
            AssociationRecord(
                record.eid,
                record.eim_id,
                record.counter_value,
                record.association_token,
                "import",
                record.registered_at,
            )
        )

    # ---- associations: counter and token per (EID, eimId) ---------------------------------

    def association(self, eid: str, eim_id: str) -> AssociationRecord | None:
        row = self._tx.execute(_ASSOCIATION_ONE, {"k_eid": eid, "k_eim_id": eim_id}).one_or_none()
        return _association(row) if row is not None else None

    def associations(self, eid: str) -> list[AssociationRecord]:
        rows = self._tx.execute(select(ASSOCIATION).where(_A.eid == eid).order_by(_A.eim_id))
        return [_association(r) for r in rows]

    def put_association(self, record: AssociationRecord) -> None:
        """The counter is raised in the UPDATE itself (never lowered), so a concurrent
        increment from another process is never overwritten by a value read before it."""
        values = {
            "counter_value": case(
                (_A.counter_value < record.counter_value, record.counter_value),
                else_=_A.counter_value,
            ),
            "association_token": record.association_token,
            "source": record.source,
            "confirmed_at": record.confirmed_at,
            "deleted_at": record.deleted_at,
        }
        changed = self._tx.execute(
            update(ASSOCIATION)
            .where(_A.eid == record.eid, _A.eim_id == record.eim_id)
            .values(**values)
        ).rowcount
        if not changed:
            values["counter_value"] = record.counter_value
            self._tx.execute(
                insert(ASSOCIATION).values(eid=record.eid, eim_id=record.eim_id, **values)
            )

    def bind(self, eid: str, eim_id: str) -> None:
        self._tx.execute(update(EUICC).where(_E.eid == eid).values(eim_id=eim_id))

    def top_counter(self, eid: str) -> int:
        top = self._tx.execute(
            select(func.max(_P.counter_value)).where(_P.eid == eid)
        ).scalar_one_or_none()
        return int(top or 0)

    # ---- the device each eUICC is in (for the lifecycle's esim dimension) -------------------

    def link_endpoint(self, eid: str, endpoint: str) -> None:
        """Record that `endpoint` (an LwM2M device) carries the eUICC `eid`, replacing an
        earlier link of either; refused (`EuiccConflict`) for an unregistered EID."""
        if self.euicc(eid) is None:
            raise UnknownEuicc(f"EID {eid} is not registered with the eIM; import it first")
        self._tx.execute(delete(ENDPOINT).where(ENDPOINT.c.endpoint == endpoint))
        self._tx.execute(delete(ENDPOINT).where(ENDPOINT.c.eid == eid))
        self._tx.execute(insert(ENDPOINT).values(eid=eid, endpoint=endpoint))

    def endpoints(self, eids: Sequence[str] | None = None) -> dict[str, str]:
        """EID -> endpoint of the linked eUICCs (all, or those of `eids`)."""
        if eids is None:
            rows = self._tx.execute(_ENDPOINTS)
        else:
            rows = self._tx.execute(_ENDPOINTS_OF, {"k_eids": list(eids)})
        return {str(r.eid): str(r.endpoint) for r in rows}

    def eid_of(self, endpoint: str) -> str | None:
        """The EID of the eUICC linked to `endpoint`, if any."""
        found = self._tx.execute(_EID_OF, {"k_endpoint": endpoint}).scalar_one_or_none()
        return str(found) if found is not None else None

    def open_packages(self, eid: str) -> list[PackageRecord]:
        """The queued or delivered (unanswered) packages of `eid`, oldest first."""
        rows = self._tx.execute(_OPEN_PACKAGES, {"k_eid": eid})
        return [_package(r) for r in rows]

    def open_download_trigger(self, transaction_id: bytes) -> PackageRecord | None:
        """The delivered, unanswered ProfileDownloadTrigger with this eimTransactionId (the
        IPA names it in InitiateAuthentication; it carries no EID)."""
        rows = self._tx.execute(
            select(PACKAGE).where(
                _P.transaction_id == transaction_id,
                _P.state.in_([s.value for s in OPEN_STATES]),
            )
        )
        for row in rows:
            package = _package(row)
            if package.operations and package.operations[0].get("op") == DOWNLOAD_TRIGGER:
                return package
        return None

    def eim_counts(self, tenants: frozenset[str] | None = None) -> dict[str, int]:
        """eimId -> how many eUICCs are bound to it."""
        count = func.count().label("n")
        query = select(_E.eim_id, count).group_by(_E.eim_id)
        if tenants is not None:
            query = query.where(_E.tenant.in_(sorted(tenants)))
        return {str(r.eim_id): int(r.n) for r in self._tx.execute(query)}

    def open_counts(self) -> dict[str, int]:
        """EID -> how many packages wait in its queue (for listings)."""
        count = func.count().label("n")
        rows = self._tx.execute(
            select(_P.eid, count)
            .where(_P.state.in_([s.value for s in OPEN_STATES]))
            .group_by(_P.eid)
        )
        return {str(r.eid): int(r.n) for r in rows}

    def enabled_profiles(self) -> dict[str, str]:
        """EID -> ICCID of its enabled (or enabled, pending confirmation) profile."""
        rows = self._tx.execute(
            select(_F.eid, _F.iccid).where(
                _F.state.in_([ProfileState.ENABLED.value, ProfileState.PENDING.value])
            )
        )
        return {str(r.eid): str(r.iccid) for r in rows}

    def next_counter(self, eid: str, eim_id: str) -> int:
        """One UPDATE ... RETURNING: the row lock serialises concurrent queues of one EID."""
        new: int = self._tx.execute(_NEXT_COUNTER, {"k_eid": eid, "k_eim_id": eim_id}).scalar_one()
        return new

    def add_package(self, package: PackageRecord) -> None:
        self._tx.execute(insert(PACKAGE), _package_values(package))

    def next_package(self, eid: str) -> PackageRecord | None:
        row = self._tx.execute(_NEXT_PACKAGE, {"k_eid": eid}).one_or_none()
        return _package(row) if row is not None else None

    def package(self, eid: str, transaction_id: bytes) -> PackageRecord | None:
        row = self._tx.execute(
            _PACKAGE_BY_TID, {"k_eid": eid, "k_tid": transaction_id}
        ).one_or_none()
        return _package(row) if row is not None else None

    def packages(self, eid: str) -> list[PackageRecord]:
        rows = self._tx.execute(_PACKAGES, {"k_eid": eid})
        return [_package(r) for r in rows]

    def update_package(self, package: PackageRecord) -> None:
        values = _package_values(package)
        params = {f"v_{name}": values[name] for name in _PACKAGE_FIELDS}
        params.update(k_eid=package.eid, k_counter=package.counter_value)
        self._tx.execute(_UPDATE_PACKAGE, params)

    def add_result(self, result: ResultRecord) -> None:
        self._tx.execute(
            insert(RESULT),
            {
                "eid": result.eid,
                "received_at": result.received_at,
                "outcome": result.outcome,
                "transaction_id": result.transaction_id,
                "counter_value": result.counter_value,
                "der": result.der,
                "detail": json.dumps(result.detail),
            },
        )

    def results(self, eid: str) -> list[ResultRecord]:
        rows = self._tx.execute(select(RESULT).where(_R.eid == eid).order_by(_R.id))
        return [
            ResultRecord(
                r.eid,
                r.received_at,
                r.outcome,
                bytes(r.transaction_id) if r.transaction_id is not None else None,
                r.counter_value,
                bytes(r.der),
                json.loads(r.detail),
            )
            for r in rows
        ]

    def profiles(self, eid: str) -> list[ProfileRecord]:
        rows = self._tx.execute(_PROFILES, {"k_eid": eid})
        return [
            ProfileRecord(
                r.eid, r.iccid, ProfileState(r.state), r.fallback, r.updated_at, r.carrier, r.note
            )
            for r in rows
        ]

    def replace_profiles(self, eid: str, profiles: Sequence[ProfileRecord]) -> None:
        self._tx.execute(_DELETE_PROFILES, {"k_eid": eid})
        if profiles:
            self._tx.execute(
                insert(PROFILE),
                [
                    {
                        "eid": eid,
                        "iccid": p.iccid,
                        "state": p.state.value,
                        "fallback": p.fallback,
                        "updated_at": p.updated_at,
                        "carrier": p.carrier,
                        "note": p.note,
                    }
                    for p in profiles
                ],
            )

    def ipa_data(self, eid: str) -> bytes | None:
        der = self._tx.execute(_IPA_DATA, {"k_eid": eid}).scalar_one_or_none()
        return bytes(der) if der is not None else None

    def set_ipa_data(self, eid: str, der: bytes, now: float) -> None:
        self._tx.execute(delete(IPA_DATA).where(IPA_DATA.c.eid == eid))
        self._tx.execute(insert(IPA_DATA).values(eid=eid, der=der, received_at=now))

    def audit(
        self,
        *,
        actor: str,
        action: str,
        eid: str,
        now: float,
        detail: Mapping[str, Any],
        outcome: str = "ok",
        tenant: str | None = None,
    ) -> None:
        self._audit.append(
            self._tx,
            actor=actor,
            action=action,
            subject=f"eid:{eid}",
            now=now,
            tenant=tenant,
            detail=detail,
            outcome=outcome,
        )


class ImportRefused(Sgp32Error):
    """One eUICC of an import batch was refused; nothing of the batch was written."""

    def __init__(self, index: int, cause: Sgp32Error) -> None:
        super().__init__(f"euiccs[{index}]: {cause}")
        self.index = index
        self.cause = cause


class EimStore:
    """The eIM core on the store: every call is one committed transaction."""

    def __init__(self, store: Store, eim: Eim) -> None:
        self.store = store
        self.eim = eim

    def ledger(self, tx: Tx) -> SqlLedger:
        return SqlLedger(tx, self.store.audit)

    async def handle(self, data: bytes, now: float) -> Exchange:
        """One ESipa exchange; returns after COMMIT. Garbage raises `CodecError` unwritten."""
        # decoded once, here: garbage is refused before it takes a place in a group commit,
        # and neither the read nor the write decodes it again (it is only read from)
        message = decode_from_ipa(data)
        quiet = await self.store.read(
            lambda tx: self.eim.quiet_poll(self.ledger(tx), data, message=message)
        )
        if quiet is not None:
            return quiet  # a poll that found nothing: answered from a read
        return await self.store.write(
            lambda tx: self.eim.handle(self.ledger(tx), data, now, message=message)
        )

    async def queue(
        self, eid: str, operations: Sequence[Psmo | Eco], *, now: float, actor: str
    ) -> PackageRecord:
        return await self.store.write(
            lambda tx: self.eim.queue(self.ledger(tx), eid, operations, now=now, actor=actor)
        )

    async def push_next(self, eid: str, now: float) -> bytes | None:
        """`Eim.push_next` in one committed transaction (delivered before it is sent)."""
        return await self.store.write(lambda tx: self.eim.push_next(self.ledger(tx), eid, now))

    async def queue_download(
        self, eid: str, activation_code: str, *, now: float, actor: str
    ) -> PackageRecord:
        return await self.store.write(
            lambda tx: self.eim.queue_download(
                self.ledger(tx), eid, activation_code, now=now, actor=actor
            )
        )

    async def move(
        self, eid: str, eim_id: str, *, now: float, actor: str, delete_old: bool = False
    ) -> tuple[EuiccRecord, PackageRecord | None]:
        """`Eim.move_euicc` in one committed transaction (the deleteEim with it, if asked)."""
        return await self.store.write(
            lambda tx: self.eim.move_euicc(
                self.ledger(tx), eid, eim_id, now=now, actor=actor, delete_old=delete_old
            )
        )

    async def register(
        self,
        *,
        euicc_certificate: bytes,
        eum_certificate: bytes,
        now: float,
        actor: str,
        tenant: str | None = None,
        endpoint: str | None = None,
        eid: str | None = None,
    ) -> EuiccRecord:
        return (
            await self.register_many(
                [(euicc_certificate, eum_certificate, eid, endpoint)],
                now=now,
                actor=actor,
                tenant=tenant,
            )
        )[0]

    async def register_many(
        self,
        chains: Sequence[tuple[bytes, bytes, str | None, str | None]],
        *,
        now: float,
        actor: str,
        tenant: str | None = None,
        eim_id: str | None = None,
    ) -> list[EuiccRecord]:
        """Import eUICCs - (eUICC certificate, EUM certificate, expected EID or None, endpoint
        or None) each - in ONE transaction: a chain that does not verify refuses the batch
        (`ImportRefused` names its index), so an import is all or nothing."""

        def write(tx: Tx) -> list[EuiccRecord]:
            ledger = self.ledger(tx)
            out = []
            for index, (euicc_der, eum_der, eid, endpoint) in enumerate(chains):
                try:
                    record = self.eim.register_euicc(
                        ledger,
                        euicc_certificate=euicc_der,
                        eum_certificate=eum_der,
                        eid=eid,
                        now=now,
                        actor=actor,
                        tenant=tenant,
                        eim_id=eim_id,
                    )
                    if endpoint is not None:
                        ledger.link_endpoint(record.eid, endpoint)
                except Sgp32Error as exc:
                    raise ImportRefused(index, exc) from exc
                out.append(record)
            return out

        return await self.store.write(write)
