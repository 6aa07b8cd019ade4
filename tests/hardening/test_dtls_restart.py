"""Issue 13: DTLS sessions survive a ``kill -9`` of ``fleetloop serve``.

A simulated DTLS-PSK device talks to a real serve through a UDP relay (the packet capture).
The serve is killed with SIGKILL and started again on the same data directory and port. The
device carries on over its old session: its Update is answered, the server reads a resource
from it, and the capture holds no ClientHello after the restart. A record captured before the
crash and replayed afterwards is refused (no answer), and every record the new process sends
has a higher sequence number than any the old one sent. The kill comes right after the
Update was answered, well inside the session store's 1 s flush interval: the Update's
incoming mark was queued before the Update itself, so it is committed with it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lwm2m.transport._common import is_client_hello
from simulators.device.events import Updated
from simulators.runner import SimulatedDevice
from tests.hardening.serve_proc import ServeProcess
from tests.transport.helpers import Relay

KEY = bytes(range(48, 64))


def _app_records(datagrams: list[bytes]) -> list[int]:
    """Sequence numbers of the epoch > 0 application records in these datagrams."""
    seqs = []
    for data in datagrams:
        pos = 0
        while pos + 13 <= len(data):
            if data[pos] == 23 and data[pos + 3 : pos + 5] != b"\x00\x00":
                seqs.append(int.from_bytes(data[pos + 5 : pos + 11], "big"))
            pos += 13 + int.from_bytes(data[pos + 11 : pos + 13], "big")
    return seqs


def test_a_dtls_device_keeps_its_session_across_kill_9(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()

    async def scenario() -> None:
        with server.api() as api:
            answer = api.put(
                "/security/resume-1", json={"psk_identity": "resume-1", "psk_key": KEY.hex()}
            )
            assert answer.status_code < 300, answer.text
        coaps = server.coaps_port
        relay, port = await Relay.start(("127.0.0.1", coaps))
        device = SimulatedDevice("resume-1", f"coaps://127.0.0.1:{port}", psk=(b"resume-1", KEY))
        await device.start()
        try:
            await asyncio.wait_for(device.wait_registered(), 20)
            await asyncio.sleep(1.5)  # > persist_interval: the new session is in the store
            mark = len(device.events)
            device.trigger_update()
            await device.wait_event(Updated, 10, since=mark)
            # kill -9 right after the answer: the Update's record is the newest the server
            # took, and its replay must still be refused (its mark went out with it)
            hellos = sum(1 for d, data in relay.captured if d == "c2s" and is_client_hello(data))
            update = next(
                data for d, data in reversed(relay.captured) if d == "c2s" and _app_records([data])
            )
            sent_before = _app_records([data for d, data in relay.captured if d == "s2c"])

            server.kill()
            await asyncio.to_thread(server.start, coaps=coaps)
            seen = len(relay.captured)

            relay.transport.sendto(update, ("127.0.0.1", coaps))  # replay of the old Update
            await asyncio.sleep(1.0)
            assert [d for d, _ in relay.captured[seen:]] == [], "the replayed Update was answered"

            mark = len(device.events)
            device.trigger_update()
            await device.wait_event(Updated, 10, since=mark)

            def read() -> int:  # the server reaches the device over the restored session
                with server.api() as api:
                    return api.get("/devices/resume-1/data/3/0/0").status_code

            assert await asyncio.to_thread(read) == 200
            assert device.rehandshakes == 0
            assert hellos == sum(
                1 for d, data in relay.captured if d == "c2s" and is_client_hello(data)
            ), "a handshake after the restart"
            sent_after = _app_records([data for d, data in relay.captured[seen:] if d == "s2c"])
            assert sent_after and min(sent_after) > max(sent_before)
        finally:
            await device.stop(timeout=2)
            relay.close()

    try:
        asyncio.run(scenario())
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
