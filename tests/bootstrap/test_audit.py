"""The audit trail's hash chain: appends link up, and any edit or deletion is found."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, update

from bootstrap.audit import GENESIS, AuditRecord, AuditRepository, record_hash, verify_chain
from bootstrap.tables import AUDIT
from lwm2m.store import Store


def append_three(store: Store) -> list[AuditRecord]:
    repo = AuditRepository()
    with store.transaction() as tx:
        return [
            repo.append(tx, actor="alice", action="a", subject=f"s{i}", detail={"n": i}, now=i)
            for i in range(1, 4)
        ]


def test_records_chain_from_the_genesis_hash(store: Store) -> None:
    records = append_three(store)
    assert records[0].prev_hash == GENESIS and records[0].seq == 1
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    verdict = store.read_sync(AuditRepository().verify)
    assert verdict.ok and verdict.records == 3 and verdict.head == records[-1].hash


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"detail": '{"n":99}'}, "changed"),
        ({"actor": "mallory"}, "changed"),
        ({"at": 2.5}, "changed"),
    ],
)
def test_an_edited_record_breaks_the_chain_at_that_record(
    store: Store, change: dict[str, object], reason: str
) -> None:
    append_three(store)
    with store.transaction() as tx:
        tx.execute(update(AUDIT).where(AUDIT.c.seq == 2).values(**change))
    verdict = store.read_sync(AuditRepository().verify)
    assert not verdict.ok and verdict.broken_at == 2 and reason in verdict.reason


def test_a_deleted_record_is_found(store: Store) -> None:
    append_three(store)
    with store.transaction() as tx:
        tx.execute(delete(AUDIT).where(AUDIT.c.seq == 2))
    verdict = store.read_sync(AuditRepository().verify)
    assert not verdict.ok and verdict.broken_at == 3 and "missing" in verdict.reason


def test_a_truncated_head_is_found(store: Store) -> None:
    append_three(store)
    with store.transaction() as tx:
        tx.execute(delete(AUDIT).where(AUDIT.c.seq == 1))
    verdict = store.read_sync(AuditRepository().verify)
    assert not verdict.ok and verdict.broken_at == 1


def test_verification_pages_through_a_long_chain(store: Store) -> None:
    repo = AuditRepository()
    with store.transaction() as tx:
        for i in range(25):
            repo.append(tx, actor="x", action="y", subject="z", detail={}, now=float(i))
    verdict = store.read_sync(lambda tx: repo.verify(tx, page=7))
    assert verdict.ok and verdict.records == 25


def test_the_hash_covers_the_exact_time_and_detail() -> None:
    base = record_hash(GENESIS, 1, 1.0, "a", "b", "c", {"k": 1})
    assert record_hash(GENESIS, 1, 1.0000000001, "a", "b", "c", {"k": 1}) != base
    assert record_hash(GENESIS, 1, 1.0, "a", "b", "c", {"k": "1"}) != base
    record = AuditRecord(1, 1.0, "a", "b", "c", {"k": 1}, GENESIS, base)
    assert verify_chain([record]).ok
