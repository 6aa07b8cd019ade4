"""A ProfileDownloadTrigger and an indirect profile download end to end over real sockets: the
eIM (on the store, SQLite and PostgreSQL) behind its ESipa HTTPS listener relays the IPA's
ES9+ calls to a test SM-DP+ on loopback (HTTPS, JSON, signing with a key the test CI issued);
the simulated eUICC checks the SM-DP+'s certificate and signatures, installs the profile and
signs the installation result, which the eIM verifies and records. Then the new profile is
enabled through the eIM like any other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lifecycle.esim import EsimComponent
from lwm2m.store import Store
from sgp32.asn1 import decode, decode_from_eim, encode_to_eim
from sgp32.eim import PackageState, ProfileState
from sgp32.eim.schema import create_schema
from sgp32.eim.sessions import DownloadSession, SqlSessions
from sgp32.eim.sql import EimStore
from sgp32.errors import InvalidIdentifier
from sgp32.esipa.https import EsipaHttpsServer, server_ssl_context
from sgp32.esipa.relay import Es9Relay
from sgp32.packages import Enable
from simulators.esim.download import Es10bDownload
from simulators.esim.https import HttpsIpa, client_for
from simulators.esim.smdp import LoopbackSmdp, PreparedProfile, SmdpServer
from tests.sgp32.pki import NOW, MadePki, make_cert
from tests.sgp32.tls import client_context, make_tls
from tests.sgp32.world import OLD_CARRIER, T0, World, make_world

pytestmark = pytest.mark.integration

NEW_ICCID = "8988247000000000037"
DP_AUTH = x509.ObjectIdentifier("2.23.146.1.2.1.4")  # id-rspRole-dp-auth


@pytest.fixture
def world(pki: MadePki) -> World:
    return make_world(pki)


def make_smdp(pki: MadePki, address: str) -> LoopbackSmdp:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test SM-DP+")])
    cert = make_cert(name, key, pki.ci.subject, pki.ci_key, ca=False, policy=DP_AUTH)
    return LoopbackSmdp(address, key, cert, pki.ci, at=lambda: NOW)


@asynccontextmanager
async def running(
    world: World, store: Store, tmp_path: Path
) -> AsyncIterator[tuple[EimStore, LoopbackSmdp, str, Path]]:
    create_schema(store, now=0)
    eims = EimStore(store, world.eim)
    cert, key, ca = make_tls(tmp_path)
    smdp = make_smdp(world.pki, "")
    smdp_server = SmdpServer(smdp, cert, key)
    port = await smdp_server.start()
    smdp.address = f"127.0.0.1:{port}"
    relay = Es9Relay(client_context(ca), sessions=SqlSessions(store))
    component = EsimComponent(eims, None, relay=relay)
    esipa = EsipaHttpsServer(component.handle, tls=server_ssl_context(cert, key), clock=lambda: T0)
    host, esipa_port = await esipa.start("127.0.0.1", 0)
    try:
        yield eims, smdp, f"https://{host}:{esipa_port}", ca
    finally:
        await esipa.stop()
        await component.stop()
        await smdp_server.stop()


def test_a_triggered_download_is_relayed_installed_verified_and_then_enabled(
    world: World, store: Store, tmp_path: Path
) -> None:
    euicc, ipa = world.device(1, served={OLD_CARRIER, "Carrier C"})
    ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]

    async def main() -> None:
        async with running(world, store, tmp_path) as (eims, smdp, url, ca):
            code = smdp.prepare(PreparedProfile("MATCH-1", NEW_ICCID, "Carrier C"))
            await eims.register(
                euicc_certificate=euicc.certificate_der,
                eum_certificate=euicc.eum_certificate_der,
                now=T0,
                actor="alice",
            )
            trigger = await eims.queue_download(euicc.eid, code, now=T0, actor="alice")
            assert trigger.operations == (
                {"op": "profileDownloadTrigger", "activation_code": code},
            )
            client = client_for(client_context(ca))
            try:
                await HttpsIpa(ipa, client, url).settle(T0)
                assert smdp.calls == [
                    "initiateAuthentication",
                    "authenticateClient",
                    "getBoundProfilePackage",
                    "handleNotification",
                ]
                assert smdp.notifications, "the installation result reached the SM-DP+"
                assert smdp.notifications[0][:2] == b"\xbf\x37"  # a ProfileInstallationResult
                assert euicc.profiles[NEW_ICCID].carrier == "Carrier C"
                assert not euicc.profiles[NEW_ICCID].enabled
                assert ipa.answers_with_transaction_id == [True, True, True]
                await eims.queue(euicc.eid, [Enable(NEW_ICCID, True)], now=T0, actor="alice")
                await HttpsIpa(ipa, client, url).settle(T0)
            finally:
                await client.aclose()
        await store.flush()

    asyncio.run(main())
    assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
    with store.transaction() as tx:
        ledger = EimStore(store, world.eim).ledger(tx)
        packages = ledger.packages(euicc.eid)
        profiles = {p.iccid: p for p in ledger.profiles(euicc.eid)}
    assert [p.state for p in packages] == [PackageState.DONE, PackageState.DONE]
    assert packages[0].result is not None
    assert packages[0].result["results"] == [["profileInstallationResult", "success"]]
    assert packages[0].result["iccid"] == NEW_ICCID
    assert profiles[NEW_ICCID].state == ProfileState.ENABLED


def test_a_download_the_smdp_refuses_fails_the_trigger(
    world: World, store: Store, tmp_path: Path
) -> None:
    euicc, ipa = world.device(2)
    ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]

    async def main() -> None:
        async with running(world, store, tmp_path) as (eims, smdp, url, ca):
            await eims.register(
                euicc_certificate=euicc.certificate_der,
                eum_certificate=euicc.eum_certificate_der,
                now=T0,
                actor="alice",
            )
            unknown = f"1${smdp.address}$NO-SUCH-ORDER"
            await eims.queue_download(euicc.eid, unknown, now=T0, actor="alice")
            client = client_for(client_context(ca))
            try:
                await HttpsIpa(ipa, client, url).settle(T0)
            finally:
                await client.aclose()
            assert smdp.calls == ["initiateAuthentication", "authenticateClient"]
        await store.flush()

    asyncio.run(main())
    with store.transaction() as tx:
        packages = EimStore(store, world.eim).ledger(tx).packages(euicc.eid)
    assert packages[0].state == PackageState.FAILED
    assert packages[0].result is not None
    assert packages[0].result["results"] == [["profileDownloadError", 127]]

    # an InitiateAuthentication naming no open trigger is refused, never relayed
    (tmp_path / "again").mkdir()

    async def stray() -> bytes:
        async with running(world, store, tmp_path / "again") as (_, smdp, url, ca):
            client = client_for(client_context(ca))
            try:
                sent = encode_to_eim(
                    "initiateAuthenticationRequestEsipa",
                    {
                        "euiccChallenge": b"\x01" * 16,
                        "smdpAddress": smdp.address,
                        "eimTransactionId": b"\x99" * 8,
                    },
                )
                answer = await client.post(url + "/gsma/rsp2/asn1", content=sent)
                assert smdp.calls == []
                return answer.content
            finally:
                await client.aclose()

    reply = decode_from_eim(asyncio.run(stray()))
    assert reply.body == ("initiateAuthenticationErrorEsipa", 52)
    with pytest.raises(InvalidIdentifier):
        world.eim.queue_download(None, euicc.eid, "LPA:1$x", now=T0, actor="a")  # type: ignore[arg-type]


def test_the_eim_generates_ctxparams1_and_expands_the_compact_authenticate_response(
    world: World, store: Store, tmp_path: Path
) -> None:
    """An IPA with eimCtxParams1Generation and minimizeEsipaBytes: the eIM asks for its
    IpaEuiccData (IpaEuiccDataRequest), sends ctxParams1 (the trigger's matching ID, the
    device's DeviceInfo) in InitiateAuthenticationOkEsipa, and expands the IPA's
    compactAuthenticateResponseOk -- compactEuiccSigned1 without ctxParams1, no
    certificates -- into the EuiccSigned1 the eUICC signed (session transactionId,
    serverAddress, serverChallenge; stored EUICCInfo2 with the new extCardResource; its own
    ctxParams1) and the registered certificates. The SM-DP+ verifies euiccSignature1 over it."""
    euicc, ipa = world.device(3, served={OLD_CARRIER, "Carrier C"})
    downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]
    ipa.downloader = downloader
    ipa.ipa_features = (1, 3, 5)

    async def main() -> list[DownloadSession]:
        async with running(world, store, tmp_path) as (eims, smdp, url, ca):
            code = smdp.prepare(PreparedProfile("MATCH-3", NEW_ICCID, "Carrier C"))
            await eims.register(
                euicc_certificate=euicc.certificate_der,
                eum_certificate=euicc.eum_certificate_der,
                now=T0,
                actor="alice",
            )
            await eims.store.write(
                lambda tx: eims.eim.queue_ipa_data(eims.ledger(tx), euicc.eid, now=T0, actor="a")
            )
            client = client_for(client_context(ca))
            try:
                await HttpsIpa(ipa, client, url).settle(T0)
                downloader.ext_card_resource = bytes.fromhex("810102820400011000830200FF")
                await eims.queue_download(euicc.eid, code, now=T0, actor="alice")
                await HttpsIpa(ipa, client, url).settle(T0)
            finally:
                await client.aclose()
            assert smdp.calls == [
                "initiateAuthentication",
                "authenticateClient",
                "getBoundProfilePackage",
                "handleNotification",
            ]
            return await SqlSessions(store).of_eid(euicc.eid)

    sessions = asyncio.run(main())
    assert ipa.sent_forms == ["compactAuthenticateResponseOk", "compactDownloadResponseOk"]
    assert euicc.profiles[NEW_ICCID].carrier == "Carrier C"
    assert sessions[0].step.value == "installing" and sessions[0].ctx_params1 is not None
    ctx = decode("CtxParams1", sessions[0].ctx_params1)
    assert ctx == (
        "ctxParamsForCommonAuthentication",
        {"matchingId": "MATCH-3", "deviceInfo": downloader.device_info()},
    )
    with store.transaction() as tx:
        ledger = EimStore(store, world.eim).ledger(tx)
        packages = ledger.packages(euicc.eid)
        stored = ledger.ipa_data(euicc.eid)
    assert [p.state for p in packages] == [PackageState.DONE, PackageState.DONE]
    assert stored is not None and "euiccInfo2" in decode("IpaEuiccData", stored)


def test_a_compact_response_the_eim_cannot_expand_is_refused_not_relayed(
    world: World, store: Store, tmp_path: Path
) -> None:
    """minimizeEsipaBytes without the eIM knowing the eUICC's EUICCInfo2 (no IpaEuiccData):
    the AuthenticateClient gets the ESipa error and nothing garbled reaches the SM-DP+."""
    euicc, ipa = world.device(4, served={OLD_CARRIER, "Carrier C"})
    ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]
    ipa.ipa_features = (1, 5)

    async def main() -> list[str]:
        async with running(world, store, tmp_path) as (eims, smdp, url, ca):
            code = smdp.prepare(PreparedProfile("MATCH-4", NEW_ICCID, "Carrier C"))
            await eims.register(
                euicc_certificate=euicc.certificate_der,
                eum_certificate=euicc.eum_certificate_der,
                now=T0,
                actor="alice",
            )
            await eims.queue_download(euicc.eid, code, now=T0, actor="alice")
            client = client_for(client_context(ca))
            try:
                await HttpsIpa(ipa, client, url).settle(T0)
            finally:
                await client.aclose()
            return list(smdp.calls)

    assert asyncio.run(main()) == ["initiateAuthentication"]
    assert NEW_ICCID not in euicc.profiles
    with store.transaction() as tx:
        packages = EimStore(store, world.eim).ledger(tx).packages(euicc.eid)
    assert packages[0].state == PackageState.FAILED
