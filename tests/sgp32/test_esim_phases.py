"""The eSIM campaign kind against a real ``fleetloop serve``: a region switched to a new
carrier's profile in two gated phases, download then enable.

Each simulated device is an LwM2M client (the inventory, the registration the enable waits
for) plus an eUICC with only the old carrier's profile (enabled, the fallback) behind an IPA
that polls the eIM over HTTPS; the new profile comes from a test SM-DP+ through the eIM's
ES9+ relay. A :class:`~tests.sgp32.serve_world.Modem` does what the device's modem does: after
the eUICC enabled a profile the network serves, the client gets a new address and updates its
registration.

* The issue's scenario, scaled for CI (benchmarks/bench_esim_switch.py ``--campaign`` runs
  500): 10 % of the devices are where the new carrier does not serve. They download, enable,
  cannot reach the eIM and roll back by themselves; their region's gate fails and the
  campaign reverts the region while the others switch -- each enable verified only by the
  registration Update over the new profile -- and the audit records every step.
* Download failures beyond the gate halt the campaign before anything is enabled; a kill -9
  of the server between the phases changes nothing of that, and ``resume`` enables exactly
  the devices whose download verified.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from simulators.esim.download import Es10bDownload
from simulators.esim.https import HttpsIpa
from simulators.esim.smdp import PreparedProfile
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import (
    NEW_CARRIER,
    NEW_ICCID,
    OLD_CARRIER,
    OLD_ICCID,
    EsimFiles,
    EsimWorld,
    Modem,
    run_modems,
    set_region,
    start_serve,
    start_smdp,
    stop_serve,
)

pytestmark = pytest.mark.integration

NORTH, SOUTH = 45, 5  # 10 % where carrier B does not serve


def _euicc(
    world: EsimWorld,
    prefix: str,
    n: int,
    *,
    served: bool,
    download: bool,
    fallback: bool = True,
) -> Any:
    """eUICC ``n``: only carrier A's profile (enabled; the fallback unless ``fallback`` is
    false); its IPA downloads over the eIM's relay (unless ``download`` is false: it answers
    the trigger with an error)."""
    served_by = None if served else {OLD_CARRIER}
    euicc, ipa = world.device(prefix, n, served=served_by, rollback_after=1.0)
    del euicc.profiles[NEW_ICCID]
    euicc.profiles[OLD_ICCID].fallback = fallback
    if download:
        ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]
    return euicc, ipa


async def _audit(api: Api, action: str) -> list[dict[str, Any]]:
    found = await api.get("/v1/audit", params={"action": action, "limit": 1000})
    return list(found["items"])


async def _packages(api: Api, endpoint: str) -> list[str]:
    listed = await api.get(f"/v1/esim/euiccs/{endpoint}/packages")
    return [op["op"] for p in listed["items"] for op in p["operations"]]


def test_a_region_switches_in_two_phases_and_the_unserved_one_rolls_back(tmp_path: Path) -> None:
    files = EsimFiles.make(tmp_path / "esim-phases")
    world = start_serve(files, env_extra={"FLEETLOOP_EIM_SMDP_CA": str(files.tls[2])})

    async def case() -> None:
        smdp, server = await start_smdp(files)
        code = smdp.prepare(PreparedProfile("CARRIER-B", NEW_ICCID, NEW_CARRIER))
        api = Api(world.serve)
        client = world.client()
        stop = asyncio.Event()
        polling: asyncio.Task[None] | None = None
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=21) as fleet:
                north = fleet.spawn(NORTH, prefix="ph-n-")
                south = fleet.spawn(SOUTH, prefix="ph-s-")
                await fleet.wait_registered(timeout=60)
                await set_region(api, "ph-n-", "north", NORTH)
                await set_region(api, "ph-s-", "south", SOUTH)
                modems, items = [], []
                for n, i in enumerate(north + south):
                    euicc, ipa = _euicc(  # every 5th without a fallback profile yet
                        world, "61", n, served=i in north, download=True, fallback=n % 5 != 0
                    )
                    modems.append(Modem(fleet, i, HttpsIpa(ipa, client, world.esipa_url)))
                    items.append(world.import_item(euicc.eid, fleet.device(i).endpoint))
                await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
                polling = asyncio.create_task(run_modems(modems, stop))
                spec: dict[str, Any] = {
                    "name": "north to carrier B",
                    "kind": "esim",
                    "selector": "endpoint=ph-*",
                    "esim": {"iccid": NEW_ICCID, "activation_code": code},
                    "canary": {"per_stratum": 3, "max_devices": 10, "bake": 0.3},
                    "waves": [{"percent": 100, "bake": 0.3}],
                    "pacing": {"rate": 400, "concurrency": 1000},
                    "gates": {
                        "min_sample": 2,
                        "max_failure_pct": 50,  # the canary's batch holds both regions
                        "min_ack_pct": None,
                        "cohort_by": ["region"],
                    },
                    "deadlines": {"delivered": 60, "applied": 60, "registered": 20},
                    "on_failure": "revert",
                    "revert_scope": "region",
                }
                created = await api.post("/v1/campaigns", spec, expect=201)
                cid = created["id"]
                assert created["kind"] == "esim" and created["phase"] == "download"
                assert [p["name"] for p in created["phases"]] == ["download", "enable"]
                last: dict[str, Any] = {}

                async def completed() -> bool:
                    last.update(await api.get(f"/v1/campaigns/{cid}"))
                    return bool(last["state"] == "completed")

                await eventually(completed, timeout=180)
                assert last["reverted_cohorts"] == [{"scope": "region", "key": "south"}], last
                counts = last["counts"]
                assert counts["succeeded"] == NORTH, counts
                south_counts = [counts.get(k, 0) for k in ("reverted", "skipped", "failed")]
                assert sum(south_counts) == SOUTH, counts
                canary = last["waves"][0]
                assert canary["phase"] == "enable"
                assert all(v["verdict"] == "passed" for v in canary["download_verdicts"])
                assert any(
                    v["key"] == "south" and v["verdict"] == "failed" for v in canary["verdicts"]
                ), canary["verdicts"]

                # the south canary: its rollback target is the profile it ran (learnt in the
                # download phase), and the region's revert put it back there
                report = await api.get(f"/v1/campaigns/{cid}/report")
                rolled = [
                    d
                    for d in report["device_list"]
                    if d["region"] == "south" and d["rollback"].get("esim") == {"iccid": OLD_ICCID}
                ]
                assert len(rolled) == 3, report["device_list"]
                assert counts.get("reverted", 0) >= 2, counts
                for n, modem in enumerate(modems):
                    euicc = modem.remote.ipa.euicc
                    assert euicc.enabled is not None
                    if n < NORTH:  # switched, heard over the new profile
                        assert euicc.enabled.iccid == NEW_ICCID
                        assert modem.updates == 1
                        assert euicc.profiles[OLD_ICCID].fallback  # kept, or set first
                        ops = await _packages(api, fleet.device(north[n]).endpoint)
                        assert ("setFallbackAttribute" in ops) == (n % 5 == 0), ops
                    else:  # rolled back by itself (canary) or never touched (skipped)
                        assert euicc.enabled.iccid == OLD_ICCID
                        assert (
                            NEW_ICCID not in euicc.profiles or not euicc.profiles[NEW_ICCID].enabled
                        )
                # the audit records each step: the phases, every gate, every device verdict
                actions = [r["action"] for r in await _audit(api, "campaign.")]
                for action in (
                    "campaign.create",
                    "campaign.phase",
                    "campaign.gate",
                    "campaign.esim_registered",
                    "campaign.revert",
                    "campaign.complete",
                ):
                    assert action in actions, (action, sorted(set(actions)))
                assert actions.count("campaign.esim_registered") == NORTH
                downloads = await _audit(api, "state.esim_download")
                assert len([r for r in downloads if r["outcome"] == "ok"]) >= NORTH + 3
                enables = await _audit(api, "state.esim")  # (a prefix: esim_download too)
                failed = [
                    r for r in enables if r["outcome"] == "failed" and r["action"] == "state.esim"
                ]
                # every unserved canary device rolls back; the ones whose signed result
                # arrives after the gate reverted the region are judged on the reverted value
                # (no failure to record), so how many failures are audited depends on timing
                assert failed and all("rolled back" in r["detail"]["reason"] for r in failed)
        finally:
            stop.set()
            if polling is not None:
                await asyncio.gather(polling, return_exceptions=True)
            await client.aclose()
            await api.aclose()
            await server.stop()

    try:
        run(case(), timeout=300)
    finally:
        stop_serve(world)


DEVICES, BROKEN = 10, 3


def test_download_failures_halt_before_any_enable_across_a_kill_9(tmp_path: Path) -> None:
    files = EsimFiles.make(tmp_path / "esim-phase-kill")
    env = {"FLEETLOOP_EIM_SMDP_CA": str(files.tls[2])}
    first = start_serve(files, env_extra=env)
    endpoints: list[str] = []
    ipas: list[Any] = []
    cid = ""
    code = ""

    async def before_the_kill(world: EsimWorld) -> None:
        nonlocal cid, code
        smdp, server = await start_smdp(files)
        code = smdp.prepare(PreparedProfile("CARRIER-B", NEW_ICCID, NEW_CARRIER))
        api = Api(world.serve)
        client = world.client()
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=23) as fleet:
                fleet.spawn(DEVICES, prefix="phk-")
                await fleet.wait_registered(timeout=30)
                endpoints.extend(fleet.device(i).endpoint for i in range(DEVICES))
            items = []
            for n, endpoint in enumerate(endpoints):  # the first three cannot download
                euicc, ipa = _euicc(world, "62", n, served=True, download=n >= BROKEN)
                ipas.append(ipa)
                items.append(world.import_item(euicc.eid, endpoint))
            await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
            remotes = [HttpsIpa(ipa, client, world.esipa_url) for ipa in ipas]
            spec = {
                "name": "carrier B",
                "kind": "esim",
                "selector": "endpoint=phk-*",
                "esim": {"iccid": NEW_ICCID, "activation_code": code},
                "canary": {"per_stratum": DEVICES, "max_devices": DEVICES, "bake": 0},
                "waves": [{"percent": 100, "bake": 0}],
                "gates": {"min_sample": 2, "max_failure_pct": 20, "min_ack_pct": None},
                "deadlines": {"delivered": 60, "applied": 60, "registered": 30},
                "on_failure": "halt",
            }
            cid = (await api.post("/v1/campaigns", spec, expect=201))["id"]
            last: dict[str, Any] = {}

            async def halted_and_settled() -> bool:
                await asyncio.gather(*(r.settle() for r in remotes))
                last.update(await api.get(f"/v1/campaigns/{cid}"))
                counts = last["counts"]
                return bool(
                    last["state"] == "halted"
                    and counts.get("staged") == DEVICES - BROKEN
                    and counts.get("failed") == BROKEN
                )

            await eventually(halted_and_settled, timeout=90)
            assert last["phase"] == "download" and "nothing of this wave" in last["reason"]
            for endpoint in endpoints:  # the barrier: no enable was ever queued
                assert "enable" not in await _packages(api, endpoint)
            await server.stop()
        finally:
            await client.aclose()
            await api.aclose()

    try:
        run(before_the_kill(first), timeout=150)
    finally:
        first.serve.process.send_signal(signal.SIGKILL)
        first.serve.process.wait(timeout=10)

    second = start_serve(files, env_extra=env)  # same data directory; new ports

    async def after_the_restart(world: EsimWorld) -> None:
        api = Api(world.serve)
        client = world.client()
        stop = asyncio.Event()
        polling: asyncio.Task[None] | None = None
        try:
            found = await api.get(f"/v1/campaigns/{cid}")
            assert found["state"] == "halted" and found["phase"] == "download"
            assert found["counts"] == {"staged": DEVICES - BROKEN, "failed": BROKEN}
            async with DeviceFleet(world.serve.coap_uri, seed=23) as fleet:
                fleet.spawn(DEVICES, prefix="phk-")  # the same endpoints, new addresses
                await fleet.wait_registered(timeout=30)
                assert [fleet.device(i).endpoint for i in range(DEVICES)] == endpoints
                modems = [
                    Modem(fleet, i, HttpsIpa(ipa, client, world.esipa_url))
                    for i, ipa in enumerate(ipas)
                ]
                polling = asyncio.create_task(run_modems(modems, stop))
                await asyncio.sleep(1.0)  # the IPAs poll: still nothing to enable
                for endpoint in endpoints:
                    assert "enable" not in await _packages(api, endpoint)
                await api.post(f"/v1/campaigns/{cid}/resume")
                last: dict[str, Any] = {}

                async def completed() -> bool:
                    last.update(await api.get(f"/v1/campaigns/{cid}"))
                    return bool(last["state"] == "completed")

                await eventually(completed, timeout=90)
                assert last["counts"] == {"succeeded": DEVICES - BROKEN, "failed": BROKEN}
                for n, (endpoint, modem) in enumerate(zip(endpoints, modems, strict=True)):
                    enabled = modem.remote.ipa.euicc.enabled
                    assert enabled is not None
                    packages = await _packages(api, endpoint)
                    if n < BROKEN:  # its download failed: never enabled
                        assert enabled.iccid == OLD_ICCID and "enable" not in packages
                    else:
                        assert enabled.iccid == NEW_ICCID and packages.count("enable") == 1
                        assert modem.updates == 1
            actions = [r["action"] for r in await _audit(api, "campaign.")]
            assert {"campaign.halt", "campaign.resume", "campaign.phase"} <= set(actions)
            assert actions.count("campaign.esim_registered") == DEVICES - BROKEN
            # the old profile is the fallback: an operator's delete/disable of it is refused
            switched = endpoints[BROKEN]
            for operation in ("delete", "disable"):
                body = {"operation": operation, "iccid": OLD_ICCID}
                refused = await api.post(f"/v1/esim/euiccs/{switched}/packages", body, expect=409)
                assert "fallback profile" in refused["message"], refused
                assert f"esim fallback {switched}" in refused["message"], refused
            many = {"operation": "delete", "iccid": OLD_ICCID, "endpoints": endpoints[BROKEN:]}
            refused = await api.post("/v1/esim/packages", many, expect=409)
            assert "nothing of this selection was queued" in refused["message"], refused
            assert "enable" not in await _packages(api, endpoints[0])
            assert "delete" not in await _packages(api, switched)
        finally:
            stop.set()
            if polling is not None:
                await asyncio.gather(polling, return_exceptions=True)
            await client.aclose()
            await api.aclose()

    try:
        run(after_the_restart(second), timeout=150)
    finally:
        stop_serve(second)
