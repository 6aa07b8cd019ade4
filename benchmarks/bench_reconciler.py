"""Reconciler benchmark: device-changes applied and verified per second over the simulated
fleet, against the real ``fleetloop serve``, with the raw-UDP baseline in the same run.

    .venv/bin/python -m benchmarks.bench_reconciler [--devices 2000] [--rate 100000]
        [--concurrency 256] [--baseline 5] [--profile DIR]

Phases:

* ``baseline`` -- the bare asyncio UDP echo of ``benchmarks.bench_fleet`` (its own process,
  closed-loop client): round trips/s and server CPU per datagram on this machine, now.
* ``serve`` -- ``fleetloop serve`` (SQLite, ephemeral ports, the reconciler paced by
  ``FLEETLOOP_RECONCILE_RATE`` / ``_CONCURRENCY``) as a subprocess; N plain-CoAP devices with
  ideal links register and the state observer sets up its observation on each.
* ``config`` -- one ``PUT /state`` sets a new config bundle for all N devices; the clock stops
  when ``GET /state/drift`` is empty: every device wrote Config Version + Bundle + Digest,
  executed Apply, and the read-back verified the Applied Version (``observed_generation`` =
  the new generation). Figures: device-changes verified per second, server CPU (utime +
  stime of the serve process from /proc, every thread) per device-change.
* ``flags`` -- the same with a feature-flag change (one Write + read-back per device).

Verification is whatever the reconciler does (since the in-memory state work: the device's
own notification of the new value where our observation carries it, a read-back otherwise).
``--profile DIR`` runs ``py-spy record`` (raw collapsed stacks,
``DIR/<phase>.txt``) on the serve process for exactly each change phase.

Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_fleet import _baseline, machine
from benchmarks.loadgen import process_cpu_seconds
from simulators.fleet.runner import DeviceFleet
from simulators.profiles import DeviceProfile


def _fleetloop() -> list[str]:
    script = Path(sys.executable).parent / "fleetloop"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


class Serve:
    """``fleetloop serve`` in a subprocess on ephemeral ports."""

    def __init__(self, rate: float, concurrency: int) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-reconciler-")
        data = Path(self.tmp.name) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
        env["FLEETLOOP_RECONCILE_RATE"] = str(rate)
        env["FLEETLOOP_RECONCILE_BURST"] = str(rate)
        env["FLEETLOOP_RECONCILE_CONCURRENCY"] = str(concurrency)
        command = [
            *_fleetloop(), "serve", "--data-dir", str(data), "--coap", "127.0.0.1:0",
            "--coaps", "off", "--bs-coap", "off", "--bs-coaps", "off", "--api", "127.0.0.1:0",
            "--log-level", "warning",
        ]  # fmt: skip
        self.log = (Path(self.tmp.name) / "serve.log").open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while not (data / "api.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fleetloop serve did not start")
            time.sleep(0.05)
        time.sleep(0.1)
        self.info: dict[str, Any] = json.loads((data / "api.json").read_text())
        self.coap_uri = f"coap://127.0.0.1:{self.info['coap']['port']}"

    def cpu(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        self.tmp.cleanup()


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        await asyncio.sleep(0.2)


def _profiler(serve: Serve, out: Path | None) -> subprocess.Popen[bytes] | None:
    if out is None:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    command = [str(spy), "record", "--format", "raw", "-r", "100", "-o", str(out)]
    profiler = subprocess.Popen(
        [*command, "--pid", str(serve.process.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached before the clock starts
    return profiler


async def _change(
    api: httpx.AsyncClient,
    serve: Serve,
    endpoints: list[str],
    values: dict[str, Any],
    profile: Path | None = None,
) -> dict[str, float]:
    """Set ``values`` on every endpoint; time until nothing is out of line."""
    profiler = _profiler(serve, profile)
    cpu0, t0 = serve.cpu(), time.perf_counter()
    answer = await api.put("/v1/state", json={"endpoints": endpoints, "values": values})
    answer.raise_for_status()
    assert answer.json()["changed"] == len(endpoints), answer.text

    async def in_line() -> bool:
        drift = await api.get("/v1/state/drift", params={"limit": 1})
        return not drift.json()["items"]

    await _until(in_line, 600, "every device applied and verified")
    seconds = time.perf_counter() - t0
    cpu = serve.cpu() - cpu0
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
    n = len(endpoints)
    return {
        "devices": n,
        "seconds": seconds,
        "changes_per_s": n / seconds,
        "server_cpu_us_per_change": cpu / n * 1e6,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if args.baseline > 0:
        results["baseline"] = await asyncio.to_thread(_baseline, args.baseline)
    serve = Serve(args.rate, args.concurrency)
    api = httpx.AsyncClient(
        base_url=serve.info["url"],
        headers={"Authorization": f"Bearer {serve.info['token']}"},
        timeout=120,
    )
    try:
        async with DeviceFleet(serve.coap_uri, seed=1, start_rate=args.start_rate) as fleet:
            fleet.spawn(args.devices, prefix="rb-", profile=DeviceProfile(lifetime=3600))
            await fleet.wait_registered(timeout=300)
            endpoints = [fleet.device(i).endpoint for i in range(args.devices)]

            async def observed() -> bool:
                found = (await api.get("/v1/observations")).json()
                return len(found) >= args.devices

            await _until(observed, 300, "an observation on every device")
            bundle = await api.put("/v1/config-bundles/bench-v1", json={"interval": 60, "eu": True})
            bundle.raise_for_status()
            out = Path(args.profile) if args.profile else None
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
            results["config"] = await _change(
                api, serve, endpoints, {"config": "bench-v1"}, out and out / "config.txt"
            )
            results["flags"] = await _change(
                api, serve, endpoints, {"flags": {"bench": "1"}}, out and out / "flags.txt"
            )
    finally:
        await api.aclose()
        serve.close()
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| phase | devices | seconds | device-changes/s | server CPU per change |"]
    lines.append("|---|---:|---:|---:|---:|")
    base = results.get("baseline")
    if base:
        lines.append(
            f"| raw UDP echo (baseline) | - | - | {base['round_trips_per_s']:,.0f} round trips/s "
            f"| {base['server_cpu_us_per_datagram']:.0f} µs per datagram |"
        )
    for name, label in (("config", "config bundle (write, apply, verify)"),
                        ("flags", "feature flags (write, verify)")):  # fmt: skip
        r = results.get(name)
        if r:
            lines.append(
                f"| {label} | {r['devices']} | {r['seconds']:.2f} | {r['changes_per_s']:,.0f} "
                f"| {r['server_cpu_us_per_change']:,.0f} µs |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100_000.0, help="reconciler changes/s cap")
    parser.add_argument("--concurrency", type=int, default=256, help="reconciler workers")
    parser.add_argument("--start-rate", type=float, default=500.0, help="device starts per s")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds (0: skip)")
    parser.add_argument("--profile", default=None, help="py-spy each change phase into DIR")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    results["machine"] = machine()
    results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(table(results))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
