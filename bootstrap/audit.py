"""The bootstrap audit trail: append-only, hash-chained, verifiable.

Every change an operator makes (import, revoke, policy versions, re-bootstrap) and every
security-relevant event of the protocol (a refused bootstrap, credentials provisioned) is one
:class:`AuditRecord`. Record ``n`` stores ``hash_n = SHA-256(hash_{n-1} || canonical(record_n))``,
so changing or deleting any record breaks every hash after it: :func:`verify_chain` finds the
first broken link. This makes tampering *evident*, not impossible -- someone with write access
to the database can rewrite the whole chain; export :attr:`AuditRecord.hash` of the head
somewhere else (a ticket, a log) to pin it.

Secrets never enter a record: details carry PSK identities and key *fingerprints*
(:func:`key_fingerprint`), never keys.

Appends are serialised across processes: SQLite's write lock does it (the store begins write
transactions IMMEDIATE); on PostgreSQL the append takes a transaction-scoped advisory lock
before reading the chain head. ``seq`` is the primary key, so even a racing append that
slipped past would fail instead of forking the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select, text

from bootstrap.tables import AUDIT
from lwm2m.store import Tx

GENESIS = "0" * 64
_LOCK_KEY = 0x6273_6175_6469  # "bsaudi": pg_advisory_xact_lock key of the audit chain
_A = AUDIT.c

JsonValue = Any


def canonical_json(value: JsonValue) -> str:
    """The one serialisation hashed: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key_fingerprint(key: bytes) -> str:
    """What an audit record may say about a secret key: the first 16 hex of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit entry. ``detail`` is JSON data (no secrets)."""

    seq: int
    at: float
    actor: str
    action: str
    subject: str
    detail: Mapping[str, JsonValue]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, JsonValue]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": dict(self.detail),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def record_hash(
    prev_hash: str,
    seq: int,
    at: float,
    actor: str,
    action: str,
    subject: str,
    detail: Mapping[str, JsonValue],
) -> str:
    """``SHA-256(prev_hash || "\\n" || canonical JSON of the record's fields)`` as hex.

    ``at`` is hashed as its ``repr`` so the exact float (not a rounded rendering) counts.
    """
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
class ChainVerdict:
    """Result of :func:`verify_chain`: ``ok``, how many records were checked, and the first
    record whose hash or link does not verify (``broken_at``) with the reason."""

    ok: bool
    records: int
    head: str
    broken_at: int | None = None
    reason: str = ""


def verify_chain(records: Sequence[AuditRecord], start_hash: str = GENESIS) -> ChainVerdict:
    """Check links and hashes of consecutive records (pure; the repository feeds it)."""
    previous = start_hash
    expected_seq = records[0].seq if records else 1
    for record in records:
        if record.seq != expected_seq:
            return ChainVerdict(
                False, expected_seq - 1, previous, record.seq, f"record {expected_seq} is missing"
            )
        if record.prev_hash != previous:
            return ChainVerdict(
                False, record.seq - 1, previous, record.seq, "prev_hash does not match"
            )
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
        expected_seq += 1
    return ChainVerdict(True, len(records), previous)


def _from_row(row: Row[Any]) -> AuditRecord:
    m = row._mapping
    return AuditRecord(
        seq=int(m["seq"]),
        at=float(m["at"]),
        actor=m["actor"],
        action=m["action"],
        subject=m["subject"],
        detail=json.loads(m["detail"]),
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )


class AuditRepository:
    """Appends and reads audit records inside a store transaction."""

    def append(
        self,
        tx: Tx,
        *,
        actor: str,
        action: str,
        subject: str,
        detail: Mapping[str, JsonValue] | None = None,
        now: float,
    ) -> AuditRecord:
        """Append one record at the head of the chain (see the module docstring)."""
        clean = json.loads(canonical_json(dict(detail or {})))  # JSON-only, stable
        if tx.dialect == "postgresql":
            tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        head = tx.execute(select(_A.seq, _A.hash).order_by(_A.seq.desc()).limit(1)).first()
        seq, prev = 1, GENESIS
        if head is not None:
            seq, prev = int(head._mapping["seq"]) + 1, str(head._mapping["hash"])
        digest = record_hash(prev, seq, now, actor, action, subject, clean)
        tx.execute(
            AUDIT.insert(),
            {
                "seq": seq,
                "at": now,
                "actor": actor,
                "action": action,
                "subject": subject,
                "detail": canonical_json(clean),
                "prev_hash": prev,
                "hash": digest,
            },
        )
        return AuditRecord(seq, now, actor, action, subject, clean, prev, digest)

    def list(
        self,
        tx: Tx,
        *,
        subject: str | None = None,
        action_prefix: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records in chain order, optionally for one subject / action family."""
        query = select(AUDIT).order_by(_A.seq).limit(limit)
        if subject is not None:
            query = query.where(_A.subject == subject)
        if action_prefix is not None:
            query = query.where(_A.action.startswith(action_prefix))
        if after is not None:
            query = query.where(_A.seq > after)
        return [_from_row(r) for r in tx.execute(query)]

    def head(self, tx: Tx) -> AuditRecord | None:
        row = tx.execute(select(AUDIT).order_by(_A.seq.desc()).limit(1)).first()
        return _from_row(row) if row is not None else None

    def verify(self, tx: Tx, *, page: int = 5000) -> ChainVerdict:
        """Walk the whole chain in pages and verify it (:func:`verify_chain`)."""
        previous, after, checked = GENESIS, 0, 0
        while True:
            rows = [
                _from_row(r)
                for r in tx.execute(
                    select(AUDIT).where(_A.seq > after).order_by(_A.seq).limit(page)
                )
            ]
            if not rows:
                return ChainVerdict(True, checked, previous)
            if checked == 0 and rows[0].seq != 1:
                return ChainVerdict(False, 0, GENESIS, 1, "record 1 is missing")
            verdict = verify_chain(rows, previous)
            if not verdict.ok:
                return ChainVerdict(
                    False,
                    checked + verdict.records,
                    verdict.head,
                    verdict.broken_at,
                    verdict.reason,
                )
            previous, after, checked = verdict.head, rows[-1].seq, checked + len(rows)


__all__ = [
    "GENESIS",
    "AuditRecord",
    "AuditRepository",
    "ChainVerdict",
    "canonical_json",
    "key_fingerprint",
    "record_hash",
    "verify_chain",
]
