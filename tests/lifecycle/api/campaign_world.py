"""A served fleet for the campaign API, CLI and console tests.

``fleetloop serve``'s own composition root (:class:`cli.serve.Service`, with the campaign
engine) on ephemeral loopback ports, in a background thread with its own event loop, and a
small simulated fleet over real UDP (:class:`simulators.fleet.runner.DeviceFleet`):

=============  ======  =======  ========  ===================================================
devices        tenant  region   carrier   config bundles
=============  ======  =======  ========  ===================================================
cw-eu-0000NN   acme    eu       telco-a   apply every bundle
cw-us-0000NN   acme    us       telco-b   apply every bundle
cw-ap-0000NN   globex  ap       telco-a   refuse the bundle ``cw-bad`` (config result 3)
=============  ======  =======  ========  ===================================================

Every device runs the flat config bundle ``cw-v1`` (desired and verified) before a test
starts: the last-known-good value a revert goes back to. Bundles ``cw-v2`` ... ``cw-v9`` and
``cw-bad`` are registered; a test uses its own selector (a region, a tenant) or ends its
campaign, because an active campaign holds its devices' config.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cli.serve import Service
from cli.settings import Listen, ServeSettings
from simulators.fleet.runner import DeviceFleet
from simulators.identities import endpoint_name
from simulators.profiles import Behaviour, DeviceProfile

T = TypeVar("T")

PER_REGION = 8
REGIONS = {"eu": ("acme", "telco-a"), "us": ("acme", "telco-b"), "ap": ("globex", "telco-a")}
BUNDLES = ["cw-v1", *(f"cw-v{n}" for n in range(2, 10)), "cw-bad"]
REFUSING = DeviceProfile(behaviour=Behaviour(config_reject_versions=frozenset({"cw-bad"})))


def fast_spec(name: str, selector: str, bundle: str, **extra: Any) -> dict[str, Any]:
    """A spec that runs in seconds: a small canary, one wave, short bakes, tight gates."""
    spec: dict[str, Any] = {
        "name": name,
        "selector": selector,
        "change": [{"config": bundle}],
        "canary": {"per_stratum": 2, "max_devices": 10, "bake": "0.3s"},
        "waves": [{"percent": 100, "bake": "0.3s"}],
        "pacing": {"rate": 500, "concurrency": 1000},
        "gates": {"min_sample": 2, "min_ack_pct": None, "cohort_by": ["region"]},
        "deadlines": {"delivered": 15, "applied": 15, "verified": 15},
        "revert_scope": "region",
    }
    spec.update(extra)
    return spec


def endpoints(region: str) -> list[str]:
    first = 1 + list(REGIONS).index(region) * PER_REGION
    return [endpoint_name(f"cw-{region}-", first + i) for i in range(PER_REGION)]


def _identities() -> str:
    rows = ["endpoint,serial,sku,tenant,region,security_mode,country,carrier,labels"]
    for region, (tenant, carrier) in REGIONS.items():
        for n, endpoint in enumerate(endpoints(region)):
            rows.append(f"{endpoint},SN-{endpoint},T1,{tenant},{region},nosec,DE,{carrier},")
            del n
    return "\n".join(rows) + "\n"


@dataclass
class CampaignWorld:
    """The running server, its fleet and the loop they live on."""

    loop: asyncio.AbstractEventLoop
    service: Service
    url: str
    token: str
    data_dir: Path
    fleet: DeviceFleet | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout)

    def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            return client.request(method, path, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call that must succeed; its JSON."""
        response = self.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def status(self, cid: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/v1/campaigns/{cid}"))

    def until(self, cid: str, states: tuple[str, ...], timeout: float = 40.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(cid)
            if last["state"] in states:
                return last
            time.sleep(0.1)
        raise AssertionError(
            f"campaign {cid} not {states}: {last.get('state')} {last.get('reason')} "
            f"{last.get('counts')}"
        )

    def end(self, cid: str) -> None:
        """Abort (keeping what changed) a campaign still holding its devices."""
        if self.status(cid)["state"] not in ("completed", "aborted", "reverted", "reverting"):
            self.api("POST", f"/v1/campaigns/{cid}/abort", json={"revert": False})

    def token_for(self, name: str, role: str, tenants: list[str] | None) -> str:
        if name not in self.tokens:
            made = self.api(
                "POST", "/v1/tokens", json={"name": name, "role": role, "tenants": tenants}
            )
            self.tokens[name] = made["token"]
        return self.tokens[name]


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in time"
        time.sleep(0.1)


async def _start(data_dir: Path, database_url: str | None) -> tuple[Service, str, str]:
    settings = ServeSettings(
        data_dir=data_dir,
        database_url=database_url,
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


def _seed(world: CampaignWorld) -> None:
    world.api("POST", "/v1/identities/import", json={"content": _identities(), "source": "cw.csv"})
    address = world.service.server.coap_address if world.service.server else None
    assert address is not None

    async def open_fleet() -> DeviceFleet:
        fleet = DeviceFleet(f"coap://127.0.0.1:{address[1]}", seed=7)
        await fleet.open()
        for region in REGIONS:
            profile = REFUSING if region == "ap" else None
            fleet.spawn(PER_REGION, prefix=f"cw-{region}-", profile=profile)
        await fleet.wait_registered(timeout=30)
        return fleet

    world.fleet = world.call(open_fleet)
    for n, name in enumerate(BUNDLES):
        world.api("PUT", f"/v1/config-bundles/{name}", json={"bundle": name, "n": n})
    world.api("PUT", "/v1/state", json={"select": "endpoint=cw-*", "values": {"config": "cw-v1"}})

    def in_line() -> bool:
        drift = world.api("GET", "/v1/state/drift", params={"select": "endpoint=cw-*"})
        return not drift["items"]

    _wait(in_line, 40, "the fleet on cw-v1")


@contextmanager
def postgres_schema() -> Iterator[str | None]:
    """A fresh PostgreSQL schema for one module's world (dropped afterwards): its URL, or
    skip when the server is unreachable -- except under ``CI``, where that fails."""
    import os
    import secrets

    import pytest
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.store.conftest import pg_base_url

    admin = create_engine(pg_base_url(), connect_args={"connect_timeout": 3})
    schema = f"cw_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:
        admin.dispose()
        reason = f"PostgreSQL unreachable ({type(err).__name__}); set FLEETLOOP_TEST_PG_URL"
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    url = make_url(pg_base_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def campaign_world(data_dir: Path, database_url: str | None = None) -> Iterator[CampaignWorld]:
    """The world on SQLite (under ``data_dir``) or on ``database_url`` (PostgreSQL)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="campaign-server", daemon=True)
    thread.start()
    started = asyncio.run_coroutine_threadsafe(_start(data_dir, database_url), loop)
    service, url, token = started.result(30)
    world = CampaignWorld(loop, service, url, token, data_dir)
    try:
        _seed(world)
        yield world
    finally:

        async def stop() -> None:
            if world.fleet is not None:
                await world.fleet.close(timeout=2.0)
            await service.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
