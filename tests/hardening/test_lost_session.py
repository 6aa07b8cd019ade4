"""After ``kill -9`` of ``fleetloop serve`` a DTLS device handshakes again within seconds, not
after its CoAP exchange times out (MAX_TRANSMIT_WAIT, ~93 s with the default parameters).

The restarted server has no session for the device's records (epoch 1); it now answers them
with a plaintext fatal alert, which the device's DTLS client takes as "the server lost our
session" (Mbed TLS itself ignores unprotected alerts). Before the fix the records were dropped
silently and the device, with default CoAP timing, waited ~93 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from simulators.device.events import Registered
from simulators.runner import SimulatedDevice
from tests.hardening.serve_proc import ServeProcess, forget_dtls_sessions

KEY = bytes(range(16, 32))


def test_a_dtls_device_handshakes_again_seconds_after_serve_was_killed(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()

    async def scenario() -> float:
        with server.api() as api:
            answer = api.put(
                "/security/lost-1", json={"psk_identity": "lost-1", "psk_key": KEY.hex()}
            )
            assert answer.status_code < 300, answer.text
        coaps = server.coaps_port
        # Default CoAP timing: an unanswered Update is retried for ~93 s.
        device = SimulatedDevice("lost-1", f"coaps://127.0.0.1:{coaps}", psk=(b"lost-1", KEY))
        await device.start()
        try:
            await asyncio.wait_for(device.wait_registered(), 20)
            server.kill()
            forget_dtls_sessions(server.data_dir)  # a crash before the session was stored
            await asyncio.to_thread(server.start, coaps=coaps)
            mark = len(device.events)
            began = time.monotonic()
            device.trigger_update()  # into the session the new process never had
            await device.wait_event(Registered, 15, since=mark)
            took = time.monotonic() - began
            assert device.rehandshakes >= 1
            return took
        finally:
            await device.stop(timeout=2)

    try:
        took = asyncio.run(scenario())
        assert took < 15
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
