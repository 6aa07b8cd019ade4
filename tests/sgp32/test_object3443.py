"""ESipa through LwM2M object 3443 against a real ``fleetloop serve``: a simulated device
managed only over LwM2M carries an eUICC whose IPA puts its messages in /3443/0/3; the eIM
observes them, answers in /3443/0/2 and clears with /3443/0/4. An enable queued through the
API reaches the eUICC that way and its signed result comes back the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from simulators.esim.lwm2m import Object3443Ipa
from simulators.runner import SimulatedDevice
from tests.integration.conftest import Api, eventually, run
from tests.sgp32.serve_world import NEW_ICCID, EsimWorld, esim_serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsimWorld]:
    with esim_serve(tmp_path_factory.mktemp("esim-3443")) as running:
        yield running


@pytest.mark.parametrize("busy_writes", [0, 1], ids=["plain", "ipa-busy-once"])
def test_an_enable_travels_through_object_3443(world: EsimWorld, busy_writes: int) -> None:
    """With the IPA busy the first time (5.03 on the Write), the eIM writes the answer again
    once the pause is over."""
    euicc, ipa = world.device("61", 1 + busy_writes)
    glue = Object3443Ipa(ipa, busy_writes=busy_writes)
    endpoint = f"esim-3443-{1 + busy_writes}"

    async def case() -> None:
        api = Api(world.serve)
        device = SimulatedDevice(
            endpoint, world.serve.coap_uri, template=glue.template(world.serve.coap_uri)
        )
        try:
            await device.start()
            await api.post(
                "/v1/esim/euiccs",
                {"euiccs": [world.import_item(euicc.eid, endpoint)]},
                expect=201,
            )
            await api.post(
                f"/v1/esim/euiccs/{endpoint}/packages",
                {"operation": "enable", "iccid": NEW_ICCID},
                expect=201,
            )

            async def observed() -> bool:  # the eIM observes /3443/0/3 once registered
                found = await api.get(f"/v1/devices/{endpoint}/observations")
                items = found["items"] if isinstance(found, dict) else found
                return any("/3443/0/3" in str(o) for o in items)

            await eventually(observed, timeout=10)

            async def done() -> bool:
                if glue.last_sent is None:
                    glue.poll(device.set, time.time())
                shown = await api.get(f"/v1/esim/euiccs/{endpoint}")
                return bool(shown["packages"] and shown["packages"][0]["state"] == "done")

            await eventually(done, timeout=20)
            assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
            shown = await api.get(f"/v1/esim/euiccs/{endpoint}")
            profile = {p["iccid"]: p for p in shown["profiles"]}[NEW_ICCID]
            assert (profile["state"], profile["note"]) == ("enabled", "confirmed")

            async def cleared() -> bool:  # the eIM clears the answer after it judged it
                return device.read("/3443/0/3") == b""

            await eventually(cleared, timeout=10)
            assert glue.busy_writes == 0
        finally:
            await device.stop()
            await api.aclose()
            await asyncio.sleep(0)

    run(case(), timeout=60)


def test_the_eim_pushes_a_queued_package_through_object_3443(world: EsimWorld) -> None:
    """No poll from the IPA: the enable queued through the API is pushed (a
    TransferEimPackageRequest written to /3443/0/2), the IPA answers eimPackageReceived in
    /3443/0/3, runs it and delivers the signed result -- confirmed without any poll."""
    euicc, ipa = world.device("61", 7)
    glue = Object3443Ipa(ipa)
    endpoint = "esim-3443-push"

    async def case() -> None:
        api = Api(world.serve)
        device = SimulatedDevice(
            endpoint, world.serve.coap_uri, template=glue.template(world.serve.coap_uri)
        )
        try:
            await device.start()
            await api.post(
                "/v1/esim/euiccs",
                {"euiccs": [world.import_item(euicc.eid, endpoint)]},
                expect=201,
            )

            async def observed() -> bool:
                found = await api.get(f"/v1/devices/{endpoint}/observations")
                items = found["items"] if isinstance(found, dict) else found
                return any("/3443/0/3" in str(o) for o in items)

            await eventually(observed, timeout=10)
            await api.post(
                f"/v1/esim/euiccs/{endpoint}/packages",
                {"operation": "enable", "iccid": NEW_ICCID},
                expect=201,
            )

            async def done() -> bool:
                shown = await api.get(f"/v1/esim/euiccs/{endpoint}")
                return bool(shown["packages"] and shown["packages"][0]["state"] == "done")

            await eventually(done, timeout=20)
            assert ipa.pushes == 1
            assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
            audit = await api.get("/v1/audit", params={"action": "esim.package.deliver"})
            mine = [e for e in audit["items"] if e["subject"] == f"eid:{euicc.eid}"]
            assert [e["detail"]["pushed"] for e in mine] == [True]
        finally:
            await device.stop()
            await api.aclose()
            await asyncio.sleep(0)

    run(case(), timeout=60)
