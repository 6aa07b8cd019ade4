"""Issue 14 item 14: a simulated DTLS-PSK device handshakes again after ``fleetloop serve``
restarts, and registers over the new session -- docs/FIRST_RUN.md §5 (restart with
``--secure-only``; "demo-1 keeps registering over DTLS with its PSK").

Before the fix the device kept sending into the session the old server had closed ("could not
send ...: DTLS session is closed") and never registered again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from simulators.device.events import Registered
from simulators.runner import SimulatedDevice
from tests.hardening.serve_proc import ServeProcess

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


def test_a_dtls_psk_device_re_registers_after_the_server_restarts(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()

    async def scenario() -> None:
        with server.api() as api:
            answer = api.put(
                "/security/demo-1", json={"psk_identity": "demo-1", "psk_key": KEY.hex()}
            )
            assert answer.status_code < 300, answer.text
        coaps = server.coaps_port
        device = SimulatedDevice("demo-1", f"coaps://127.0.0.1:{coaps}", psk=(b"demo-1", KEY))
        await device.start()
        try:
            await asyncio.wait_for(device.wait_registered(), 20)
            assert await asyncio.to_thread(server.stop) == 0
            server.extra_args = ("--secure-only",)
            await asyncio.to_thread(server.start, coaps=coaps)
            mark = len(device.events)
            await device.wait_event(Registered, 30, since=mark)
            assert device.rehandshakes >= 1
            with server.api() as api:
                listed = api.get("/devices/demo-1")
            assert listed.status_code == 200, listed.text
        finally:
            await device.stop(timeout=2)

    try:
        asyncio.run(scenario())
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
