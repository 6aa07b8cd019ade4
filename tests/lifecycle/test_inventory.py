"""The inventory repository and its event-driven upkeep, on SQLite and PostgreSQL: records
round-trip, selection is paged and tenant-scoped, stage moves are validated and audited, bulk
changes write one audit record each, registrations join the factory identity and record the
bootstrap, reports update facts, imports create manufactured records."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from bootstrap.identities import BootstrapCredential, FactoryIdentity
from bootstrap.importer import parse_identities
from bootstrap.repository import IdentityRepository, StateRepository
from bootstrap.state import BootstrapState, Phase
from lifecycle.inventory import (
    Actor,
    DeviceRecord,
    InvalidChange,
    InventoryRepository,
    StageError,
    UnknownDevice,
    parse_labels,
)
from lifecycle.inventory_events import InventoryService, import_extras, reported_facts
from lifecycle.selector import parse_selector
from lwm2m.model import ObjectInstance, SingleResource, Value
from lwm2m.model import Path as LwPath
from lwm2m.server import Notification
from lwm2m.store import Store
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture)
from tests.lifecycle.inventory_support import open_store, population

ALICE = Actor("operator:alice", "tok-1")


def audit_actions(store: Store) -> list[tuple[str, str, tuple[str, ...]]]:
    records = store.read_sync(lambda tx: store.audit.list(tx, action_prefix="inventory."))
    return [(r.action, r.subject, r.endpoints) for r in records]


def test_a_record_round_trips_with_labels_iccids_and_history(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    record = DeviceRecord(
        "dev-1", tenant="acme", region="eu-west", iccids=("8944", "8945"),
        labels={"pilot": "", "batch": "7"}, stage="active",
        stage_history=(("manufactured", 1.0), ("active", 2.5)), firmware="2.10.0",
        registered=True, last_seen=3.0, created_at=1.0, updated_at=3.0,
    )  # fmt: skip
    repo = InventoryRepository()
    with open_store(database_url, tmp_path) as store:
        with store.transaction() as tx:
            repo.upsert(tx, record)
        assert store.read_sync(lambda tx: repo.get(tx, "dev-1")) == record
        with store.transaction() as tx:
            repo.upsert(tx, replace(record, labels={"canary": "x"}, region=None))
        again = store.read_sync(lambda tx: repo.get(tx, "dev-1"))
        assert again is not None and again.labels == {"canary": "x"} and again.region is None
        assert store.read_sync(lambda tx: repo.get(tx, "nope")) is None


def test_select_pages_in_endpoint_order_and_respects_the_tenant_scope(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = population(120)
    repo = InventoryRepository()
    with open_store(database_url, tmp_path) as store:
        with store.transaction() as tx:
            repo.upsert_many(tx, records)
        selector = parse_selector("stage!=retired")
        seen: list[str] = []
        after = None
        while True:
            page = store.read_sync(
                lambda tx, a=after: repo.select(tx, selector, frozenset({"acme"}), after=a, limit=7)
            )
            assert len(page.items) <= 7
            seen.extend(r.endpoint for r in page.items)
            if page.next_after is None:
                break
            after = page.next_after
        wanted = {r.endpoint for r in records if r.tenant == "acme" and r.stage != "retired"}
        assert set(seen) == wanted and len(seen) == len(wanted)
        assert store.read_sync(lambda tx: repo.count(tx, selector, frozenset({"acme"}))) == len(
            wanted
        )
        assert store.read_sync(lambda tx: repo.count(tx, selector, frozenset())) == 0


def test_stage_moves_are_validated_and_audited(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    repo = InventoryRepository()
    with open_store(database_url, tmp_path) as store:
        repo.audit = store.audit
        with store.transaction() as tx:
            repo.upsert(tx, DeviceRecord("d1", tenant="acme", stage="active", created_at=1))
        with store.transaction() as tx:
            moved = repo.change_stage(tx, "d1", "suspend", actor=ALICE, now=10.0)
        assert moved.stage == "suspended" and moved.stage_history[-1] == ("suspended", 10.0)
        with (
            pytest.raises(StageError, match="'d1' is suspended; suspend applies to"),
            store.transaction() as tx,
        ):
            repo.change_stage(tx, "d1", "suspend", actor=ALICE, now=11.0)
        with (
            pytest.raises(UnknownDevice),
            store.transaction() as tx,
        ):  # another tenant's device does not exist
            repo.change_stage(
                tx, "d1", "resume", actor=ALICE, now=11.0, tenants=frozenset({"globex"})
            )
        with store.transaction() as tx:
            repo.change_stage(tx, "d1", "resume", actor=ALICE, now=12.0)
            repo.change_stage(tx, "d1", "retire", actor=ALICE, now=13.0)
        with pytest.raises(StageError, match="is retired"), store.transaction() as tx:
            repo.change_stage(tx, "d1", "resume", actor=ALICE, now=14.0)
        assert [a for a, _, _ in audit_actions(store)] == [
            "inventory.suspend", "inventory.resume", "inventory.retire",
        ]  # fmt: skip
        record = store.read_sync(lambda tx: repo.require(tx, "d1"))
        assert [s for s, _ in record.stage_history] == ["suspended", "active", "retired"]


def test_bulk_relabel_and_moves_change_only_the_selection_with_one_audit_record_each(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = population(80)
    repo = InventoryRepository()
    with open_store(database_url, tmp_path) as store:
        repo.audit = store.audit
        with store.transaction() as tx:
            repo.upsert_many(tx, records)
        scope = frozenset({"acme"})
        eu = parse_selector("region=eu-west")
        with store.transaction() as tx:
            relabelled = repo.relabel(
                tx, eu, add={"wave": "2"}, remove=["pilot"], actor=ALICE, now=5.0, tenants=scope
            )
        wanted = sorted(r.endpoint for r in records if r.region == "eu-west" and r.tenant == "acme")
        assert list(relabelled.endpoints) == wanted and wanted
        after = {
            r.endpoint: r
            for r in store.read_sync(lambda tx: repo.get_many(tx, [r.endpoint for r in records]))
        }
        for r in records:
            if r.endpoint in wanted:
                assert after[r.endpoint].labels.get("wave") == "2"
                assert "pilot" not in after[r.endpoint].labels
            else:
                assert after[r.endpoint].labels == r.labels
        with store.transaction() as tx:
            moved = repo.move(tx, parse_selector("label:wave=2"), attribute="policy_group",
                              value="beta", actor=ALICE, now=6.0)  # fmt: skip
            repo.move(tx, parse_selector("label:wave"), attribute="region", value="eu-north",
                      actor=ALICE, now=7.0)  # fmt: skip
        assert moved.count == len(wanted)
        assert store.read_sync(
            lambda tx: repo.count(tx, parse_selector("group=beta,region=eu-north"))
        ) == len(wanted)
        actions = audit_actions(store)
        assert [a for a, _, _ in actions] == [
            "inventory.relabel", "inventory.move_policy_group", "inventory.move_region",
        ]  # fmt: skip
        assert actions[0][2] == tuple(wanted)
        with pytest.raises(InvalidChange, match="label name 'bad name'"), store.transaction() as tx:
            repo.relabel(tx, eu, add={"bad name": ""}, actor=ALICE, now=8.0)
        with pytest.raises(InvalidChange, match="cannot move 'tenant'"), store.transaction() as tx:
            repo.move(tx, eu, attribute="tenant", value="x", actor=ALICE, now=8.0)
        assert len(audit_actions(store)) == 3  # refused changes are not audited as done


def test_labels_column_syntax() -> None:
    assert parse_labels("pilot; batch=7 ;;ring=a/b") == {"pilot": "", "batch": "7", "ring": "a/b"}
    with pytest.raises(InvalidChange):
        parse_labels("=x")


# -- events ---------------------------------------------------------------------------------------


def identity(endpoint: str, **kw: str) -> FactoryIdentity:
    return FactoryIdentity(endpoint, BootstrapCredential.nosec(), created_at=100.0, **kw)


def notification(endpoint: str, resources: dict[int, Value], obj: int = 3) -> Notification:
    instance = ObjectInstance.of(0, [SingleResource(rid, v) for rid, v in resources.items()])
    path = LwPath.of(obj, 0)
    return Notification(endpoint, "obs-1", (path,), {path: instance}, 0.0)


def test_registration_joins_the_identity_and_records_bootstrap_then_active(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def scenario(store: Store) -> None:
        now = [300.0]
        service = InventoryService(store, clock=lambda: now[0])
        with store.transaction() as tx:
            IdentityRepository().add_many(
                tx, [identity("d1", tenant="acme", region="eu-west", sku="T1", serial="S1")]
            )
            StateRepository().put(tx, BootstrapState("d1", phase=Phase.FINISHED, finished_at=200.0))
        store.write_nowait(lambda tx: service.seen(tx, "d1", 300.0))
        store.write_nowait(lambda tx: service.seen(tx, "stray", 301.0))
        await store.flush()
        d1 = await store.read(lambda tx: service.repository.require(tx, "d1"))
        assert (d1.tenant, d1.region, d1.sku, d1.serial) == ("acme", "eu-west", "T1", "S1")
        assert d1.stage_history == (
            ("manufactured", 100.0), ("bootstrapped", 200.0), ("active", 300.0),
        )  # fmt: skip
        assert d1.registered and d1.last_seen == 300.0
        stray = await store.read(lambda tx: service.repository.require(tx, "stray"))
        assert stray.stage_history == (("active", 301.0),) and stray.tenant is None
        # an operator's move survives the next registration; a suspended device stays so
        await store.write(lambda tx: service.repository.move(
            tx, parse_selector("endpoint=d1"), attribute="region", value="eu-north",
            actor=ALICE, now=310.0))  # fmt: skip
        await store.write(
            lambda tx: service.repository.change_stage(tx, "d1", "suspend", actor=ALICE, now=311)
        )
        await store.write(lambda tx: service.seen(tx, "d1", 320.0))
        d1 = await store.read(lambda tx: service.repository.require(tx, "d1"))
        assert d1.region == "eu-north" and d1.stage == "suspended" and d1.last_seen == 320.0
        store.write_nowait(lambda tx: service.gone(tx, "d1", 330.0))
        await store.flush()
        d1 = await store.read(lambda tx: service.repository.require(tx, "d1"))
        assert not d1.registered

    with open_store(database_url, tmp_path) as store:
        asyncio.run(scenario(store))


def test_reported_facts_update_the_record_and_other_notifications_write_nothing(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def scenario(store: Store) -> None:
        service = InventoryService(store, clock=lambda: 500.0)
        await store.write(lambda tx: service.seen(tx, "d2", 400.0))
        device = notification("d2", {0: Value.string("Acme"), 1: Value.string("T-1000"),
                                     3: Value.string("2.4.1"), 9: Value.integer(80)})  # fmt: skip
        await service.on_reported(device)
        await service.on_reported(notification("d2", {0: Value.integer(7), 9: Value.integer(5),
                                                      10: Value.integer(310)}, obj=4))  # fmt: skip
        await store.flush()
        d2 = await store.read(lambda tx: service.repository.require(tx, "d2"))
        assert (d2.manufacturer, d2.model, d2.firmware) == ("Acme", "T-1000", "2.4.1")
        assert (d2.radio, d2.serving_plmn, d2.last_seen) == ("nb-iot", "31005", 500.0)
        before = d2.updated_at
        await service.on_reported(notification("d2", {9: Value.integer(79)}))  # battery only
        await service.on_reported(device)  # same facts again
        await store.flush()
        assert (
            await store.read(lambda tx: service.repository.require(tx, "d2"))
        ).updated_at == before

    with open_store(database_url, tmp_path) as store:
        asyncio.run(scenario(store))


def test_reported_facts_extraction() -> None:
    facts = reported_facts(
        notification("x", {3: Value.string(" 1.2.3 "), 2: Value.string("sn")}).content
    )
    assert facts == {"firmware": "1.2.3"}
    assert reported_facts(notification("x", {0: Value.integer(99)}, obj=4).content) == {
        "radio": "bearer-99"
    }


def test_imported_identities_get_manufactured_records_with_the_inventory_columns(
    database_url: str | None,  # noqa: F811
    tmp_path: Path,
) -> None:
    csv_text = (
        "endpoint,tenant,region,security_mode,country,carrier,iccids,labels\n"
        'i1,acme,eu-west,nosec,DE,tmo,8949001;8949002,"pilot;batch=7"\n'
        "i2,acme,us-east,nosec,US,vzw,,\n"
    )
    parsed = parse_identities(csv_text, format="csv", now=50.0)
    assert not parsed.rejected  # the bootstrap importer accepts (and ignores) the columns
    extras = import_extras(csv_text, "csv")
    assert extras["i1"] == {"country": "DE", "carrier": "tmo", "iccids": ("8949001", "8949002"),
                            "labels": {"pilot": "", "batch": "7"}}  # fmt: skip

    async def scenario(store: Store) -> None:
        service = InventoryService(store, clock=lambda: 60.0)
        await store.write(
            lambda tx: IdentityRepository().add_many(tx, [p.identity for p in parsed.accepted])
        )
        assert await service.sync_import(extras, ["i1", "i2"]) == 2
        i1 = await store.read(lambda tx: service.repository.require(tx, "i1"))
        assert (i1.stage, i1.stage_history) == ("manufactured", (("manufactured", 50.0),))
        assert (i1.tenant, i1.region, i1.country, i1.carrier) == ("acme", "eu-west", "DE", "tmo")
        assert i1.iccids == ("8949001", "8949002") and i1.labels == {"pilot": "", "batch": "7"}
        count = await store.read(
            lambda tx: service.repository.count(tx, parse_selector("stage=manufactured,country=US"))
        )
        assert count == 1

    with open_store(database_url, tmp_path) as store:
        asyncio.run(scenario(store))
    with pytest.raises(InvalidChange, match="i9: label name"):
        import_extras("endpoint,labels\ni9,bad label\n", "csv")
