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

``--campaign`` runs the issue's scenario instead: an eSIM campaign (``kind: esim``) of N
devices whose eUICCs hold only the old carrier's profile, ``--stranded`` of them in a region
the new carrier does not serve. Each wave downloads the profile (indirect download through
the eIM's ES9+ relay to a test SM-DP+ on loopback), passes its download gate, enables with
rollbackFlag, and each enable is verified by the device's registration Update over the new
profile (a :class:`tests.sgp32.serve_world.Modem` per device). The stranded region's devices
roll back by themselves, its gate fails and it is reverted; the clock stops when the campaign
is completed. Figures: wall seconds to the end of the canary's download phase and to the
end, server CPU per device and per ESipa exchange::

    .venv/bin/python -m benchmarks.bench_esim_switch --campaign --devices 500 --poll 2 \
        --rollback-after 30

(the canary takes 5 devices of each region, so half of its batch is stranded: the stranded
devices' rollback deadline must let the served ones finish first, or the canary's batch gate
fails at ``min_sample`` before the stranded region's does and the whole canary is reverted --
which is what the gates are for, but not this benchmark's subject).
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
from simulators.esim.download import Es10bDownload
from simulators.esim.https import EsipaError, HttpsIpa
from simulators.esim.smdp import PreparedProfile
from simulators.fleet.runner import DeviceFleet
from tests.sgp32.serve_world import (
    NEW_CARRIER,
    NEW_ICCID,
    OLD_CARRIER,
    EsimFiles,
    Modem,
    esim_serve,
    run_modems,
    start_serve,
    start_smdp,
    stop_serve,
)
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


async def _campaign(world: Any, files: EsimFiles, args: argparse.Namespace) -> dict[str, Any]:
    """The two-phase eSIM campaign (module docstring, ``--campaign``)."""
    serve = world.serve
    smdp, smdp_server = await start_smdp(files)
    code = smdp.prepare(PreparedProfile("CARRIER-B", NEW_ICCID, NEW_CARRIER))
    api = httpx.AsyncClient(
        base_url=serve.url,
        headers={"Authorization": f"Bearer {serve.token}"},
        timeout=120,
        limits=httpx.Limits(keepalive_expiry=0.2),
    )
    client = httpx.AsyncClient(
        verify=client_context(world.tls_ca),
        timeout=60.0,
        limits=httpx.Limits(max_connections=args.devices, max_keepalive_connections=args.devices),
    )
    stranded_n = int(args.devices * args.stranded)
    out: dict[str, Any] = {"devices": args.devices, "stranded": stranded_n}
    stop = asyncio.Event()
    try:
        async with DeviceFleet(serve.coap_uri, seed=5) as fleet:
            t0 = time.perf_counter()
            served = fleet.spawn(args.devices - stranded_n, prefix="bench-ph-n-")
            stranded = fleet.spawn(stranded_n, prefix="bench-ph-s-")
            await fleet.wait_registered(timeout=600)
            for prefix, region, count in (
                ("bench-ph-n-", "north", len(served)),
                ("bench-ph-s-", "south", len(stranded)),
            ):
                for _ in range(150):  # the inventory records follow the registrations
                    answer = await api.post(
                        "/v1/inventory/bulk",
                        json={"select": f"endpoint={prefix}*", "region": region},
                    )
                    assert answer.status_code == 200, answer.text
                    if answer.json()["count"] >= count:
                        break
                    await asyncio.sleep(0.2)
            modems, items = [], []
            for n, i in enumerate(served + stranded):
                carriers = {OLD_CARRIER} if i in stranded else None
                euicc, ipa = world.device("41", n, carriers, args.rollback_after)
                del euicc.profiles[NEW_ICCID]
                ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())
                modems.append(Modem(fleet, i, HttpsIpa(ipa, client, world.esipa_url)))
                items.append(world.import_item(euicc.eid, fleet.device(i).endpoint))
            answer = await api.post("/v1/esim/euiccs", json={"euiccs": items})
            assert answer.status_code == 201, answer.text
            out["register_seconds"] = time.perf_counter() - t0
            spec = {
                "name": "bench carrier B",
                "kind": "esim",
                "selector": "endpoint=bench-ph-*",
                "esim": {"iccid": NEW_ICCID, "activation_code": code},
                "canary": {"per_stratum": 5, "max_devices": 20, "bake": 1},
                "waves": [{"percent": 30, "bake": 1}, {"percent": 70, "bake": 1}],
                "pacing": {"rate": 1000, "max_rate": 1000, "concurrency": 10_000},
                "gates": {"min_sample": 3, "max_failure_pct": 50, "cohort_by": ["region"]},
                "deadlines": {"delivered": 300, "applied": 300, "registered": 120},
                "on_failure": "revert",
                "revert_scope": "region",
            }
            pid = serve.process.pid
            cpu0, t0 = process_cpu_seconds(pid), time.perf_counter()
            answer = await api.post("/v1/campaigns", json=spec)
            assert answer.status_code == 201, answer.text
            cid = answer.json()["id"]
            polling = asyncio.create_task(run_modems(modems, stop, every=args.poll))
            try:
                while True:
                    await asyncio.sleep(1.0)
                    found = (await api.get(f"/v1/campaigns/{cid}")).json()
                    waves = found["waves"]
                    if "canary_download_seconds" not in out and waves[0]["phase"] == "enable":
                        out["canary_download_seconds"] = time.perf_counter() - t0
                    if found["state"] == "completed":
                        break
                    if found["state"] != "running":
                        raise RuntimeError(f"campaign {found['state']}: {found['reason']}")
                    if time.perf_counter() - t0 > args.timeout:
                        raise TimeoutError(
                            f"not completed after {args.timeout} s: {found['counts']}"
                        )
            finally:
                stop.set()
                await asyncio.gather(polling, return_exceptions=True)
            seconds = time.perf_counter() - t0
            cpu = process_cpu_seconds(pid) - cpu0
            exchanges = sum(m.exchanges for m in modems)
            out.update(
                counts=found["counts"],
                reverted_cohorts=found["reverted_cohorts"],
                failed_gates=[
                    f"wave {w['index']} {v['scope']}={v['key']}: {'; '.join(v['reasons'])}"
                    for w in found["waves"]
                    for v in [*w["download_verdicts"], *w["verdicts"]]
                    if v["verdict"] == "failed"
                ],
                campaign_seconds=seconds,
                exchanges=exchanges,
                server_cpu_s=cpu,
                server_cpu_us_per_device=cpu / args.devices * 1e6,
                server_cpu_us_per_exchange=cpu / max(1, exchanges) * 1e6,
            )
    finally:
        await client.aclose()
        await api.aclose()
        await smdp_server.stop()
    return out


def _campaign_main(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-esim-phases-") as tmp:
        files = EsimFiles.make(Path(tmp))
        world = start_serve(files, env_extra={"FLEETLOOP_EIM_SMDP_CA": str(files.tls[2])})
        try:
            results["campaign"] = asyncio.run(_campaign(world, files, args))
        finally:
            stop_serve(world)
    c = results["campaign"]
    base = results.get("baseline", {}).get("server_cpu_us_per_datagram")
    print("| figure | value |")
    print("|---|---|")
    print(f"| devices (stranded) | {c['devices']} ({c['stranded']}) |")
    print(f"| outcome | {c['counts']} reverted {c['reverted_cohorts']} |")
    for why in c["failed_gates"]:
        print(f"| failed gate | {why} |")
    print(f"| canary download phase | {c.get('canary_download_seconds', 0):.1f} s |")
    print(f"| campaign (two phases, every wave) | {c['campaign_seconds']:.1f} s |")
    print(f"| ESipa exchanges | {c['exchanges']} |")
    print(f"| server CPU per device | {c['server_cpu_us_per_device']:,.0f} µs |")
    print(f"| server CPU per exchange | {c['server_cpu_us_per_exchange']:,.0f} µs |")
    if base:
        ratio = c["server_cpu_us_per_exchange"] / base
        print(f"| raw-UDP echo baseline | {base:.0f} µs per datagram (exchange = {ratio:.0f}x) |")
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--stranded", type=float, default=0.1)
    parser.add_argument("--poll", type=float, default=5.0, help="IPA poll interval, seconds")
    parser.add_argument("--rollback-after", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds; 0: skip")
    parser.add_argument(
        "--campaign", action="store_true", help="the two-phase eSIM campaign (module docstring)"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "date": datetime.now(UTC).isoformat()}
    if args.baseline > 0:
        results["baseline"] = _baseline(args.baseline)
    if args.campaign:
        _campaign_main(args, results)
        return
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
