"""``fleetloop bootstrap serve`` as a real process beside a DM server in this process, sharing
one SQLite database: a device bootstraps from the process and registers here."""

from __future__ import annotations

import asyncio
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bootstrap import BootstrapManager, create_schema
from lwm2m.server import LwM2MServer, ServerConfig
from lwm2m.store import Store
from simulators.device import ClientConfig
from simulators.runner import SimulatedDevice
from tests.cli.test_serve_process import clean_env, fleetloop

pytestmark = pytest.mark.integration


def wait_for_line(process: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early: {''.join(seen)}{process.stderr.read()}")
        ready, _, _ = select.select([process.stderr], [], [], 0.1)
        if ready:
            line = process.stderr.readline()
            seen.append(line)
            if found := re.search(pattern, line):
                return found
    raise AssertionError(f"no {pattern!r} in time: {''.join(seen)}")


def test_bootstrap_serve_alone_provisions_a_dm_server_in_another_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)

    async def scenario() -> None:
        store = Store.open(None, data_dir)
        store.create_schema()
        create_schema(store)
        dm = await LwM2MServer.start(
            ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=None, secure_only=True),
            store,
        )
        try:
            csv = "endpoint,security_mode\nlab-0001,nosec\n"
            await BootstrapManager(store).import_identities(csv, source="lab.csv")
            assert dm.coap_address is not None
            dm_uri = f"coap://127.0.0.1:{dm.coap_address[1]}"
            command = [
                *fleetloop(),
                "bootstrap",
                "serve",
                "--data-dir",
                str(data_dir),
                "--bs-coap",
                "127.0.0.1:0",
                "--bs-coaps",
                "off",
                "--dm-coap-uri",
                dm_uri,
            ]
            process = subprocess.Popen(
                command, env=clean_env(data_dir), stderr=subprocess.PIPE, text=True
            )
            try:
                found = await asyncio.to_thread(
                    wait_for_line, process, r"bs_coap=127\.0\.0\.1:(\d+)", 20
                )
                device = SimulatedDevice(
                    "lab-0001",
                    bootstrap_uri=f"coap://127.0.0.1:{found.group(1)}",
                    config=ClientConfig(lwm2m_version="1.1"),
                )
                async with device:
                    await device.wait_registered(15)
                assert (data_dir / "ca" / "ca.key.pem").stat().st_mode & 0o077 == 0
            finally:
                process.send_signal(signal.SIGTERM)
                _, stderr = await asyncio.to_thread(process.communicate, None, 20)
            assert process.returncode == 0, stderr
            assert "bootstrap server stopped" in stderr
        finally:
            await dm.stop()
            await store.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 60))
