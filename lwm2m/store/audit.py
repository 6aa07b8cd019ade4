"""The one audit log: every operator action and device-affecting event, append-only, provable.

Why in the store layer: bootstrap (below lifecycle) must write the same log as the management
API and the reconciler above it, and the record must commit in the *same transaction* as the
change it describes. The store is the lowest layer every writer shares, so the log lives here
and every layer appends through :meth:`AuditLog.append` inside its own ``store.write(op)``.

Tamper evidence. Each record's content (:meth:`AuditRecord.leaf_data`: canonical JSON,
including its ``seq``) is an RFC 6962 leaf; the Merkle tree over the records in ``seq`` order
has a root that :meth:`AuditLog.checkpoint` signs (:mod:`lwm2m.store.checkpoint`). Against a
kept checkpoint :meth:`AuditLog.verify` detects any edit (content no longer hashes to its
leaf), deletion (a gap in ``seq``), reordering (a record's content belongs at another ``seq``)
and truncation (fewer records than a checkpoint covers) -- and, because the root is recomputed
from the content, also an attacker who rewrote the stored leaf hashes to match. What it cannot
do is stop someone with the database *and* the signing key from rewriting history; keep
checkpoints elsewhere (``fleetloop audit checkpoint --out``).

Appends are serialised across processes: SQLite's write lock does it (write transactions begin
IMMEDIATE); on PostgreSQL the append takes a transaction-scoped advisory lock before reading
the head. ``seq`` is the primary key, so a racing append that slipped past would fail instead
of forking the log.

Secrets never enter a record: callers put identities and key *fingerprints* in ``detail``.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Row, Select, func, select, text

from lwm2m.store import merkle
from lwm2m.store.checkpoint import (
    HASHED_FIELDS,
    Checkpoint,
    CheckpointSigner,
    CheckpointVerifier,
    sign_checkpoint,
)
from lwm2m.store.engine import Tx
from lwm2m.store.errors import NotFound, StoreError
from lwm2m.store.tables import AUDIT_CHECKPOINT, AUDIT_DEVICE, AUDIT_LOG

_LOCK_KEY = 0x666C_6175_6469  # "flaudi": pg_advisory_xact_lock key of the audit log head
_L = AUDIT_LOG.c
_D = AUDIT_DEVICE.c
_K = AUDIT_CHECKPOINT.c
_PAGE = 5000
_MAX_SEQ = select(func.max(_L.seq))
_INSERT_RECORD = AUDIT_LOG.insert()
_INSERT_DEVICES = AUDIT_DEVICE.insert()
_HEAD_MEMO = "audit.head"  # Tx.memo key: the last seq this transaction appended

JsonValue = Any


class AuditError(StoreError):
    """An audit record cannot be written as given (e.g. ``detail`` is not JSON data)."""


class AuditTampered(StoreError):
    """The log does not match its own hashes; the store refuses to sign a checkpoint over it."""


def canonical_json(value: JsonValue) -> str:
    """The one serialisation hashed: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit entry. ``detail`` is JSON data (never secrets); ``leaf_hash`` is hex."""

    seq: int
    at: float
    actor: str
    action: str
    subject: str
    token_id: str | None = None
    tenant: str | None = None
    endpoints: tuple[str, ...] = ()
    detail: Mapping[str, JsonValue] = field(default_factory=dict)
    outcome: str = "ok"
    leaf_hash: str = ""

    def leaf_data(self) -> bytes:
        """The bytes the Merkle leaf hashes: canonical JSON of every field but the hash.

        ``seq`` is included, so a record moved to another position no longer matches its
        leaf; ``at`` is hashed as its ``repr`` so the exact float counts.
        """
        doc = self.as_dict()
        fields = {name: doc[name] for name in HASHED_FIELDS}
        fields["at"] = repr(float(self.at))
        return canonical_json(fields).encode()

    def computed_leaf_hash(self) -> str:
        return merkle.leaf_hash(self.leaf_data()).hex()

    def as_dict(self) -> dict[str, JsonValue]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "token_id": self.token_id,
            "tenant": self.tenant,
            "action": self.action,
            "subject": self.subject,
            "endpoints": list(self.endpoints),
            "detail": dict(self.detail),
            "outcome": self.outcome,
            "leaf_hash": self.leaf_hash,
        }


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """What :meth:`AuditLog.verify` found.

    ``problem`` is one of ``edited``, ``deleted``, ``reordered``, ``truncated``,
    ``root-mismatch`` (content and hashes agree but a checkpoint's root does not: rewritten
    with recomputed hashes, somewhere in ``failed_range``) or ``bad-signature``; ``seq`` the
    first failing record and ``checkpoint`` the failing checkpoint's tree size, when known.
    """

    ok: bool
    records: int
    checkpoints: int
    root_hash: str
    problem: str | None = None
    seq: int | None = None
    checkpoint: int | None = None
    failed_range: tuple[int, int] | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, JsonValue]:
        return {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "root_hash": self.root_hash,
            "problem": self.problem,
            "seq": self.seq,
            "checkpoint": self.checkpoint,
            "failed_range": list(self.failed_range) if self.failed_range else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Record ``record`` is leaf ``record.seq - 1`` of the tree ``checkpoint`` signs."""

    record: AuditRecord
    tree_size: int
    path: tuple[bytes, ...]
    checkpoint: Checkpoint


