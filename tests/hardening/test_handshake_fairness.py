"""Issue 14 item 4: stalled DTLS handshakes from one IP do not lock out a real client at that
IP (a carrier NAT) -- a flood against a real ``fleetloop serve`` while a device handshakes.

Before the fix the 16 per-IP slots filled with the flood's half-open handshakes and every
further ClientHello from the IP was ignored until they timed out (~33 s)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from lwm2m.transport import DtlsClient, DtlsClientConfig
from tests.hardening.serve_proc import ServeProcess
from tests.transport.helpers import HalfHandshake

KEY = bytes(range(16))


class _Sink:
    def datagram_received(self, data: bytes, peer: object) -> None:
        pass


def test_a_device_handshakes_while_its_ip_floods_stalled_handshakes(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    with server.api() as api:
        answer = api.put("/security/nat-1", json={"psk_identity": "nat-1", "psk_key": KEY.hex()})
        assert answer.status_code < 300, answer.text
    port = server.coaps_port

    async def scenario() -> float:
        stop = asyncio.Event()
        flood: list[HalfHandshake] = []

        async def flooding() -> None:
            while not stop.is_set() and len(flood) < 400:
                half = HalfHandshake(port)
                flood.append(half)
                with contextlib.suppress(TimeoutError):
                    await half.start()

        floods = [asyncio.create_task(flooding()) for _ in range(4)]
        try:
            while len(flood) < 48:  # the IP's 16 slots are full of stalled handshakes
                await asyncio.sleep(0.01)
            began = time.monotonic()
            client = await DtlsClient.connect(
                _Sink(),
                "127.0.0.1",
                port,
                DtlsClientConfig(psk=(b"nat-1", KEY)),
                timeout=5.0,
            )
            took = time.monotonic() - began
            client.close()
            return took
        finally:
            stop.set()
            await asyncio.gather(*floods, return_exceptions=True)
            for half in flood:
                half.close()

    try:
        took = asyncio.run(scenario())
        assert took < 5.0
    finally:
        assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log
    assert "dropped its oldest stalled one" in log
