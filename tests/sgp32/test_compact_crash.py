"""kill -9 of a real ``fleetloop serve`` between a compact AuthenticateClient and the IPA's
compact CancelSession: the SM-DP+ OID the rebuild needs (from InitiateAuthentication's
serverCertificate) was committed with the session before the IPA got that answer, so the
restarted eIM rebuilds euiccCancelSessionSigned and the test SM-DP+ verifies the eUICC's
signature over it (SQLite and PostgreSQL). Kept only in memory, the new process would have
had to refuse the cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from simulators.esim.download import Es10bDownload
from simulators.esim.https import HttpsIpa
from simulators.esim.smdp import LoopbackSmdp, PreparedProfile, SmdpServer
from tests.integration.conftest import Api, run
from tests.sgp32.serve_world import NEW_CARRIER, NEW_ICCID, EsimFiles, start_serve, stop_serve
from tests.sgp32.test_compact_download import SMDP_OID, smdp_certificate
from tests.store.conftest import StoreTarget

pytestmark = pytest.mark.integration


def test_kill_9_before_a_compact_cancel_the_restarted_eim_rebuilds_it(
    target: StoreTarget, tmp_path: Path
) -> None:
    files = EsimFiles.make(tmp_path / "esim-compact-crash")
    cert, key, ca = files.tls
    env = {"FLEETLOOP_EIM_SMDP_CA": str(ca)}
    extra = ["--database-url", target.url] if target.backend == "postgresql" else []
    world = start_serve(files, extra, env_extra=env)
    pki = files.pki
    smdp_key = ec.generate_private_key(ec.SECP256R1())
    smdp_cert = smdp_certificate(pki, smdp_key, now=pki.ci.not_valid_before_utc)
    smdp = LoopbackSmdp("", smdp_key, smdp_cert, pki.ci)
    euicc, ipa = world.device("84", 1)
    del euicc.profiles[NEW_ICCID]
    ipa.downloader = Es10bDownload(euicc, pki.ci.public_key())  # type: ignore[arg-type]
    ipa.ipa_features = (1, 5)  # indirect download, minimizeEsipaBytes
    ipa.cancel = ("authenticate", 3)  # pprNotAllowed, after the AuthenticateClient answer
    worlds = [world]

    async def case() -> None:
        server = SmdpServer(smdp, cert, key)
        smdp.address = f"127.0.0.1:{await server.start()}"
        code = smdp.prepare(PreparedProfile("CRASH-C", NEW_ICCID, NEW_CARRIER))
        client = world.client()
        api = Api(world.serve)
        try:
            await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(euicc.eid)]}, expect=201
            )
            ref = f"/v1/esim/euiccs/{euicc.eid}"
            await api.post(f"{ref}/packages", {"operation": "ipa-data"}, expect=201)
            remote = HttpsIpa(ipa, client, world.esipa_url)
            await remote.settle()  # the eIM has the IpaEuiccData (EUICCInfo2) now
            await api.post(
                f"{ref}/packages", {"operation": "download", "activation_code": code}, expect=201
            )
            assert await remote.exchange()  # the poll: the ProfileDownloadTrigger
            assert await remote.exchange()  # InitiateAuthentication
            assert await remote.exchange()  # compact AuthenticateClient, rebuilt and relayed
            assert ipa.download is not None and ipa.download.step == "cancel"
            assert smdp.calls == ["initiateAuthentication", "authenticateClient"]
            await api.aclose()
            world.serve.process.kill()  # SIGKILL: nothing is flushed or closed
            world.serve.process.wait()

            again = await asyncio.to_thread(start_serve, files, extra, env)
            worlds.append(again)
            api = Api(again.serve)
            await HttpsIpa(ipa, client, again.esipa_url).settle()
            assert ipa.sent_forms == [
                "compactAuthenticateResponseOk",
                "compactCancelSessionResponseOk",
            ]
            assert smdp.calls[-1] == "cancelSession"
            assert [reason for _, reason in smdp.cancelled] == [3]  # verified by the SM-DP+
            shown = await api.get(ref)
            assert shown["downloads"][0]["step"] == "cancelled"
            assert NEW_ICCID not in euicc.profiles
            packages = await api.get(f"{ref}/packages")
            assert packages["items"][0]["state"] == "failed"  # the trigger: cancelled
        finally:
            await client.aclose()
            await api.aclose()
            await server.stop()

    try:
        run(case(), timeout=120)
    finally:
        stop_serve(worlds[-1])
    assert smdp.oid() == SMDP_OID
