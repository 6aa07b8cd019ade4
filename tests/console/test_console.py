"""The web console in headless Chromium against a real server and simulated devices.

What an operator does on a first visit: open the server's address, log in with the token, see
the simulated fleet, open a device, read a resource, write one, watch a value change live
(changed on the device, delivered by Observe and the event stream), see desired vs reported
state and the audit log with its verification status. A wrong token, and a token that stops
working mid-session, bring back the login with a clear message.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import ConsoleWorld, screenshot

pytestmark = pytest.mark.integration


def log_in(page: Any, token: str) -> None:
    page.goto("/")
    page.get_by_label("Operator token").fill(token)
    page.get_by_role("button", name="Log in").click()


def logged_in(page: Any, world: ConsoleWorld) -> None:
    log_in(page, world.token)
    page.get_by_role("heading", name="Fleet overview").wait_for()


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


# -- serving ----------------------------------------------------------------------------------


def test_the_console_is_served_on_the_api_port_without_touching_the_api(
    world: ConsoleWorld,
) -> None:
    with httpx.Client(base_url=world.url) as client:
        root = client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/console/"
        page = client.get("/console/")
        assert page.status_code == 200 and "fleetloop console" in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert (
            client.get("/console/js/app.js").headers["content-type"].startswith("text/javascript")
        )
        enums = client.get("/console/enums.json").json()
        assert enums["3/20"]["values"]["0"] == "normal"  # Battery Status by name
        assert enums["5/3"]["values"]["2"] == "downloaded"
        assert client.get("/console/nothing-here.js").status_code == 404
        schema = client.get("/openapi.json").json()
        assert not [p for p in schema["paths"] if "console" in p or p == "/"]
        assert client.get("/v1/devices").status_code == 401  # the API still wants its token


def test_no_page_holds_a_secret(world: ConsoleWorld) -> None:
    """The console's files are public; none of them may carry the server's token."""
    static = Path(__file__).parents[2] / "lifecycle" / "console" / "static"
    files = [p for p in static.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert world.token not in path.read_text(encoding="utf-8"), path


def test_every_console_file_ships_in_the_package() -> None:
    """The console runs from the installed package: pyproject's package-data globs must cover
    every file under static/ (a new folder of modules would otherwise be left out)."""
    root = Path(__file__).parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["lifecycle.console"]
    package = root / "lifecycle" / "console"
    shipped = {p for pattern in globs for p in package.glob(pattern)}
    files = {p for p in (package / "static").rglob("*") if p.is_file()}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


# -- login --------------------------------------------------------------------------------------


def test_a_wrong_token_shows_a_clear_error_and_no_data(page: Any, tmp_path: Path) -> None:
    log_in(page, "not-the-token")
    error = page.locator("#login-error")
    expect()(error).to_be_visible()
    expect()(error).to_contain_text("refused this token (401 unauthorized)")
    screenshot(page, "login", tmp_path)
    expect()(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept


def test_a_token_that_stops_working_brings_back_the_login(page: Any, world: ConsoleWorld) -> None:
    logged_in(page, world)
    page.evaluate("sessionStorage.setItem('fleetloop.console.token', 'revoked-meanwhile')")
    # navigate by the address, not a click: the live event stream may already have met the
    # 401 and put the login up (hiding the navigation) -- either way the login must come back
    page.evaluate("location.hash = '#/groups'")
    expect()(page.locator("#login-error")).to_contain_text("Logged out")
    expect()(page.get_by_label("Operator token")).to_be_visible()


# -- overview -----------------------------------------------------------------------------------


def bar(page: Any, breakdown: str, label: str) -> Any:
    return page.locator(f'[data-breakdown="{breakdown}"] .bar', has_text=label)


def test_the_overview_shows_the_simulated_fleet(
    page: Any, world: ConsoleWorld, tmp_path: Path
) -> None:
    logged_in(page, world)
    expect()(page.locator(".stat", has_text="devices in inventory")).to_contain_text("4")
    expect()(page.locator(".stat", has_text="registered now")).to_contain_text("3")
    expect()(bar(page, "by stage", "active")).to_contain_text("3")
    expect()(bar(page, "by stage", "manufactured")).to_contain_text("1")
    expect()(bar(page, "by region", "eu-west")).to_contain_text("2")
    expect()(bar(page, "by carrier", "telekom")).to_contain_text("1")
    expect()(bar(page, "by firmware", "1.2.0")).to_contain_text("2")  # reported by the devices
    expect()(bar(page, "by firmware", "1.1.0")).to_contain_text("1")
    expect()(bar(page, "by sku", "T1")).to_contain_text("2")
    expect()(page.locator('[data-breakdown="by config bundle"]')).to_have_count(1)
    # the breakdowns are the server's (GET /v1/fleet/summary), over the whole fleet
    expect()(page.locator("#fleet-summary-note")).to_contain_text("over all 4 devices")
    expect()(page.locator(".stat", has_text="out of line")).to_contain_text("1")
    expect()(page.locator("#drift-summary")).to_contain_text("firmware 1")
    drift = page.locator(".card", has=page.get_by_role("heading", name="Drift"))
    expect()(drift.get_by_role("row", name=re.compile("tracker-us-1.*firmware"))).to_contain_text(
        "1.1.0"
    )
    devices = page.locator("#device-list")
    for endpoint in ("meter-eu-1", "meter-eu-2", "tracker-us-1", "tracker-us-2"):
        expect()(devices.get_by_role("link", name=endpoint)).to_be_visible()
    expect()(page.locator("#live")).to_have_attribute("data-state", "open")
    screenshot(page, "overview", tmp_path)

    bar(page, "by region", "us-east").click()  # a breakdown filters the list by selector
    expect()(page.locator("#select")).to_have_value("region=us-east")
    expect()(devices).to_contain_text("2 devices match")
    expect()(devices.get_by_role("link", name="meter-eu-1")).to_have_count(0)


def test_registrations_appear_live_on_the_overview(page: Any, world: ConsoleWorld) -> None:
    logged_in(page, world)
    expect()(page.locator("#live")).to_have_attribute("data-state", "open")

    async def update() -> None:
        world.devices["meter-eu-2"].trigger_update()

    world.call(update)
    events = page.locator("#overview-events")
    expect()(events.locator("li", has_text="meter-eu-2")).to_contain_text("updated")


# -- device page --------------------------------------------------------------------------------


def resource(page: Any, path: str) -> Any:
    return page.locator(f'#instance-detail tr[data-path="{path}"]')


def test_a_device_page_reads_writes_and_watches_a_value_change(
    page: Any, world: ConsoleWorld, tmp_path: Path
) -> None:
    logged_in(page, world)
    page.locator("#device-list").get_by_role("link", name="meter-eu-1").click()
    expect()(page.get_by_role("heading", name="meter-eu-1", exact=True)).to_be_visible()

    # The Device object opens by itself; names come from the API's Read and Discover.
    expect()(resource(page, "/3/0/0")).to_contain_text("Manufacturer")
    expect()(resource(page, "/3/0/0").locator(".value")).to_have_text("fleetloop-sim")
    expect()(resource(page, "/3/0/20").locator(".value")).to_have_text("normal (0)")
    expect()(resource(page, "/3/0/4")).to_contain_text("Reboot")  # executable: from Discover
    expect()(resource(page, "/3/0/4").get_by_role("button", name="Execute")).to_be_visible()

    # Read: a value changed on the device shows after Read.
    world.set_on_device("meter-eu-1", "/3/0/9", 77)
    resource(page, "/3/0/9").get_by_role("button", name="Read").click()
    expect()(resource(page, "/3/0/9").locator(".value")).to_have_text("77")
    expect()(page.locator("#outcome")).to_contain_text("Read /3/0/9: 2.05")

    # Write: the device holds the new value afterwards.
    resource(page, "/3/0/14").get_by_role("button", name="Write").click()
    resource(page, "/3/0/14").get_by_role("textbox").fill("+05:00")
    resource(page, "/3/0/14").get_by_role("button", name="Send").click()
    expect()(page.locator("#outcome")).to_contain_text("Write /3/0/14")
    expect()(resource(page, "/3/0/14").locator(".value")).to_have_text("+05:00")
    assert world.devices["meter-eu-1"].read("/3/0/14") == "+05:00"

    # A malformed value is refused in the page, naming the resource and the expected form.
    resource(page, "/3/0/9").get_by_role("button", name="Write").click()
    resource(page, "/3/0/9").get_by_role("textbox").fill("lots")
    resource(page, "/3/0/9").get_by_role("button", name="Send").click()
    expect()(page.locator("#outcome")).to_contain_text("/3/0/9 is Integer: type a whole number")
    resource(page, "/3/0/9").get_by_role("button", name="Cancel").click()

    # Observe: a change on the device arrives by notification over the event stream.
    resource(page, "/3/0/9").get_by_role("button", name="Observe").click()
    expect()(resource(page, "/3/0/9").get_by_role("button", name="Stop observing")).to_be_visible()
    world.set_on_device("meter-eu-1", "/3/0/9", 42)
    expect()(resource(page, "/3/0/9").locator(".value")).to_have_text("42")
    expect()(page.locator("#device-events")).to_contain_text("Battery Level = 42")
    world.set_on_device("meter-eu-1", "/3/0/20", 4)  # not observed: no live change expected
    world.set_on_device("meter-eu-1", "/3/0/9", 13)
    expect()(resource(page, "/3/0/9").locator(".value")).to_have_text("13")

    # Desired vs reported state, side by side.
    state = page.locator("#device-state")
    expect()(state.get_by_role("row", name=re.compile("firmware"))).to_contain_text("applied")
    expect()(state.get_by_role("row", name=re.compile("firmware"))).to_contain_text("1.2.0")
    expect()(page.locator("#live")).to_have_attribute("data-state", "open")
    screenshot(page, "device", tmp_path)

    resource(page, "/3/0/9").get_by_role("button", name="Stop observing").click()
    expect()(resource(page, "/3/0/9").get_by_role("button", name="Observe")).to_be_visible()
    observed = world.api("GET", "/v1/devices/meter-eu-1")["observations"]
    assert not [o for o in observed if o["paths"] == ["/3/0/9"]]  # the state observer's stay

    # The page's own operations are in the device's audit records (reload to refetch).
    page.reload()
    audit = page.locator("#device-audit")
    expect()(audit).to_contain_text("dm.write")
    expect()(audit).to_contain_text("operator:admin")


def test_a_viewer_token_sees_the_device_but_a_write_is_refused_with_the_reason(
    page: Any, world: ConsoleWorld
) -> None:
    made = world.api("POST", "/v1/tokens", json={"name": "console-viewer", "role": "viewer"})
    log_in(page, made["token"])
    page.get_by_role("heading", name="Fleet overview").wait_for()
    page.goto("/console/#/devices/meter-eu-2")
    expect()(resource(page, "/3/0/0").locator(".value")).to_have_text("fleetloop-sim")
    resource(page, "/3/0/14").get_by_role("button", name="Write").click()
    resource(page, "/3/0/14").get_by_role("textbox").fill("+01:00")
    resource(page, "/3/0/14").get_by_role("button", name="Send").click()
    expect()(page.locator("#outcome")).to_contain_text("has role viewer; this needs operator")
    assert world.devices["meter-eu-2"].read("/3/0/14") == "+00:00"


def test_a_drifted_device_shows_desired_and_reported_apart(page: Any, world: ConsoleWorld) -> None:
    logged_in(page, world)
    page.goto("/console/#/devices/tracker-us-1")
    row = page.locator("#device-state").get_by_role("row", name=re.compile("firmware"))
    expect()(row).to_contain_text("1.2.0")  # desired
    expect()(row).to_contain_text("1.1.0")  # reported
    expect()(row.locator(".badge")).not_to_have_text("applied")


def test_a_device_that_does_not_exist_says_so(page: Any, world: ConsoleWorld) -> None:
    logged_in(page, world)
    page.goto("/console/#/devices/no-such-device")
    expect()(page.get_by_role("alert")).to_contain_text("404")


# -- groups and audit ---------------------------------------------------------------------------


def test_groups_list_and_members(page: Any, world: ConsoleWorld, tmp_path: Path) -> None:
    logged_in(page, world)
    page.get_by_role("link", name="Groups").click()
    row = page.get_by_role("row", name=re.compile("eu-meters"))
    expect()(row).to_contain_text("region=eu-west")
    expect()(row).to_contain_text("2")
    row.get_by_role("link", name="eu-meters").click()
    members = page.locator("#group-members")
    expect()(members.get_by_role("link", name="meter-eu-1")).to_be_visible()
    expect()(members.get_by_role("link", name="meter-eu-2")).to_be_visible()
    expect()(members.get_by_role("link", name="tracker-us-1")).to_have_count(0)
    screenshot(page, "group", tmp_path)


def test_the_audit_page_shows_the_log_and_its_verification(
    page: Any, world: ConsoleWorld, tmp_path: Path
) -> None:
    logged_in(page, world)
    page.get_by_role("link", name="Audit").click()
    verdict = page.locator("#audit-verdict")
    expect()(verdict).to_contain_text("Verified")
    records = world.api("GET", "/v1/audit/verify")["records"]
    expect()(verdict).to_contain_text(f"{records} records")
    expect()(verdict).to_contain_text("1 signed checkpoint checked")
    signed = world.api("GET", "/v1/audit/checkpoints")["items"][-1]
    checkpoints = page.locator(".card", has=page.get_by_role("heading", name="Signed checkpoints"))
    expect()(checkpoints).to_contain_text(signed["root_hash"][:16])
    table = page.locator("#audit-records")
    expect()(table).to_contain_text("state.set")
    expect()(table).to_contain_text("operator:admin")
    screenshot(page, "audit", tmp_path)

    page.get_by_placeholder("action prefix").fill("group")
    page.get_by_role("button", name="Filter").click()
    expect()(table).to_contain_text("group.create")
    expect()(table).not_to_contain_text("state.set")


def test_campaigns_have_a_place_that_says_what_is_there(page: Any, world: ConsoleWorld) -> None:
    logged_in(page, world)
    page.get_by_role("link", name="Campaigns").click()
    expect()(page.get_by_role("heading", name="Campaigns")).to_be_visible()
    expect()(page.locator("main")).to_contain_text("campaigns")
