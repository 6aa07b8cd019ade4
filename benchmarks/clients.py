"""Load clients for ``bench_transport``: plain UDP, DTLS-PSK steady state, DTLS handshakes."""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.loadgen import run_load, udp_device


def run_client(
    kind: str, port: int, duration: float, window: int, devices: int
) -> dict[str, float]:
    if kind == "udp":
        devs = [udp_device("127.0.0.1", port) for _ in range(devices)]
        result = run_load(devs, duration, window)
        return {**asdict(result), "rate": result.rate}
    raise SystemExit(f"unknown client kind {kind}")
