"""The carrier check of an eSIM campaign against a real ``fleetloop serve``: after the eUICC's
signed enable result the device re-registers, and the eIM reads /4/0/10 (SMCC) and /4/0/9
(SMNC) from it and compares them with the ``plmns`` of the desired esim value.

Six simulated devices in two regions (LwM2M client + eUICC + IPA over HTTPS, the profile
downloaded from a test SM-DP+ through the eIM's relay) report the network of their enabled
profile's carrier (:class:`~simulators.esim.network.ServingNetwork`); one in the south is
served by another network after the switch. It fails with the PLMN seen and expected, the
south's gate counts it and the campaign reverts the south (back on the old profile) while the
north, verified by its carrier check, completes; every check is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.device.models import fleet_template
from simulators.esim.download import Es10bDownload
from simulators.esim.https import EsipaError, HttpsIpa
from simulators.esim.network import ServingNetwork
from simulators.esim.smdp import PreparedProfile
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import (
    NEW_CARRIER,
    NEW_ICCID,
    OLD_ICCID,
    EsimFiles,
    Modem,
    run_modems,
    set_region,
    start_serve,
    start_smdp,
    stop_serve,
)

pytestmark = pytest.mark.integration

DEVICES, ROAMING = 6, 3  # pl-n-* 0..2 north, pl-s-* 3..5 south; device 3 roams


@dataclass
class HeldModem(Modem):
    """A modem that re-attaches after the switch only once ``release`` is set: the roaming
    device is heard last, so the south's gate (not the batch's, judged early on a partial
    sample) is the one its failure fails."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(self) -> None:
        with contextlib.suppress(EsipaError, httpx.HTTPError):
            self.exchanges += await self.remote.settle()
        profile = self.remote.ipa.euicc.enabled
        iccid = profile.iccid if profile is not None else None
        if iccid != self.enabled and self.remote.ipa.connected and self.release.is_set():
            self.enabled = iccid
            self.fleet.rebind(self.index)
            self.fleet.device(self.index).trigger_update()
            self.updates += 1


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
                spawned = fleet.spawn(3, prefix="pl-n-", template=template)
                spawned += fleet.spawn(3, prefix="pl-s-", template=template)
                await fleet.wait_registered(timeout=60)
                await set_region(api, "pl-n-", "north", 3)
                await set_region(api, "pl-s-", "south", 3)
                modems, items, endpoints = [], [], []
                for n, i in enumerate(spawned):
                    euicc, ipa = world.device("71", n, rollback_after=30.0)
                    del euicc.profiles[NEW_ICCID]
                    ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]
                    endpoint = fleet.device(i).endpoint
                    endpoints.append(endpoint)
                    network.attach(endpoint, euicc)
                    kind = HeldModem if n == ROAMING else Modem
                    modems.append(kind(fleet, i, HttpsIpa(ipa, client, world.esipa_url)))
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
                    "canary": {"per_stratum": 3, "max_devices": DEVICES, "bake": 0},
                    "waves": [{"percent": 100, "bake": 0}],
                    "pacing": {"rate": 400, "concurrency": 1000},
                    "gates": {
                        "min_sample": 3,
                        "max_failure_pct": 20,  # the south: 1/3 fails it; the batch: 1/6 not
                        "min_ack_pct": None,
                        "cohort_by": ["region"],
                    },
                    "deadlines": {"delivered": 60, "applied": 60, "registered": 30},
                    "on_failure": "revert",
                    "revert_scope": "region",
                }
                cid = (await api.post("/v1/campaigns", spec, expect=201))["id"]
                last: dict[str, Any] = {}

                async def others_succeeded() -> bool:
                    report = await api.get(f"/v1/campaigns/{cid}/report")
                    states = {d["endpoint"]: d["state"] for d in report["device_list"]}
                    rest = [e for e in endpoints if e != roaming]
                    return all(states.get(e) == "succeeded" for e in rest)

                await eventually(others_succeeded, timeout=120)
                held = modems[ROAMING]
                assert isinstance(held, HeldModem)
                held.release.set()  # now the roaming device re-attaches and is heard

                async def completed() -> bool:
                    last.update(await api.get(f"/v1/campaigns/{cid}"))
                    return bool(last["state"] == "completed")

                await eventually(completed, timeout=120)
                assert last["reverted_cohorts"] == [{"scope": "region", "key": "south"}], last
                counts = last["counts"]
                assert counts["succeeded"] == 3, counts
                assert sum(counts.get(k, 0) for k in ("reverted", "failed")) == 3, counts
                verdicts = last["waves"][0]["verdicts"]
                south = [v for v in verdicts if v["key"] == "south" and v["verdict"] == "failed"]
                assert south and "failures 1/3" in " ".join(south[0]["reasons"]), verdicts
                report = await api.get(f"/v1/campaigns/{cid}/report")
                rows = {d["endpoint"]: d for d in report["device_list"]}
                for endpoint in endpoints[:3]:  # the north, verified by its carrier check
                    assert "registered over PLMN 310-260" in rows[endpoint]["reason"]
                registered = await api.get(
                    "/v1/audit", params={"action": "campaign.esim_registered", "limit": 100}
                )
                failed = [r for r in registered["items"] if r["outcome"] == "failed"]
                assert [r["endpoints"] for r in failed] == [[roaming]], failed
                reason = failed[0]["detail"]["carrier"]
                for part in (roaming, "310-410", "310-260", "plmns"):
                    assert part in reason, reason

                checks = await api.get("/v1/audit", params={"action": "esim.carrier", "limit": 100})
                by_device = {r["endpoints"][0]: r for r in checks["items"]}
                assert set(by_device) == set(endpoints), by_device
                assert by_device[roaming]["outcome"] == "failed"
                assert by_device[roaming]["detail"]["seen"] == "310-410"
                ok = [r for e, r in by_device.items() if e != roaming]
                assert all(r["outcome"] == "ok" and r["detail"]["checked"] for r in ok), ok
                # the north runs carrier B's profile; the south's revert put it back on A's
                for n, modem in enumerate(modems):
                    enabled = modem.remote.ipa.euicc.enabled
                    assert enabled is not None
                    assert enabled.iccid == (NEW_ICCID if n < 3 else OLD_ICCID), (n, enabled)
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
