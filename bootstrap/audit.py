"""The bootstrap layer's view of the one audit log (:mod:`lwm2m.store.audit`).

Bootstrap used to keep its own hash-chained trail (table ``bs_audit``). There is now one log
for the whole system, in the store layer, Merkle-tree verified and checkpoint-signed; this
module keeps the old surface (``append``, ``list``, ``head``, ``verify``) as a thin adapter so
the rest of the layer writes the one log unchanged, and adds what bootstrap knows that the
store does not: which records are about a device (``identity.*`` and ``bootstrap.*`` actions
name an endpoint as their subject) and that device's tenant (so tenant-scoped operators see
them), and an outcome for refusals and failures.

:func:`migrate_legacy_chain` moves a v1 database's ``bs_audit`` rows into the one log
(``bootstrap.repository.create_schema`` runs it); :func:`record_hash` / :func:`verify_chain`
remain to check the old chain once, during that migration.

Secrets never enter a record: details carry PSK identities and key *fingerprints*
(``lwm2m.store.secrets.key_fingerprint``, keyed), never keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bootstrap.tables import IDENTITY, LEGACY_AUDIT
from lwm2m.store import AuditLog, AuditRecord, Tx
from lwm2m.store.audit import canonical_json

GENESIS = "0" * 64
MIGRATION_ACTION = "audit.migrate"
_DEVICE_ACTION_PREFIXES = ("identity.", "bootstrap.")
_OUTCOMES = {"bootstrap.refused": "refused", "bootstrap.failed": "failed"}

JsonValue = Any


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """The old verdict shape, now over the one log: ``head`` is the Merkle root (hex) and
    ``broken_at`` the first failing record (or checkpoint tree size) with the reason."""

    ok: bool
    records: int
    head: str
    broken_at: int | None = None
    reason: str = ""


class AuditRepository:
    """Appends and reads bootstrap's records of the one audit log inside a store transaction."""

    def __init__(self, log: AuditLog | None = None) -> None:
        self._log = log or AuditLog()

    def append(
        self,
        tx: Tx,
        *,
        actor: str,
        action: str,
        subject: str,
        detail: Mapping[str, JsonValue] | None = None,
        now: float,
        token_id: str | None = None,
        endpoints: Sequence[str] | None = None,
        tenant: str | None = None,
        outcome: str | None = None,
    ) -> AuditRecord:
        """Append one record; a device's endpoint and tenant are filled in when the action is
        about a device and the caller did not say."""
        if endpoints is None:
            endpoints = [subject] if action.startswith(_DEVICE_ACTION_PREFIXES) else []
        if tenant is None and len(endpoints) == 1:
            tenant = tx.execute(
                select(IDENTITY.c.tenant).where(IDENTITY.c.endpoint == endpoints[0])
            ).scalar_one_or_none()
        return self._log.append(
            tx,
            actor=actor,
            action=action,
            subject=subject,
            now=now,
            token_id=token_id,
            tenant=tenant,
            endpoints=endpoints,
            detail=detail,
            outcome=outcome or _OUTCOMES.get(action, "ok"),
        )

    def list(
        self,
        tx: Tx,
        *,
        subject: str | None = None,
        action_prefix: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records in log order, optionally for one subject / action family."""
        return self._log.list(
            tx, subject=subject, action_prefix=action_prefix, after=after, limit=limit
        )

    def head(self, tx: Tx) -> AuditRecord | None:
        return self._log.head(tx)

    def verify(self, tx: Tx) -> ChainVerdict:
        """Verify the whole log against its stored checkpoints (:meth:`AuditLog.verify`)."""
        verdict = self._log.verify(tx)
        return ChainVerdict(
            verdict.ok,
            verdict.records,
            verdict.root_hash,
            verdict.seq if verdict.seq is not None else verdict.checkpoint,
            verdict.reason,
        )


# -- the legacy chain, for the one-time migration -------------------------------------------------


def record_hash(
    prev_hash: str,
    seq: int,
    at: float,
    actor: str,
    action: str,
    subject: str,
    detail: Mapping[str, JsonValue],
) -> str:
    """The v1 chain's ``SHA-256(prev_hash || "\\n" || canonical JSON of the record)``."""
    body = canonical_json(
        {
            "seq": seq,
            "at": repr(float(at)),
            "actor": actor,
            "action": action,
            "subject": subject,
            "detail": detail,
        }
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LegacyRecord:
    """One ``bs_audit`` row."""

    seq: int
    at: float
    actor: str
    action: str
    subject: str
    detail: Mapping[str, JsonValue]
    prev_hash: str
    hash: str


def verify_chain(records: Sequence[LegacyRecord], start_hash: str = GENESIS) -> ChainVerdict:
    """Check links and hashes of consecutive v1 chain records (pure)."""
    previous = start_hash
    expected = records[0].seq if records else 1
    for record in records:
        if record.seq != expected:
            return ChainVerdict(
                False, expected - 1, previous, record.seq, f"record {expected} is missing"
            )
        if record.prev_hash != previous:
            return ChainVerdict(False, record.seq - 1, previous, record.seq, "prev_hash differs")
        computed = record_hash(
            record.prev_hash,
            record.seq,
            record.at,
            record.actor,
            record.action,
            record.subject,
            record.detail,
        )
        if computed != record.hash:
            return ChainVerdict(
                False, record.seq - 1, previous, record.seq, "record content was changed"
            )
        previous = record.hash
        expected += 1
    return ChainVerdict(True, len(records), previous)


def migrate_legacy_chain(tx: Tx, log: AuditLog, *, now: float) -> int:
    """Copy every ``bs_audit`` row into the one log, in order and unchanged, then record the
    migration (with whether the old chain verified and its head). Returns the rows copied.

    The caller drops ``bs_audit`` afterwards, in the same transaction. In a database whose
    one log is still empty (the normal upgrade), each record keeps its ``seq``.
    """
    rows = tx.execute(select(LEGACY_AUDIT).order_by(LEGACY_AUDIT.c.seq)).all()
    legacy = [
        LegacyRecord(
            seq=int(r._mapping["seq"]),
            at=float(r._mapping["at"]),
            actor=r._mapping["actor"],
            action=r._mapping["action"],
            subject=r._mapping["subject"],
            detail=json.loads(r._mapping["detail"]),
            prev_hash=r._mapping["prev_hash"],
            hash=r._mapping["hash"],
        )
        for r in rows
    ]
    adapter = AuditRepository(log)
    first_seq = None
    for record in legacy:
        appended = adapter.append(
            tx,
            actor=record.actor,
            action=record.action,
            subject=record.subject,
            detail=record.detail,
            now=record.at,
        )
        first_seq = appended.seq if first_seq is None else first_seq
    chain = verify_chain(legacy)
    log.append(
        tx,
        actor="fleetloop",
        action=MIGRATION_ACTION,
        subject="bs_audit",
        now=now,
        detail={
            "records": len(legacy),
            "first_seq": first_seq,
            "legacy_head": chain.head if legacy else GENESIS,
            "legacy_chain_intact": chain.ok,
            "legacy_chain_problem": chain.reason or None,
        },
        outcome="ok" if chain.ok else "legacy-chain-broken",
    )
    return len(legacy)


__all__ = [
    "GENESIS",
    "AuditRecord",
    "AuditRepository",
    "ChainVerdict",
    "LegacyRecord",
    "migrate_legacy_chain",
    "record_hash",
    "verify_chain",
]
