"""Issue 14 item 14: a simulated DTLS-PSK device handshakes again after ``fleetloop serve``
restarts, and registers over the new session -- docs/FIRST_RUN.md §5 (restart with
``--secure-only``; "demo-1 keeps registering over DTLS with its PSK").

Before the fix the device kept sending into the session the old server had closed ("could not
send ...: DTLS session is closed") and never registered again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from simulators.device.events import Registered
from simulators.runner import SimulatedDevice
from tests.hardening.serve_proc import ServeProcess, forget_dtls_sessions

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
            forget_dtls_sessions(server.data_dir)  # the path of a server that lost the session
            server.extra_args = ("--secure-only",)
            await asyncio.to_thread(server.start, coaps=coaps)
            mark = len(device.events)
            device.trigger_update()  # no close_notify any more: the device finds out now
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


def test_a_dtls_fleet_handshakes_again_and_keeps_its_devices_registered(tmp_path: Path) -> None:
    from simulators.fleet.runner import DeviceFleet
    from simulators.identities import Identity

    server = ServeProcess(tmp_path / "data")
    server.start()
    identities = [
        Identity(f"fleet-{i}", f"fleet-{i}".encode(), bytes([i]) * 16) for i in range(1, 4)
    ]

    async def scenario() -> None:
        with server.api() as api:
            for identity in identities:
                assert identity.psk_identity is not None and identity.psk_key is not None
                answer = api.put(
                    f"/security/{identity.endpoint}",
                    json={
                        "psk_identity": identity.psk_identity.decode(),
                        "psk_key": identity.psk_key.hex(),
                    },
                )
                assert answer.status_code < 300, answer.text
        coaps = server.coaps_port
        async with DeviceFleet(f"coaps://127.0.0.1:{coaps}", seed=1) as fleet:
            fleet.spawn(identities=identities)
            await fleet.wait_registered(3, timeout=30)
            before = fleet.handshakes
            assert await asyncio.to_thread(server.stop) == 0
            forget_dtls_sessions(server.data_dir)  # the path of a server that lost the sessions
            await asyncio.to_thread(server.start, coaps=coaps)
            for index in range(3):  # no close_notify any more: the devices find out now
                fleet.device(index).trigger_update()
            deadline = time.monotonic() + 60
            while fleet.handshakes < before + 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # (wait_until is woken by device I/O only)
            assert fleet.handshakes >= before + 3
            for index in range(3):  # an Update over the new session tells the new address
                fleet.device(index).trigger_update()
            await asyncio.sleep(2)

            def read_each() -> list[int]:  # the server reaches each device over its session
                with server.api() as api:
                    return [
                        api.get(f"/devices/{i.endpoint}/data/3/0/0").status_code for i in identities
                    ]

            assert await asyncio.to_thread(read_each) == [200, 200, 200]

    try:
        asyncio.run(scenario())
    finally:
        assert server.stop() == 0


def test_a_dtls_fleet_handshakes_again_when_a_crashed_server_ignores_its_session(
    tmp_path: Path,
) -> None:
    """kill -9: no close_notify, and the new process silently drops records of a session it
    never had. The Update times out; before the fix the device then registered again over the
    same dead session for ever."""
    from lwm2m.coap import EndpointConfig, TransmissionParameters
    from simulators.fleet.runner import DeviceFleet
    from simulators.identities import Identity

    server = ServeProcess(tmp_path / "data")
    server.start()
    identity = Identity("crash-1", b"crash-1", bytes(range(16)))
    fast = EndpointConfig(  # an exchange fails after ~2 s instead of 93 s
        transmission=TransmissionParameters(
            ack_timeout=0.5, ack_random_factor=1.0, max_retransmit=2
        )
    )

    async def scenario() -> None:
        with server.api() as api:
            answer = api.put(
                "/security/crash-1",
                json={"psk_identity": "crash-1", "psk_key": bytes(range(16)).hex()},
            )
            assert answer.status_code < 300, answer.text
        coaps = server.coaps_port
        async with DeviceFleet(f"coaps://127.0.0.1:{coaps}", seed=1, coap_config=fast) as fleet:
            fleet.spawn(identities=[identity])
            await fleet.wait_registered(1, timeout=30)
            before = fleet.handshakes
            server.kill()
            forget_dtls_sessions(server.data_dir)  # a crash before the session was stored
            await asyncio.to_thread(server.start, coaps=coaps)
            fleet.device(0).trigger_update()  # into the session the new process never had
            deadline = time.monotonic() + 60
            while fleet.handshakes <= before and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert fleet.handshakes > before
            await fleet.wait_registered(1, timeout=30)

            def read() -> int:
                with server.api() as api:
                    return api.get("/devices/crash-1/data/3/0/0").status_code

            deadline = time.monotonic() + 20
            while await asyncio.to_thread(read) != 200:
                assert time.monotonic() < deadline, "the server never reached the device again"
                await asyncio.sleep(0.5)

    try:
        asyncio.run(scenario())
    finally:
        assert server.stop() == 0
