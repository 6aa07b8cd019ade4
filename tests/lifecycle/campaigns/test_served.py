"""Campaigns end to end against ``fleetloop serve``'s own composition root
(:class:`cli.serve.Service`, the campaign engine, the firmware repository and its CoAP file
endpoint, on ephemeral loopback ports, SQLite) with simulated devices over real UDP, driven
over the HTTP API and checked on the devices themselves:

* a Change of firmware + config bundle + APN delivered in that order, each component only
  after the one before verified, then -- after the campaign completed -- rolled back by
  region and in reverse order (APN, config, firmware), verified by what the devices report;
* an APN profile whose active APN is already the device's active one verifies at once
  (no re-attach happens, so waiting for one waited for ever);
* one quarantine: quarantining a firmware image through either route halts the campaigns
  delivering it, refuses new ones, and shows in both views; lifting it lifts both;
* a boot-looping canary (an image that boots, then keeps rebooting the device) fails the
  canary as artifact-bad: the engine quarantines the image -- in the firmware repository
  too -- and the campaign halts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cli.serve import Service
from lifecycle.artifacts.firmware import new_vendor_key, sign_image
from simulators.device.firmware import build_image
from simulators.fleet.runner import DeviceFleet
from simulators.identities import endpoint_name
from simulators.profiles import DeviceProfile
from tests.cli.harness import invoke
from tests.lifecycle.api.campaign_world import _start

T = TypeVar("T")

# a served fleet with real timers: with the other heavy folders, one at a time (tests/conftest)
pytestmark = pytest.mark.xdist_group("serve")

OLD_APN = "iot.fleetloop"  # the simulated devices' APN
NEW_APN = "iot.new"
FAST = (
    DeviceProfile(reachable_apns=frozenset({OLD_APN, NEW_APN}))
    .with_link(attach_time=0.2)
    .with_behaviour(install_time=0.3)
)
PRIVATE, PUBLIC = new_vendor_key()
FAST_SPEC: dict[str, Any] = {
    "canary": {"per_stratum": 1, "max_devices": 10, "bake": "0.3s"},
    "waves": [{"percent": 100, "bake": "0.3s"}],
    "pacing": {"rate": 500, "concurrency": 1000},
    "gates": {"min_sample": 2, "min_ack_pct": None, "cohort_by": ["region"]},
    "deadlines": {"delivered": 20, "applied": 20, "registered": 20, "verified": 20},
    "on_failure": "halt",
}


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    service: Service
    url: str
    token: str
    data_dir: Path
    fleets: list[DeviceFleet] = field(default_factory=list)

    def call(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            return client.request(method, path, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def spawn(
        self, prefix: str, regions: dict[str, int], profile: DeviceProfile = FAST
    ) -> tuple[DeviceFleet, dict[str, list[str]]]:
        """Devices named ``prefix``NNNNNN in ``regions`` (inventory first, then registered)."""
        rows = ["endpoint,serial,sku,tenant,region,security_mode,country,carrier,labels"]
        names: dict[str, list[str]] = {}
        n = 0
        for region, count in regions.items():
            for _ in range(count):
                n += 1
                endpoint = endpoint_name(prefix, n)
                names.setdefault(region, []).append(endpoint)
                rows.append(f"{endpoint},SN-{endpoint},T1,,{region},nosec,DE,telco,")
        content = "\n".join(rows) + "\n"
        self.api("POST", "/v1/identities/import", json={"content": content, "source": prefix})
        address = self.service.server.coap_address if self.service.server else None
        assert address is not None

        async def open_fleet() -> DeviceFleet:
            fleet = DeviceFleet(f"coap://127.0.0.1:{address[1]}", seed=11, record_events=True)
            await fleet.open()
            fleet.spawn(n, prefix=prefix, profile=profile)
            await fleet.wait_registered(timeout=30)
            return fleet

        fleet = self.call(open_fleet)
        self.fleets.append(fleet)
        return fleet, names

    def status(self, cid: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/v1/campaigns/{cid}"))

    def until(self, cid: str, states: tuple[str, ...], timeout: float = 40.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(cid)
            if last["state"] in states and not last.get("rolling_back"):
                return last
            time.sleep(0.1)
        raise AssertionError(
            f"campaign {cid} not {states}: {last.get('state')} {last.get('reason')} "
            f"{last.get('counts')}"
        )

    def upload(self, version: str, **image: Any) -> str:
        """A signed firmware image in the repository: its id."""
        body = build_image(version, 4096, **image)
        found = self.api(
            "POST",
            "/v1/firmware/images",
            params={"version": version, "signature": sign_image(body, PRIVATE).hex()},
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        return str(found["id"])

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not in time"
            time.sleep(0.1)

    def reported(self, endpoint: str) -> dict[str, Any]:
        """dimension -> its state row (status, reported value, generations)."""
        state = self.api("GET", f"/v1/devices/{endpoint}/state")
        return {row["dimension"]: row for row in state["dimensions"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="served", daemon=True)
    thread.start()
    data_dir = tmp_path_factory.mktemp("served") / "data"
    service, url, token = asyncio.run_coroutine_threadsafe(_start(data_dir, None), loop).result(30)
    world = Served(loop, service, url, token, data_dir)
    world.api("POST", "/v1/firmware/keys", json={"name": "acme", "public_key": PUBLIC.decode()})
    try:
        yield world
    finally:

        async def stop() -> None:
            for fleet in world.fleets:
                await fleet.close(timeout=2.0)
            await service.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _device_steps(served: Served, endpoint: str) -> list[str]:
    """The reconciler's steps on ``endpoint``, oldest first (its audit records)."""
    found = served.api(
        "GET",
        "/v1/audit",
        params={"action": "state.reconcile", "endpoint": endpoint, "limit": 1000},
    )
    records = sorted(found["items"], key=lambda r: (r["at"], r.get("id", 0)))
    return [s["step"] for r in records for s in r["detail"].get("steps", []) if "step" in s]


