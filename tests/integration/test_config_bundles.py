"""A versioned config bundle with regional overlays, end to end against the real
``fleetloop serve`` and the simulated fleet over real UDP.

``tracker@1.0.0`` is published over the API with an ``region=eu`` overlay (another server key)
and a ``region=apac`` overlay that adds a key Apac's devices refuse
(``Behaviour.config_reject_keys``). The campaign resolver (:func:`make_resolver`, reading the
server's own database) turns it into a component; each device is given
``component.value_for(its member)`` -- what a campaign wave does -- and the reconciler
delivers it. US devices run the base content, EU devices the EU content (the bytes on the
device decode to exactly the merged map), and APAC devices refuse it: failed with the
device's reason, never applied.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest

from lifecycle.artifacts.resolve import make_resolver
from lifecycle.campaigns.model import Member
from lifecycle.state.dimensions import Dimension
from lwm2m.store import Store
from simulators.fleet.runner import DeviceFleet
from simulators.profiles import DeviceProfile
from tests.integration.conftest import Api, Serve, eventually, run, start_serve

pytestmark = pytest.mark.integration

PER_REGION = 10
BASE = {"interval": 60, "server": "dm.example"}
OVERLAYS = {"region=eu": {"server": "dm.eu.example"}, "region=apac": {"turbo": True}}
APAC = DeviceProfile(name="apac").with_behaviour(config_reject_keys=frozenset({"turbo"}))


async def _config_rows(api: Api, endpoints: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for endpoint in endpoints:
        state = await api.get(f"/v1/devices/{endpoint}/state")
        for row in state["dimensions"]:
            if row["dimension"] == "config":
                found[endpoint] = row
    return found


def test_overlays_deliver_each_region_its_content_and_a_refusing_region_fails(
    serve: Serve,
) -> None:
    async def case() -> None:
        api = Api(serve)
        try:
            published = await api.post(
                "/v1/bundles/tracker/versions",
                {"version": "1.0.0", "content": BASE, "overlays": OVERLAYS},
            )
            assert published["created"] and len(published["overlays"]) == 2
            store = Store.open(None, serve.data_dir)  # the server's own database, read only
            try:
                component = store.read_sync(
                    lambda tx: make_resolver(tx)(Dimension.CONFIG, "tracker@1.0.0")
                )
            finally:
                store.close()
            assert component.artifact == "bundle:tracker@1.0.0"

            async with DeviceFleet(serve.coap_uri, seed=7) as fleet:
                cohorts = {
                    "us": fleet.spawn(PER_REGION, prefix="cb-us-"),
                    "eu": fleet.spawn(PER_REGION, prefix="cb-eu-"),
                    "apac": fleet.spawn(PER_REGION, prefix="cb-apac-", profile=APAC),
                }
                await fleet.wait_registered(timeout=30)
                names = {
                    region: [fleet.device(i).endpoint for i in indices]
                    for region, indices in cohorts.items()
                }
                for region, endpoints in names.items():
                    value = dict(component.value_for(Member(endpoints[0], region=region)))
                    changed = await api.put(
                        "/v1/state", {"endpoints": endpoints, "values": {"config": value}}
                    )
                    assert changed["changed"] == PER_REGION

                async def settled() -> bool:
                    rows = await _config_rows(api, [e for es in names.values() for e in es])
                    return len(rows) == 3 * PER_REGION and all(
                        r["status"] in ("applied", "failed") for r in rows.values()
                    )

                await eventually(settled, timeout=60)
                rows = await _config_rows(api, [e for es in names.values() for e in es])
                for region in ("us", "eu"):
                    assert {rows[e]["status"] for e in names[region]} == {"applied"}, region
                for endpoint in names["apac"]:
                    assert rows[endpoint]["status"] == "failed"
                    assert "'turbo'" in rows[endpoint]["detail"], rows[endpoint]
                expected = {
                    "us": BASE,
                    "eu": {**BASE, "server": "dm.eu.example"},
                }
                for region, content in expected.items():
                    for index in cohorts[region]:
                        device = fleet.device(index)
                        bundle = device.read("/32001/0/1")
                        assert isinstance(bundle, bytes) and cbor2.loads(bundle) == content
                        assert device.read("/32001/0/4") == "1.0.0"
                eu_row = rows[names["eu"][0]]
                assert eu_row["desired"]["bundle"] == "tracker@1.0.0:region=eu"
                assert eu_row["desired"]["digest"] == next(
                    o["digest"] for o in published["overlays"] if o["scope"] == "region=eu"
                )
        finally:
            await api.aclose()

    run(case(), timeout=120)


def test_a_published_version_and_a_profile_survive_kill_9(tmp_path: Path) -> None:
    """What the API acknowledged is on disk: after ``kill -9`` and a restart the version
    answers with the same digest and overlays, still refuses other content, and the APN
    profile is there with its revision."""

    def call(serve: Serve, method: str, url: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{serve.url}{url}",
            json=body,
            headers={"Authorization": f"Bearer {serve.token}"},
            timeout=30,
        )

    with start_serve(tmp_path / "data") as first:
        published = call(
            first,
            "POST",
            "/v1/bundles/k9/versions",
            {"version": "3.0.0", "content": BASE, "overlays": OVERLAYS},
        )
        assert published.status_code == 200, published.text
        profile = call(first, "PUT", "/v1/apn-profiles/k9", {"apns": ["iot.k9"]})
        assert profile.status_code == 200, profile.text
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
    (tmp_path / "data" / "api.json").unlink(missing_ok=True)
    with start_serve(tmp_path / "data") as second:
        shown = call(second, "GET", "/v1/bundles/k9/versions/3.0.0").json()
        assert shown["digest"] == published.json()["digest"]
        assert shown["content"] == BASE and len(shown["overlays"]) == 2
        refused = call(
            second, "POST", "/v1/bundles/k9/versions", {"version": "3.0.0", "content": {"x": 1}}
        )
        assert refused.status_code == 409 and "k9@3.0.1" in refused.json()["message"]
        again = call(second, "GET", "/v1/apn-profiles/k9").json()
        assert (again["active"], again["revision"]) == ("iot.k9", 1)
