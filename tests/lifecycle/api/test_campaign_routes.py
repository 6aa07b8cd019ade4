"""The campaign API (``/v1/campaigns``, ``/v1/artifacts/quarantine``) against ``fleetloop
serve``'s own composition root with a small simulated fleet over real UDP
(:mod:`tests.lifecycle.api.campaign_world`: 24 devices, three regions, two tenants, the ``ap``
region refusing the bundle ``cw-bad``).

What an operator relies on: plan and create take the same spec and agree; status shows per
wave and per cohort counts and the gate verdicts; a failing region is reverted alone and the
report says so; the verbs move the campaign and refuse (409, in the error envelope) what its
state does not allow; spec mistakes are 422 with the spec path; a tenant-scoped token sees and
creates only its tenant's campaigns and devices; the SSE stream carries the progress.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient

from lifecycle.api import create_app
from tests.lifecycle.api.campaign_world import (
    CampaignWorld,
    campaign_world,
    endpoints,
    fast_spec,
    postgres_schema,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CampaignWorld]:
    """The served fleet on SQLite, then on PostgreSQL (a schema of its own)."""
    data_dir = tmp_path_factory.mktemp("campaign-api") / "data"
    if request.param == "sqlite":
        with campaign_world(data_dir) as running:
            yield running
        return
    with postgres_schema() as url, campaign_world(data_dir, url) as running:
        yield running


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert set(body) >= {"status", "message"}, body
    return body


def test_plan_and_create_take_the_same_spec_and_agree(world: CampaignWorld) -> None:
    spec = fast_spec("eu v2", "region=eu", "cw-v2")
    before = world.api("GET", "/v1/campaigns")["items"]
    plan = world.api("POST", "/v1/campaigns/plan", json=spec)
    assert plan["devices"] == 8 and plan["conflict_count"] == 0
    assert plan["waves"][0]["name"] == "canary"
    assert sum(w["devices"] for w in plan["waves"]) == 8
    assert plan["strata"] == [{"region": "eu", "carrier": "telco-a", "sku": "T1", "devices": 8}]
    assert plan["bytes_to_move"] > 0 and plan["estimated_s"] > 0
    assert plan["components"] == [{"dimension": "config", "artifact": "bundle:cw-v2"}]
    assert plan["spec"]["change"][0]["value"]["version"] == "cw-v2"  # resolved by the server
    assert world.api("GET", "/v1/campaigns")["items"] == before  # a plan writes nothing

    created = world.request("POST", "/v1/campaigns", json=spec)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert created.json()["devices"] == 8
    done = world.until(cid, ("completed",))
    assert done["counts"] == {"succeeded": 8}
    assert [w["devices"] for w in done["waves"]] == [w["devices"] for w in plan["waves"]]
    canary = done["waves"][0]
    assert {"scope": "region", "key": "eu", "counts": canary["counts"]} in canary["cohorts"]
    assert any(
        v["scope"] == "region" and v["key"] == "eu" and v["verdict"] == "passed"
        for v in canary["verdicts"]
    )
    listed = world.api("GET", "/v1/campaigns", params={"state": "completed"})["items"]
    assert cid in [c["id"] for c in listed]
    assert done["created_at"].endswith("Z") and done["finished_at_epoch"] is not None


def test_a_region_that_refuses_is_reverted_alone_and_the_report_says_why(
    world: CampaignWorld,
) -> None:
    cid = world.api(
        "POST", "/v1/campaigns", json=fast_spec("us+ap bad", "region in (us,ap)", "cw-bad")
    )["id"]
    done = world.until(cid, ("completed",))
    assert done["reverted_cohorts"] == [{"scope": "region", "key": "ap"}]
    failed = [v for v in done["waves"][0]["verdicts"] if v["verdict"] == "failed"]
    assert [(v["scope"], v["key"]) for v in failed] == [("region", "ap")]
    assert failed[0]["acted"] and any("failures" in r for r in failed[0]["reasons"])

    report = world.api("GET", f"/v1/campaigns/{cid}/report")
    assert report["by_region"]["us"] == {"succeeded": 8}
    assert set(report["by_region"]["ap"]) <= {"reverted", "skipped"}
    assert report["changed"] == 8 and report["reverted"] == report["by_region"]["ap"]["reverted"]
    assert report["failures"] and all(f["examples"] for f in report["failures"])
    ap = {d["endpoint"]: d for d in report["device_list"] if d["region"] == "ap"}
    assert set(ap) == set(endpoints("ap"))
    # on the devices: us runs the new bundle, ap is (back) on the last-known-good one
    assert world.fleet is not None
    assert world.fleet.device(endpoints("us")[0]).read("/32001/0/4") == "cw-bad"
    for endpoint in endpoints("ap"):
        assert world.fleet.device(endpoint).read("/32001/0/4") == "cw-v1"


def test_the_verbs_move_a_campaign_and_refuse_what_its_state_does_not_allow(
    world: CampaignWorld,
) -> None:
    spec = fast_spec(
        "eu v3 approval",
        "region=eu",
        "cw-v3",
        canary={"per_stratum": 2, "max_devices": 2, "bake": 0, "approval": True},
        waves=[{"percent": 100, "bake": "60s"}],
    )
    cid = world.api("POST", "/v1/campaigns", json=spec)["id"]
    waiting = world.until(cid, ("awaiting_approval",))
    assert waiting["waves"][0]["counts"] == {"succeeded": 2}
    refused = _error(world.request("POST", f"/v1/campaigns/{cid}/pause"), 409)
    assert refused["status"] == "conflict" and "awaiting_approval" in refused["message"]

    assert world.api("POST", f"/v1/campaigns/{cid}/approve")["state"] == "running"
    assert world.api("POST", f"/v1/campaigns/{cid}/pause")["state"] == "paused"
    again = _error(world.request("POST", f"/v1/campaigns/{cid}/pause"), 409)
    assert again["field"] == "pause"
    assert world.api("POST", f"/v1/campaigns/{cid}/resume")["state"] == "running"

    # a direct change of a held device names the campaign
    first = endpoints("eu")[0]
    held = world.request(
        "PUT", "/v1/state", json={"endpoints": [first], "values": {"config": "cw-v1"}}
    )
    assert held.status_code == 409 and held.json()["campaign"] == cid

    rolled = world.api(
        "POST", f"/v1/campaigns/{cid}/rollback", json={"selector": f"endpoint={first}"}
    )
    assert rolled["campaign"]["id"] == cid and rolled["reverting"] in (0, 1)
    aborted = world.api("POST", f"/v1/campaigns/{cid}/abort", json={"revert": True})
    assert aborted["state"] in ("reverting", "aborted")
    end = world.until(cid, ("aborted",))
    assert "aborted by operator:admin (revert)" in end["reason"]
    assert not end["counts"].get("succeeded") and not end["counts"].get("verified")
    for endpoint in endpoints("eu"):
        assert world.fleet is not None
        assert world.fleet.device(endpoint).read("/32001/0/4") in ("cw-v1", "cw-v2")
    late = _error(world.request("POST", f"/v1/campaigns/{cid}/resume"), 409)
    assert "aborted" in late["message"]
    audit = world.api("GET", "/v1/audit", params={"action": "campaign.", "limit": 1000})
    actions = {r["action"] for r in audit["items"] if r["subject"] == f"campaign:{cid}"}
    assert {"campaign.create", "campaign.approve", "campaign.pause", "campaign.resume",
            "campaign.rollback", "campaign.abort"} <= actions  # fmt: skip


def test_unknown_campaigns_and_spec_mistakes_answer_the_error_envelope(
    world: CampaignWorld,
) -> None:
    for method, path in (
        ("GET", "/v1/campaigns/c-nope"),
        ("GET", "/v1/campaigns/c-nope/report"),
        ("GET", "/v1/campaigns/c-nope/events"),
        ("POST", "/v1/campaigns/c-nope/pause"),
    ):
        body = _error(world.request(method, path), 404)
        assert body["status"] == "not_found" and "fleetloop campaign list" in body["message"]

    bad_wave = fast_spec("x", "region=eu", "cw-v2", waves=[{"percent": 150}])
    for route in ("/v1/campaigns/plan", "/v1/campaigns"):
        body = _error(world.request("POST", route, json=bad_wave), 422)
        assert body["status"] == "invalid_input" and body["field"] == "waves[0].percent"
        assert "percentage" in body["message"]
    unknown = _error(
        world.request("POST", "/v1/campaigns/plan", json=fast_spec("x", "region=eu", "nope@1")),
        422,
    )
    assert unknown["field"].startswith("change[0].config"), unknown
    typo = _error(
        world.request("POST", "/v1/campaigns/plan", json={**fast_spec("x", "a=b", "cw-v2"),
                                                          "wave": []}),
        422,
    )  # fmt: skip
    assert typo["field"] == "wave" and "waves" in typo["message"]
    empty = _error(
        world.request("POST", "/v1/campaigns", json=fast_spec("x", "region=mars", "cw-v2")), 422
    )
    assert empty["field"] == "selector" and "no device" in empty["message"]
    no_revert = _error(world.request("POST", "/v1/campaigns/c-nope/abort", json={}), 422)
    assert no_revert["field"] == "body.revert"
    listed = _error(world.request("GET", "/v1/campaigns", params={"state": "sleeping"}), 422)
    assert "running" in listed["message"]


def test_quarantine_halts_the_campaigns_using_the_artifact_and_refuses_new_ones(
    world: CampaignWorld,
) -> None:
    spec = fast_spec(
        "ap v4", "region=ap", "cw-v4", canary={"per_stratum": 1, "max_devices": 1, "bake": "60s"}
    )
    cid = world.api("POST", "/v1/campaigns", json=spec)["id"]
    world.until(cid, ("running",))
    done = world.api(
        "POST", "/v1/artifacts/quarantine", json={"artifact": "bundle:cw-v4", "reason": "bad"}
    )
    assert done["halted"] == [cid] and done["reason"] == "bad" and done["at"].endswith("Z")
    halted = world.until(cid, ("halted",))
    assert "quarantined" in halted["reason"]
    assert _error(world.request("POST", f"/v1/campaigns/{cid}/resume"), 409)["field"] == "resume"
    again = _error(world.request("POST", "/v1/campaigns", json=spec), 409)
    assert again["field"] == "change" and "quarantined" in again["message"]
    listed = world.api("GET", "/v1/artifacts/quarantine")["items"]
    assert [q["artifact"] for q in listed if q["artifact"] == "bundle:cw-v4"]
    world.api("POST", f"/v1/campaigns/{cid}/abort", json={"revert": True})
    world.until(cid, ("aborted",))


def test_a_tenant_scoped_token_sees_and_creates_only_its_tenant(world: CampaignWorld) -> None:
    acme = world.token_for("acme-op", "operator", ["acme"])
    viewer = world.token_for("acme-viewer", "viewer", ["acme"])
    # an all-tenant campaign on globex's devices, made by the admin
    theirs = world.api("POST", "/v1/campaigns/plan", json=fast_spec("ap", "region=ap", "cw-v5"))
    assert theirs["devices"] == 8
    other = world.api(
        "POST", "/v1/campaigns", json={**fast_spec("ap v5", "region=ap", "cw-v5"),
                                       "tenant": "globex"}
    )["id"]  # fmt: skip
    world.until(other, ("completed",))

    plan = world.api(
        "POST", "/v1/campaigns/plan", json=fast_spec("all", "endpoint=cw-*", "cw-v6"), token=acme
    )
    assert plan["tenant"] == "acme" and plan["devices"] == 16  # eu + us only
    assert not {e for w in plan["waves"] for e in w["examples"]} & set(endpoints("ap"))
    mine = world.request(
        "POST", "/v1/campaigns", json=fast_spec("acme v6", "endpoint=cw-*", "cw-v6"), token=acme
    )
    assert mine.status_code == 201, mine.text
    cid = mine.json()["id"]
    assert mine.json()["tenant"] == "acme" and mine.json()["devices"] == 16

    forbidden = _error(
        world.request(
            "POST", "/v1/campaigns",
            json={**fast_spec("x", "region=ap", "cw-v6"), "tenant": "globex"}, token=acme,
        ),
        403,
    )  # fmt: skip
    assert forbidden["field"] == "tenant"
    listed = [c["id"] for c in world.api("GET", "/v1/campaigns", token=viewer)["items"]]
    assert cid in listed and other not in listed
    hidden = _error(world.request("GET", f"/v1/campaigns/{other}", token=acme), 404)
    unknown = _error(world.request("GET", "/v1/campaigns/c-000000000000", token=acme), 404)
    assert hidden["message"].replace(other, "X") == unknown["message"].replace(
        "c-000000000000", "X"
    )
    _error(world.request("POST", f"/v1/campaigns/{other}/pause", token=acme), 404)
    _error(world.request("POST", f"/v1/campaigns/{cid}/pause", token=viewer), 403)
    assert world.request("GET", f"/v1/campaigns/{cid}", token=viewer).status_code == 200
    brake = _error(
        world.request(
            "POST", "/v1/artifacts/quarantine", json={"artifact": "bundle:cw-v6"}, token=acme
        ),
        403,
    )
    assert "all-tenant" in brake["message"]
    world.until(cid, ("completed",))


def test_the_event_stream_carries_a_campaigns_progress_to_its_end(world: CampaignWorld) -> None:
    cid = world.api("POST", "/v1/campaigns", json=fast_spec("eu v7", "region=eu", "cw-v7"))["id"]
    seen: list[tuple[str, dict[str, Any]]] = []
    headers = {"Authorization": f"Bearer {world.token}"}
    with httpx.stream(
        "GET", f"{world.url}/v1/campaigns/{cid}/events", headers=headers, timeout=40
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                seen.append((event, json.loads(line[6:])))
                if event == "end":
                    break
    kinds = [k for k, _ in seen]
    assert kinds[0] == "ready" and kinds[1] == "status" and kinds[-1] == "end"
    assert all(d.get("campaign", d.get("id")) == cid for _, d in seen)
    assert "progress" in kinds or "wave" in kinds
    last_status = [d for k, d in seen if k == "status"][-1]
    assert last_status["state"] == "completed" and last_status["counts"] == {"succeeded": 8}
    # a campaign that has ended: the stream says so at once
    with httpx.stream(
        "GET", f"{world.url}/v1/campaigns/{cid}/events", headers=headers, timeout=10
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("event: ")]
    assert lines == ["event: ready", "event: status", "event: end"]


def test_without_the_engine_every_campaign_route_answers_503() -> None:
    token = "t" * 40
    context = SimpleNamespace(
        version="0", token=token, operators=None, campaigns=None, tenants=SimpleNamespace()
    )
    app = create_app(cast(Any, context))
    app.state.context = context
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        for method, path in (
            ("GET", "/v1/campaigns"),
            ("POST", "/v1/campaigns/c-x/pause"),
            ("GET", "/v1/artifacts/quarantine"),
        ):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 503, response.text
            assert response.json()["status"] == "campaigns_unavailable"
            assert "fleetloop serve" in response.json()["message"]
