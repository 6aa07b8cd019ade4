"""kill -9 of a real eIM process serving eUICCs moved to a second eIM identity: each eIM's
counter per eUICC is never reused, no acknowledged result is lost (SQLite and PostgreSQL).

Like test_eim_crash.py, but the eIM runs two identities and both eUICCs were moved, after
their signed addEim results, from the first to the second: the child queues packages for one
of them (signed by the second eIM, numbered by its counter) as fast as it can when the kill
comes; the other has a package on the eUICC whose result the IPA still holds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from sgp32.eim import PackageState
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import SqlLedger
from sgp32.eim.tables import ASSOCIATION, PACKAGE
from sgp32.packages import AddEim, EimConfiguration, Enable, SetFallbackAttribute
from sgp32.signing import EimIdentity
from simulators.esim.https import HttpsIpa, client_for
from tests.sgp32.pki import MadePki
from tests.sgp32.test_eim_crash import kill_child, start_child
from tests.sgp32.test_eim_move import EIM_B, spki, two_eims
from tests.sgp32.test_eim_store import settle
from tests.sgp32.world import EIM_ID, NEW_ICCID, T0
from tests.store.conftest import StoreTarget

CHILD = r"""
import asyncio, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lwm2m.store import Store
from sgp32.eim import Eim, EimDeployment
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import EimStore
from sgp32.esipa.https import EsipaHttpsServer
from sgp32.packages import GetRat
from sgp32.signing import EimIdentity

url, data_dir, key_a, id_a, key_b, id_b, ci_pem, churn_eid, now = sys.argv[1:10]
load = lambda p: serialization.load_pem_private_key(open(p, "rb").read(), None)
ci = x509.load_pem_x509_certificate(open(ci_pem, "rb").read())
store = Store.open(url, data_dir)
store.create_schema()
create_schema(store)
identities = [EimIdentity(id_a, load(key_a)), EimIdentity(id_b, load(key_b))]
eims = EimStore(store, Eim(EimDeployment.of(identities, [ci])))

async def main():
    server = EsipaHttpsServer(eims.handle, tls=None, clock=lambda: float(now))
    host, port = await server.start("127.0.0.1", 0)
    print(json.dumps({"port": port}), flush=True)
    while True:  # transactions in flight whenever the kill comes
        await eims.queue(churn_eid, [GetRat()], now=float(now), actor="churn")

asyncio.run(main())
"""


def _pem(identity: EimIdentity, path: Path) -> str:
    path.write_bytes(
        identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def _counters(target: StoreTarget, eid: str) -> dict[str, tuple[int, list[int]]]:
    """eimId -> (its stored counter, the counters of its packages) for one EID."""
    with target.open() as store, store.transaction() as tx:
        stored = {
            str(r.eim_id): int(r.counter_value)
            for r in tx.execute(
                select(ASSOCIATION.c.eim_id, ASSOCIATION.c.counter_value).where(
                    ASSOCIATION.c.eid == eid
                )
            )
        }
        used: dict[str, list[int]] = {}
        for row in tx.execute(
            select(PACKAGE.c.eim_id, PACKAGE.c.counter_value)
            .where(PACKAGE.c.eid == eid)
            .order_by(PACKAGE.c.counter_value)
        ):
            used.setdefault(str(row.eim_id), []).append(int(row.counter_value))
    return {eim: (counter, used.get(eim, [])) for eim, counter in stored.items()}


@pytest.mark.integration
def test_kill_9_after_a_move_reuses_no_counter_of_either_eim(
    pki: MadePki, target: StoreTarget, tmp_path: Path
) -> None:
    world, second = two_eims(pki)
    euicc, ipa = world.device(1)
    churn, churn_ipa = world.device(2)
    args = [
        _pem(world.identity, tmp_path / "a.pem"),
        EIM_ID,
        _pem(second, tmp_path / "b.pem"),
        EIM_B,
        str(tmp_path / "ci.pem"),
        churn.eid,
        str(T0 + 1),
    ]
    (tmp_path / "ci.pem").write_bytes(pki.ci.public_bytes(serialization.Encoding.PEM))
    add = AddEim(EimConfiguration(EIM_B, public_key_der=spki(second), association_token=-1))

    with target.open() as store:
        store.create_schema()
        create_schema(store)
        for device in (euicc, churn):
            with store.transaction() as tx:
                ledger = SqlLedger(tx, store.audit)
                world.register(ledger, device)
                world.eim.queue(ledger, device.eid, [add], now=T0, actor="alice")
        settle(world, store, ipa, T0)
        settle(world, store, churn_ipa, T0)
        with store.transaction() as tx:
            ledger = SqlLedger(tx, store.audit)
            for device in (euicc, churn):
                world.eim.move_euicc(ledger, device.eid, EIM_B, now=T0, actor="alice")
            world.eim.queue(ledger, euicc.eid, [Enable(NEW_ICCID, True)], now=T0, actor="alice")

    async def fetch(port: int) -> None:
        async with client_for() as client:
            assert await HttpsIpa(ipa, client, f"http://127.0.0.1:{port}").exchange(T0 + 1)

    async def settle_over(port: int) -> None:
        async with client_for() as client:
            await HttpsIpa(ipa, client, f"http://127.0.0.1:{port}").settle(T0 + 2)

    child, port = start_child(target, args, CHILD)
    try:
        asyncio.run(fetch(port))  # package #2 (eIM B) is on the eUICC; its result in the IPA
        time.sleep(0.3)
    finally:
        kill_child(child)
    assert ipa.pending and euicc.eims[EIM_B].counter_value == 2

    churned = _counters(target, churn.eid)
    assert churned[EIM_ID] == (1, [1])  # the addEim, signed by the first eIM
    counter_b, used_b = churned[EIM_B]
    assert counter_b > 1 and used_b == list(range(2, counter_b + 1))  # none lost, none reused

    with target.open() as store, store.transaction() as tx:
        third = world.eim.queue(
            SqlLedger(tx, store.audit), euicc.eid, [SetFallbackAttribute(NEW_ICCID)], now=T0,
            actor="a",
        )  # fmt: skip
    assert (third.counter_value, third.eim_id) == (3, EIM_B)

    child, port = start_child(target, args, CHILD)
    try:
        asyncio.run(settle_over(port))  # result #2 delivered late, #3 fetched and answered
    finally:
        kill_child(child)
    assert not ipa.pending and ipa.refused == []
    assert (euicc.eims[EIM_ID].counter_value, euicc.eims[EIM_B].counter_value) == (1, 3)
    again_b, again_used = _counters(target, churn.eid)[EIM_B]
    assert again_b >= counter_b and again_used == list(range(2, again_b + 1))
    assert _counters(target, euicc.eid) == {EIM_ID: (1, [1]), EIM_B: (3, [2, 3])}
    with target.open() as store, store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        assert [p.state for p in ledger.packages(euicc.eid)] == [PackageState.DONE] * 3
        assert [r.outcome for r in ledger.results(euicc.eid)] == ["accepted"] * 3
        assert {p.iccid: p.fallback for p in ledger.profiles(euicc.eid)}[NEW_ICCID]
