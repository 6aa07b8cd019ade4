"""Bootstrap's records in the one audit log: appends line up, any edit or deletion is found,
device records carry their endpoint and tenant, and a v1 database's ``bs_audit`` hash chain is
migrated into the one log (order and content kept) and dropped."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
from sqlalchemy import delete, inspect, update

import lwm2m.store.audit as store_audit
from bootstrap.audit import (
    GENESIS,
    MIGRATION_ACTION,
    AuditRecord,
    AuditRepository,
    LegacyRecord,
    record_hash,
    verify_chain,
)
from bootstrap.repository import create_schema
from bootstrap.tables import IDENTITY, LEGACY_AUDIT, SCHEMA_COMPONENT
from lwm2m.store import Store
from lwm2m.store.tables import AUDIT_LOG, SCHEMA_VERSION_TABLE
from tests.store.conftest import StoreTarget


def append_three(store: Store) -> list[AuditRecord]:
    repo = AuditRepository()
    with store.transaction() as tx:
        return [
            repo.append(tx, actor="alice", action="a", subject=f"s{i}", detail={"n": i}, now=i)
            for i in range(1, 4)
        ]


def test_records_line_up_in_the_one_log_and_verify(store: Store) -> None:
    records = append_three(store)
    assert [r.seq for r in records] == [1, 2, 3]
    assert [r.leaf_hash for r in records] == [r.computed_leaf_hash() for r in records]
    in_log = store.read_sync(lambda tx: store.audit.list(tx))
    assert in_log == records
    verdict = store.read_sync(AuditRepository().verify)
    assert verdict.ok and verdict.records == 3 and len(verdict.head) == 64


@pytest.mark.parametrize(
    "change",
    [{"detail": '{"n":99}'}, {"actor": "mallory"}, {"at": 2.5}, {"subject": "elsewhere"}],
)
def test_an_edited_record_is_found_at_that_record(store: Store, change: dict[str, object]) -> None:
    append_three(store)
    with store.transaction() as tx:
        tx.execute(update(AUDIT_LOG).where(AUDIT_LOG.c.seq == 2).values(**change))
    verdict = store.read_sync(AuditRepository().verify)
    assert not verdict.ok and verdict.broken_at == 2 and "edited" in verdict.reason


def test_a_deleted_record_is_found(store: Store) -> None:
    append_three(store)
    with store.transaction() as tx:
        tx.execute(delete(AUDIT_LOG).where(AUDIT_LOG.c.seq == 2))
    verdict = store.read_sync(AuditRepository().verify)
    assert not verdict.ok and verdict.broken_at == 2 and "missing" in verdict.reason


def test_a_removed_first_record_is_found(store: Store) -> None:
    append_three(store)
    with store.transaction() as tx:
        tx.execute(delete(AUDIT_LOG).where(AUDIT_LOG.c.seq == 1))
    verdict = store.read_sync(AuditRepository().verify)
    assert not verdict.ok and verdict.broken_at == 1


def test_verification_pages_through_a_long_log(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_audit, "_PAGE", 7)
    repo = AuditRepository()
    with store.transaction() as tx:
        for i in range(25):
            repo.append(tx, actor="x", action="y", subject="z", detail={}, now=float(i))
    assert store.read_sync(repo.verify).records == 25
    with store.transaction() as tx:
        tx.execute(update(AUDIT_LOG).where(AUDIT_LOG.c.seq == 23).values(actor="q"))
    assert store.read_sync(repo.verify).broken_at == 23


def test_the_leaf_hash_covers_the_exact_time_and_detail() -> None:
    base = AuditRecord(1, 1.0, "a", "b", "c", detail={"k": 1})
    assert AuditRecord(1, 1.0000000001, "a", "b", "c", detail={"k": 1}).computed_leaf_hash() != (
        base.computed_leaf_hash()
    )
    assert AuditRecord(1, 1.0, "a", "b", "c", detail={"k": "1"}).computed_leaf_hash() != (
        base.computed_leaf_hash()
    )


def test_device_records_name_the_endpoint_and_its_tenant(store: Store) -> None:
    with store.transaction() as tx:
        tx.execute(
            IDENTITY.insert(),
            {
                "endpoint": "dev-1",
                "tenant": "acme",
                "security_mode": "psk",
                "status": "active",
                "created_at": 0.0,
                "updated_at": 0.0,
            },
        )
        repo = AuditRepository()
        revoke = repo.append(tx, actor="op", action="identity.revoke", subject="dev-1", now=1.0)
        refused = repo.append(tx, actor="bs", action="bootstrap.refused", subject="ghost", now=2.0)
        policy = repo.append(tx, actor="op", action="policy.add", subject="policy:eu", now=3.0)
        batch = repo.append(tx, actor="op", action="identities.import", subject="b-1", now=4.0)
    assert (revoke.endpoints, revoke.tenant, revoke.outcome) == (("dev-1",), "acme", "ok")
    assert (refused.endpoints, refused.tenant, refused.outcome) == (("ghost",), None, "refused")
    assert policy.endpoints == () and batch.endpoints == ()
    found = store.read_sync(lambda tx: store.audit.list(tx, endpoints=["dev-1"], tenants=["acme"]))
    assert [r.seq for r in found] == [revoke.seq]


# -- the v1 chain and its migration ------------------------------------------------------------


def legacy_chain(count: int) -> list[LegacyRecord]:
    records: list[LegacyRecord] = []
    previous = GENESIS
    for seq in range(1, count + 1):
        detail = {"n": seq, "fingerprint": f"{seq:016x}"}
        action = "identity.revoke" if seq % 2 else "policy.add"
        subject = "dev-1" if seq % 2 else "policy:eu"
        at = 1000.0 + seq / 3
        digest = record_hash(previous, seq, at, "alice", action, subject, detail)
        records.append(LegacyRecord(seq, at, "alice", action, subject, detail, previous, digest))
        previous = digest
    return records


def test_the_legacy_chain_check_finds_a_changed_record() -> None:
    chain = legacy_chain(4)
    assert verify_chain(chain).ok
    broken = [*chain[:2], replace(chain[2], actor="x"), chain[3]]
    verdict = verify_chain(broken)
    assert not verdict.ok and verdict.broken_at == 3


def make_v1_database(target: StoreTarget, records: list[LegacyRecord]) -> None:
    """A database as fleetloop v1 left it: bootstrap schema v1 with a ``bs_audit`` chain."""
    with target.open() as store:
        store.create_schema(now=0.0)
        create_schema(store, now=0.0)
        with store.transaction() as tx:
            LEGACY_AUDIT.create(tx._conn)
            if records:
                tx.execute(
                    LEGACY_AUDIT.insert(),
                    [
                        {
                            **asdict(r),
                            "detail": json.dumps(r.detail, sort_keys=True, separators=(",", ":")),
                        }
                        for r in records
                    ],
                )
            tx.execute(
                SCHEMA_VERSION_TABLE.update()
                .where(SCHEMA_VERSION_TABLE.c.component == SCHEMA_COMPONENT)
                .values(version=1)
            )


def bootstrap_version(store: Store) -> int:
    return int(
        store.read_sync(
            lambda tx: (
                tx.execute(
                    SCHEMA_VERSION_TABLE.select().where(
                        SCHEMA_VERSION_TABLE.c.component == SCHEMA_COMPONENT
                    )
                )
                .one()
                ._mapping["version"]
            )
        )
    )


def test_create_schema_migrates_the_v1_chain_into_the_one_log_and_drops_bs_audit(
    target: StoreTarget,
) -> None:
    chain = legacy_chain(7)
    make_v1_database(target, chain)
    with target.open() as store:
        store.create_schema(now=5.0)
        create_schema(store, now=5.0)
        assert bootstrap_version(store) == 2
        tables = store.read_sync(lambda tx: inspect(tx._conn).get_table_names())
        assert "bs_audit" not in tables
        records = store.read_sync(lambda tx: store.audit.list(tx, limit=100))
        assert len(records) == 8
        for old, new in zip(chain, records[:7]):
            assert (new.seq, new.at, new.actor, new.action, new.subject) == (
                old.seq,
                old.at,
                old.actor,
                old.action,
                old.subject,
            )
            assert new.detail == old.detail
        migration = records[7]
        assert migration.action == MIGRATION_ACTION and migration.outcome == "ok"
        assert migration.detail["records"] == 7
        assert migration.detail["legacy_head"] == chain[-1].hash
        assert migration.detail["legacy_chain_intact"] is True
        assert records[0].endpoints == ("dev-1",)
        assert store.read_sync(store.audit.verify).ok
        create_schema(store, now=6.0)  # idempotent: nothing is migrated twice
        assert store.read_sync(store.audit.size) == 8


def test_a_broken_v1_chain_is_migrated_as_it_is_and_the_break_is_recorded(
    target: StoreTarget,
) -> None:
    chain = legacy_chain(3)
    chain[1] = replace(chain[1], detail={"n": 99})
    make_v1_database(target, chain)
    with target.open() as store:
        store.create_schema(now=5.0)
        create_schema(store, now=5.0)
        records = store.read_sync(lambda tx: store.audit.list(tx))
        assert records[1].detail == {"n": 99}
        assert records[3].outcome == "legacy-chain-broken"
        assert records[3].detail["legacy_chain_intact"] is False
