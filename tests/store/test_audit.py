"""The one audit log on SQLite and PostgreSQL: append, filters, checkpoints, verify, proofs.

Tampering is done the way an attacker with database access would: raw SQL on the tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text, update

from lwm2m.store import (
    AuditError,
    AuditRecord,
    AuditTampered,
    CheckpointVerifier,
    Ed25519Signer,
    NotFound,
    Store,
    Tx,
)
from lwm2m.store.checkpoint import ProofError, check_proof_document, proof_document
from lwm2m.store.tables import AUDIT_LOG, SCHEMA_VERSION


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer(Ed25519PrivateKey.generate())


def fill(store: Store, count: int, *, start: float = 1000.0) -> None:
    """``count`` records: odd ones about dev-a (tenant t1), even ones about dev-b (tenant t2)."""
    with store.transaction() as tx:
        for i in range(1, count + 1):
            store.audit.append(
                tx,
                actor="operator:alice" if i % 3 else "bootstrap-server",
                action="dm.write" if i % 2 else "state.set",
                subject=f"/3/0/{i}",
                now=start + i,
                token_id="tok1",
                tenant="t1" if i % 2 else "t2",
                endpoints=["dev-a"] if i % 2 else ["dev-b", "dev-c"],
                detail={"i": i, "value": f"v{i}"},
                outcome="2.04",
            )


def raw(store: Store, sql: str) -> None:
    with store.transaction() as tx:
        tx.execute(text(sql))


# -- appending and reading ----------------------------------------------------------------------


def test_append_returns_the_record_with_consecutive_seq_and_its_leaf_hash(store: Store) -> None:
    with store.transaction() as tx:
        first = store.audit.append(
            tx, actor="operator:a", action="dm.execute", subject="x", now=5.0
        )
        second = store.audit.append(
            tx,
            actor="operator:a",
            action="dm.write",
            subject="/3/0/13",
            now=6.5,
            token_id="t-1",
            tenant="acme",
            endpoints=["ep1", "ep2", "ep1"],
            detail={"value": 3, "nested": {"b": 1, "a": [1, 2]}},
            outcome="4.04",
        )
    assert (first.seq, second.seq) == (1, 2)
    assert second.endpoints == ("ep1", "ep2")
    assert second.leaf_hash == second.computed_leaf_hash()
    stored = store.read_sync(lambda tx: store.audit.get(tx, 2))
    assert stored == second
    assert stored.detail == {"value": 3, "nested": {"b": 1, "a": [1, 2]}}


def test_append_refuses_detail_that_is_not_json_and_endpoints_given_as_a_string(
    store: Store,
) -> None:
    with pytest.raises(AuditError, match="not JSON"), store.transaction() as tx:
        store.audit.append(tx, actor="a", action="x", subject="s", now=1.0, detail={"k": {1, 2}})
    with pytest.raises(AuditError, match="list of names"), store.transaction() as tx:
        store.audit.append(tx, actor="a", action="x", subject="s", now=1.0, endpoints="ep1")
    assert store.read_sync(store.audit.size) == 0


def test_a_rolled_back_change_leaves_no_audit_record(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.audit.append(tx, actor="a", action="x", subject="s", now=1.0)
        raise RuntimeError("the change failed")
    assert store.read_sync(store.audit.size) == 0


def test_appends_in_one_group_commit_get_distinct_seqs(store: Store) -> None:
    async def main() -> list[AuditRecord]:
        return await asyncio.gather(
            *(
                store.write(
                    lambda tx, i=i: store.audit.append(
                        tx, actor="a", action="x", subject=str(i), now=float(i)
                    )
                )
                for i in range(20)
            )
        )

    records = asyncio.run(main())
    assert sorted(r.seq for r in records) == list(range(1, 21))


def test_the_head_is_read_again_by_each_transaction_so_another_writer_is_no_conflict(
    store: Store,
    target,  # type: ignore[no-untyped-def]
) -> None:
    """The next seq is kept per transaction, not per process: a second store (another
    process: bootstrap, the CLI) appending between two transactions of the first does not
    make the first reuse a seq."""
    other = target.open()
    try:
        with store.transaction() as tx:
            first = [
                store.audit.append(tx, actor="a", action="x", subject=str(i), now=1.0).seq
                for i in range(3)
            ]
        with other.transaction() as tx:
            theirs = other.audit.append(tx, actor="b", action="y", subject="s", now=2.0).seq
        with store.transaction() as tx:
            after = store.audit.append(tx, actor="a", action="x", subject="z", now=3.0).seq
    finally:
        other.close()
    assert (first, theirs, after) == ([1, 2, 3], 4, 5)
    assert store.read_sync(lambda tx: store.audit.verify(tx)).ok


def test_a_batch_retried_after_a_failed_neighbour_appends_from_the_stored_head(
    store: Store,
) -> None:
    """A group commit rolled back because one write failed after writing runs again without
    it: the appends of the retry must start from the stored head, not from the rolled-back
    transaction's seqs (no gap, which verify would call a deletion)."""

    def bad(tx: Tx) -> None:
        store.audit.append(tx, actor="a", action="bad", subject="s", now=1.0)
        raise RuntimeError("failed after writing")

    async def main() -> list[object]:
        return await asyncio.gather(
            store.write(
                lambda tx: store.audit.append(tx, actor="a", action="x", subject="1", now=1.0)
            ),
            store.write(bad),
            store.write(
                lambda tx: store.audit.append(tx, actor="a", action="x", subject="2", now=1.0)
            ),
            return_exceptions=True,
        )

    first, failed, second = asyncio.run(main())
    assert isinstance(failed, RuntimeError)
    assert isinstance(first, AuditRecord) and isinstance(second, AuditRecord)
    assert (first.seq, second.seq) == (1, 2)
    assert store.read_sync(store.audit.size) == 2
    assert store.read_sync(lambda tx: store.audit.verify(tx)).ok


