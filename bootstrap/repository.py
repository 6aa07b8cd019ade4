"""Repositories of the bootstrap tables, on the DM store's transactions.

Same contract as :mod:`lwm2m.store`'s repositories: methods take the store's ``Tx`` first, are
synchronous, check before they write (so a refused write fails alone in a group commit) and
return frozen dataclasses. Compose several calls in one ``store.write(op)`` to make them one
atomic unit -- an import, a revocation and its audit record, the DM credentials and the
"finished" state of a bootstrap.

:func:`create_schema` creates the ``bs_*`` tables and records the layer's schema version in the
store's ``schema_version`` table (component ``bootstrap``), after ``Store.create_schema``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Row, delete, func, inspect, or_, select, text

from bootstrap.audit import migrate_legacy_chain
from bootstrap.ca import IssuedCertificate, Revocation
from bootstrap.errors import IdentityConflict, UnknownIdentity, UnknownPolicy
from bootstrap.identities import (
    BootstrapCredential,
    FactoryIdentity,
    IdentityStatus,
    SecurityMode,
)
from bootstrap.policy import Policy
from bootstrap.state import BootstrapState, Phase
from bootstrap.tables import (
    CERTIFICATE,
    IDENTITY,
    LEGACY_AUDIT,
    METADATA,
    POLICY,
    SCHEMA_COMPONENT,
    SCHEMA_VERSION,
    STATE,
)
from lwm2m.store import Page, SchemaMismatch, Store, Tx
from lwm2m.store.secrets import SealedColumn, register, seal, unseal
from lwm2m.store.tables import SCHEMA_VERSION_TABLE

_I = IDENTITY.c
_C = CERTIFICATE.c
_P = POLICY.c
_S = STATE.c
_LOCK_KEY = 0x6273_7363_6865  # pg_advisory_xact_lock key: concurrent create_schema queue up


def create_schema(store: Store, now: float | None = None) -> None:
    """Create the bootstrap tables (idempotent) and upgrade an older layout in place.

    v1 -> v2 moves the ``bs_audit`` chain into the store's one audit log (order and content
    kept, then a record of the migration) and drops ``bs_audit``, in one transaction: a
    failed migration leaves the v1 database as it was. Run after ``Store.create_schema``.
    """
    stamp = time.time() if now is None else now
    v = SCHEMA_VERSION_TABLE.c
    with store.transaction() as tx:
        if tx.dialect == "postgresql":
            tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        METADATA.create_all(tx._conn)
        found = tx.execute(
            select(v.version).where(v.component == SCHEMA_COMPONENT)
        ).scalar_one_or_none()
        if found is None:
            tx.execute(
                SCHEMA_VERSION_TABLE.insert(),
                {"component": SCHEMA_COMPONENT, "version": SCHEMA_VERSION, "updated_at": stamp},
            )
        elif found == 1 and SCHEMA_VERSION == 2:
            if inspect(tx._conn).has_table(LEGACY_AUDIT.name):
                migrate_legacy_chain(tx, store.audit, now=stamp)
                LEGACY_AUDIT.drop(tx._conn)
            tx.execute(
                SCHEMA_VERSION_TABLE.update()
                .where(v.component == SCHEMA_COMPONENT)
                .values(version=SCHEMA_VERSION, updated_at=stamp)
            )
        elif found != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"database {store.url} has bootstrap schema v{found}; this fleetloop has "
                f"v{SCHEMA_VERSION} and no migration between them"
            )


# -- identities ---------------------------------------------------------------------------------

_UNIQUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("endpoint", "endpoint"),
    ("serial", "serial"),
    ("imei", "imei"),
    ("eid", "eid"),
    ("psk_identity", "psk_identity"),
    ("cert_fingerprint", "certificate"),
)


def _identity_row(identity: FactoryIdentity) -> dict[str, Any]:
    cred = identity.credential
    return {
        "endpoint": identity.endpoint,
        "serial": identity.serial,
        "hardware_id": identity.hardware_id,
        "imei": identity.imei,
        "eid": identity.eid,
        "sku": identity.sku,
        "tenant": identity.tenant,
        "region": identity.region,
        "policy_group": identity.policy_group,
        "security_mode": str(cred.mode),
        "psk_identity": cred.psk_identity,
        "psk_key": cred.psk_key,
        "cert_fingerprint": cred.certificate_fingerprint,
        "cert_serial": cred.certificate_serial,
        "status": str(identity.status),
        "created_at": identity.created_at,
        "updated_at": identity.updated_at,
        "revoked_at": identity.revoked_at,
        "revoked_reason": identity.revoked_reason,
        "import_batch": identity.import_batch,
    }


def psk_key_context(endpoint: str) -> str:
    """The associated data sealing an identity's PSK (:mod:`lwm2m.store.secrets`)."""
    return f"bs_identity/{endpoint}/psk_key"


