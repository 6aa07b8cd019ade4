"""The console's campaign views in headless Chromium against ``fleetloop serve``'s composition
root with a small simulated fleet (:mod:`tests.lifecycle.api.campaign_world`).

What an operator does: a campaign created through the API shows up in the list; its page
follows it live over the campaign's event stream (per-wave progress, per-cohort counts, the
gate's verdict and reasons for a failing region), and the Pause button pauses it -- the API
then says so too. The screenshots are the docs' (``FLEETLOOP_CONSOLE_SCREENSHOTS=docs/console``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import chromium_or_skip, screenshot
from tests.lifecycle.api.campaign_world import CampaignWorld, campaign_world, fast_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CampaignWorld]:
    """Overrides the console conftest's world: this module's server runs a campaign fleet."""
    chromium_or_skip()
    with campaign_world(tmp_path_factory.mktemp("campaign-console") / "data") as running:
        yield running


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def log_in(page: Any, world: CampaignWorld, hash_path: str) -> None:
    page.goto("/")
    page.get_by_label("Operator token").fill(world.token)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Fleet overview").wait_for()
    page.goto(f"/console/#{hash_path}")


def test_a_campaign_progresses_live_in_its_page_with_the_failing_gate(
    page: Any, world: CampaignWorld, tmp_path: Path
) -> None:
    spec = fast_spec(
        "config cw-bad to us + ap",
        "region in (us,ap)",
        "cw-bad",
        canary={"per_stratum": 2, "max_devices": 10, "bake": "1s"},
        waves=[{"percent": 100, "bake": "1s"}],
    )
    log_in(page, world, "/campaigns")
    page.get_by_role("heading", name="Campaigns", exact=True).wait_for()
    cid = world.api("POST", "/v1/campaigns", json=spec)["id"]
    link = page.get_by_role("link", name="config cw-bad to us + ap")
    link.wait_for()  # the list refreshes by itself
    expect()(page.locator("tr", has=link)).to_contain_text(cid)
    link.click()

    page.get_by_role("heading", name="config cw-bad to us + ap").wait_for()
    page.locator("#live[data-state=open], #live[data-state=ended]").wait_for()
    # live: the page reaches the end without a reload, wave by wave
    expect()(page.locator("#campaign-state")).to_have_text("completed", timeout=40_000)
    canary = page.locator("section.wave[data-wave='0']")
    expect()(canary).to_have_attribute("data-state", "done")
    ap = canary.locator("tr", has_text="region=ap")
    expect()(ap).to_contain_text("failed")
    expect()(ap).to_contain_text("max_failure_pct")
    expect()(canary.locator("tr", has_text="region=us")).to_contain_text("passed")
    expect()(page.locator("p.error")).to_contain_text("region=ap")  # reverted at scope
    expect()(page.get_by_text("What failed, and why")).to_be_visible()
    bar = page.locator(".stat .cbar")
    expect()(bar).to_have_attribute("data-done", "16")
    assert not page.locator("button[data-verb]").count()  # an ended campaign has no verbs
    screenshot(page, "campaign", tmp_path)


def test_an_operator_pauses_a_running_campaign_from_its_page(
    page: Any, world: CampaignWorld, tmp_path: Path
) -> None:
    spec = fast_spec(
        "config cw-v9 to eu",
        "region=eu",
        "cw-v9",
        canary={"per_stratum": 2, "max_devices": 2, "bake": "60s"},
        waves=[{"percent": 100, "bake": "60s"}],
    )
    cid = world.api("POST", "/v1/campaigns", json=spec)["id"]
    log_in(page, world, f"/campaigns/{cid}")
    expect()(page.locator("#campaign-state")).to_have_text("running")
    expect()(page.locator("section.wave[data-wave='0'] .wave-head .cbar-text")).to_have_text(
        "0/2 done", timeout=20_000
    )
    page.get_by_role("button", name="Pause").click()
    expect()(page.locator("#campaign-state")).to_have_text("paused")
    expect()(page.get_by_role("status")).to_contain_text("now paused")
    assert world.status(cid)["state"] == "paused"
    assert "paused by operator:admin" in world.status(cid)["reason"]
    expect()(page.get_by_role("button", name="Resume")).to_be_visible()
    # aborting asks for a second click; then the page follows the revert to its end
    page.get_by_role("button", name="Abort and revert").click()
    page.get_by_role("button", name="Confirm: abort and revert").click()
    expect()(page.locator("#campaign-state")).to_have_text("aborted", timeout=20_000)
    assert world.status(cid)["state"] == "aborted"
    page.goto("/console/#/campaigns")
    expect()(page.locator("tr", has_text=cid)).to_contain_text("aborted")
    screenshot(page, "campaigns", tmp_path)