def test_list_filters_by_time_action_actor_endpoint_tenant_and_pages(store: Store) -> None:
    fill(store, 12)

    def seqs(**kw: object) -> list[int]:
        return [r.seq for r in store.read_sync(lambda tx: store.audit.list(tx, **kw))]  # type: ignore[arg-type]

    assert seqs() == list(range(1, 13))
    assert seqs(since=1005.0, until=1008.0) == [5, 6, 7]
    assert seqs(action_prefix="state.") == [2, 4, 6, 8, 10, 12]
    assert seqs(action_prefix="dm") == [1, 3, 5, 7, 9, 11]
    assert seqs(actor="bootstrap-server") == [3, 6, 9, 12]
    assert seqs(endpoints=["dev-c"]) == [2, 4, 6, 8, 10, 12]
    assert seqs(endpoints=["dev-a", "dev-b"]) == list(range(1, 13))
    assert seqs(tenants=["t1"]) == [1, 3, 5, 7, 9, 11]
    assert seqs(tenants=[]) == []
    assert seqs(after=10, limit=5) == [11, 12]
    assert seqs(limit=3) == [1, 2, 3]
    assert seqs(subject="/3/0/4") == [4]


def test_action_prefix_is_literal_not_a_like_pattern(store: Store) -> None:
    with store.transaction() as tx:
        store.audit.append(tx, actor="a", action="dm_write", subject="s", now=1.0)
        store.audit.append(tx, actor="a", action="dmXwrite", subject="s", now=2.0)
    found = store.read_sync(lambda tx: store.audit.list(tx, action_prefix="dm_"))
    assert [r.action for r in found] == ["dm_write"]


def test_schema_is_at_version_2(store: Store) -> None:
    assert SCHEMA_VERSION == 2
    assert store.schema_version() == 2


def test_create_schema_upgrades_a_v1_database_to_v2_with_the_audit_tables(target) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import inspect, update

    from lwm2m.store.tables import SCHEMA_COMPONENT, SCHEMA_VERSION_TABLE

    with target.open() as old:
        old.create_schema(now=0.0)
        with old.transaction() as tx:
            for table in ("audit_checkpoint", "audit_device", "audit_log"):
                tx.execute(text(f"DROP TABLE {table}"))
            tx.execute(
                update(SCHEMA_VERSION_TABLE)
                .where(SCHEMA_VERSION_TABLE.c.component == SCHEMA_COMPONENT)
                .values(version=1)
            )
    with target.open() as store:
        assert store.schema_version() == 1
        store.create_schema(now=1.0)
        assert store.schema_version() == 2
        names = store.read_sync(lambda tx: inspect(tx._conn).get_table_names())
        assert {"audit_log", "audit_device", "audit_checkpoint"} <= set(names)
        with store.transaction() as tx:
            assert store.audit.append(tx, actor="a", action="x", subject="s", now=2.0).seq == 1


# -- checkpoints and verification -----------------------------------------------------------------