register(SealedColumn(IDENTITY, "psk_key", ("endpoint",), psk_key_context))


def _sealed_identity_row(tx: Tx, identity: FactoryIdentity) -> dict[str, Any]:
    row = _identity_row(identity)
    row["psk_key"] = seal(tx, row["psk_key"], psk_key_context(identity.endpoint))
    return row


def _identity_from_row(row: Row[Any], tx: Tx) -> FactoryIdentity:
    m = row._mapping
    mode = SecurityMode(m["security_mode"])
    cred = BootstrapCredential(
        mode,
        psk_identity=m["psk_identity"],
        psk_key=unseal(tx, m["psk_key"], psk_key_context(m["endpoint"])),
        certificate_fingerprint=m["cert_fingerprint"],
        certificate_serial=m["cert_serial"],
    )
    return FactoryIdentity(
        endpoint=m["endpoint"],
        credential=cred,
        serial=m["serial"],
        hardware_id=m["hardware_id"],
        imei=m["imei"],
        eid=m["eid"],
        sku=m["sku"],
        tenant=m["tenant"],
        region=m["region"],
        policy_group=m["policy_group"],
        status=IdentityStatus(m["status"]),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
        revoked_at=None if m["revoked_at"] is None else float(m["revoked_at"]),
        revoked_reason=m["revoked_reason"],
        import_batch=m["import_batch"],
    )


