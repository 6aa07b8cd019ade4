"""A carrier switch of 100 devices through desired state, end to end against a real
``fleetloop serve`` (eIM on, ESipa over TLS): the esim dimension is delivered by an enable PSMO
with rollbackFlag through the eIM -- not by the LwM2M reconciler -- and verified by the eUICC's
signed result.

100 simulated LwM2M devices register (so they are in the inventory and selectable like any
device), each with a simulated eUICC + IPA polling the eIM over HTTPS. ``PUT /v1/state`` asks
for carrier B's profile on all of them. 90 are where carrier B serves: their IPA fetches the
package, enables the profile, sends the signed result over the new profile and the state layer
marks them **applied**. 10 are where carrier B does not serve: the profile gets no
connectivity, the result cannot reach the eIM, the eUICC rolls back to carrier A's profile after
its deadline and the re-signed result (enable ok + rollbackResult) arrives over the old one --
the state layer marks them **failed**, with a reason that says they rolled back, and reports
carrier A's profile as enabled. Reverting those ten to carrier A's ICCID then verifies them at
once (no package needed: they already run it), and nothing is queued twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from simulators.esim.https import HttpsIpa
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, run
from tests.sgp32.serve_world import (
    NEW_CARRIER,
    NEW_ICCID,
    OLD_CARRIER,
    OLD_ICCID,
    EsimWorld,
    esim_serve,
    poll,
)

pytestmark = pytest.mark.integration

DEVICES = 100
STRANDED = 10  # where carrier B does not serve


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-switch")) as running:
        yield running


async def esim_rows(api: Api, endpoints: list[str]) -> dict[str, dict[str, Any]]:
    async def one(endpoint: str) -> tuple[str, dict[str, Any]]:
        state = await api.get(f"/v1/devices/{endpoint}/state")
        rows = [r for r in state["dimensions"] if r["dimension"] == "esim"]
        return endpoint, rows[0] if rows else {}

    return dict(await asyncio.gather(*(one(e) for e in endpoints)))


async def drive(
    api: Api, ipas: list[HttpsIpa], endpoints: list[str], want: dict[str, str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Let the IPAs poll (as devices do) until every device has the wanted status."""
    deadline = time.monotonic() + timeout
    while True:
        await poll(ipas)
        rows = await esim_rows(api, endpoints)
        if all(rows[e].get("status") == want[e] for e in endpoints):
            return rows
        if time.monotonic() > deadline:
            wrong = {e: (r.get("status"), r.get("detail")) for e, r in rows.items()
                     if r.get("status") != want[e]}  # fmt: skip
            raise AssertionError(f"{len(wrong)} not as wanted: {list(wrong.items())[:3]}")
        await asyncio.sleep(0.2)


def test_a_carrier_switch_verifies_where_served_and_fails_where_it_rolls_back(
    world: EsimWorld,
) -> None:
    async def case() -> None:
        api = Api(world.serve)
        client = world.client()
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=7) as fleet:
                fleet.spawn(DEVICES, prefix="esim-sw-")
                await fleet.wait_registered(timeout=30)
                endpoints = [fleet.device(i).endpoint for i in range(DEVICES)]
                stranded = set(endpoints[:STRANDED])
                ipas: list[HttpsIpa] = []
                items = []
                for n, endpoint in enumerate(endpoints):
                    served = {OLD_CARRIER} if endpoint in stranded else None
                    euicc, ipa = world.device("21", n, served=served, rollback_after=1.0)
                    ipas.append(HttpsIpa(ipa, client, world.esipa_url))
                    items.append(world.import_item(euicc.eid, endpoint))
                await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)

                changed = await api.put(
                    "/v1/state", {"endpoints": endpoints, "values": {"esim": NEW_ICCID}}
                )
                assert changed["changed"] == DEVICES
                want = {e: "failed" if e in stranded else "applied" for e in endpoints}
                rows = await drive(api, ipas, endpoints, want, timeout=60)

                for endpoint, row in rows.items():
                    assert row["generation"] == 1
                    if endpoint in stranded:
                        assert row["reported"]["iccid"] == OLD_ICCID  # it fell back
                        assert row["reported"]["carrier"] == OLD_CARRIER
                        assert "rolled back" in row["detail"], row
                        assert row["observed_generation"] != row["generation"]
                    else:
                        assert row["reported"]["iccid"] == NEW_ICCID
                        assert row["reported"]["carrier"] == NEW_CARRIER
                        assert row["observed_generation"] == row["generation"]
                for remote in ipas:
                    enabled = remote.ipa.euicc.enabled
                    assert enabled is not None
                    fell_back = remote.ipa.served_carriers == {OLD_CARRIER}
                    assert enabled.iccid == (OLD_ICCID if fell_back else NEW_ICCID)

                # one package per device and generation, even after repeated judging
                listed = await api.get("/v1/esim/euiccs", params={"limit": 1000})
                mine = [e for e in listed["items"] if e["endpoint"] in set(endpoints)]
                assert len(mine) == DEVICES
                assert all(e["counter_value"] == 1 and e["queued"] == 0 for e in mine)
                rolled = await api.get(f"/v1/esim/euiccs/{endpoints[0]}/packages")
                assert rolled["items"][0]["result"]["rolled_back"] is True
                assert rolled["items"][0]["actor"] == "state:esim:g1"

                # revert the stranded ones to carrier A's profile: verified at once
                back = sorted(stranded)
                reverted = await api.put(
                    "/v1/state", {"endpoints": back, "values": {"esim": OLD_ICCID}}
                )
                assert reverted["changed"] == STRANDED
                rows = await drive(api, [], back, dict.fromkeys(back, "applied"), timeout=20)
                assert all(rows[e]["generation"] == 2 for e in back)
                shown = await api.get(f"/v1/esim/euiccs/{back[0]}")
                assert shown["counter_value"] == 1  # nothing new was signed for them
                audit = await api.get("/v1/audit", params={"action": "state.esim", "limit": 1000})
                outcomes = [r["outcome"] for r in audit["items"]]
                assert outcomes.count("failed") >= STRANDED
                assert outcomes.count("ok") >= DEVICES  # 90 switched + 10 reverted
        finally:
            await client.aclose()
            await api.aclose()

    run(case(), timeout=180)
