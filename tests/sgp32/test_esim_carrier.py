"""The carrier check of an eSIM campaign against a real ``fleetloop serve``: after the eUICC's
signed enable result the device re-registers, and the eIM reads /4/0/10 (SMCC) and /4/0/9
(SMNC) from it and compares them with the ``plmns`` of the desired esim value.

Six simulated devices (LwM2M client + eUICC + IPA over HTTPS, the profile downloaded from a
test SM-DP+ through the eIM's relay) report the network of their enabled profile's carrier
(:class:`~simulators.esim.network.ServingNetwork`); one of them is served by another network
after the switch. It fails with the PLMN seen and expected, the wave's gate counts it and halts
the campaign; the others are verified by their carrier check, and every check is audited.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from simulators.device.models import fleet_template
from simulators.esim.download import Es10bDownload
from simulators.esim.https import HttpsIpa
from simulators.esim.network import ServingNetwork
from simulators.esim.smdp import PreparedProfile
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import (
    NEW_CARRIER,
    NEW_ICCID,
    EsimFiles,
    Modem,
    run_modems,
    start_serve,
    start_smdp,
    stop_serve,
)

pytestmark = pytest.mark.integration

DEVICES, ROAMING = 6, 2  # the device the new carrier's network does not serve directly


def test_a_device_on_the_wrong_network_fails_the_carrier_check_and_the_gate(
    tmp_path: Path,
) -> None:
    files = EsimFiles.make(tmp_path / "esim-carrier")
    world = start_serve(files, env_extra={"FLEETLOOP_EIM_SMDP_CA": str(files.tls[2])})

    async def case() -> None:
        smdp, server = await start_smdp(files)
        code = smdp.prepare(PreparedProfile("CARRIER-B", NEW_ICCID, NEW_CARRIER))
        api = Api(world.serve)
        client = world.client()
        stop = asyncio.Event()
        polling: asyncio.Task[None] | None = None
        network = ServingNetwork()
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=31) as fleet:
                template = network.template(
                    fleet_template(fleet.engine, server_uri=world.serve.coap_uri)
                )
                spawned = fleet.spawn(DEVICES, prefix="pl-", template=template)
                await fleet.wait_registered(timeout=60)
                modems, items, endpoints = [], [], []
                for n, i in enumerate(spawned):
                    euicc, ipa = world.device("71", n, rollback_after=30.0)
                    del euicc.profiles[NEW_ICCID]
                    ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]
                    endpoint = fleet.device(i).endpoint
                    endpoints.append(endpoint)
                    network.attach(endpoint, euicc)
                    modems.append(Modem(fleet, i, HttpsIpa(ipa, client, world.esipa_url)))
                    items.append(world.import_item(euicc.eid, endpoint))
                roaming = endpoints[ROAMING]
                network.roam(roaming, (310, 410))  # carrier B's profile, another network
                await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
                polling = asyncio.create_task(run_modems(modems, stop))
                spec: dict[str, Any] = {
                    "name": "to carrier B, checked",
                    "kind": "esim",
                    "selector": "endpoint=pl-*",
                    "esim": {"iccid": NEW_ICCID, "activation_code": code, "plmns": ["310-260"]},
                    "canary": {"per_stratum": DEVICES, "max_devices": DEVICES, "bake": 0},
                    "waves": [{"percent": 100, "bake": 0}],
                    "pacing": {"rate": 400, "concurrency": 1000},
                    "gates": {"min_sample": DEVICES, "max_failure_pct": 10, "min_ack_pct": None},
                    "deadlines": {"delivered": 60, "applied": 60, "registered": 30},
                    "on_failure": "halt",
                }
                cid = (await api.post("/v1/campaigns", spec, expect=201))["id"]
                last: dict[str, Any] = {}

                async def halted() -> bool:
                    last.update(await api.get(f"/v1/campaigns/{cid}"))
                    return bool(last["state"] == "halted")

                await eventually(halted, timeout=120)
                assert "failures 1/6" in last["reason"], last["reason"]
                assert last["counts"] == {"succeeded": DEVICES - 1, "failed": 1}, last["counts"]
                report = await api.get(f"/v1/campaigns/{cid}/report")
                rows = {d["endpoint"]: d for d in report["device_list"]}
                reason = rows[roaming]["reason"]
                for part in (roaming, "310-410", "310-260", "plmns"):
                    assert part in reason, reason
                for endpoint in endpoints:
                    if endpoint != roaming:
                        assert "registered over PLMN 310-260" in rows[endpoint]["reason"]

                checks = await api.get("/v1/audit", params={"action": "esim.carrier", "limit": 100})
                by_device = {r["endpoints"][0]: r for r in checks["items"]}
                assert set(by_device) == set(endpoints), by_device
                assert by_device[roaming]["outcome"] == "failed"
                assert by_device[roaming]["detail"]["seen"] == "310-410"
                ok = [r for e, r in by_device.items() if e != roaming]
                assert all(r["outcome"] == "ok" and r["detail"]["checked"] for r in ok), ok
                # the device itself: switched to carrier B's profile (the eUICC confirmed it)
                assert modems[ROAMING].remote.ipa.euicc.enabled is not None
                assert modems[ROAMING].remote.ipa.euicc.enabled.iccid == NEW_ICCID
        finally:
            stop.set()
            if polling is not None:
                await asyncio.gather(polling, return_exceptions=True)
            await client.aclose()
            await api.aclose()
            await server.stop()

    try:
        run(case(), timeout=200)
    finally:
        stop_serve(world)
