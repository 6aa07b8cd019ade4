"""CLI latency: wall time of ``fleetloop`` commands from process start to exit (issue 11).

    .venv/bin/python -m benchmarks.bench_cli [--runs 15] [--devices 20]

Every ``fleetloop`` call starts a fresh interpreter, so what a command costs is mostly what
``cli.main`` imports. Measured against a real ``fleetloop serve`` (subprocess, SQLite,
ephemeral ports) with ``--devices`` simulated devices registered:

* ``python -c pass`` -- the interpreter alone (the floor on this machine, now)
* ``fleetloop --version`` -- the CLI's import cost
* ``fleetloop devices list`` -- import + one API call (find the server, GET /v1/devices)
* ``fleetloop devices list --json`` -- the same, printed as JSON

Reports the median and the minimum of ``--runs`` runs of each (the minimum is the least
disturbed by other processes on a shared machine). Goal (issue 11): under 0.25 s for
``--version`` and ``devices list``. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_S = 0.25


def _script() -> list[str]:
    script = Path(sys.executable).parent / "fleetloop"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env["FLEETLOOP_DATA_DIR"] = str(data_dir)
    return env


def start_serve(data_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    data_dir.mkdir(mode=0o700)
    process = subprocess.Popen(
        [
            *_script(),
            "serve",
            "--data-dir",
            str(data_dir),
            *("--coap", "127.0.0.1:0", "--coaps", "off"),
            *("--bs-coap", "off", "--bs-coaps", "off", "--api", "127.0.0.1:0"),
        ],
        env=_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("fleetloop serve exited early")
        api_json = data_dir / "api.json"
        if api_json.exists():
            return process, dict(json.loads(api_json.read_text()))
        time.sleep(0.1)
    process.kill()
    raise SystemExit("fleetloop serve did not start in 90 s")


def register_devices(info: dict[str, Any], count: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """``fleetloop sim run`` with ``count`` devices against the server, in the background."""
    coap = info["coap"]
    process = subprocess.Popen(
        [
            *_script(),
            "sim",
            "run",
            *("--devices", str(count), "--server", f"coap://127.0.0.1:{coap['port']}"),
        ],
        env=_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = subprocess.run(
            [*_script(), "devices", "list", "--json"],
            env=_env(data_dir),
            capture_output=True,
            check=False,
        )
        if listed.returncode == 0 and len(json.loads(listed.stdout)) >= count:
            return process
        time.sleep(0.5)
    raise SystemExit(f"{count} simulated devices did not register in 60 s")


def wall_times(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()[-300:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--devices", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        serve, info = start_serve(data_dir)
        sim = None
        try:
            sim = register_devices(info, args.devices, data_dir)
            env = _env(data_dir)
            cases = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "fleetloop --version": [*_script(), "--version"],
                "fleetloop devices list": [*_script(), "devices", "list"],
                "fleetloop devices list --json": [*_script(), "devices", "list", "--json"],
            }
            results = {name: wall_times(cmd, env, args.runs) for name, cmd in cases.items()}
        finally:
            for process in (sim, serve):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        process.kill()
    load = os.getloadavg()[0]
    print(f"CLI wall time, {args.runs} runs each, {args.devices} devices, load {load:.1f}\n")
    print("| command | median s | min s | goal |")
    print("|---|---:|---:|---|")
    for name, times in results.items():
        goal = "" if name.startswith("python") else f"< {GOAL_S}"
        print(f"| `{name}` | {statistics.median(times):.3f} | {min(times):.3f} | {goal} |")
    summary = {
        name: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4)}
        for name, t in results.items()
    }
    print(json.dumps({"bench": "cli", "runs": args.runs, "load1": load, "results": summary}))


if __name__ == "__main__":
    main()
