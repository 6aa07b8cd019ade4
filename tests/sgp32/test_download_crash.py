"""kill -9 of a real ``fleetloop serve`` in the middle of an indirect profile download: the
relay's session (SM-DP+ transactionId <-> SM-DP+ address, eimTransactionId, activation code,
step) was committed before the IPA got the InitiateAuthentication answer, so the restarted
eIM relays the IPA's AuthenticateClient to the same SM-DP+ and the download completes
(SQLite and PostgreSQL). Without the stored session the new process would not know where
the transactionId goes and answer undefinedError."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.esim.https import HttpsIpa
from simulators.esim.smdp import PreparedProfile
from tests.integration.conftest import Api, run
from tests.sgp32.download_rig import download_rig
from tests.sgp32.serve_world import NEW_CARRIER, NEW_ICCID
from tests.store.conftest import StoreTarget

pytestmark = pytest.mark.integration


def test_kill_9_mid_download_the_restarted_eim_relays_the_rest(
    target: StoreTarget, tmp_path: Path
) -> None:
    rig = download_rig(target, tmp_path / "esim-dl-crash", "83")
    smdp, euicc, ipa, world = rig.smdp, rig.euicc, rig.ipa, rig.world

    async def case() -> None:
        server = rig.smdp_server()
        smdp.address = f"127.0.0.1:{await server.start()}"
        code = smdp.prepare(PreparedProfile("CRASH-1", NEW_ICCID, NEW_CARRIER))
        client = world.client()
        api = Api(world.serve)
        try:
            await api.post(
                "/v1/esim/euiccs", {"euiccs": [world.import_item(euicc.eid)]}, expect=201
            )
            ref = f"/v1/esim/euiccs/{euicc.eid}"
            await api.post(
                f"{ref}/packages", {"operation": "download", "activation_code": code}, expect=201
            )
            remote = HttpsIpa(ipa, client, world.esipa_url)
            assert await remote.exchange()  # the poll: the ProfileDownloadTrigger
            assert ipa.download is not None
            assert await remote.exchange()  # InitiateAuthentication, relayed and answered
            assert ipa.download is not None and ipa.download.step == "authenticate"
            assert smdp.calls == ["initiateAuthentication"]
            await api.aclose()
            again = await rig.restart()  # SIGKILL: nothing is flushed or closed
            api = Api(again.serve)
            await HttpsIpa(ipa, client, again.esipa_url).settle()
            assert smdp.calls == [
                "initiateAuthentication",
                "authenticateClient",
                "getBoundProfilePackage",
                "handleNotification",
            ]
            assert euicc.profiles[NEW_ICCID].carrier == NEW_CARRIER
            shown = await api.get(ref)
            assert shown["downloads"][0]["step"] == "installing"
            assert shown["downloads"][0]["activation_code"] == code
            assert shown["downloads"][0]["smdp_address"] == smdp.address
            installed = {p["iccid"]: p for p in shown["profiles"]}
            assert installed[NEW_ICCID]["state"] == "disabled"
            packages = await api.get(f"{ref}/packages")
            assert packages["items"][0]["state"] == "done"
            audit = await api.get("/v1/audit", params={"action": "esim.download.step"})
            steps = [e["detail"]["step"] for e in audit["items"]]
            assert {"authenticateClient", "getBoundProfilePackage", "installing"} <= set(steps)
        finally:
            await client.aclose()
            await api.aclose()
            await server.stop()

    try:
        run(case(), timeout=120)
    finally:
        rig.stop()
