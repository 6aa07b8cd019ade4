"""The simulated fleet with eSIM devices on all three ESipa bindings against a real
``fleetloop serve``: fleet devices (the fleet engine, real UDP) whose eUICC's IPA sits behind
object 3443, polls over CoAP or polls over HTTPS; one enable queued for all of them reaches
each eUICC over its binding and comes back signed and confirmed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.esim.fleet import EsimFleet
from simulators.esim.ipa import SimIpa
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import NEW_ICCID, EsimWorld, esim_serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-fleet")) as running:
        yield running


def test_fleet_devices_switch_profile_over_each_binding(world: EsimWorld) -> None:
    def make_ipa(n: int) -> SimIpa:
        return world.device("72", n)[1]

    async def case() -> None:
        api = Api(world.serve)
        client = world.client()
        try:
            async with DeviceFleet(world.serve.coap_uri, seed=5) as fleet:
                esim = EsimFleet(
                    fleet,
                    make_ipa,
                    coap_uri=world.serve.coap_uri,
                    esipa_url=world.esipa_url,
                    client=client,
                )
                devices = esim.spawn(["3443", "coap", "https"])
                await fleet.wait_registered(timeout=30)
                assert fleet.device(devices[0].index).read("/3443/0/1") == devices[0].ipa.euicc.eid
                items = esim.import_items(lambda eid: world.certs[eid])
                await api.post("/v1/esim/euiccs", {"euiccs": items}, expect=201)
                eids = [d.ipa.euicc.eid for d in devices]
                await api.post(
                    "/v1/esim/packages",
                    {"operation": "enable", "iccid": NEW_ICCID, "eids": eids},
                    expect=201,
                )

                async def confirmed() -> bool:
                    await esim.poll()
                    for eid in eids:
                        shown = await api.get(f"/v1/esim/euiccs/{eid}")
                        profiles = {p["iccid"]: p for p in shown["profiles"]}
                        if profiles.get(NEW_ICCID, {}).get("note") != "confirmed":
                            return False
                    return True

                try:
                    await eventually(confirmed, timeout=30)
                finally:
                    await esim.close()
                for device in devices:
                    enabled = device.ipa.euicc.enabled
                    assert enabled is not None and enabled.iccid == NEW_ICCID, device.binding
                # the object 3443 device got its package pushed; the others polled for theirs
                assert devices[0].ipa.pushes >= 1
                assert devices[1].ipa.pushes == devices[2].ipa.pushes == 0
        finally:
            await client.aclose()
            await api.aclose()

    run(case(), timeout=90)
