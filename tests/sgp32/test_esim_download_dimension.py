"""The esim dimension with an activation code, against a real ``fleetloop serve``: devices
whose eUICC does not have the new carrier's profile get it downloaded first -- the eIM asks
for the profile list, queues a ProfileDownloadTrigger, relays the IPA's ES9+ calls to a test
SM-DP+ on loopback -- and then enabled with rollbackFlag; the state layer marks them applied
once the eUICC's signed result confirms it. The old profile stays (the fallback)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.esim.download import Es10bDownload
from simulators.esim.https import HttpsIpa
from simulators.esim.smdp import LoopbackSmdp, PreparedProfile, SmdpServer
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.pki import make_cert
from tests.sgp32.serve_world import (
    NEW_CARRIER,
    NEW_ICCID,
    OLD_ICCID,
    EsimFiles,
    start_serve,
    stop_serve,
)

pytestmark = pytest.mark.integration

DEVICES = 5
DP_AUTH = x509.ObjectIdentifier("2.23.146.1.2.1.4")


def test_a_missing_profile_is_downloaded_then_enabled_and_verified(tmp_path: Path) -> None:
    files = EsimFiles.make(tmp_path / "esim-download")
    cert, key, ca = files.tls
    world = start_serve(files, env_extra={"FLEETLOOP_EIM_SMDP_CA": str(ca)})
    pki = files.pki
    smdp_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test SM-DP+")])
    smdp_cert = make_cert(name, smdp_key, pki.ci.subject, pki.ci_key, ca=False, policy=DP_AUTH,
                          now=pki.ci.not_valid_before_utc)  # fmt: skip
    smdp = LoopbackSmdp("", smdp_key, smdp_cert, pki.ci)

    async def case() -> None:
        server = SmdpServer(smdp, cert, key)
        smdp.address = f"127.0.0.1:{await server.start()}"
        code = smdp.prepare(PreparedProfile("CARRIER-B", NEW_ICCID, NEW_CARRIER))
        api = Api(world.serve)
        client = world.client()
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=17) as fleet:
                fleet.spawn(DEVICES, prefix="esim-dl-")
                await fleet.wait_registered(timeout=30)
                endpoints = [fleet.device(i).endpoint for i in range(DEVICES)]
            remotes, items = [], []
            for n, endpoint in enumerate(endpoints):
                euicc, ipa = world.device("81", n)
                del euicc.profiles[NEW_ICCID]  # only the old carrier's profile is on it
                ipa.downloader = Es10bDownload(euicc, pki.ci.public_key())  # type: ignore[arg-type]
                remotes.append(HttpsIpa(ipa, client, world.esipa_url))
                items.append(world.import_item(euicc.eid, endpoint))
            await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
            desired = {"iccid": NEW_ICCID, "activation_code": code}
            await api.put("/v1/state", {"endpoints": endpoints, "values": {"esim": desired}})
            rows: dict[str, Any] = {}

            async def applied() -> bool:
                await asyncio.gather(*(remote.settle() for remote in remotes))
                for endpoint in endpoints:
                    state = await api.get(f"/v1/devices/{endpoint}/state")
                    rows[endpoint] = next(
                        r for r in state["dimensions"] if r["dimension"] == "esim"
                    )
                return all(r["status"] == "applied" for r in rows.values())

            try:
                await eventually(applied, timeout=60)
            except AssertionError:
                left = {e: (r["status"], r["detail"]) for e, r in rows.items()}
                raise AssertionError(f"not applied: {left}") from None
            for remote in remotes:
                profiles = remote.ipa.euicc.profiles
                assert profiles[NEW_ICCID].enabled and profiles[NEW_ICCID].carrier == NEW_CARRIER
                assert OLD_ICCID in profiles  # the fallback profile is kept
            assert smdp.calls.count("getBoundProfilePackage") == DEVICES
            assert all(r["reported"]["carrier"] == NEW_CARRIER for r in rows.values())
            packages = await api.get(f"/v1/esim/euiccs/{endpoints[0]}/packages")
            kinds = [p["operations"][0]["op"] for p in reversed(packages["items"])]
            assert kinds == ["listProfileInfo", "profileDownloadTrigger", "listProfileInfo"]
            assert packages["items"][0]["operations"][1]["op"] == "enable"
        finally:
            await client.aclose()
            await api.aclose()
            await server.stop()

    try:
        run(case(), timeout=120)
    finally:
        stop_serve(world)
