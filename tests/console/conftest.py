"""A real server and a real browser for the console tests.

The server is ``fleetloop serve``'s own composition root (:class:`cli.serve.Service`: the LwM2M
server, the store, inventory, state, audit and the HTTP API with the console) on ephemeral
ports, with simulated devices over real UDP. It runs in a background thread with its own
event loop, so the tests can drive Chromium through Playwright's synchronous API in the main
thread; :meth:`ConsoleWorld.call` runs a coroutine (or a plain call such as changing a value on
a simulated device) on the server's loop.

The browser is Debian's Chromium (``/usr/bin/chromium``). Playwright never downloads one here.
Without it the tests skip, saying why, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cli.serve import Service
from cli.settings import Listen, ServeSettings
from simulators.runner import SimulatedDevice

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS_ENV = "FLEETLOOP_CONSOLE_SCREENSHOTS"
"""Set to a directory (docs/console) to write the docs' screenshots there as well."""

DEVICES = ("meter-eu-1", "meter-eu-2", "tracker-us-1")
IDENTITIES = (
    "endpoint,serial,sku,tenant,region,security_mode,country,carrier,labels\n"
    "meter-eu-1,SN-001,M1,acme,eu-west,nosec,DE,telekom,pilot;batch=7\n"
    "meter-eu-2,SN-002,M1,acme,eu-west,nosec,FR,orange,batch=7\n"
    "tracker-us-1,SN-003,T1,acme,us-east,nosec,US,att,\n"
    "tracker-us-2,SN-004,T1,acme,us-east,nosec,US,att,\n"
)
"""Four factory identities; three of them register (tracker-us-2 stays manufactured)."""
FIRMWARE = {"meter-eu-1": "1.2.0", "meter-eu-2": "1.2.0", "tracker-us-1": "1.1.0"}
"""What each device reports; the desired firmware is 1.2.0, so tracker-us-1 drifts."""


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def chromium_or_skip() -> Path:
    """The browser, or skip (locally) / fail (under CI) when the machine has none."""
    if CHROMIUM.exists():
        return CHROMIUM
    reason = (
        f"{CHROMIUM} is missing; install Debian's chromium (apt-get install chromium), "
        "which .ci/run does"
    )
    if os.environ.get("CI"):
        pytest.fail(f"under CI the console must be tested: {reason}")
    pytest.skip(reason)


@dataclass
class ConsoleWorld:
    """The running server, its devices and the loop they live on."""

    loop: asyncio.AbstractEventLoop
    service: Service
    url: str
    token: str
    devices: dict[str, SimulatedDevice] = field(default_factory=dict)

    def call(self, work: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
        """Run ``work()`` on the server's loop and wait for its result."""

        async def run() -> T:
            return await work()

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return future.result(timeout)

    def set_on_device(self, endpoint: str, path: str, value: object) -> None:
        """Change a value on the simulated device, as its sensor would."""

        async def change() -> None:
            self.devices[endpoint].set(path, value)

        self.call(change)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with the serve token (for seeding and checking what the page shows)."""

        async def request() -> Any:
            async with httpx.AsyncClient(
                base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=20
            ) as client:
                response = await client.request(method, path, **kwargs)
                assert response.is_success, f"{method} {path}: {response.text}"
                return response.json()

        return self.call(request)


async def _start(data_dir: Path) -> tuple[Service, str, str]:
    settings = ServeSettings(
        data_dir=data_dir,
        coap=Listen("127.0.0.1", 0),
        coaps=None,
        bs_coap=None,
        bs_coaps=None,
        api=Listen("127.0.0.1", 0),
        log_level="warning",
    )
    service = Service(settings)
    info = await service.start()
    return service, info.url, info.token


def _seed(world: ConsoleWorld) -> None:
    """Identities with region/carrier/labels, three registered devices, a group, desired
    state (one device drifted on firmware) and an observation-free start."""
    world.api("POST", "/v1/identities/import", json={"content": IDENTITIES, "source": "f.csv"})
    address = world.service.server.coap_address if world.service.server else None
    assert address is not None
    for endpoint in DEVICES:
        world.api("PUT", f"/v1/security/{endpoint}", json={"allow_nosec": True})

        async def connect(endpoint: str = endpoint) -> SimulatedDevice:
            device = SimulatedDevice(endpoint, f"coap://127.0.0.1:{address[1]}")
            await device.start()
            await device.wait_registered()
            return device

        world.devices[endpoint] = world.call(connect)
    world.api("POST", "/v1/groups", json={"name": "eu-meters", "select": "region=eu-west"})
    world.api(
        "PUT",
        "/v1/state",
        json={"select": "stage=active", "values": {"firmware": "1.2.0"}, "policy": "report-only"},
    )
    # The devices report firmware by notification once the state observer observes it (it
    # sets its observations up after each registration): then the inventory knows it too.
    for endpoint, version in FIRMWARE.items():
        wait_for(lambda e=endpoint: bool(world.api("GET", f"/v1/devices/{e}")["observations"]))
        world.set_on_device(endpoint, "/3/0/3", version)
        wait_for(
            lambda e=endpoint, v=version: world.api("GET", f"/v1/inventory/{e}")["firmware"] == v
        )
    world.api("POST", "/v1/audit/checkpoints")  # a signed tree head for the audit page to check


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    chromium_or_skip()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="console-server", daemon=True)
    thread.start()
    data_dir = tmp_path_factory.mktemp("console") / "data"
    started = asyncio.run_coroutine_threadsafe(_start(data_dir), loop).result(30)
    service, url, token = started
    w = ConsoleWorld(loop, service, url, token)
    try:
        _seed(w)
        yield w
    finally:

        async def stop() -> None:
            for device in w.devices.values():
                await device.stop(timeout=1.0)
            await service.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def browser(world: ConsoleWorld) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium_or_skip()),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, world: ConsoleWorld) -> Iterator[Any]:
    """A fresh browser context (own sessionStorage) at 1280x900, failing on page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=world.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """A PNG of the page in ``tmp_path``; also in $FLEETLOOP_CONSOLE_SCREENSHOTS when set
    (``FLEETLOOP_CONSOLE_SCREENSHOTS=docs/console`` refreshes the docs' pictures)."""
    shot = tmp_path / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header belongs at the top
    page.mouse.move(0, 0)  # no hover highlight in the picture
    page.screenshot(path=str(shot), full_page=True, animations="disabled")
    assert shot.stat().st_size > 10_000, f"{shot} looks empty"
    wanted = os.environ.get(SCREENSHOTS_ENV)
    if wanted:
        target = Path(wanted)
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{name}.png").write_bytes(shot.read_bytes())
    return shot