def test_a_change_of_firmware_config_and_apn_goes_in_order_and_is_rolled_back_in_reverse(
    served: Served,
) -> None:
    _, names = served.spawn("chg-", {"north": 2, "south": 2})
    everyone = names["north"] + names["south"]
    # last-known-good: the image the devices run (1.0.0) is in the repository, config v1 is
    # desired and verified, and the APN they report is a complete APN set
    served.upload("1.0.0", seed=1)
    new_image = served.upload("2.0.0", seed=2)
    for name in ("chg-v1", "chg-v2"):
        served.api("PUT", f"/v1/config-bundles/{name}", json={"bundle": name})
    served.api("PUT", "/v1/state", json={"endpoints": everyone, "values": {"config": "chg-v1"}})
    served.wait(
        lambda: all(served.reported(e)["config"]["status"] == "applied" for e in everyone),
        "config v1 applied",
    )
    served.api(
        "PUT", "/v1/apn-profiles/chg-apn", json={"apns": [NEW_APN, OLD_APN], "active": NEW_APN}
    )
    spec = {
        "name": "fw + config + apn",
        "selector": "endpoint=chg-*",
        "change": [{"firmware": new_image}, {"config": "chg-v2"}, {"apn": "profile:chg-apn"}],
        **FAST_SPEC,
        "canary": {"per_stratum": 2, "max_devices": 10, "bake": "0.3s"},  # all four
    }
    before = {e: len(_device_steps(served, e)) for e in everyone}
    cid = served.api("POST", "/v1/campaigns", json=spec)["id"]
    done = served.until(cid, ("completed",), timeout=60)
    assert done["counts"] == {"succeeded": 4}, done
    for endpoint in everyone:
        rows = served.reported(endpoint)
        assert rows["firmware"]["reported"]["version"] == "2.0.0"
        assert rows["config"]["reported"]["version"] == "chg-v2"
        assert rows["connectivity"]["reported"]["active"] == NEW_APN
        steps = _device_steps(served, endpoint)[before[endpoint] :]
        order = [steps.index(s) for s in ("pull-firmware", "write-apply-config", "set-apns")]
        assert order == sorted(order), steps  # each only after the one before verified
        before[endpoint] += len(steps)

    # the campaign has ended; roll back one region, later the rest
    rolled = served.api("POST", f"/v1/campaigns/{cid}/rollback", json={"scope": "region=north"})
    assert rolled["reverting"] == 2
    assert rolled["campaign"]["rolling_back"] == 2
    status = served.until(cid, ("completed",), timeout=60)
    assert status["counts"] == {"succeeded": 2, "reverted": 2}, status
    for endpoint in names["north"]:
        rows = served.reported(endpoint)
        assert rows["connectivity"]["reported"]["active"] == OLD_APN
        assert rows["config"]["reported"]["version"] == "chg-v1"
        assert rows["firmware"]["reported"]["version"] == "1.0.0"
        for dim in ("firmware", "config", "connectivity"):  # verified on the new generation
            assert rows[dim]["status"] == "applied", rows[dim]
            assert rows[dim]["observed_generation"] == rows[dim]["generation"]
        steps = _device_steps(served, endpoint)[before[endpoint] :]
        revert = [s for s in steps if s in ("set-apns", "write-apply-config", "push-firmware")]
        assert revert == ["set-apns", "write-apply-config", "push-firmware"], steps
    for endpoint in names["south"]:  # not in the scope: still on the change
        assert served.reported(endpoint)["firmware"]["reported"]["version"] == "2.0.0"
    # the rest from the command line
    assert invoke(served.data_dir, "campaign", "rollback", cid).exit_code == 2  # which?
    rolled_cli = invoke(served.data_dir, "campaign", "rollback", cid, "--scope", "all")
    assert rolled_cli.exit_code == 0, rolled_cli.output
    assert f"rolling back 2 devices of campaign {cid} (all)" in rolled_cli.output
    final = served.until(cid, ("reverted",), timeout=60)
    assert final["counts"] == {"reverted": 4}
    audit = served.api("GET", "/v1/audit", params={"action": "campaign.rollback", "limit": 100})
    mine = [r for r in audit["items"] if r["subject"] == f"campaign:{cid}"]
    assert {r["action"] for r in mine} == {"campaign.rollback", "campaign.rollback_done"}


