"""kill -9 of a real eIM process between queueing and result: no counter is reused, no
acknowledged result is lost (SQLite and PostgreSQL).

The child process serves the HTTPS binding (plain HTTP on loopback) over the store and, to
have transactions in flight when it dies, queues packages for a second eUICC as fast as it
can. The parent queues, drives the simulated IPA, and kills the child with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from sgp32.eim import PackageState
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import SqlLedger
from sgp32.eim.tables import ASSOCIATION, PACKAGE
from sgp32.packages import Enable, SetFallbackAttribute
from simulators.esim.https import HttpsIpa, client_for
from tests.conftest import REPO
from tests.sgp32.pki import MadePki
from tests.sgp32.world import NEW_ICCID, OLD_ICCID, T0, World, make_world
from tests.store.conftest import StoreTarget

CHILD = r"""
import asyncio, json, sys, time
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lwm2m.store import Store
from sgp32.eim import Eim, EimDeployment
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import EimStore
from sgp32.esipa.https import EsipaHttpsServer
from sgp32.packages import GetRat
from sgp32.signing import EimIdentity

url, data_dir, key_pem, ci_pem, eim_id, churn_eid, now = sys.argv[1:8]
key = serialization.load_pem_private_key(open(key_pem, "rb").read(), None)
ci = x509.load_pem_x509_certificate(open(ci_pem, "rb").read())
store = Store.open(url, data_dir)
store.create_schema()
create_schema(store)
eims = EimStore(store, Eim(EimDeployment.of([EimIdentity(eim_id, key)], [ci])))

async def main():
    server = EsipaHttpsServer(eims.handle, tls=None, clock=lambda: float(now))
    host, port = await server.start("127.0.0.1", 0)
    print(json.dumps({"port": port}), flush=True)
    while True:  # transactions in flight whenever the kill comes
        await eims.queue(churn_eid, [GetRat()], now=float(now), actor="churn")

asyncio.run(main())
"""


def start_child(
    target: StoreTarget, args: list[str], script: str = CHILD
) -> tuple[subprocess.Popen[str], int]:
    """Run `script` (an eIM process on `target`'s store) with `args`; its ESipa port."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, target.url, str(target.data_dir), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.kill()
        raise AssertionError(child.stderr.read() if child.stderr else "child died")
    return child, json.loads(line)["port"]


def kill_child(child: subprocess.Popen[str]) -> None:
    """SIGKILL, and make sure that is how it ended."""
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _counters_consistent(target: StoreTarget, eid: str) -> int:
    """The stored counter is exactly the number of packages (none lost, none reused)."""
    with target.open() as store, store.transaction() as tx:
        counter = tx.execute(
            select(ASSOCIATION.c.counter_value).where(ASSOCIATION.c.eid == eid)
        ).scalar_one()
        row = tx.execute(
            select(func.count().label("n"), func.max(PACKAGE.c.counter_value).label("top")).where(
                PACKAGE.c.eid == eid
            )
        ).one()
        count, top = row.n, row.top
    assert counter == count == (top or 0)
    return int(counter)


@pytest.mark.integration
def test_kill_9_between_queue_and_result_reuses_no_counter_and_loses_no_result(
    pki: MadePki, target: StoreTarget, tmp_path: Path
) -> None:
    world: World = make_world(pki)
    euicc, ipa = world.device(1)
    churn, _ = world.device(2)
    key_pem, ci_pem = tmp_path / "eim.pem", tmp_path / "ci.pem"
    key_pem.write_bytes(
        world.identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ci_pem.write_bytes(pki.ci.public_bytes(serialization.Encoding.PEM))
    files = [str(key_pem), str(ci_pem), world.identity.eim_id, churn.eid, str(T0 + 1)]

    with target.open() as store:
        store.create_schema()
        create_schema(store)
        with store.transaction() as tx:
            ledger = SqlLedger(tx, store.audit)
            world.register(ledger, euicc)
            world.register(ledger, churn)
            world.eim.queue(ledger, euicc.eid, [Enable(NEW_ICCID, True)], now=T0, actor="alice")

    async def fetch(port: int) -> None:
        async with client_for() as client:
            assert await HttpsIpa(ipa, client, f"http://127.0.0.1:{port}").exchange(T0 + 1)

    async def settle(port: int) -> None:
        async with client_for() as client:
            await HttpsIpa(ipa, client, f"http://127.0.0.1:{port}").settle(T0 + 2)

    child, port = start_child(target, files)
    try:
        asyncio.run(fetch(port))  # package 1 is on the eUICC; its result is still in the IPA
        time.sleep(0.3)
    finally:
        kill_child(child)
    assert ipa.pending and euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
    churned = _counters_consistent(target, churn.eid)
    assert churned > 0

    with target.open() as store, store.transaction() as tx:
        second = world.eim.queue(
            SqlLedger(tx, store.audit),
            euicc.eid,
            [SetFallbackAttribute(NEW_ICCID)],
            now=T0,
            actor="a",
        )
    assert second.counter_value == 2

    child, port = start_child(target, files)
    try:
        asyncio.run(settle(port))  # result 1 delivered late, package 2 fetched and answered
    finally:
        kill_child(child)  # right after the last acknowledgement
    assert not ipa.pending
    assert _counters_consistent(target, churn.eid) >= churned
    with target.open() as store, store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        packages = ledger.packages(euicc.eid)
        assert [(p.counter_value, p.state) for p in packages] == [
            (1, PackageState.DONE),
            (2, PackageState.DONE),
        ]
        assert [r.outcome for r in ledger.results(euicc.eid)] == ["accepted", "accepted"]
        profiles = {p.iccid: p for p in ledger.profiles(euicc.eid)}
        assert (
            profiles[NEW_ICCID].note in ("confirmed", "notification")
            and profiles[NEW_ICCID].fallback
        )
        assert profiles[OLD_ICCID].state.value == "disabled"
