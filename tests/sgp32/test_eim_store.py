"""The eIM core on the store (SQLite and PostgreSQL): the same exchanges as in memory, the
counter increment atomic with its package, everything audited in the store's one log."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from lwm2m.store import Store
from sgp32.eim import Exchange, PackageState, ProfileState, ResultAccepted
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import EimStore, ImportRefused, SqlLedger
from sgp32.eim.tables import ASSOCIATION
from sgp32.errors import InvalidIdentifier
from sgp32.packages import Disable, Enable
from simulators.esim.ipa import SimIpa
from tests.sgp32.pki import MadePki
from tests.sgp32.world import NEW_ICCID, OLD_CARRIER, OLD_ICCID, T0, World, make_world


@pytest.fixture
def world(pki: MadePki) -> World:
    return make_world(pki)


@pytest.fixture
def eim_store(store: Store) -> Store:
    create_schema(store, now=0)
    create_schema(store, now=1)  # idempotent
    return store


def sql_step(world: World, store: Store, ipa: SimIpa, now: float) -> Exchange | None:
    sent = ipa.outgoing(now)
    if sent is None:
        return None
    with store.transaction() as tx:
        exchange = world.eim.handle(SqlLedger(tx, store.audit), sent, now)
    ipa.incoming(sent, exchange.reply, now)
    return exchange


def settle(world: World, store: Store, ipa: SimIpa, now: float) -> list[Exchange]:
    out: list[Exchange] = []
    ipa.last_get_answer = None
    for _ in range(20):
        exchange = sql_step(world, store, ipa, now)
        if exchange is None:
            break
        out.append(exchange)
        idle = not ipa.pending and not ipa.euicc.notifications
        if ipa.last_get_answer == "eimPackageError:1" and idle:
            break
    return out


def test_a_switch_and_a_rollback_run_on_the_store(world: World, eim_store: Store) -> None:
    store = eim_store
    good, good_ipa = world.device(1)
    cut, cut_ipa = world.device(2, served={OLD_CARRIER}, rollback_after=30)
    with store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        for euicc in (good, cut):
            world.register(ledger, euicc)
            world.eim.queue(ledger, euicc.eid, [Enable(NEW_ICCID, True)], now=T0, actor="alice")
    settle(world, store, good_ipa, T0 + 1)
    sql_step(world, store, cut_ipa, T0 + 1)
    assert sql_step(world, store, cut_ipa, T0 + 5) is None
    outcomes = [o for e in settle(world, store, cut_ipa, T0 + 31) for o in e.outcomes]
    assert any(isinstance(o, ResultAccepted) and len(o.results) == 2 for o in outcomes)
    with store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        good_profiles = {p.iccid: p for p in ledger.profiles(good.eid)}
        cut_profiles = {p.iccid: p for p in ledger.profiles(cut.eid)}
        assert good_profiles[NEW_ICCID].state == ProfileState.ENABLED
        assert good_profiles[NEW_ICCID].note == "confirmed"
        assert cut_profiles[NEW_ICCID].note == "rolled back"
        assert cut_profiles[OLD_ICCID].state == ProfileState.ENABLED
        assert [p.state for p in ledger.packages(good.eid)] == [PackageState.DONE]
        assert [r.outcome for r in ledger.results(cut.eid)] == ["accepted"]
    with store.transaction() as tx:
        records = store.audit.list(tx, subject=f"eid:{cut.eid}", limit=1000)
        assert store.audit.verify(tx).ok
    actions = [(r.action, r.outcome) for r in records]
    assert actions[:3] == [
        ("esim.euicc.register", "ok"),
        ("esim.package.queue", "ok"),
        ("esim.package.deliver", "ok"),
    ]
    assert ("esim.result", "ok") in actions


def test_the_counter_moves_only_with_its_package(world: World, eim_store: Store) -> None:
    store = eim_store
    euicc, _ = world.device(1)
    with store.transaction() as tx:
        world.register(SqlLedger(tx, store.audit), euicc)
    eims = EimStore(store, world.eim)

    async def main() -> list[int]:
        try:
            done = await asyncio.gather(
                *(eims.queue(euicc.eid, [Disable(OLD_ICCID)], now=T0, actor="a") for _ in range(20))
            )
            with pytest.raises(InvalidIdentifier):  # fails after the counter UPDATE: rolled back
                await eims.queue(euicc.eid, [Disable("12")], now=T0, actor="a")
            later = await eims.queue(euicc.eid, [Disable(OLD_ICCID)], now=T0, actor="a")
            return [p.counter_value for p in [*done, later]]
        finally:
            await store.flush()

    counters = asyncio.run(main())
    assert sorted(counters) == list(range(1, 22))
    with store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        assert tx.execute(select(ASSOCIATION.c.counter_value)).scalar_one() == 21
        assert [p.counter_value for p in ledger.packages(euicc.eid)] == list(range(1, 22))


def test_import_batches_links_and_listings(world: World, eim_store: Store) -> None:
    """register_many is all or nothing; endpoint links move with a relink; the listings the
    API pages through and counts from agree on both databases."""
    eims = EimStore(eim_store, world.eim)
    devices = [world.device(n)[0] for n in range(1, 5)]
    chains = [
        (d.certificate_der, d.eum_certificate_der, None, f"ep-{n}") for n, d in enumerate(devices)
    ]
    bad = (devices[0].eum_certificate_der, devices[0].eum_certificate_der, None, None)

    async def main() -> None:
        with pytest.raises(ImportRefused) as refused:
            await eims.register_many([*chains[:2], bad], now=T0, actor="alice")
        assert refused.value.index == 2
        with eim_store.transaction() as tx:
            assert eims.ledger(tx).euiccs() == []  # the two good ones were not kept either
        records = await eims.register_many(chains, now=T0, actor="alice")
        assert [r.eid for r in records] == [d.eid for d in devices]
        # relink: ep-0 moves to the second eUICC, whose old link ep-1 goes away
        await eims.register_many(
            [(devices[1].certificate_der, devices[1].eum_certificate_der, None, "ep-0")],
            now=T0,
            actor="alice",
        )
        await eims.queue(devices[2].eid, [Enable(NEW_ICCID, True)], now=T0, actor="alice")

    asyncio.run(main())
    with eim_store.transaction() as tx:
        ledger = eims.ledger(tx)
        links = ledger.endpoints()
        assert links == {devices[1].eid: "ep-0", devices[2].eid: "ep-2", devices[3].eid: "ep-3"}
        assert ledger.eid_of("ep-0") == devices[1].eid and ledger.eid_of("ep-1") is None
        assert ledger.open_counts() == {devices[2].eid: 1}
        ordered = sorted(d.eid for d in devices)
        page = ledger.euiccs(limit=2)
        assert [r.eid for r in page] == ordered[:2]
        assert [r.eid for r in ledger.euiccs(after=page[-1].eid)] == ordered[2:]
        assert ledger.euiccs(tenants=frozenset({"nobody"})) == []
        assert ledger.enabled_profiles() == {}
