"""kill -9 of a real ``fleetloop serve`` between a compact AuthenticateClient and the IPA's
compact CancelSession: the SM-DP+ OID the rebuild needs (from InitiateAuthentication's
serverCertificate) was committed with the session before the IPA got that answer, so the
restarted eIM rebuilds euiccCancelSessionSigned and the test SM-DP+ verifies the eUICC's
signature over it (SQLite and PostgreSQL). Kept only in memory, the new process would have
had to refuse the cancellation."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.esim.https import HttpsIpa
from simulators.esim.smdp import PreparedProfile
from tests.integration.conftest import Api, run
from tests.sgp32.download_rig import download_rig
from tests.sgp32.serve_world import NEW_CARRIER, NEW_ICCID
from tests.sgp32.test_compact_download import SMDP_OID
from tests.store.conftest import StoreTarget

pytestmark = pytest.mark.integration


def test_kill_9_before_a_compact_cancel_the_restarted_eim_rebuilds_it(
    target: StoreTarget, tmp_path: Path
) -> None:
    rig = download_rig(target, tmp_path / "esim-compact-crash", "84")
    smdp, euicc, ipa, world = rig.smdp, rig.euicc, rig.ipa, rig.world
    ipa.ipa_features = (1, 5)  # indirect download, minimizeEsipaBytes
    ipa.cancel = ("authenticate", 3)  # pprNotAllowed, after the AuthenticateClient answer

    async def case() -> None:
        server = rig.smdp_server()
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
            again = await rig.restart()
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
        rig.stop()
    assert smdp.oid() == SMDP_OID