class IdentityRepository:
    """Factory identities."""

    def conflicts(
        self, tx: Tx, identities: Sequence[FactoryIdentity]
    ) -> dict[str, tuple[str, str]]:
        """For each identity clashing with a stored one: ``endpoint -> (field, other)``.

        Checks every unique column in a few ``IN`` queries (chunked), not one query per row,
        so validating a 10 000-row import costs milliseconds.
        """
        found: dict[str, tuple[str, str]] = {}
        for column, field_name in _UNIQUE_FIELDS:
            wanted: dict[str, str] = {}
            for identity in identities:
                value = _identity_row(identity)[column]
                if value is not None:
                    wanted[value] = identity.endpoint
            values = list(wanted)
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                rows = tx.execute(
                    select(_I.endpoint, IDENTITY.c[column]).where(IDENTITY.c[column].in_(chunk))
                )
                for owner, value in map(tuple, rows):
                    found.setdefault(wanted[value], (field_name, str(owner)))
        return found

    def add_many(self, tx: Tx, identities: Sequence[FactoryIdentity]) -> None:
        """Insert identities; raise :class:`IdentityConflict` (before writing) on any clash."""
        clashes = self.conflicts(tx, identities)
        if clashes:
            endpoint, (field_name, other) = next(iter(clashes.items()))
            raise IdentityConflict(
                f"{endpoint}: {field_name} already belongs to identity {other!r} "
                f"({len(clashes)} conflicting identities)"
            )
        if identities:
            tx.execute(IDENTITY.insert(), [_sealed_identity_row(tx, i) for i in identities])

    def get(self, tx: Tx, endpoint: str) -> FactoryIdentity | None:
        row = tx.execute(select(IDENTITY).where(_I.endpoint == endpoint)).first()
        return None if row is None else _identity_from_row(row, tx)

    def require(self, tx: Tx, endpoint: str) -> FactoryIdentity:
        found = self.get(tx, endpoint)
        if found is None:
            raise UnknownIdentity(f"no factory identity {endpoint!r}")
        return found

    def find(self, tx: Tx, text_value: str) -> FactoryIdentity | None:
        """By endpoint, serial, IMEI, EID or PSK identity (what an operator has at hand)."""
        row = tx.execute(
            select(IDENTITY).where(
                or_(
                    _I.endpoint == text_value,
                    _I.serial == text_value,
                    _I.imei == text_value,
                    _I.eid == text_value,
                    _I.psk_identity == text_value,
                )
            )
        ).first()
        return None if row is None else _identity_from_row(row, tx)

    def by_psk_identity(self, tx: Tx, identity: str) -> FactoryIdentity | None:
        row = tx.execute(select(IDENTITY).where(_I.psk_identity == identity)).first()
        return None if row is None else _identity_from_row(row, tx)

    def list_page(
        self,
        tx: Tx,
        *,
        after: str | None = None,
        limit: int = 100,
        tenant: str | None = None,
        region: str | None = None,
        sku: str | None = None,
        policy_group: str | None = None,
        status: IdentityStatus | None = None,
        import_batch: str | None = None,
    ) -> Page[FactoryIdentity]:
        """Identities in endpoint order, filtered; keyset paging like the store's."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        query = select(IDENTITY).order_by(_I.endpoint).limit(limit + 1)
        if after is not None:
            query = query.where(_I.endpoint > after)
        for column, value in (
            (_I.tenant, tenant),
            (_I.region, region),
            (_I.sku, sku),
            (_I.policy_group, policy_group),
            (_I.import_batch, import_batch),
        ):
            if value is not None:
                query = query.where(column == value)
        if status is not None:
            query = query.where(_I.status == str(status))
        rows = [_identity_from_row(r, tx) for r in tx.execute(query)]
        items = tuple(rows[:limit])
        return Page(items, items[-1].endpoint if len(rows) > limit else None)

    def count(self, tx: Tx) -> int:
        return int(tx.execute(select(func.count()).select_from(IDENTITY)).scalar_one())

    def revoke(self, tx: Tx, endpoint: str, reason: str, now: float) -> FactoryIdentity:
        """Mark revoked (kept, never deleted: its serial/IMEI must not be re-imported silently)."""
        current = self.require(tx, endpoint)
        if current.status is IdentityStatus.REVOKED:
            return current
        tx.execute(
            IDENTITY.update()
            .where(_I.endpoint == endpoint)
            .values(
                status=str(IdentityStatus.REVOKED),
                revoked_at=now,
                revoked_reason=reason,
                updated_at=now,
            )
        )
        return replace(
            current,
            status=IdentityStatus.REVOKED,
            revoked_at=now,
            revoked_reason=reason,
            updated_at=now,
        )

    def update_attributes(
        self, tx: Tx, endpoint: str, changes: dict[str, str | None], now: float
    ) -> tuple[FactoryIdentity, FactoryIdentity]:
        """Change tenant/region/sku/policy_group (e.g. to move a device); ``(old, new)``."""
        current = self.require(tx, endpoint)
        updated = replace(current.with_attributes(**changes), updated_at=now)
        values = {k: getattr(updated, k) for k in changes}
        tx.execute(
            IDENTITY.update().where(_I.endpoint == endpoint).values(updated_at=now, **values)
        )
        return current, updated

    def all_psk(self, tx: Tx) -> list[tuple[str, bytes]]:
        """``(psk identity, key)`` of every active PSK identity (the handshake cache)."""
        rows = tx.execute(
            select(_I.endpoint, _I.psk_identity, _I.psk_key).where(
                _I.psk_identity.is_not(None), _I.status == str(IdentityStatus.ACTIVE)
            )
        )
        found = []
        for endpoint, identity, sealed in map(tuple, rows):
            key = unseal(tx, sealed, psk_key_context(endpoint))
            if key is not None:
                found.append((str(identity), key))
        return found


# -- certificates -------------------------------------------------------------------------------


class CertificateRepository:
    """Certificates the CA issued (public part) and their revocation."""

    def record(self, tx: Tx, issued: IssuedCertificate, now: float) -> None:
        tx.execute(
            CERTIFICATE.insert(),
            {
                "serial": issued.serial,
                "kind": issued.kind,
                "endpoint": issued.endpoint,
                "subject": issued.subject,
                "fingerprint": issued.fingerprint,
                "not_before": issued.not_before,
                "not_after": issued.not_after,
                "issued_at": now,
                "pem": issued.pem.decode("ascii"),
            },
        )

    def get(self, tx: Tx, serial: str) -> dict[str, Any] | None:
        row = tx.execute(select(CERTIFICATE).where(_C.serial == serial.lower())).first()
        return None if row is None else dict(row._mapping)

    def by_fingerprint(self, tx: Tx, fingerprint: str) -> dict[str, Any] | None:
        row = tx.execute(select(CERTIFICATE).where(_C.fingerprint == fingerprint)).first()
        return None if row is None else dict(row._mapping)

    def for_endpoint(self, tx: Tx, endpoint: str) -> list[dict[str, Any]]:
        rows = tx.execute(select(CERTIFICATE).where(_C.endpoint == endpoint).order_by(_C.issued_at))
        return [dict(r._mapping) for r in rows]

    def revoke(self, tx: Tx, serial: str, reason: str, now: float) -> bool:
        """Revoke one certificate; False if it was already revoked. Unknown: ``UnknownIdentity``."""
        current = self.get(tx, serial)
        if current is None:
            raise UnknownIdentity(f"no certificate with serial {serial}")
        if current["revoked_at"] is not None:
            return False
        tx.execute(
            CERTIFICATE.update()
            .where(_C.serial == serial.lower())
            .values(revoked_at=now, revocation_reason=reason)
        )
        return True

    def revoke_endpoint(self, tx: Tx, endpoint: str, reason: str, now: float) -> list[str]:
        """Revoke every live certificate of ``endpoint``; returns their serials."""
        serials = [
            str(r[0])
            for r in tx.execute(
                select(_C.serial).where(_C.endpoint == endpoint, _C.revoked_at.is_(None))
            )
        ]
        if serials:
            tx.execute(
                CERTIFICATE.update()
                .where(_C.serial.in_(serials))
                .values(revoked_at=now, revocation_reason=reason)
            )
        return serials

    def revocations(self, tx: Tx) -> list[Revocation]:
        rows = tx.execute(
            select(_C.serial, _C.revoked_at, _C.revocation_reason)
            .where(_C.revoked_at.is_not(None))
            .order_by(_C.revoked_at)
        )
        return [Revocation(str(s), float(at), why) for s, at, why in map(tuple, rows)]

    def is_revoked(self, tx: Tx, fingerprint: str) -> bool:
        found = self.by_fingerprint(tx, fingerprint)
        return found is not None and found["revoked_at"] is not None


# -- policies -----------------------------------------------------------------------------------


def _policy_from_row(row: Row[Any]) -> Policy:
    m = row._mapping
    policy = Policy.from_json(m["body"], name=m["name"])
    return policy.with_version(int(m["version"]), float(m["created_at"]), m["author"], m["comment"])


class PolicyRepository:
    """Policy versions: append-only; the newest non-retired version of a name is in force."""

    def add_version(
        self, tx: Tx, policy: Policy, *, author: str, comment: str, now: float
    ) -> tuple[Policy, bool]:
        """Store ``policy`` as the next version of its name; ``(stored, changed)``.

        An identical document to the newest version adds nothing (``changed`` False), so
        re-applying a policy file is idempotent.
        """
        latest = self.latest(tx, policy.name, include_retired=True)
        body = policy.canonical()
        if latest is not None and not self._retired(tx, latest) and latest.canonical() == body:
            return latest, False
        version = 1 if latest is None else latest.version + 1
        tx.execute(
            POLICY.insert(),
            {
                "name": policy.name,
                "version": version,
                "body": body,
                "digest": hashlib.sha256(body.encode()).hexdigest(),
                "retired": False,
                "created_at": now,
                "author": author,
                "comment": comment,
            },
        )
        return policy.with_version(version, now, author, comment), True

    def retire(self, tx: Tx, name: str, *, author: str, comment: str, now: float) -> Policy:
        """Add a retiring version (a copy of the newest, marked retired)."""
        latest = self.latest(tx, name, include_retired=True)
        if latest is None or self._retired(tx, latest):
            raise UnknownPolicy(f"no policy {name!r} in force")
        body = latest.canonical()
        version = latest.version + 1
        tx.execute(
            POLICY.insert(),
            {
                "name": name,
                "version": version,
                "body": body,
                "digest": hashlib.sha256(body.encode()).hexdigest(),
                "retired": True,
                "created_at": now,
                "author": author,
                "comment": comment,
            },
        )
        return latest.with_version(version, now, author, comment)

    def _retired(self, tx: Tx, policy: Policy) -> bool:
        return bool(
            tx.execute(
                select(_P.retired).where(_P.name == policy.name, _P.version == policy.version)
            ).scalar_one()
        )

    def latest(self, tx: Tx, name: str, *, include_retired: bool = False) -> Policy | None:
        row = tx.execute(
            select(POLICY).where(_P.name == name).order_by(_P.version.desc()).limit(1)
        ).first()
        if row is None or (row._mapping["retired"] and not include_retired):
            return None
        return _policy_from_row(row)

    def get(self, tx: Tx, name: str, version: int | None = None) -> Policy:
        if version is None:
            found = self.latest(tx, name)
            if found is None:
                raise UnknownPolicy(f"no policy {name!r} in force")
            return found
        row = tx.execute(select(POLICY).where(_P.name == name, _P.version == version)).first()
        if row is None:
            raise UnknownPolicy(f"policy {name!r} has no version {version}")
        return _policy_from_row(row)

    def versions(self, tx: Tx, name: str) -> list[dict[str, Any]]:
        rows = tx.execute(
            select(_P.version, _P.digest, _P.retired, _P.created_at, _P.author, _P.comment)
            .where(_P.name == name)
            .order_by(_P.version)
        )
        return [dict(r._mapping) for r in rows]

    def active(self, tx: Tx) -> list[Policy]:
        """The policy in force for every name (newest version, unless it retires the name)."""
        newest = select(_P.name, func.max(_P.version).label("version")).group_by(_P.name).subquery()
        rows = tx.execute(
            select(POLICY)
            .join(newest, (POLICY.c.name == newest.c.name) & (POLICY.c.version == newest.c.version))
            .where(_P.retired.is_(False))
            .order_by(_P.name)
        )
        return [_policy_from_row(r) for r in rows]


# -- bootstrap state ----------------------------------------------------------------------------


def _state_from_row(row: Row[Any]) -> BootstrapState:
    m = row._mapping
    return BootstrapState(
        endpoint=m["endpoint"],
        phase=Phase(m["state"]),
        step=m["step"],
        detail=m["detail"],
        attempts=int(m["attempts"]),
        completed=int(m["completed"]),
        policy_name=m["policy_name"],
        policy_version=m["policy_version"],
        lwm2m_version=m["lwm2m_version"],
        content_format=m["content_format"],
        transport=m["transport"],
        peer=m["peer"],
        dm_uris=tuple(json.loads(m["dm_uris"])),
        server_iids=tuple(json.loads(m["server_iids"])),
        device_report=m["device_report"],
        started_at=m["started_at"],
        updated_at=float(m["updated_at"]),
        finished_at=m["finished_at"],
        rebootstrap_requested_at=m["rebootstrap_requested_at"],
    )


def _state_row(state: BootstrapState) -> dict[str, Any]:
    return {
        "endpoint": state.endpoint,
        "state": str(state.phase),
        "step": state.step,
        "detail": state.detail,
        "attempts": state.attempts,
        "completed": state.completed,
        "policy_name": state.policy_name,
        "policy_version": state.policy_version,
        "lwm2m_version": state.lwm2m_version,
        "content_format": state.content_format,
        "transport": state.transport,
        "peer": state.peer,
        "dm_uris": json.dumps(list(state.dm_uris)),
        "server_iids": json.dumps(list(state.server_iids)),
        "device_report": state.device_report,
        "started_at": state.started_at,
        "updated_at": state.updated_at,
        "finished_at": state.finished_at,
        "rebootstrap_requested_at": state.rebootstrap_requested_at,
    }


class StateRepository:
    """Per-device bootstrap state (one row per endpoint, overwritten as it progresses)."""

    def get(self, tx: Tx, endpoint: str) -> BootstrapState | None:
        row = tx.execute(select(STATE).where(_S.endpoint == endpoint)).first()
        return None if row is None else _state_from_row(row)

    def put(self, tx: Tx, state: BootstrapState) -> None:
        exists = tx.execute(select(_S.endpoint).where(_S.endpoint == state.endpoint)).first()
        row = _state_row(state)
        if exists is None:
            tx.execute(STATE.insert(), row)
        else:
            tx.execute(STATE.update().where(_S.endpoint == state.endpoint), row)

    def list(
        self, tx: Tx, *, phase: Phase | None = None, limit: int = 1000
    ) -> list[BootstrapState]:
        query = select(STATE).order_by(_S.endpoint).limit(limit)
        if phase is not None:
            query = query.where(_S.state == str(phase))
        return [_state_from_row(r) for r in tx.execute(query)]

    def remove(self, tx: Tx, endpoints: Iterable[str]) -> None:
        tx.execute(delete(STATE).where(_S.endpoint.in_(list(endpoints))))


__all__ = [
    "CertificateRepository",
    "IdentityRepository",
    "PolicyRepository",
    "StateRepository",
    "create_schema",
]
