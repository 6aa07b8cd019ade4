"""The integration suite's fixtures: the real ``fleetloop serve`` as a subprocess (SQLite, every
port ephemeral on 127.0.0.1), reached the way an operator reaches it -- its HTTP API and its
CLI -- with the simulated fleet (:mod:`simulators.fleet`) as the devices.

One server serves the whole session (starting one costs about a second); every test uses
endpoint names of its own, so tests do not see each other's devices.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from simulators.fleet.runner import DeviceFleet
from simulators.profiles import DeviceProfile

T = TypeVar("T")


def fleetloop() -> list[str]:
    """The console script next to this interpreter (the venv's), else ``python -m cli.main``."""
    script = Path(sys.executable).parent / "fleetloop"
    if script.exists():
        return [str(script)]
    found = shutil.which("fleetloop")
    return [found] if found else [sys.executable, "-m", "cli.main"]


@dataclass
class Serve:
    """A running ``fleetloop serve`` and how to reach it."""

    process: subprocess.Popen[str]
    data_dir: Path
    info: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def token(self) -> str:
        return str(self.info["token"])

    def port(self, name: str) -> int:
        if name in self.info:
            return int(self.info[name]["port"])
        return int(self.info["extra"][name]["port"])

    @property
    def coap_uri(self) -> str:
        return f"coap://127.0.0.1:{self.port('coap')}"

    @property
    def coaps_uri(self) -> str:
        return f"coaps://127.0.0.1:{self.port('coaps')}"

    @property
    def bootstrap_coaps_uri(self) -> str:
        return f"coaps://127.0.0.1:{self.port('bs_coaps')}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
        env["FLEETLOOP_DATA_DIR"] = str(self.data_dir)
        return env

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``fleetloop ARGS`` against this server, as an operator would."""
        return subprocess.run(
            [*fleetloop(), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _wait_for_api_json(data_dir: Path, process: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    path = data_dir / "api.json"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {process.communicate()[1]}")
        if path.exists():
            try:
                return dict(json.loads(path.read_text()))
            except json.JSONDecodeError:
                pass  # being written
        time.sleep(0.05)
    raise AssertionError("serve did not write api.json in time")


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """``fleetloop serve`` on ephemeral loopback ports for the whole session."""
    with start_serve(tmp_path_factory.mktemp("serve") / "data") as running:
        yield running


@contextmanager
def start_serve(data_dir: Path) -> Iterator[Serve]:
    """A ``fleetloop serve`` of its own (every port ephemeral on 127.0.0.1), stopped with
    SIGTERM at the end: for tests that must not share the session's server."""
    command = [
        *fleetloop(),
        "serve",
        "--data-dir",
        str(data_dir),
        "--coap",
        "127.0.0.1:0",
        "--coaps",
        "127.0.0.1:0",
        "--bs-coap",
        "127.0.0.1:0",
        "--bs-coaps",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    log = (data_dir.parent / "serve.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, text=True)
    try:
        info = _wait_for_api_json(data_dir, process)
        yield Serve(process, data_dir, info)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class Api:
    """The management API of the server under test (JSON in, JSON out)."""

    def __init__(self, serve: Serve) -> None:
        # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout: reusing
        # one the server is closing at that moment fails with "Server disconnected".
        self.client = httpx.AsyncClient(
            base_url=serve.url,
            headers={"Authorization": f"Bearer {serve.token}"},
            timeout=60.0,
            limits=httpx.Limits(keepalive_expiry=1.0),
        )

    async def call(
        self,
        method: str,
        url: str,
        *,
        expect: int = 200,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        response = await self.client.request(method, url, json=json_body, params=params)
        assert response.status_code == expect, (method, url, response.status_code, response.text)
        return response.json()

    async def get(self, url: str, **kwargs: Any) -> Any:
        return await self.call("GET", url, **kwargs)

    async def put(self, url: str, body: Any, **kwargs: Any) -> Any:
        return await self.call("PUT", url, json_body=body, **kwargs)

    async def post(self, url: str, body: Any = None, **kwargs: Any) -> Any:
        return await self.call("POST", url, json_body=body, **kwargs)

    async def patch(self, url: str, body: Any, **kwargs: Any) -> Any:
        return await self.call("PATCH", url, json_body=body, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> Any:
        return await self.call("DELETE", url, **kwargs)

    async def aclose(self) -> None:
        await self.client.aclose()


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one test coroutine on a fresh loop, with a ceiling so a hang fails the test."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@asynccontextmanager
async def fleet_and_api(
    serve: Serve,
    count: int,
    prefix: str,
    *,
    profile: DeviceProfile | None = None,
    secure: bool = False,
    **spawn: Any,
) -> AsyncIterator[tuple[DeviceFleet, Api]]:
    """``count`` registered devices named ``<prefix>000001``... and an API client."""
    api = Api(serve)
    fleet = DeviceFleet(serve.coaps_uri if secure else serve.coap_uri, seed=1, record_events=True)
    try:
        async with fleet:
            fleet.spawn(count, prefix=prefix, profile=profile, **spawn)
            await fleet.wait_registered(timeout=30)
            yield fleet, api
    finally:
        await api.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


__all__ = ["Api", "Serve", "eventually", "fleet_and_api", "fleetloop", "run", "start_serve"]
