"""Desired firmware driven by the reconciler, end to end against the real ``fleetloop serve``:
devices pull the image from a CoAP file server (block-wise), install it and reboot; the
reconciler verifies the new version in /3/0/3 and marks the generation applied. A device
whose image does not boot comes back on the old version with Update Result 8: that is a
permanent failure of this generation -- shown as failed, not retried in a loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from simulators.device.firmware import build_image
from simulators.fleet.runner import DeviceFleet
from simulators.profiles import DeviceProfile
from tests.integration.conftest import Api, Serve, eventually, run
from tests.integration.test_fleet import FirmwareServer

pytestmark = pytest.mark.integration


async def _firmware_rows(api: Api, endpoints: list[str]) -> dict[str, dict[str, Any]]:
    rows = {}
    for endpoint in endpoints:
        state = await api.get(f"/v1/devices/{endpoint}/state")
        rows[endpoint] = {r["dimension"]: r for r in state["dimensions"]}["firmware"]
    return rows


def test_desired_firmware_is_pulled_installed_and_verified_and_a_boot_failure_is_failed(
    serve: Serve,
) -> None:
    async def case() -> None:
        files = FirmwareServer({"fw/2.1.0.bin": build_image("2.1.0", 3000)})
        port = await files.start()
        uri = f"coap://127.0.0.1:{port}/fw/2.1.0.bin"
        good = DeviceProfile().with_behaviour(install_time=0.3)
        bad = DeviceProfile().with_behaviour(firmware_boot_failure=1.0, install_time=0.3)
        api = Api(serve)
        try:
            async with DeviceFleet(serve.coap_uri, seed=11) as fleet:
                healthy = [
                    fleet.device(i).endpoint for i in fleet.spawn(12, prefix="fwst-", profile=good)
                ]
                broken = [
                    fleet.device(i).endpoint for i in fleet.spawn(3, prefix="fwbad-", profile=bad)
                ]
                await fleet.wait_registered(timeout=30)
                result = await api.put(
                    "/v1/state",
                    {
                        "endpoints": healthy + broken,
                        "values": {"firmware": {"version": "2.1.0", "uri": uri}},
                    },
                )
                assert result["selected"] == 15

                async def settled() -> bool:
                    rows = await _firmware_rows(api, healthy + broken)
                    return all(r["status"] in ("applied", "failed") for r in rows.values())

                await eventually(settled, timeout=90)
                rows = await _firmware_rows(api, healthy + broken)
                for endpoint in healthy:
                    row = rows[endpoint]
                    assert row["status"] == "applied", (endpoint, row)
                    assert (row["generation"], row["observed_generation"]) == (1, 1)
                for endpoint in broken:
                    assert rows[endpoint]["status"] == "failed", (endpoint, rows[endpoint])
                    assert rows[endpoint]["observed_generation"] in (None, 0)
                # the devices themselves run what the server says
                versions = await asyncio.gather(
                    *(api.get(f"/v1/devices/{ep}/data/3/0/3") for ep in healthy[:3] + broken)
                )
                assert [v["content"]["value"] for v in versions] == ["2.1.0"] * 3 + ["1.0.0"] * 3
                # a failed generation is not retried in a loop: no new download is started
                fetched = files.requests
                await asyncio.sleep(3)
                assert files.requests == fetched
        finally:
            files.close()
            await api.aclose()

    run(case(), timeout=150)