def test_an_apn_profile_whose_active_apn_is_already_active_verifies_at_once(
    served: Served,
) -> None:
    _, names = served.spawn("same-", {"north": 2})
    served.api(
        "PUT",
        "/v1/apn-profiles/same-apn",
        json={"apns": [OLD_APN, "iot.spare"], "active": OLD_APN},
    )
    spec = {
        "name": "spare apn",
        "selector": "endpoint=same-*",
        "change": [{"apn": "profile:same-apn"}],
        **FAST_SPEC,
        # short deadlines: a device that waits for a re-attach that never comes times out
        "deadlines": {"delivered": 2, "applied": 2, "registered": 2, "verified": 2},
    }
    cid = served.api("POST", "/v1/campaigns", json=spec)["id"]
    done = served.until(cid, ("completed", "halted"), timeout=30)
    assert done["counts"] == {"succeeded": 2}, done
    for endpoint in names["north"]:
        row = served.reported(endpoint)["connectivity"]
        assert row["status"] == "applied" and row["reported"]["active"] == OLD_APN
        assert "iot.spare" in row["reported"]["apns"]


def test_one_quarantine_whichever_route_sets_or_lifts_it(served: Served) -> None:
    served.spawn("qua-", {"north": 2})
    image = served.upload("3.0.0", seed=3)
    spec = {
        "name": "fw 3",
        "selector": "endpoint=qua-*",
        "change": [{"firmware": image}],
        **FAST_SPEC,
        "canary": {"per_stratum": 1, "max_devices": 10, "bake": "0.3s", "approval": True},
    }
    cid = served.api("POST", "/v1/campaigns", json=spec)["id"]
    served.until(cid, ("awaiting_approval",), timeout=40)
    # the firmware route: the campaign halts, both views show it
    served.api("POST", f"/v1/firmware/images/{image}/quarantine", json={"reason": "field report"})
    assert served.status(cid)["state"] == "halted"
    listed = served.api("GET", "/v1/artifacts/quarantine")["items"]
    assert image in {q["artifact"] for q in listed}
    refused = served.request("POST", "/v1/campaigns/plan", json={**spec, "name": "again"})
    assert refused.status_code in (409, 422) and "quarantined" in refused.text
    # lifted through the firmware route: lifted for campaigns too (the halt can be resumed)
    served.api("DELETE", f"/v1/firmware/images/{image}/quarantine")
    listed = served.api("GET", "/v1/artifacts/quarantine")["items"]
    assert image not in {q["artifact"] for q in listed}
    served.api("POST", f"/v1/campaigns/{cid}/resume")
    # the campaigns route: the firmware view shows it, downloads stop
    served.api(
        "POST", "/v1/artifacts/quarantine", json={"artifact": image, "reason": "second look"}
    )
    shown = served.api("GET", f"/v1/firmware/images/{image}")
    assert shown["quarantined"] is True, shown
    assert served.status(cid)["state"] == "halted"
    served.api("POST", f"/v1/campaigns/{cid}/abort", json={"revert": False})


