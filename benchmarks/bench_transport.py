"""CoAP transport benchmark: requests/s and server CPU per request, as ratios to a raw UDP echo.

    .venv/bin/python -m benchmarks.bench_transport [--duration 5] [--window 16] [--devices 4]

Runs, in one go and on loopback only: (a) a bare asyncio UDP echo, (b) aiocoap's server stack,
(c) fleetloop's exchange layer over UDP, (d) over DTLS-PSK (steady state), (e) DTLS-PSK full
handshakes/s. Each server is its own process; the load client is another process. Figures are
reported beside (a) from the same run so ratios survive a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

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


def _run_client(kind: str, port: int, args: argparse.Namespace) -> dict[str, float]:
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
            str(args.devices),
        ],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=args.duration + 60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(mode: str, client: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    proc, port = _spawn_server(mode, tmp)
    try:
        time.sleep(0.3)
        cpu0 = process_cpu_seconds(proc.pid)
        result = _run_client(client, port, args)
        cpu1 = process_cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    done = result["completed"]
    result["server_cpu_s"] = cpu1 - cpu0
    result["cpu_us_per_op"] = (cpu1 - cpu0) / done * 1e6 if done else float("nan")
    return result


CASES = [
    ("a", "raw UDP echo", "raw-echo", "udp"),
    ("b", "aiocoap server stack", "aiocoap", "udp"),
    ("c", "fleetloop exchange layer, UDP", "fleetloop-udp", "udp"),
    ("d", "fleetloop, DTLS-PSK steady state", "fleetloop-dtls", "dtls"),
    ("e", "fleetloop, DTLS-PSK full handshakes", "fleetloop-dtls", "dtls-handshake"),
]


def main_bench(args: argparse.Namespace) -> None:
    from benchmarks.servers import SERVERS

    rows = []
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        for key, label, mode, client in CASES:
            if mode not in SERVERS:
                print(f"({key}) {label}: not available yet", file=sys.stderr)
                continue
            r = measure(mode, client, args, tmp)
            rows.append({"case": key, "label": label, **r})
            print(
                f"({key}) {label}: {r['rate']:.0f}/s, {r['cpu_us_per_op']:.1f} us CPU/op,"
                f" lost {r['lost']:.0f}",
                file=sys.stderr,
            )
    base = rows[0]
    print()
    print("| case | rate (/s) | ratio to (a) | server CPU per op (us) | lost |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["rate"] / base["rate"] if base["rate"] else float("nan")
        unit = "handshakes" if r["case"] == "e" else "req"
        print(
            f"| ({r['case']}) {r['label']} | {r['rate']:.0f} {unit}/s | {ratio:.2f} |"
            f" {r['cpu_us_per_op']:.1f} | {r['lost']:.0f} |"
        )
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "window": args.window,
        "devices": args.devices,
    }
    print()
    print("```json")
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))
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
    main_bench(parser.parse_args())


if __name__ == "__main__":
    main()
