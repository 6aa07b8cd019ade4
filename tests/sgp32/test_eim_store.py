"""The eIM core on the store (SQLite and PostgreSQL): the same exchanges as in memory, the
counter increment atomic with its package, everything audited in the store's one log."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from lwm2m.store import Store
from sgp32.eim import Exchange, PackageState, ProfileState, ResultAccepted
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import EimStore, SqlLedger
from sgp32.eim.tables import EUICC
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
        assert tx.execute(select(EUICC.c.counter_value)).scalar_one() == 21
        assert [p.counter_value for p in ledger.packages(euicc.eid)] == list(range(1, 22))
