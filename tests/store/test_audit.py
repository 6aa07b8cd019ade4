"""The one audit log on SQLite and PostgreSQL: append, filters, checkpoints, verify, proofs.

Tampering is done the way an attacker with database access would: raw SQL on the tables.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from lwm2m.store import (
    AuditError,
    AuditRecord,
    Ed25519Signer,
    Store,
)
from lwm2m.store.tables import SCHEMA_VERSION


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
