"""A carrier switch of a fleet's eSIM profiles through desired state and the eIM, against the
real ``fleetloop serve`` (eIM on, ESipa over TLS on 127.0.0.1).

    .venv/bin/python -m benchmarks.bench_esim_switch [--devices 500] [--stranded 0.1]
        [--poll 5] [--rollback-after 3] [--baseline 3]

Phases:

* ``baseline`` -- the raw asyncio UDP echo of ``benchmarks.bench_fleet`` (server CPU per
  datagram on this machine, now), for the ratio.
* ``register`` -- N simulated LwM2M devices register (they are the inventory the state API
  selects from), and their N eUICCs are imported in one ``POST /v1/esim/euiccs`` (every chain
  verified to the CI).
* ``switch`` -- one ``PUT /v1/state`` sets ``esim`` to carrier B's ICCID for all N. Every
  device's IPA polls the eIM every ``--poll`` seconds over HTTPS (keep-alive). A share
  ``--stranded`` of them is where carrier B does not serve: the enable loses connectivity and
  the eUICC rolls back after ``--rollback-after`` seconds. The clock stops when
  ``GET /v1/state/drift?status=pending`` is empty and exactly the stranded devices are failed.

Figures: devices settled per second (wall, dominated by the poll interval and the rollback
deadline, not by the server), server CPU (utime + stime of the serve process) per switched
device and per ESipa exchange, and the exchange count. Prints a Markdown table and one JSON line.
Uses the test harness of tests/sgp32 (the test PKI and the simulated eUICC/IPA).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_fleet import _baseline, machine
from benchmarks.loadgen import process_cpu_seconds
from simulators.esim.https import EsipaError, HttpsIpa
from simulators.fleet.runner import DeviceFleet
from tests.sgp32.serve_world import NEW_ICCID, OLD_CARRIER, esim_serve
from tests.sgp32.tls import client_context


async def _switch(world: Any, args: argparse.Namespace) -> dict[str, Any]:
    serve = world.serve
    api = httpx.AsyncClient(
        base_url=serve.url,
        headers={"Authorization": f"Bearer {serve.token}"},
        timeout=120,
        limits=httpx.Limits(keepalive_expiry=0.2),  # uvicorn closes idle ones at 5 s
    )
    client = httpx.AsyncClient(
        verify=client_context(world.tls_ca),
        timeout=60.0,
        limits=httpx.Limits(max_connections=args.devices, max_keepalive_connections=args.devices),
    )
    out: dict[str, Any] = {"devices": args.devices}
    try:
        async with DeviceFleet(serve.coap_uri, seed=3) as fleet:
            t0 = time.perf_counter()
            fleet.spawn(args.devices, prefix="bench-esim-")
            await fleet.wait_registered(timeout=600)
            endpoints = [fleet.device(i).endpoint for i in range(args.devices)]
            stranded = set(endpoints[: int(args.devices * args.stranded)])
            ipas, items = [], []
            for n, endpoint in enumerate(endpoints):
                served = {OLD_CARRIER} if endpoint in stranded else None
                euicc, ipa = world.device("31", n, served, args.rollback_after)
                ipas.append(HttpsIpa(ipa, client, world.esipa_url))
                items.append(world.import_item(euicc.eid, endpoint))
            out["register_seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            answer = await api.post("/v1/esim/euiccs", json={"euiccs": items})
            assert answer.status_code == 201, answer.text
            out["import_seconds"] = time.perf_counter() - t0

            pid = serve.process.pid
            cpu0, t0 = process_cpu_seconds(pid), time.perf_counter()
            answer = await api.put(
                "/v1/state", json={"endpoints": endpoints, "values": {"esim": NEW_ICCID}}
            )
            assert answer.status_code == 200, answer.text
            exchanges = 0
            stop = asyncio.Event()

            errors = 0

            async def device(ipa: HttpsIpa, offset: float) -> None:
                """One IPA polling; like a real one it retries after a failed exchange."""
                nonlocal exchanges, errors
                await asyncio.sleep(offset)
                while not stop.is_set():
                    try:
                        done = await ipa.settle()  # (not `+= await`: a lost update)
                        exchanges += done
                    except (httpx.HTTPError, EsipaError):
                        errors += 1
                    await asyncio.sleep(args.poll)

            tasks = [
                asyncio.create_task(device(ipa, args.poll * i / len(ipas)))
                for i, ipa in enumerate(ipas)
            ]
            try:
                while True:
                    await asyncio.sleep(2.0)  # the drift query costs server CPU too
                    drift = (await api.get("/v1/state/drift", params={"limit": 10_000})).json()[
                        "items"
                    ]
                    esim = [r for r in drift if r["dimension"] == "esim"]
                    failed = {r["endpoint"] for r in esim if r["status"] == "failed"}
                    if len(esim) == len(failed) and failed == stranded:
                        break
                    if int(time.perf_counter() - t0) % 20 < 2:
                        print(
                            f"{time.perf_counter() - t0:.0f} s: {len(esim)} out of line "
                            f"({len(failed)} failed), {exchanges} exchanges, {errors} errors",
                            file=sys.stderr,
                        )
                    if time.perf_counter() - t0 > args.timeout:
                        raise TimeoutError(f"{len(esim)} not settled after {args.timeout} s")
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            seconds = time.perf_counter() - t0
            cpu = process_cpu_seconds(pid) - cpu0
            out.update(
                stranded=len(stranded),
                switch_seconds=seconds,
                settled_per_second=args.devices / seconds,
                exchanges=exchanges,
                client_errors=errors,
                server_cpu_s=cpu,
                server_cpu_us_per_device=cpu / args.devices * 1e6,
                server_cpu_us_per_exchange=cpu / max(1, exchanges) * 1e6,
            )
    finally:
        await client.aclose()
        await api.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--stranded", type=float, default=0.1)
    parser.add_argument("--poll", type=float, default=5.0, help="IPA poll interval, seconds")
    parser.add_argument("--rollback-after", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds; 0: skip")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "date": datetime.now(UTC).isoformat()}
    if args.baseline > 0:
        results["baseline"] = _baseline(args.baseline)
    with tempfile.TemporaryDirectory(prefix="bench-esim-") as tmp, esim_serve(Path(tmp)) as world:
        results["switch"] = asyncio.run(_switch(world, args))
    s = results["switch"]
    base = results.get("baseline", {}).get("server_cpu_us_per_datagram")
    print("| figure | value |")
    print("|---|---|")
    print(f"| devices (stranded) | {s['devices']} ({s['stranded']}) |")
    print(f"| register + import | {s['register_seconds']:.1f} s + {s['import_seconds']:.2f} s |")
    print(f"| switch settled | {s['switch_seconds']:.1f} s ({s['settled_per_second']:.1f}/s) |")
    print(f"| ESipa exchanges (client errors) | {s['exchanges']} ({s['client_errors']}) |")
    print(f"| server CPU per device | {s['server_cpu_us_per_device']:,.0f} µs |")
    print(f"| server CPU per exchange | {s['server_cpu_us_per_exchange']:,.0f} µs |")
    if base:
        ratio = s["server_cpu_us_per_exchange"] / base
        print(f"| raw-UDP echo baseline | {base:.0f} µs per datagram (exchange = {ratio:.0f}x) |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
