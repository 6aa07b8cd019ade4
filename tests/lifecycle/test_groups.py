"""Groups on SQLite and PostgreSQL: a dynamic group's membership follows device changes made
through the inventory (no rescan), a snapshot keeps its members, a tenant's group holds only
that tenant's devices, create/delete are audited."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lifecycle.groups import GroupExists, GroupRegistry, InvalidGroup, UnknownGroup
from lifecycle.inventory import Actor, DeviceRecord, InventoryRepository
from lifecycle.selector import parse_selector
from lwm2m.store import Store, Tx
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture)
from tests.lifecycle.inventory_support import open_store, population

BOB = Actor("operator:bob", "tok-2")


def members(store: Store, groups: GroupRegistry, name: str, tenant: str | None = None) -> set[str]:
    def read(tx: Tx) -> set[str]:
        group = groups.get(tx, name, tenant=tenant)
        return {e for e, _ in groups.members(tx, group, limit=1000).items}

    return store.read_sync(read)


def registry(store: Store) -> tuple[InventoryRepository, GroupRegistry]:
    inventory = InventoryRepository(store.audit)
    groups = GroupRegistry(inventory, store.audit)
    inventory.on_change.append(groups.on_change)
    return inventory, groups


def test_dynamic_membership_follows_changes_and_snapshots_stay(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = population(60)
    with open_store(database_url, tmp_path) as store:
        inventory, groups = registry(store)
        with store.transaction() as tx:
            inventory.upsert_many(tx, records)
        pilot = parse_selector("region=eu-west,label:pilot,firmware<2.10.0")
        with store.transaction() as tx:
            made = groups.create(tx, "eu-pilot", pilot, kind="dynamic", tenant=None, actor=BOB,
                                 now=10.0)  # fmt: skip
            groups.create(tx, "frozen", pilot, kind="snapshot", tenant=None, actor=BOB, now=10.0)
            groups.create(tx, "acme-eu", parse_selector("region=eu-west"), kind="dynamic",
                          tenant="acme", actor=BOB, now=10.0)  # fmt: skip
        first = {r.endpoint for r in records if pilot.matches(r)}
        assert first and made.members == len(first)
        assert members(store, groups, "eu-pilot") == first == members(store, groups, "frozen")
        acme_eu = {r.endpoint for r in records if r.region == "eu-west" and r.tenant == "acme"}
        assert members(store, groups, "acme-eu", "acme") == acme_eu

        joiner = next(r for r in records if r.endpoint not in first and r.tenant == "globex")
        leaver = next(r for r in records if r.endpoint in first)
        with store.transaction() as tx:
            inventory.upsert(tx, replace(joiner, region="eu-west", labels={"pilot": ""},
                                         firmware="2.3.0", updated_at=20.0))  # fmt: skip
            inventory.upsert(tx, replace(leaver, firmware="2.10.0", updated_at=20.0))
        assert members(store, groups, "eu-pilot") == first - {leaver.endpoint} | {joiner.endpoint}
        assert members(store, groups, "frozen") == first
        # the joiner is globex's: acme's group never takes it, whatever its selector says
        assert joiner.endpoint not in members(store, groups, "acme-eu", "acme")
        # a bulk relabel is an event too
        with store.transaction() as tx:
            inventory.relabel(tx, parse_selector("label:pilot"), add={}, remove=["pilot"],
                              actor=BOB, now=30.0)  # fmt: skip
        assert members(store, groups, "eu-pilot") == set()
        assert groups.joined >= 1 and groups.left >= len(first)


def test_names_tenants_listing_deletion_and_audit(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    with open_store(database_url, tmp_path) as store:
        inventory, groups = registry(store)
        with store.transaction() as tx:
            inventory.upsert(tx, DeviceRecord("a1", tenant="acme", sku="T1", created_at=1))
            inventory.upsert(tx, DeviceRecord("g1", tenant="globex", sku="T1", created_at=1))
        t1 = parse_selector("sku=T1")
        with store.transaction() as tx:
            groups.create(tx, "t1", t1, kind="dynamic", tenant="acme", actor=BOB, now=1.0)
            groups.create(tx, "t1", t1, kind="dynamic", tenant="globex", actor=BOB, now=1.0)
        with pytest.raises(GroupExists, match="'t1' already exists"), store.transaction() as tx:
            groups.create(tx, "t1", t1, kind="snapshot", tenant="acme", actor=BOB, now=2.0)
        with pytest.raises(InvalidGroup, match="not valid"), store.transaction() as tx:
            groups.create(tx, "no spaces", t1, kind="dynamic", tenant=None, actor=BOB, now=2.0)
        acme = frozenset({"acme"})
        listed = store.read_sync(lambda tx: groups.groups(tx, acme))
        assert [(g.name, g.tenant, g.members) for g in listed] == [("t1", "acme", 1)]
        assert len(store.read_sync(lambda tx: groups.groups(tx, None))) == 2
        with pytest.raises(InvalidGroup, match="several tenants"):
            store.read_sync(lambda tx: groups.get(tx, "t1", None))
        with pytest.raises(UnknownGroup):
            store.read_sync(lambda tx: groups.get(tx, "t1", frozenset({"initech"})))
        assert store.read_sync(lambda tx: groups.groups_of(tx, "a1", acme)) == ["t1"]
        with store.transaction() as tx:
            groups.delete(tx, "t1", actor=BOB, now=3.0, tenants=acme)
        assert store.read_sync(lambda tx: groups.get(tx, "t1", None)).tenant == "globex"
        records = store.read_sync(lambda tx: store.audit.list(tx, action_prefix="group."))
        assert [(r.action, r.subject, r.tenant, r.actor) for r in records] == [
            ("group.create", "group:t1", "acme", "operator:bob"),
            ("group.create", "group:t1", "globex", "operator:bob"),
            ("group.delete", "group:t1", "acme", "operator:bob"),
        ]