def test_a_boot_looping_canary_halts_the_campaign_and_quarantines_the_image(
    served: Served,
) -> None:
    served.spawn("loop-", {"north": 2, "south": 2})
    served.upload("1.0.0", seed=1)  # (already there from another test is fine: same bytes)
    looping = served.upload("4.0.0", seed=4, reboot_loop=True)
    spec = {
        "name": "fw 4 (reboot loop)",
        "selector": "endpoint=loop-*",
        "change": [{"firmware": looping}],
        **FAST_SPEC,
        "canary": {"per_stratum": 1, "max_devices": 10, "bake": "6s"},
    }
    cid = served.api("POST", "/v1/campaigns", json=spec)["id"]
    served.until(cid, ("halted",), timeout=60)  # the canary's gate, or the quarantine
    # the second region's canary device loops a little later: then the image is quarantined
    served.wait(lambda: "quarantined" in served.status(cid)["reason"], "quarantine", 20)
    status = served.status(cid)
    assert f"artifact {looping} quarantined" in status["reason"], status["reason"]
    canary = status["waves"][0]
    assert canary["counts"].get("failed") == 2, canary
    report = served.api("GET", f"/v1/campaigns/{cid}/report")
    failed = [d for d in report["device_list"] if d["state"] == "failed"]
    assert failed and all("reboot loop" in d["reason"] for d in failed), failed
    assert status["counts"].get("queued") == 2  # the first wave never started
    # one quarantine: the engine's, shown by the firmware repository too
    assert served.api("GET", f"/v1/firmware/images/{looping}")["quarantined"] is True
    listed = served.api("GET", "/v1/artifacts/quarantine")["items"]
    assert looping in {q["artifact"] for q in listed}
    served.api("POST", f"/v1/campaigns/{cid}/abort", json={"revert": True})
    served.until(cid, ("aborted",), timeout=60)


def test_the_quarantine_of_a_bundle_or_apn_profile_is_lifted_by_route_and_cli(
    served: Served,
) -> None:
    served.spawn("unq-", {"north": 2})
    served.api("PUT", "/v1/config-bundles/unq-v2", json={"bundle": "unq-v2"})
    spec = {
        "name": "unq v2",
        "selector": "endpoint=unq-*",
        "change": [{"config": "unq-v2"}],
        **FAST_SPEC,
        "canary": {"per_stratum": 1, "max_devices": 10, "bake": "0.3s", "approval": True},
    }
    cid = served.api("POST", "/v1/campaigns", json=spec)["id"]
    served.until(cid, ("awaiting_approval",), timeout=40)
    bundle = "bundle:unq-v2"
    served.api("POST", "/v1/artifacts/quarantine", json={"artifact": bundle, "reason": "typo"})
    assert served.status(cid)["state"] == "halted"
    # lifted from the command line: it names the halted campaign that may resume
    lifted = invoke(served.data_dir, "campaign", "unquarantine", bundle)
    assert lifted.exit_code == 0, lifted.output
    assert f"quarantine of {bundle} lifted" in lifted.output and cid in lifted.output
    listed = served.api("GET", "/v1/artifacts/quarantine")["items"]
    assert bundle not in {q["artifact"] for q in listed}
    audit = served.api("GET", "/v1/audit", params={"action": "campaign.unquarantine"})
    assert any(r["subject"] == f"artifact:{bundle}" for r in audit["items"]), audit
    # lifting what is not quarantined: 404 naming the list to look at
    again = served.request("DELETE", f"/v1/artifacts/quarantine/{bundle}")
    assert again.status_code == 404 and "is not quarantined" in again.json()["message"]
    assert invoke(served.data_dir, "campaign", "unquarantine", bundle).exit_code == 1
    served.api("POST", f"/v1/campaigns/{cid}/resume")  # no longer refused (409)
    served.api("POST", f"/v1/campaigns/{cid}/abort", json={"revert": False})
    # an APN profile revision through the route (no campaign uses it)
    profile = "apn-profile:unq-apn@r1"
    served.api("POST", "/v1/artifacts/quarantine", json={"artifact": profile, "reason": "x"})
    done = served.api("DELETE", f"/v1/artifacts/quarantine/{profile}")
    assert done == {"artifact": profile, "lifted": True, "resumable": []}
    listed = served.api("GET", "/v1/artifacts/quarantine")["items"]
    assert profile not in {q["artifact"] for q in listed}
