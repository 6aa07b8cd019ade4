"""Load clients for ``bench_transport``: plain UDP, DTLS-PSK steady state, DTLS handshakes.

The DTLS clients are fleetloop's own DTLS client transport (python-mbedtls), one socket per
simulated device, on one asyncio loop in this (separate) process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from benchmarks.loadgen import REQUESTS, ROTATE_AFTER, run_load, udp_socket
from benchmarks.servers import BENCH_PSK_KEY


def run_client(
    kind: str, port: int, duration: float, window: int, devices: int
) -> dict[str, float]:
    if kind == "udp":
        cpu0 = time.process_time()
        result = run_load(udp_socket("127.0.0.1", port), devices, duration, window)
        cpu = time.process_time() - cpu0
        return {**asdict(result), "rate": result.rate, "client_cpu_s": cpu}
    if kind == "dtls":
        return asyncio.run(_dtls_steady(port, duration, window, devices))
    if kind == "dtls-handshake":
        return asyncio.run(_dtls_handshakes(port, duration, devices))
    raise SystemExit(f"unknown client kind {kind}")


class _Device:
    """One DTLS device keeping ``window`` CON GETs in flight, matched by Message ID.

    After :data:`ROTATE_AFTER` requests it drains and reconnects (a fresh socket and handshake:
    a new peer to the server), so no Message ID repeats within a peer during the run.
    """

    def __init__(self, index: int, window: int, port: int) -> None:
        self.index = index
        self.window = window
        self.port = port
        self.pending: dict[int, float] = {}
        self.mid = (index * 7919) & 0xFFFF
        self.sent = 0
        self.completed = 0
        self.sockets = 0
        self.client: Any = None
        self.send: Any = None
        self.rotating: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.sockets += 1
        self.client = await _connect(self, self.port, f"bench-{self.index}".encode())
        self.send = self.client.send
        self.sent = 0

    def datagram_received(self, data: bytes, peer: Any) -> None:
        if len(data) >= 4 and self.pending.pop((data[2] << 8) | data[3], None) is not None:
            self.completed += 1
            self.fill()

    def fill(self) -> None:
        pending = self.pending
        want = min(self.window - len(pending), ROTATE_AFTER - self.sent)
        if want <= 0:
            if self.sent >= ROTATE_AFTER and not pending and self.rotating is None:
                self.rotating = asyncio.get_running_loop().create_task(self._rotate())
            return
        now = time.perf_counter()
        send = self.send
        mid = self.mid
        for _ in range(want):
            mid = (mid + 1) & 0xFFFF
            pending[mid] = now
            send(REQUESTS[mid])
        self.mid = mid
        self.sent += want

    async def _rotate(self) -> None:
        self.client.close()
        await self.connect()
        self.rotating = None
        self.fill()

    def expire(self, now: float, timeout: float) -> int:
        stale = [m for m, t in self.pending.items() if now - t > timeout]
        for m in stale:
            del self.pending[m]
        if stale or (self.sent >= ROTATE_AFTER and not self.pending):
            self.fill()
        return len(stale)


async def _connect(sink: Any, port: int, identity: bytes) -> Any:
    from lwm2m.transport import DtlsClient, DtlsClientConfig

    config = DtlsClientConfig(psk=(identity, BENCH_PSK_KEY))
    return await DtlsClient.connect(sink, "127.0.0.1", port, config, timeout=10)


async def _dtls_steady(port: int, duration: float, window: int, devices: int) -> dict[str, float]:
    devs = [_Device(i, window, port) for i in range(devices)]
    for d in devs:
        await d.connect()
    start = time.perf_counter()
    cpu0 = time.process_time()
    for d in devs:
        d.fill()
    lost = 0
    while (now := time.perf_counter()) - start < duration:
        await asyncio.sleep(0.05)
        lost += sum(d.expire(now, 0.5) for d in devs)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    completed = sum(d.completed for d in devs)
    for d in devs:
        if d.rotating is not None:
            d.rotating.cancel()
        d.client.close()
    return {
        "completed": completed,
        "lost": lost,
        "seconds": seconds,
        "rate": completed / seconds,
        "client_cpu_s": cpu,
        "sockets": sum(d.sockets for d in devs),
    }


class _Sink:
    def datagram_received(self, data: bytes, peer: Any) -> None:
        pass


async def _dtls_handshakes(port: int, duration: float, parallel: int) -> dict[str, float]:
    """Full PSK handshakes (cookie exchange included), each on a fresh socket, then close."""
    completed = 0
    failed = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
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
    cpu = time.process_time() - cpu0
    return {
        "completed": completed,
        "lost": failed,
        "seconds": seconds,
        "rate": completed / seconds,
        "client_cpu_s": cpu,
    }
