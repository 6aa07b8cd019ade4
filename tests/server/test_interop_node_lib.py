"""Interop with a third-party client: lwm2m-node-lib (npm; Telefonica's LwM2M 1.0 library,
text/plain only), driven by ``tests/server/node/client.js``.

It registers with ``lwm2m=1.0&b=U`` and an object list without Content-Format tricks, answers
reads as text without a Content-Format option, and sends every Update and the De-register
from a *new* source port (a new CoAP agent each time) -- so the server must move the
registration to the Update's address, as it would after NAT rebinding.

The npm package is installed into the repository's ignored ``.cache/node-lib`` on first use;
the test skips, saying why, when node/npm are missing or the install fails (offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path as FsPath
from typing import IO, Any

import pytest

from lwm2m.model import SingleResource, Value
from lwm2m.server import LwM2MServer, Registered
from lwm2m.store import Store
from tests.conftest import REPO
from tests.server.conftest import collecting, eventually, run, running_server

CACHE = REPO / ".cache" / "node-lib"
PACKAGE = "lwm2m-node-lib@1.4.0"
SCRIPT = FsPath(__file__).parent / "node" / "client.js"


@pytest.fixture(scope="session")
def node_modules() -> FsPath:
    """``.cache/node-lib/node_modules`` holding lwm2m-node-lib (installed if missing).

    Each xdist worker has its own session, so two workers may reach here at once: the install
    runs under an exclusive file lock, and only a marker written after npm exits cleanly says
    the tree is complete (``package.json`` appears long before the library's dependencies do,
    and a client started on a half-installed tree exits at once).
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the lwm2m-node-lib interop test")
    modules = CACHE / "node_modules"
    marker = CACHE / f"installed-{PACKAGE}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.is_file():
            try:
                done = subprocess.run(
                    [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", PACKAGE],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            except subprocess.TimeoutExpired:
                pytest.skip(f"npm install {PACKAGE} timed out (offline?)")
            if done.returncode != 0 or not (modules / "lwm2m-node-lib").is_dir():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                pytest.skip(f"npm install {PACKAGE} failed: {tail[0]}")
            marker.touch()
    return modules


class NodeClient:
    """The JS client as a subprocess: commands on stdin, JSON events on stdout."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self.stderr = stderr  # a file, so a chatty client never blocks on a full pipe

    async def stderr_tail(self) -> str:
        """The client's last lines on stderr, to say why it exited."""
        await asyncio.wait_for(self.process.wait(), 5)
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-5:]) or "(nothing on stderr)"

    async def event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                why = await self.stderr_tail()
                raise AssertionError(f"node client exited before {name!r}: {why}")
            try:
                event = json.loads(line)
            except ValueError:
                continue  # library chatter
            if event.get("event") == "error":
                raise AssertionError(f"node client failed: {event}")
            if event.get("event") == name:
                return dict(event)

    def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")


@contextlib.asynccontextmanager
async def node_client(
    modules: FsPath, server: LwM2MServer, endpoint: str
) -> AsyncIterator[NodeClient]:
    address = server.coap_address
    assert address is not None
    env = {**os.environ, "NODE_PATH": str(modules)}
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            str(address[0]),
            str(address[1]),
            endpoint,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        try:
            yield NodeClient(process, stderr)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


def test_node_lib_registers_answers_reads_and_moves_with_its_updates(
    store: Store, node_modules: FsPath
) -> None:
    async def scenario() -> None:
        async with (
            running_server(store) as server,
            collecting(server) as log,
            node_client(node_modules, server, "node-lib-1") as client,
        ):
            registered = await client.event("registered")
            await eventually(lambda: bool(log.of(Registered)))
            reg = server.registration("node-lib-1")
            assert reg is not None
            assert (reg.lwm2m_version, reg.binding, reg.lifetime) == ("1.0", "U", 300)
            assert "</3/0>" in reg.object_links
            assert registered["location"] == f"rd/{reg.id}"

            read = await server.read("node-lib-1", "/3/0/0")
            assert read.ok, read
            assert read.content == SingleResource(0, Value.string("fleetloop-node"))
            battery = await server.read("node-lib-1", "/3/0/9")
            assert battery.ok and battery.content == SingleResource(9, Value.integer(87))

            client.command("update")
            updated = await client.event("updated")
            moved = server.registration("node-lib-1")
            assert moved is not None and moved.id == reg.id
            assert moved.address.port == updated["port"] != reg.address.port
            again = await server.read("node-lib-1", "/3/0/1")
            assert again.ok, again
            assert again.content == SingleResource(1, Value.string("node-lib-1.4"))

            client.command("deregister")
            await client.event("deregistered")
            await eventually(lambda: server.registration("node-lib-1") is None)
            client.command("quit")

    run(scenario(), timeout=40)
