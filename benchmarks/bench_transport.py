"""CoAP transport benchmark: requests/s and server CPU per request, as ratios to a raw UDP echo.

    .venv/bin/python -m benchmarks.bench_transport [--duration 5] [--window 16] [--devices 4]
        [--repeat 1] [--cases a,a2,c] [--handshake-parallel 16]

Runs, in one go and on loopback only: (a) a bare asyncio UDP echo (asyncio's datagram
endpoint), (a2) the same echo on the socket loop fleetloop's transports use, (b) aiocoap's
server stack, (c) fleetloop's exchange layer over UDP, (d) over DTLS-PSK (steady state), (e)
DTLS-PSK full handshakes/s. Each server is its own process; the load client is another process
(the same UDP client for (a), (a2), (b), (c)). Figures are reported beside (a) and (a2) from the
same run so ratios survive a noisy machine; with ``--repeat`` the table shows medians and
ranges. Server CPU comes from /proc, client CPU from the client itself, and the busy fractions
(CPU seconds per wall second) say which side limited the rate: a side near 1.00 did. The
fleetloop servers report what their core saw (duplicates must be 0: the client never re-uses a
Message ID within a peer, see ``loadgen.ROTATE_AFTER``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.loadgen import process_cpu_seconds

HERE = Path(__file__).resolve().parent


def _spawn_server(mode: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / f"{mode}.port"
    port_file.unlink(missing_ok=True)  # (d) and (e) share a server mode: never read a stale port
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_transport", "serve", mode, str(port_file)],
        cwd=HERE.parent,
    )
    for _ in range(200):
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"server {mode} exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {mode} did not start")


def _run_client(kind: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_transport",
            "load",
            kind,
            str(port),
            str(args.duration),
            str(args.window),
            str(args.handshake_parallel if kind == "dtls-handshake" else args.devices),
        ],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=args.duration + 60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(mode: str, client: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    proc, port = _spawn_server(mode, tmp)
    try:
        time.sleep(0.3)
        cpu0 = process_cpu_seconds(proc.pid)
        result = _run_client(client, port, args)
        cpu1 = process_cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    stats_file = (tmp / f"{mode}.port").with_suffix(".stats")
    if stats_file.exists():
        result["server_stats"] = json.loads(stats_file.read_text())
        stats_file.unlink()
    done = result["completed"]
    nan = float("nan")
    result["server_cpu_s"] = cpu1 - cpu0
    result["cpu_us_per_op"] = (cpu1 - cpu0) / done * 1e6 if done else nan
    result["client_cpu_us_per_op"] = result.get("client_cpu_s", nan) / done * 1e6 if done else nan
    # Busy fraction of each side over the window: the side near 1.0 limits the rate.
    result["server_busy"] = (cpu1 - cpu0) / result["seconds"]
    result["client_busy"] = result.get("client_cpu_s", nan) / result["seconds"]
    return result


CASES = [
    ("a", "raw UDP echo", "raw-echo", "udp"),
    ("a2", "raw UDP echo, fleetloop's socket loop", "lean-echo", "udp"),
    ("b", "aiocoap server stack", "aiocoap", "udp"),
    ("c", "fleetloop exchange layer, UDP", "fleetloop-udp", "udp"),
    ("d", "fleetloop, DTLS-PSK steady state", "fleetloop-dtls", "dtls"),
    ("e", "fleetloop, DTLS-PSK full handshakes", "fleetloop-dtls", "dtls-handshake"),
]


def run_cases(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Every selected case once; each row carries its ratios to (a) and (a2) of this run."""
    from benchmarks.servers import SERVERS

    rows: list[dict[str, Any]] = []
    for key, label, mode, client in CASES:
        if args.cases and key not in args.cases.split(","):
            continue
        if mode not in SERVERS:
            print(f"({key}) {label}: not available yet", file=sys.stderr)
            continue
        r = measure(mode, client, args, tmp)
        rows.append({"case": key, "label": label, **r})
        print(
            f"({key}) {label}: {r['rate']:.0f}/s, {r['cpu_us_per_op']:.1f} us CPU/op,"
            f" client {r['client_cpu_us_per_op']:.1f} us/op, busy server"
            f" {r['server_busy']:.2f} client {r['client_busy']:.2f}, lost {r['lost']:.0f}",
            file=sys.stderr,
        )
        if "server_stats" in r:
            core = r["server_stats"]["core"]
            print(
                f"    server core: received {core['received']}, duplicates"
                f" {core['duplicates']}, malformed {core['malformed']},"
                f" peers {r['server_stats']['peers']}",
                file=sys.stderr,
            )
    rates = {r["case"]: r["rate"] for r in rows}
    for r in rows:
        for base in ("a", "a2"):
            if rates.get(base):
                r[f"ratio_{base}"] = r["rate"] / rates[base]
    return rows


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float], fmt: str) -> str:
    """The median, with the range over runs when there were several."""
    if not values:
        return "-"
    text = format(_median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)} to {format(max(values), fmt)})"
    return text


def main_bench(args: argparse.Namespace) -> None:
    runs: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        for i in range(args.repeat):
            if args.repeat > 1:
                print(f"-- run {i + 1}/{args.repeat}", file=sys.stderr)
            runs.append(run_cases(args, tmp))
    keys = [r["case"] for r in runs[0]]
    print()
    print(
        "| case | rate (/s) | ratio to (a) | ratio to (a2) | server CPU per op (us)"
        " | client CPU per op (us) | server / client busy | lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in keys:
        rows = [r for run in runs for r in run if r["case"] == key]

        def col(name: str, rows: list[dict[str, Any]] = rows) -> list[float]:
            return [r[name] for r in rows if name in r]

        unit = "handshakes/s" if key == "e" else "req/s"
        print(
            f"| ({key}) {rows[0]['label']} | {_spread(col('rate'), '.0f')} {unit}"
            f" | {_spread(col('ratio_a'), '.2f')} | {_spread(col('ratio_a2'), '.2f')}"
            f" | {_spread(col('cpu_us_per_op'), '.1f')}"
            f" | {_spread(col('client_cpu_us_per_op'), '.1f')}"
            f" | {_median(col('server_busy')):.2f} / {_median(col('client_busy')):.2f}"
            f" | {sum(col('lost')):.0f} |"
        )
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "window": args.window,
        "devices": args.devices,
        "handshake_parallel": args.handshake_parallel,
        "repeat": args.repeat,
    }
    print()
    print("```json")
    print(json.dumps({"meta": meta, "runs": runs}, indent=1))
    print("```")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from benchmarks.servers import run

        run(sys.argv[2], Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        from benchmarks.clients import run_client

        kind, port, duration, window, devices = sys.argv[2:7]
        print(json.dumps(run_client(kind, int(port), float(duration), int(window), int(devices))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--window", type=int, default=16, help="requests in flight per device")
    parser.add_argument("--devices", type=int, default=4, help="client sockets (peers)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every case N times; report medians (ranges)"
    )
    parser.add_argument(
        "--handshake-parallel",
        type=int,
        default=16,
        help="handshakes in progress at once in (e) (a handshake is 3 round trips: a few in"
        " parallel leave both sides waiting)",
    )
    parser.add_argument("--cases", default="", help="subset, e.g. a,c (default: all)")
    main_bench(parser.parse_args())


if __name__ == "__main__":
    main()