def test_checkpoint_signs_the_root_and_is_skipped_when_nothing_is_new(
    store: Store, signer: Ed25519Signer
) -> None:
    fill(store, 5)
    with store.transaction() as tx:
        made = store.audit.checkpoint(tx, signer, now=2000.0)
    assert made is not None and made.tree_size == 5
    assert signer.verifier().verify(made)
    other = CheckpointVerifier(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    assert not other.verify(made)
    with store.transaction() as tx:
        assert store.audit.checkpoint(tx, signer, now=2001.0) is None
    fill(store, 3, start=3000.0)
    with store.transaction() as tx:
        later = store.audit.checkpoint(tx, signer, now=3100.0)
    assert later is not None and later.tree_size == 8
    assert [c.tree_size for c in store.read_sync(store.audit.checkpoints)] == [5, 8]


def test_an_intact_log_verifies_against_every_checkpoint(
    store: Store, signer: Ed25519Signer
) -> None:
    for _ in range(3):
        fill(store, 4)
        with store.transaction() as tx:
            store.audit.checkpoint(tx, signer, now=5000.0)
    fill(store, 2)  # newer than every checkpoint: checked against its own hashes only
    verdict = store.read_sync(lambda tx: store.audit.verify(tx, verifier=signer.verifier()))
    assert verdict.ok, verdict.reason
    assert (verdict.records, verdict.checkpoints) == (14, 3)


@pytest.fixture
def sealed(store: Store, signer: Ed25519Signer) -> Store:
    """Ten records under a checkpoint, verified intact."""
    fill(store, 10)
    with store.transaction() as tx:
        store.audit.checkpoint(tx, signer, now=9000.0)
    assert store.read_sync(store.audit.verify).ok
    return store


def test_verify_names_an_edited_record(sealed: Store) -> None:
    raw(sealed, "UPDATE audit_log SET outcome = '2.05' WHERE seq = 4")
    verdict = sealed.read_sync(sealed.audit.verify)
    assert (verdict.ok, verdict.problem, verdict.seq) == (False, "edited", 4)
    assert "record 4" in verdict.reason and "edited" in verdict.reason


def test_verify_catches_an_edit_with_a_recomputed_leaf_hash_by_the_checkpoint_root(
    sealed: Store,
) -> None:
    record = sealed.read_sync(lambda tx: sealed.audit.get(tx, 7))
    forged = type(record)(**{**record.as_dict(), "endpoints": (), "outcome": "4.03"})
    digest = forged.computed_leaf_hash()
    raw(
        sealed,
        f"UPDATE audit_log SET endpoints = '[]', outcome = '4.03', leaf_hash = '{digest}' "
        "WHERE seq = 7",
    )
    verdict = sealed.read_sync(sealed.audit.verify)
    assert (verdict.ok, verdict.problem, verdict.checkpoint) == (False, "root-mismatch", 10)
    assert verdict.failed_range == (1, 10)


def test_verify_names_a_deleted_record(sealed: Store) -> None:
    raw(sealed, "DELETE FROM audit_log WHERE seq = 6")
    verdict = sealed.read_sync(sealed.audit.verify)
    assert (verdict.ok, verdict.problem, verdict.seq) == (False, "deleted", 6)
    assert "record 6 is missing" in verdict.reason


def test_verify_names_reordered_records_when_seqs_are_swapped(sealed: Store) -> None:
    raw(sealed, "UPDATE audit_log SET seq = 1000 WHERE seq = 3")
    raw(sealed, "UPDATE audit_log SET seq = 3 WHERE seq = 5")
    raw(sealed, "UPDATE audit_log SET seq = 5 WHERE seq = 1000")
    verdict = sealed.read_sync(sealed.audit.verify)
    assert (verdict.ok, verdict.problem, verdict.seq) == (False, "reordered", 3)
    assert "was at 5" in verdict.reason


def test_verify_names_reordered_records_when_contents_are_swapped(sealed: Store) -> None:
    content = ["at", "actor", "token_id", "tenant", "action", "subject", "endpoints", "detail"]
    content.append("outcome")  # every column but seq and leaf_hash: rows trade places

    def columns(seq: int) -> dict[str, object]:
        def read(tx: Tx) -> dict[str, object]:
            row = tx.execute(select(AUDIT_LOG).where(AUDIT_LOG.c.seq == seq)).one()
            return {name: row._mapping[name] for name in content}

        return sealed.read_sync(read)

    a, b = columns(2), columns(8)
    with sealed.transaction() as tx:
        tx.execute(update(AUDIT_LOG).where(AUDIT_LOG.c.seq == 2).values(**b))
        tx.execute(update(AUDIT_LOG).where(AUDIT_LOG.c.seq == 8).values(**a))
    verdict = sealed.read_sync(sealed.audit.verify)
    assert (verdict.ok, verdict.problem, verdict.seq) == (False, "reordered", 2)
    assert "was at 8" in verdict.reason


def test_verify_detects_truncation_against_the_stored_checkpoint(sealed: Store) -> None:
    raw(sealed, "DELETE FROM audit_log WHERE seq > 7")
    verdict = sealed.read_sync(sealed.audit.verify)
    assert (verdict.ok, verdict.problem, verdict.checkpoint) == (False, "truncated", 10)
    assert "8..10" in verdict.reason
    raw(sealed, "DELETE FROM audit_log")
    raw(sealed, "DELETE FROM audit_device")
    verdict = sealed.read_sync(sealed.audit.verify)
    assert (verdict.ok, verdict.problem, verdict.records) == (False, "truncated", 0)


def test_a_kept_checkpoint_catches_truncation_of_the_log_and_its_checkpoints(
    sealed: Store, signer: Ed25519Signer
) -> None:
    kept = sealed.read_sync(sealed.audit.latest_checkpoint)
    assert kept is not None
    raw(sealed, "DELETE FROM audit_checkpoint")
    raw(sealed, "DELETE FROM audit_log")
    assert sealed.read_sync(sealed.audit.verify).ok  # nothing left to contradict it ...
    verdict = sealed.read_sync(
        lambda tx: sealed.audit.verify(tx, [kept], verifier=signer.verifier())
    )
    assert (verdict.ok, verdict.problem) == (False, "truncated")  # ... but the kept copy does


def test_a_forged_checkpoint_fails_the_signature_check(
    sealed: Store, signer: Ed25519Signer
) -> None:
    raw(sealed, "UPDATE audit_checkpoint SET root_hash = '" + "ab" * 32 + "'")
    verdict = sealed.read_sync(lambda tx: sealed.audit.verify(tx, verifier=signer.verifier()))
    assert (verdict.ok, verdict.problem, verdict.checkpoint) == (False, "bad-signature", 10)
    unsigned = sealed.read_sync(sealed.audit.verify)  # without the key: the root disagrees
    assert (unsigned.ok, unsigned.problem) == (False, "root-mismatch")


def test_checkpoint_refuses_to_sign_over_a_tampered_log(
    store: Store, signer: Ed25519Signer
) -> None:
    fill(store, 3)
    raw(store, "UPDATE audit_log SET actor = 'nobody' WHERE seq = 2")
    with pytest.raises(AuditTampered, match="record 2"), store.transaction() as tx:
        store.audit.checkpoint(tx, signer, now=1.0)


# -- inclusion proofs ------------------------------------------------------------------------------


def test_an_inclusion_proof_verifies_offline_and_fails_for_a_tampered_record(
    sealed: Store, signer: Ed25519Signer
) -> None:
    for seq in (1, 6, 10):
        proof = sealed.read_sync(lambda tx, seq=seq: sealed.audit.inclusion_proof(tx, seq))
        doc = proof_document(
            proof.record.as_dict(),
            proof.record.leaf_data(),
            seq - 1,
            proof.path,
            proof.checkpoint,
            signer.public_key_raw,
        )
        doc = json.loads(json.dumps(doc))  # as an auditor receives it: a file
        summary = check_proof_document(doc, trusted_key_id=signer.key_id)
        assert (summary["seq"], summary["tree_size"]) == (seq, 10)

    tampered = json.loads(json.dumps(doc))
    tampered["record"]["outcome"] = "2.04-forged"
    with pytest.raises(ProofError, match="record was altered"):
        check_proof_document(tampered)
    both = json.loads(json.dumps(doc))
    both["record"]["outcome"] = "forged"
    fields = {k: both["record"][k] for k in json.loads(both["leaf_data"])}
    fields["at"] = repr(float(fields["at"]))
    both["leaf_data"] = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    both["leaf_hash"] = hashlib.sha256(b"\x00" + both["leaf_data"].encode()).hexdigest()
    with pytest.raises(ProofError, match="audit path does not lead"):
        check_proof_document(both)
    wrong_key = json.loads(json.dumps(doc))
    with pytest.raises(ProofError, match="not the trusted key"):
        check_proof_document(wrong_key, trusted_key_id="0" * 16)


def test_a_record_newer_than_every_checkpoint_has_no_proof_yet(
    sealed: Store,
) -> None:
    fill(sealed, 1)
    with pytest.raises(NotFound, match="no checkpoint covers audit record 11"):
        sealed.read_sync(lambda tx: sealed.audit.inclusion_proof(tx, 11))
    with pytest.raises(NotFound, match="no audit record 99"):
        sealed.read_sync(lambda tx: sealed.audit.inclusion_proof(tx, 99))
