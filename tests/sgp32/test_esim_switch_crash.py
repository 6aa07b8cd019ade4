"""kill -9 of ``fleetloop serve`` in the middle of an eSIM switch: after the restart every
device still gets exactly one package for its desired generation (no counter reused, none
re-signed), results delivered before the kill are kept, results the IPAs deliver to the new
process are matched, and every device ends applied or -- where the carrier does not serve --
failed. The restarted applier finds the generation's package again by its tag."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from simulators.esim.https import HttpsIpa
from simulators.esim.ipa import SimIpa
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import (
    EIM_ID,
    NEW_ICCID,
    OLD_CARRIER,
    OLD_ICCID,
    EsimFiles,
    EsimWorld,
    start_serve,
    stop_serve,
)

pytestmark = pytest.mark.integration

DEVICES = 30
STRANDED = 3


async def statuses(api: Api, endpoints: list[str]) -> dict[str, dict[str, Any]]:
    async def one(endpoint: str) -> tuple[str, dict[str, Any]]:
        state = await api.get(f"/v1/devices/{endpoint}/state")
        return endpoint, next(r for r in state["dimensions"] if r["dimension"] == "esim")

    return dict(await asyncio.gather(*(one(e) for e in endpoints)))


def test_kill_9_mid_switch_reuses_no_counter_and_loses_no_result(tmp_path: Path) -> None:
    files = EsimFiles.make(tmp_path / "esim-crash")
    first = start_serve(files)
    endpoints: list[str] = []
    ipas: list[SimIpa] = []

    async def before_the_kill(world: EsimWorld) -> None:
        api = Api(world.serve)
        client = world.client()
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=13) as fleet:
                fleet.spawn(DEVICES, prefix="esim-kill-")
                await fleet.wait_registered(timeout=30)
                endpoints.extend(fleet.device(i).endpoint for i in range(DEVICES))
            items = []
            for n, endpoint in enumerate(endpoints):
                served = {OLD_CARRIER} if n < STRANDED else None
                euicc, ipa = world.device("71", n, served=served, rollback_after=0.5)
                ipas.append(ipa)
                items.append(world.import_item(euicc.eid, endpoint))
            await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
            await api.put("/v1/state", {"endpoints": endpoints, "values": {"esim": NEW_ICCID}})

            async def queued() -> bool:
                listed = await api.get("/v1/esim/euiccs", params={"limit": 1000})
                return bool(sum(e["counter_value"] for e in listed["items"]) == DEVICES)

            await eventually(queued, timeout=20)
            # half the devices fetch their package and answer; then the server dies
            half = [HttpsIpa(ipa, client, world.esipa_url) for ipa in ipas[STRANDED : DEVICES // 2]]
            await asyncio.gather(*(remote.settle() for remote in half))
        finally:
            await client.aclose()
            await api.aclose()

    try:
        run(before_the_kill(first), timeout=90)
    finally:
        first.serve.process.send_signal(signal.SIGKILL)
        first.serve.process.wait(timeout=10)

    second = start_serve(files)  # same data directory, CI and TLS identity; new ports

    async def after_the_restart(world: EsimWorld) -> None:
        api = Api(world.serve)
        client = world.client()
        remotes = [HttpsIpa(ipa, client, world.esipa_url) for ipa in ipas]
        want = {e: "failed" if n < STRANDED else "applied" for n, e in enumerate(endpoints)}
        last: dict[str, dict[str, Any]] = {}
        try:

            async def settled() -> bool:
                await asyncio.gather(*(remote.settle() for remote in remotes))
                last.update(await statuses(api, endpoints))
                return all(last[e]["status"] == want[e] for e in endpoints)

            try:
                await eventually(settled, timeout=60)
            except AssertionError:
                wrong = {
                    e: (r["status"], r["detail"]) for e, r in last.items() if r["status"] != want[e]
                }
                raise AssertionError(f"not settled after the restart: {wrong}") from None
            listed = await api.get("/v1/esim/euiccs", params={"limit": 1000})
            mine = [e for e in listed["items"] if e["endpoint"] in set(endpoints)]
            assert len(mine) == DEVICES
            assert all(e["counter_value"] == 1 and e["queued"] == 0 for e in mine), mine
            for n, ipa in enumerate(ipas):
                association = ipa.euicc.eims[EIM_ID]
                assert association.counter_value == 1  # exactly one package reached it
                assert ipa.euicc.enabled is not None
                assert ipa.euicc.enabled.iccid == (OLD_ICCID if n < STRANDED else NEW_ICCID)
        finally:
            await client.aclose()
            await api.aclose()

    try:
        run(after_the_restart(second), timeout=120)
    finally:
        stop_serve(second)