def _record_from_row(row: Row[Any]) -> AuditRecord:
    m = row._mapping
    return AuditRecord(
        seq=int(m["seq"]),
        at=float(m["at"]),
        actor=m["actor"],
        token_id=m["token_id"],
        tenant=m["tenant"],
        action=m["action"],
        subject=m["subject"],
        endpoints=tuple(json.loads(m["endpoints"])),
        detail=json.loads(m["detail"]),
        outcome=m["outcome"],
        leaf_hash=m["leaf_hash"],
    )


def _checkpoint_from_row(row: Row[Any]) -> Checkpoint:
    m = row._mapping
    return Checkpoint(
        int(m["tree_size"]), m["root_hash"], m["signature"], m["key_id"], float(m["at"])
    )


class AuditLog:
    """Appends, lists, verifies and proves audit records inside store transactions."""

    def __init__(self) -> None:
        # The tree over the records up to the last checkpoint this process made: the next
        # checkpoint then hashes only the records added since (the log is append-only).
        self._frontier = merkle.Frontier()

    # -- writing ------------------------------------------------------------------------------
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
    ) -> AuditRecord:
        """Append one record at the head of the log, in ``tx`` (so it commits with the change).

        ``endpoints`` are the devices the record is about (indexed for filtering; duplicates
        dropped, order kept). ``detail`` must be JSON data -- and never a secret.
        """
        if isinstance(endpoints, str):
            raise AuditError(f"endpoints must be a list of names, not the string {endpoints!r}")
        try:
            clean = json.loads(canonical_json(dict(detail or {})))
        except (TypeError, ValueError) as err:
            raise AuditError(f"audit detail of {action} on {subject} is not JSON: {err}") from None
        devices = tuple(dict.fromkeys(str(e) for e in endpoints))
        # The head is read once per transaction: the append lock (SQLite's write lock, the
        # PostgreSQL advisory lock) is held until the transaction ends, so no other process
        # can append meanwhile and the next seq is the last one this transaction wrote + 1.
        # Kept on the transaction, not the process: another process (bootstrap, the CLI)
        # may append between two transactions, and a rolled-back transaction takes its
        # memo with it, so a retry reads the head again. The `SELECT max(seq)` per append
        # was 12-14 % of the reconciler's CPU (docs/BENCHMARKS.md, issue 13).
        head: int | None = tx.memo.get(_HEAD_MEMO)
        if head is None:
            if tx.dialect == "postgresql":
                tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            head = int(tx.execute(_MAX_SEQ).scalar_one_or_none() or 0)
        record = AuditRecord(
            seq=head + 1,
            at=float(now),
            actor=actor,
            token_id=token_id,
            tenant=tenant,
            action=action,
            subject=subject,
            endpoints=devices,
            detail=clean,
            outcome=outcome,
        )
        record = self._insert(tx, record)
        tx.memo[_HEAD_MEMO] = record.seq  # only once the rows are in
        return record

    def _insert(self, tx: Tx, record: AuditRecord) -> AuditRecord:
        record = replace(record, leaf_hash=record.computed_leaf_hash())
        tx.execute(
            _INSERT_RECORD,
            {
                "seq": record.seq,
                "at": record.at,
                "actor": record.actor,
                "token_id": record.token_id,
                "tenant": record.tenant,
                "action": record.action,
                "subject": record.subject,
                "endpoints": json.dumps(list(record.endpoints)),
                "detail": canonical_json(record.detail),
                "outcome": record.outcome,
                "leaf_hash": record.leaf_hash,
            },
        )
        if record.endpoints:
            tx.execute(
                _INSERT_DEVICES,
                [{"seq": record.seq, "endpoint": e} for e in record.endpoints],
            )
        return record

    # -- reading ------------------------------------------------------------------------------
    def list(
        self,
        tx: Tx,
        *,
        since: float | None = None,
        until: float | None = None,
        action_prefix: str | None = None,
        actor: str | None = None,
        subject: str | None = None,
        endpoints: Collection[str] | Select[Any] | None = None,
        tenants: Collection[str] | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> builtins.list[AuditRecord]:
        """Records in ``seq`` order matching every filter given.

        ``endpoints``: records about any of these devices (through ``audit_device``), or a
        one-column SELECT of endpoint names (a higher layer's device selector, evaluated in
        the database rather than shipped here as a list of 100 000 names);
        ``tenants``: only records of these tenants (None: every record, with or without one);
        ``after``: records with a larger ``seq`` (page with the last one seen).
        """
        query = select(AUDIT_LOG).order_by(_L.seq).limit(limit)
        if since is not None:
            query = query.where(_L.at >= since)
        if until is not None:
            query = query.where(_L.at < until)
        if action_prefix:
            query = query.where(_L.action.startswith(action_prefix, autoescape=True))
        if actor is not None:
            query = query.where(_L.actor == actor)
        if subject is not None:
            query = query.where(_L.subject == subject)
        if isinstance(endpoints, Select):
            query = query.where(_L.seq.in_(select(_D.seq).where(_D.endpoint.in_(endpoints))))
        elif endpoints is not None:
            query = query.where(_L.seq.in_(select(_D.seq).where(_D.endpoint.in_(list(endpoints)))))
        if tenants is not None:
            query = query.where(_L.tenant.in_(list(tenants)))
        if after is not None:
            query = query.where(_L.seq > after)
        return [_record_from_row(r) for r in tx.execute(query)]

    def get(self, tx: Tx, seq: int) -> AuditRecord:
        row = tx.execute(select(AUDIT_LOG).where(_L.seq == seq)).first()
        if row is None:
            raise NotFound(f"no audit record {seq}")
        return _record_from_row(row)

    def head(self, tx: Tx) -> AuditRecord | None:
        row = tx.execute(select(AUDIT_LOG).order_by(_L.seq.desc()).limit(1)).first()
        return None if row is None else _record_from_row(row)

    def size(self, tx: Tx) -> int:
        """The highest ``seq`` (the tree size of an intact log)."""
        return int(tx.execute(select(func.max(_L.seq))).scalar_one_or_none() or 0)

    def _pages(self, tx: Tx, after: int = 0, upto: int | None = None) -> Iterator[AuditRecord]:
        while True:
            query = select(AUDIT_LOG).where(_L.seq > after).order_by(_L.seq).limit(_PAGE)
            if upto is not None:
                query = query.where(_L.seq <= upto)
            rows = [_record_from_row(r) for r in tx.execute(query)]
            yield from rows
            if len(rows) < _PAGE:
                return
            after = rows[-1].seq

    def _leaf_hashes(self, tx: Tx, upto: int) -> builtins.list[bytes]:
        hashes: builtins.list[bytes] = []
        after = 0
        while True:
            rows = tx.execute(
                select(_L.seq, _L.leaf_hash)
                .where(_L.seq > after, _L.seq <= upto)
                .order_by(_L.seq)
                .limit(_PAGE * 10)
            ).all()
            for row in rows:
                if int(row._mapping["seq"]) != len(hashes) + 1:
                    raise AuditTampered(f"audit record {len(hashes) + 1} is missing")
                hashes.append(bytes.fromhex(row._mapping["leaf_hash"]))
            if len(rows) < _PAGE * 10:
                return hashes
            after = int(rows[-1][0])

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoints(self, tx: Tx, *, limit: int | None = None) -> builtins.list[Checkpoint]:
        """Stored checkpoints, oldest first (the newest ``limit`` when given)."""
        if limit is None:
            query = select(AUDIT_CHECKPOINT).order_by(_K.tree_size)
            return [_checkpoint_from_row(r) for r in tx.execute(query)]
        query = select(AUDIT_CHECKPOINT).order_by(_K.tree_size.desc()).limit(limit)
        return [_checkpoint_from_row(r) for r in tx.execute(query)][::-1]

    def latest_checkpoint(self, tx: Tx) -> Checkpoint | None:
        found = self.checkpoints(tx, limit=1)
        return found[0] if found else None

    def checkpoint(self, tx: Tx, signer: CheckpointSigner, now: float) -> Checkpoint | None:
        """Sign the current tree head and store it; None when nothing was added since the last.

        The root is recomputed from the records' content (never trusted from ``leaf_hash``),
        so a log edited behind the store's back is refused (:class:`AuditTampered`), not
        signed over.
        """
        size = self.size(tx)
        latest = self.latest_checkpoint(tx)
        if size == 0 or (latest is not None and latest.tree_size >= size):
            return None
        frontier = self._frontier
        if frontier.size > size:  # another database, or the log shrank: start over
            frontier = merkle.Frontier()
        frontier = frontier.copy()
        for record in self._pages(tx, after=frontier.size, upto=size):
            if record.seq != frontier.size + 1:
                raise AuditTampered(f"audit record {frontier.size + 1} is missing")
            computed = record.computed_leaf_hash()
            if computed != record.leaf_hash:
                raise AuditTampered(f"audit record {record.seq} does not match its leaf hash")
            frontier.append(bytes.fromhex(computed))
        made = sign_checkpoint(signer, size, frontier.root(), now)
        tx.execute(AUDIT_CHECKPOINT.insert(), made.as_dict())

        def keep() -> None:
            if frontier.size >= self._frontier.size:
                self._frontier = frontier

        tx.after_commit(keep)
        return made

    # -- proofs -------------------------------------------------------------------------------
    def inclusion_proof(self, tx: Tx, seq: int, tree_size: int | None = None) -> InclusionProof:
        """The audit path of record ``seq`` in the tree of a stored checkpoint.

        Without ``tree_size``, the latest checkpoint (which must cover ``seq``); a record newer
        than every checkpoint has no provable position yet.
        """
        record = self.get(tx, seq)
        if tree_size is None:
            checkpoint = self.latest_checkpoint(tx)
        else:
            row = tx.execute(select(AUDIT_CHECKPOINT).where(_K.tree_size == tree_size)).first()
            checkpoint = None if row is None else _checkpoint_from_row(row)
            if checkpoint is None:
                raise NotFound(f"no audit checkpoint at tree size {tree_size}")
        if checkpoint is None or checkpoint.tree_size < seq:
            raise NotFound(
                f"no checkpoint covers audit record {seq} yet; make one "
                "(POST /audit/checkpoints, `fleetloop audit checkpoint`) or wait for the next"
            )
        leaves = self._leaf_hashes(tx, checkpoint.tree_size)
        if len(leaves) != checkpoint.tree_size:
            raise AuditTampered(
                f"the log has {len(leaves)} records, fewer than checkpoint {checkpoint.tree_size}"
            )
        path = merkle.inclusion_proof(leaves, seq - 1)
        return InclusionProof(record, checkpoint.tree_size, tuple(path), checkpoint)

    # -- verification -------------------------------------------------------------------------
    def verify(
        self,
        tx: Tx,
        checkpoints: Sequence[Checkpoint] | None = None,
        *,
        verifier: CheckpointVerifier | None = None,
    ) -> AuditVerdict:
        """Recompute every leaf from content and the root at every checkpoint's size.

        ``checkpoints``: the ones to check against (default: the stored ones); pass kept
        copies to catch an attacker who also rewrote the checkpoint table. With ``verifier``,
        each checkpoint's signature is checked first.
        """
        kept = list(self.checkpoints(tx) if checkpoints is None else checkpoints)
        if verifier is not None:
            for cp in kept:
                if not verifier.verify(cp):
                    return AuditVerdict(
                        False, 0, 0, "", "bad-signature", checkpoint=cp.tree_size,
                        reason=f"checkpoint at tree size {cp.tree_size} has no valid signature "
                        f"from key {verifier.key_id} (forged or signed by another key)",
                    )  # fmt: skip
        kept.sort(key=lambda cp: cp.tree_size)
        frontier = merkle.Frontier()
        pending = iter(kept)
        next_cp = next(pending, None)
        checked = 0
        last_good = 0
        while next_cp is not None and next_cp.tree_size == 0:
            checked += 1
            next_cp = next(pending, None)

        def fail(problem: str, reason: str, **extra: Any) -> AuditVerdict:
            return AuditVerdict(
                False, frontier.size, checked, frontier.root().hex(), problem, reason=reason,
                **extra,
            )  # fmt: skip

        for record in self._pages(tx):
            expected = frontier.size + 1
            if record.seq != expected:
                return fail(
                    "deleted",
                    f"record {expected} is missing: deleted (the next record is {record.seq})",
                    seq=expected,
                )
            computed = record.computed_leaf_hash()
            if computed != record.leaf_hash:
                origin = self._original_position(tx, record)
                if origin is not None:
                    return fail(
                        "reordered",
                        f"record {record.seq} holds the record that was at {origin}: reordered",
                        seq=record.seq,
                    )
                return fail(
                    "edited",
                    f"record {record.seq} ({record.action} on {record.subject}) was edited: "
                    "its content no longer matches its leaf hash",
                    seq=record.seq,
                )
            frontier.append(bytes.fromhex(computed))
            while next_cp is not None and next_cp.tree_size == frontier.size:
                if frontier.root().hex() != next_cp.root_hash:
                    return fail(
                        "root-mismatch",
                        f"records {last_good + 1}..{next_cp.tree_size} do not match the root "
                        f"of checkpoint {next_cp.tree_size}: rewritten (with recomputed hashes), "
                        "reordered or replaced",
                        checkpoint=next_cp.tree_size,
                        failed_range=(last_good + 1, next_cp.tree_size),
                    )
                checked += 1
                last_good = next_cp.tree_size
                next_cp = next(pending, None)
        if next_cp is not None:
            return fail(
                "truncated",
                f"the log has {frontier.size} records but checkpoint {next_cp.tree_size} covers "
                f"{next_cp.tree_size}: records {frontier.size + 1}..{next_cp.tree_size} were "
                "removed (truncated)",
                seq=frontier.size + 1,
                checkpoint=next_cp.tree_size,
            )
        return AuditVerdict(True, frontier.size, checked, frontier.root().hex())

    def _original_position(self, tx: Tx, record: AuditRecord, limit: int = 1_000_000) -> int | None:
        """Where ``record``'s content was hashed, if at another ``seq`` (a moved record).

        Either its own stored leaf hash fits its content at some other ``seq`` (rows were
        renumbered) or the content fits the stored leaf hash of another row (contents were
        swapped between rows). Runs only on the failure path.
        """
        size = min(self.size(tx), limit)
        candidates = {replace(record, seq=s).computed_leaf_hash(): s for s in range(1, size + 1)}
        own = candidates.get(record.leaf_hash)
        if own is not None and own != record.seq:
            return own
        for row in tx.execute(select(_L.seq, _L.leaf_hash).order_by(_L.seq)):
            origin = candidates.get(row._mapping["leaf_hash"])
            if origin is not None and origin == int(row._mapping["seq"]) and origin != record.seq:
                return origin
        return None


__all__ = [
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "AuditTampered",
    "AuditVerdict",
    "InclusionProof",
    "canonical_json",
]
