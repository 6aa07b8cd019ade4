"""Load clients for ``bench_transport``: plain UDP, DTLS-PSK steady state, DTLS handshakes.

The DTLS clients are fleetloop's own DTLS client transport (python-mbedtls), one socket per
simulated device, on one asyncio loop in this (separate) process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from benchmarks.loadgen import coap_get, run_load, udp_device
from benchmarks.servers import BENCH_PSK_KEY


def run_client(
    kind: str, port: int, duration: float, window: int, devices: int
) -> dict[str, float]:
    if kind == "udp":
        devs = [udp_device("127.0.0.1", port) for _ in range(devices)]
        result = run_load(devs, duration, window)
        return {**asdict(result), "rate": result.rate}
    if kind == "dtls":
        return asyncio.run(_dtls_steady(port, duration, window, devices))
    if kind == "dtls-handshake":
        return asyncio.run(_dtls_handshakes(port, duration, devices))
    raise SystemExit(f"unknown client kind {kind}")


class _Device:
    """One DTLS device keeping ``window`` CON GETs in flight, matched by Message ID."""

    def __init__(self, index: int, window: int) -> None:
        self.index = index
        self.window = window
        self.pending: dict[int, float] = {}
        self.mid = (index * 7919) & 0xFFFF
        self.completed = 0
        self.client: Any = None

    def datagram_received(self, data: bytes, peer: Any) -> None:
        if len(data) >= 4 and self.pending.pop(int.from_bytes(data[2:4], "big"), None):
            self.completed += 1
            self.fill()

    def fill(self) -> None:
        while len(self.pending) < self.window:
            self.mid = (self.mid + 1) & 0xFFFF
            self.pending[self.mid] = time.perf_counter()
            self.client.send(coap_get(self.mid, self.mid.to_bytes(2, "big")), self.client.peer)

    def expire(self, now: float, timeout: float) -> int:
        stale = [m for m, t in self.pending.items() if now - t > timeout]
        for m in stale:
            del self.pending[m]
        if stale:
            self.fill()
        return len(stale)


async def _connect(sink: Any, port: int, identity: bytes) -> Any:
    from lwm2m.transport import DtlsClient, DtlsClientConfig

    config = DtlsClientConfig(psk=(identity, BENCH_PSK_KEY))
    return await DtlsClient.connect(sink, "127.0.0.1", port, config, timeout=10)


async def _dtls_steady(port: int, duration: float, window: int, devices: int) -> dict[str, float]:
    devs = [_Device(i, window) for i in range(devices)]
    for d in devs:
        d.client = await _connect(d, port, f"bench-{d.index}".encode())
    start = time.perf_counter()
    for d in devs:
        d.fill()
    lost = 0
    while (now := time.perf_counter()) - start < duration:
        await asyncio.sleep(0.1)
        lost += sum(d.expire(now, 0.5) for d in devs)
    seconds = time.perf_counter() - start
    completed = sum(d.completed for d in devs)
    for d in devs:
        d.client.close()
    return {"completed": completed, "lost": lost, "seconds": seconds, "rate": completed / seconds}


class _Sink:
    def datagram_received(self, data: bytes, peer: Any) -> None:
        pass


async def _dtls_handshakes(port: int, duration: float, parallel: int) -> dict[str, float]:
    """Full PSK handshakes (cookie exchange included), each on a fresh socket, then close."""
    completed = 0
    failed = 0
    start = time.perf_counter()
    counter = 0

    async def worker() -> None:
        nonlocal completed, failed, counter
        while time.perf_counter() - start < duration:
            counter += 1
            try:
                client = await _connect(_Sink(), port, f"bench-h{counter}".encode())
            except Exception:
                failed += 1
                continue
            completed += 1
            client.close()

    await asyncio.gather(*(worker() for _ in range(parallel)))
    seconds = time.perf_counter() - start
    return {"completed": completed, "lost": failed, "seconds": seconds, "rate": completed / seconds}
