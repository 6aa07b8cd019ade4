"""An eSIM switch rolled out by a campaign like any other dimension, against a real
``fleetloop serve`` with its eIM: two regions, the south one where the new carrier does not
serve. The south canary devices enable the new profile, lose connectivity, roll back by
themselves; the state layer marks them failed, the region's gate fails, the campaign reverts
the region (desired back to the old ICCID -- verified at once, nothing to sign: the devices
already run it) and skips its other devices, while the north region switches completely."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from simulators.esim.https import EsipaError, HttpsIpa
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import (
    NEW_ICCID,
    OLD_CARRIER,
    OLD_ICCID,
    EsimWorld,
    esim_serve,
    set_region,
)

pytestmark = pytest.mark.integration

PER_REGION = 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-campaign")) as running:
        yield running


def test_a_campaign_switches_the_served_region_and_reverts_the_stranded_one(
    world: EsimWorld,
) -> None:
    async def case() -> None:
        api = Api(world.serve)
        client = world.client()
        stop = asyncio.Event()
        pollers: list[asyncio.Task[None]] = []
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=9) as fleet:
                north = fleet.spawn(PER_REGION, prefix="esc-n-")
                south = fleet.spawn(PER_REGION, prefix="esc-s-")
                await fleet.wait_registered(timeout=30)
                await set_region(api, "esc-n-", "north", PER_REGION)
                await set_region(api, "esc-s-", "south", PER_REGION)
                ipas, items = [], []
                for n, i in enumerate(north + south):
                    endpoint = fleet.device(i).endpoint
                    served = {OLD_CARRIER} if i in south else None
                    euicc, ipa = world.device("51", n, served=served, rollback_after=1.0)
                    ipas.append(HttpsIpa(ipa, client, world.esipa_url))
                    items.append(world.import_item(euicc.eid, endpoint))
                await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)

                async def poll(ipa: HttpsIpa) -> None:  # each IPA polls, as devices do
                    while not stop.is_set():
                        with contextlib.suppress(EsipaError):
                            await ipa.settle()
                        await asyncio.sleep(0.3)

                pollers.extend(asyncio.create_task(poll(ipa)) for ipa in ipas)
                # the fleet's last-known-good: the old profile, verified everywhere
                await api.put(
                    "/v1/state", {"select": "endpoint=esc-*", "values": {"esim": OLD_ICCID}}
                )

                async def in_line() -> bool:
                    drift = await api.get("/v1/state/drift", params={"select": "endpoint=esc-*"})
                    return not drift["items"]

                await eventually(in_line, timeout=60)

                spec: dict[str, Any] = {
                    "name": "carrier B",
                    "selector": "endpoint=esc-*",
                    "change": [{"esim": NEW_ICCID}],
                    "canary": {"per_stratum": 4, "max_devices": 20, "bake": 0.5},
                    "waves": [{"percent": 100, "bake": 0.5}],
                    "pacing": {"rate": 400, "concurrency": 1000},
                    "gates": {
                        "min_sample": 2,
                        "max_failure_pct": 50,  # the batch holds both regions: half can fail
                        "min_ack_pct": None,
                        "cohort_by": ["region"],
                    },
                    "deadlines": {"delivered": 30, "applied": 30, "verified": 30},
                    "revert_scope": "region",
                }
                cid = (await api.post("/v1/campaigns", spec, expect=201))["id"]
                last: dict[str, Any] = {}

                async def completed() -> bool:
                    last.update(await api.get(f"/v1/campaigns/{cid}"))
                    return bool(last["state"] == "completed")

                await eventually(completed, timeout=120)
                assert last["reverted_cohorts"] == [{"scope": "region", "key": "south"}], last
                counts = last["counts"]
                assert counts["succeeded"] == PER_REGION
                # south: the canary's devices reverted (one whose own failure lands while its
                # cohort reverts may count as failed), the rest skipped
                south_counts = [counts.get(k, 0) for k in ("reverted", "skipped", "failed")]
                assert sum(south_counts) == PER_REGION, counts
                assert counts.get("reverted", 0) >= 2, counts
                try:
                    await eventually(in_line, timeout=30)  # south back on the old ICCID
                except AssertionError:
                    drift = await api.get("/v1/state/drift", params={"select": "endpoint=esc-*"})
                    raise AssertionError(
                        f"out of line after the campaign: {drift['items']}"
                    ) from None
                for n, remote in enumerate(ipas):
                    enabled = remote.ipa.euicc.enabled
                    assert enabled is not None
                    assert enabled.iccid == (NEW_ICCID if n < PER_REGION else OLD_ICCID)
        finally:
            stop.set()
            await asyncio.sleep(0.4)
            for task in pollers:
                task.cancel()
            await client.aclose()
            await api.aclose()

    run(case(), timeout=240)
