"""The ESipa HTTPS binding end to end over real sockets (TLS on 127.0.0.1, port 0): the eIM
core on the store behind it, simulated IPAs with their eUICCs in front, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update

from lwm2m.store import Store
from sgp32.eim import Eim, EimDeployment, MemoryLedger, PackageState, ProfileState
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import EimStore
from sgp32.eim.tables import PACKAGE
from sgp32.esipa.https import BindingError, EsipaHttpsServer, server_ssl_context
from sgp32.packages import Enable, SetFallbackAttribute
from sgp32.signing import EimIdentity
from simulators.esim.https import HttpsIpa, client_for
from tests.sgp32.pki import MadePki
from tests.sgp32.tls import client_context, make_tls
from tests.sgp32.world import EIM_ID, NEW_ICCID, OLD_CARRIER, OLD_ICCID, T0, World, make_world


@pytest.fixture
def world(pki: MadePki) -> World:
    return make_world(pki)


@asynccontextmanager
async def running(
    handle: Callable[[bytes, float], Awaitable[Any]], tmp_path: Path
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    cert, key, ca = make_tls(tmp_path)
    server = EsipaHttpsServer(handle, tls=server_ssl_context(cert, key), clock=lambda: T0 + 1)
    host, port = await server.start("127.0.0.1", 0)
    client = client_for(client_context(ca))
    try:
        yield f"https://{host}:{port}", client
    finally:
        await client.aclose()
        await server.stop()


def test_an_enable_goes_out_comes_back_signed_and_is_confirmed(
    world: World, store: Store, tmp_path: Path
) -> None:
    create_schema(store, now=0)
    eims = EimStore(store, world.eim)
    euicc, ipa = world.device(1)
    cut, cut_ipa = world.device(2, served={OLD_CARRIER}, rollback_after=30)

    async def main() -> None:
        for device in (euicc, cut):
            await eims.register(
                euicc_certificate=device.certificate_der,
                eum_certificate=device.eum_certificate_der,
                now=T0,
                actor="alice",
            )
            await eims.queue(device.eid, [Enable(NEW_ICCID, True)], now=T0, actor="alice")
        async with running(eims.handle, tmp_path) as (url, client):
            assert await HttpsIpa(ipa, client, url).settle(T0 + 1) >= 3
            remote = HttpsIpa(cut_ipa, client, url)
            assert await remote.exchange(T0 + 1)  # gets the package, loses connectivity
            assert not await remote.exchange(T0 + 5)
            await remote.settle(T0 + 31)  # rolled back, result over the old profile
        await store.flush()

    asyncio.run(main())
    assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
    with store.transaction() as tx:
        ledger = eims.ledger(tx)
        profiles = {p.iccid: p for p in ledger.profiles(euicc.eid)}
        assert profiles[NEW_ICCID].state == ProfileState.ENABLED
        assert profiles[NEW_ICCID].note == "confirmed"
        assert profiles[OLD_ICCID].state == ProfileState.DISABLED
        assert [p.state for p in ledger.packages(euicc.eid)] == [PackageState.DONE]
        rolled = {p.iccid: p for p in ledger.profiles(cut.eid)}
        assert rolled[NEW_ICCID].note == "rolled back"
        assert rolled[OLD_ICCID].state == ProfileState.ENABLED


def test_a_replayed_and_a_forged_package_are_refused(
    world: World, store: Store, tmp_path: Path
) -> None:
    create_schema(store, now=0)
    eims = EimStore(store, world.eim)
    euicc, ipa = world.device(1)
    rogue_identity = EimIdentity(EIM_ID, ec.generate_private_key(ec.SECP256R1()))
    rogue = Eim(EimDeployment.of([rogue_identity], [world.pki.ci]))
    rogue_ledger = MemoryLedger()
    world.register(rogue_ledger, euicc)
    rogue_ledger.add_euicc(dataclasses.replace(rogue_ledger.euicc(euicc.eid), counter_value=40))  # type: ignore[arg-type, type-var]
    rogue.queue(rogue_ledger, euicc.eid, [Enable(NEW_ICCID)], now=T0, actor="mallory")

    async def rogue_handle(data: bytes, now: float) -> Any:
        return rogue.handle(rogue_ledger, data, now)

    async def main() -> None:
        await eims.register(
            euicc_certificate=euicc.certificate_der,
            eum_certificate=euicc.eum_certificate_der,
            now=T0,
            actor="alice",
        )
        await eims.queue(euicc.eid, [SetFallbackAttribute(NEW_ICCID)], now=T0, actor="a")
        async with running(eims.handle, tmp_path) as (url, client):
            device = HttpsIpa(ipa, client, url)
            await device.settle(T0 + 1)
            # the delivered package is offered again (a replay): the eUICC refuses it, signed
            await store.write(
                lambda tx: tx.execute(update(PACKAGE).values(state="queued", result=None))
            )
            await device.settle(T0 + 2)
        async with running(rogue_handle, tmp_path / "rogue") as (url, client):
            await HttpsIpa(ipa, client, url).exchange(T0 + 3)  # a forged package

    (tmp_path / "rogue").mkdir()
    asyncio.run(main())
    kinds = [r[0] for r in ipa.refused]
    assert kinds[0] == "euiccPackageErrorSigned"
    assert (
        kinds[0] and ipa.refused[0][1]["euiccPackageErrorDataSigned"]["euiccPackageErrorCode"] == 4
    )
    assert kinds[1] == "euiccPackageErrorUnsigned"  # forged: wrong key for that eimId
    assert euicc.eims[EIM_ID].counter_value == 1
    assert euicc.profiles[NEW_ICCID].enabled is False
    with store.transaction() as tx:
        outcomes = [r.outcome for r in eims.ledger(tx).results(euicc.eid)]
    assert outcomes == ["accepted", "accepted"]  # the signed replayError is a recorded result


def test_what_is_not_esipa_gets_a_clear_http_error(
    world: World, store: Store, tmp_path: Path
) -> None:
    create_schema(store, now=0)
    eims = EimStore(store, world.eim)

    async def main() -> list[tuple[int, str]]:
        async with running(eims.handle, tmp_path) as (url, client):
            answers = [
                await client.post(url + "/gsma/rsp2/asn1", content=b"\x30\x03\x02\x01\x01"),
                await client.post(url + "/gsma/rsp2/asn1", content=b"\xbf\x4f\x81\x01\x00"),
                await client.get(url + "/gsma/rsp2/asn1"),
                await client.post(url + "/other", content=b""),
            ]
            return [(a.status_code, a.text) for a in answers]

    answers = asyncio.run(main())
    assert [a[0] for a in answers] == [400, 400, 405, 404]
    assert "tag 30" in answers[0][1]
    with pytest.raises(BindingError, match="loopback"):
        asyncio.run(EsipaHttpsServer(eims.handle, tls=None).start("0.0.0.0", 0))
