"""DM PSK rotation of a fleet by re-bootstrap, against the real ``fleetloop serve``.

    .venv/bin/python -m benchmarks.bench_credentials_rotation [--devices 500] [--baseline 5]

Phases:

* ``baseline`` -- the raw asyncio UDP echo of ``benchmarks.bench_fleet`` (round trips/s and
  server CPU per datagram on this machine, now).
* ``bootstrap`` -- N factory identities (``fleetloop sim identities``, imported) bootstrap
  over DTLS-PSK from the bootstrap server and register with the DM server over DTLS-PSK.
* ``rotate`` -- one ``PUT /v1/state`` sets ``credentials={"generation": 1}`` for all N; the
  clock stops when ``GET /v1/state/drift`` is empty: each device was told to re-bootstrap
  (Execute /1/x/9), got a fresh PSK, registered again with it, and the rotation was verified.
  Then every device's OLD key is tried in a DTLS handshake with the DM server (all must be
  refused) and a sample of the new keys (all must be accepted).

Figures: rotations verified per second, server CPU (utime + stime of the serve process) per
rotation. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_fleet import _baseline, machine
from benchmarks.bench_reconciler import _fleetloop, _until
from benchmarks.loadgen import process_cpu_seconds
from lwm2m.transport import DtlsClient, DtlsClientConfig, HandshakeFailed
from simulators.device.bootstrap import dm_account
from simulators.fleet.runner import DeviceFleet
from simulators.identities import from_csv


class _Sink:
    def datagram_received(self, data: bytes, peer: object) -> None:
        pass


async def _handshake(port: int, identity: bytes, key: bytes) -> bool:
    try:
        client = await DtlsClient.connect(
            _Sink(), "127.0.0.1", port, DtlsClientConfig(psk=(identity, key)), timeout=5.0
        )
    except (HandshakeFailed, TimeoutError):
        return False
    client.close()
    return True


async def _serve(data: Path) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    command = [
        *_fleetloop(), "serve", "--data-dir", str(data), "--coap", "127.0.0.1:0",
        "--coaps", "127.0.0.1:0", "--bs-coap", "off", "--bs-coaps", "127.0.0.1:0",
        "--api", "127.0.0.1:0", "--log-level", "warning",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not (data / "api.json").exists():
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError("fleetloop serve did not start")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    return process, json.loads((data / "api.json").read_text())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if args.baseline > 0:
        results["baseline"] = await asyncio.to_thread(_baseline, args.baseline)
    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        data = Path(tmp) / "data"
        csv_file = Path(tmp) / "factory.csv"
        made = await asyncio.create_subprocess_exec(
            *_fleetloop(), "sim", "identities", "-n", str(args.devices), "--prefix", "rot-",
            "--out", str(csv_file),
        )  # fmt: skip
        assert await made.wait() == 0
        process, info = await _serve(data)
        env_cli = [*_fleetloop()]
        imported = await asyncio.create_subprocess_exec(
            *env_cli, "identities", "import", str(csv_file),
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")},
                "FLEETLOOP_DATA_DIR": str(data),
            },
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await imported.wait() == 0
        identities = from_csv(csv_file.read_text())
        api = httpx.AsyncClient(
            base_url=info["url"], headers={"Authorization": f"Bearer {info['token']}"}, timeout=120
        )
        bs_uri = f"coaps://127.0.0.1:{info['extra']['bs_coaps']['port']}"
        coaps_port = int(info["coaps"]["port"])
        try:
            async with DeviceFleet(bootstrap_uri=bs_uri, seed=1) as fleet:
                t0 = time.perf_counter()
                fleet.spawn(identities=identities)
                await fleet.wait_registered(timeout=600)
                results["bootstrap"] = {
                    "devices": args.devices,
                    "seconds": time.perf_counter() - t0,
                }
                old = {}
                for i in range(args.devices):
                    account = dm_account(fleet.device(i).store)
                    assert account is not None
                    old[fleet.device(i).endpoint] = (account.identity, account.secret)
                cpu0, t0 = process_cpu_seconds(process.pid), time.perf_counter()
                answer = await api.put(
                    "/v1/state",
                    json={
                        "select": "endpoint=rot-*",
                        "values": {"credentials": {"generation": 1}},
                    },
                )
                answer.raise_for_status()

                async def in_line() -> bool:
                    drift = await api.get(
                        "/v1/state/drift", params={"select": "endpoint=rot-*", "limit": 1}
                    )
                    return not drift.json()["items"]

                await _until(in_line, 900, "every device rotated and verified")
                seconds = time.perf_counter() - t0
                cpu = process_cpu_seconds(process.pid) - cpu0
                refused = 0
                for identity, key in old.values():
                    refused += not await _handshake(coaps_port, identity, key)
                accepted = 0
                sampled = range(0, args.devices, max(1, args.devices // 20))
                for i in sampled:
                    account = dm_account(fleet.device(i).store)
                    assert account is not None
                    accepted += await _handshake(coaps_port, account.identity, account.secret)
                results["rotate"] = {
                    "devices": args.devices,
                    "seconds": seconds,
                    "rotations_per_s": args.devices / seconds,
                    "server_cpu_us_per_rotation": cpu / args.devices * 1e6,
                    "old_keys_refused": refused,
                    "new_keys_accepted": f"{accepted}/{len(sampled)}",
                }
        finally:
            await api.aclose()
            process.terminate()
            await process.wait()
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| phase | devices | seconds | per second | server CPU |", "|---|---:|---:|---:|---:|"]
    base = results.get("baseline")
    if base:
        lines.append(
            f"| raw UDP echo (baseline) | - | - | {base['round_trips_per_s']:,.0f} round trips "
            f"| {base['server_cpu_us_per_datagram']:.0f} µs per datagram |"
        )
    boot = results["bootstrap"]
    lines.append(
        f"| bootstrap + register (DTLS-PSK) | {boot['devices']} | {boot['seconds']:.1f} | "
        f"{boot['devices'] / boot['seconds']:.0f} devices | - |"
    )
    rot = results["rotate"]
    lines.append(
        f"| PSK rotation (re-bootstrap, re-register, verified) | {rot['devices']} | "
        f"{rot['seconds']:.1f} | {rot['rotations_per_s']:.0f} rotations | "
        f"{rot['server_cpu_us_per_rotation']:,.0f} µs per rotation |"
    )
    lines.append(
        f"\nold keys refused afterwards: {rot['old_keys_refused']}/{rot['devices']}; "
        f"new keys accepted (sample): {rot['new_keys_accepted']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds (0: skip)")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(table(results))
    print(json.dumps({"machine": machine(), "at": datetime.now(UTC).isoformat(), **results}))


if __name__ == "__main__":
    main()
