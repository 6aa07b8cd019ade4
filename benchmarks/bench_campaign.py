"""Campaign benchmark: a config campaign (write + apply + verified read-back, through desired
state) across N simulated devices, against the real ``fleetloop serve``, with the raw-UDP
baseline in the same run.

    .venv/bin/python -m benchmarks.bench_campaign [--devices 10000] [--baseline 5]
        [--canary 20] [--profile DIR]

Phases:

* ``baseline`` -- the bare asyncio UDP echo of ``benchmarks.bench_fleet`` (its own process):
  round trips/s and server CPU per datagram on this machine, now.
* ``serve`` -- ``fleetloop serve`` (SQLite, ephemeral ports, reconciler unpaced) as a
  subprocess; N plain-CoAP devices with ideal links (this process) register and the state
  observer sets up its observation on each.
* ``campaign`` -- one campaign (``POST /v1/campaigns``) sets a new config bundle on
  all N: a canary of ``--canary`` devices, then one wave of the rest, no bake, pacing and
  concurrency unbounded; the clock stops when the campaign is ``completed``: every device
  wrote Config Version + Bundle + Digest, executed Apply and was verified on the campaign's
  generation, the engine saw it through the state layer's status hook and judged the gates.
  Figures: device-changes verified per second, server CPU (utime + stime of the serve
  process from /proc, every thread) per device-change, and its ratio to the baseline's CPU
  per datagram.

``--staged`` runs the issue's staged rollout instead (the end-to-end test's scenario at 1 000
devices): four regions, one of whose devices refuse the new bundle; every device first runs
the old bundle (its last-known-good); the campaign (canary, 10 %, 40 %, 50 %, revert at region
scope) must end ``completed`` with that region's gate failed, its canary devices reverted and
its other devices skipped, the other regions on the new bundle. Figures: seconds to the end,
and the outcome counts.

``--profile DIR`` runs ``py-spy record`` (raw collapsed stacks, ``DIR/campaign.txt``) on the
serve process for exactly the campaign phase. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_fleet import _baseline, machine
from benchmarks.bench_reconciler import Serve, _profiler, _until
from simulators.fleet.runner import DeviceFleet
from simulators.profiles import Behaviour, DeviceProfile


async def _campaign(
    api: httpx.AsyncClient, serve: Serve, devices: int, canary: int, profile: Path | None
) -> dict[str, Any]:
    spec = {
        "name": "bench config",
        "selector": "endpoint=cb-*",
        "change": [{"config": "bench-v2"}],
        "canary": {"per_stratum": canary, "max_devices": canary, "bake": 0},
        "waves": [{"percent": 100, "bake": 0}],
        "pacing": {"rate": 1_000_000, "max_rate": 1_000_000, "concurrency": 1_000_000},
        "gates": {"min_sample": 5},
        "deadlines": {"delivered": 600, "applied": 600, "verified": 600},
    }
    profiler = _profiler(serve, profile)
    cpu0, t0, fleet0 = serve.cpu(), time.perf_counter(), time.process_time()
    answer = await api.post("/v1/campaigns", json=spec)
    answer.raise_for_status()
    cid = answer.json()["id"]
    created = time.perf_counter() - t0
    status: dict[str, Any] = {}
    canary_done = 0.0

    async def completed() -> bool:
        nonlocal canary_done
        status.update((await api.get(f"/v1/campaigns/{cid}")).json())
        if not canary_done and status["wave"] >= 1:
            canary_done = time.perf_counter() - t0
        return bool(status["state"] in ("completed", "halted", "inconclusive"))

    await _until(completed, 1200, "the campaign completed")  # polled every 0.2 s
    seconds = time.perf_counter() - t0
    cpu = serve.cpu() - cpu0
    fleet_cpu = time.process_time() - fleet0
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
    if status["state"] != "completed" or status["counts"] != {"succeeded": devices}:
        raise RuntimeError(f"campaign ended {status['state']}: {status['counts']}")
    return {
        "devices": devices,
        "seconds": seconds,
        "create_s": created,
        "canary_s": canary_done,
        "changes_per_s": devices / seconds,
        "server_cpu_us_per_change": cpu / devices * 1e6,
        "server_cpu_s": cpu,
        "fleet_cpu_s": fleet_cpu,  # this process: the simulated devices (and the HTTP polls)
    }


REGIONS = ("eu", "us", "ap", "sa")
REFUSING = "ap"


async def _staged(api: httpx.AsyncClient, fleet: DeviceFleet, devices: int) -> dict[str, Any]:
    """The staged rollout with one refusing region (module docstring)."""
    for region in REGIONS:
        moved = await api.post(
            "/v1/inventory/bulk", json={"select": f"endpoint=cs-{region}-*", "region": region}
        )
        moved.raise_for_status()
    for name, version in (("stage-v1", 1), ("stage-v2", 2)):
        (await api.put(f"/v1/config-bundles/{name}", json={"v": version})).raise_for_status()
    base = await api.put(
        "/v1/state", json={"select": "endpoint=cs-*", "values": {"config": "stage-v1"}}
    )
    base.raise_for_status()

    async def in_line() -> bool:
        drift = await api.get("/v1/state/drift", params={"select": "endpoint=cs-*", "limit": 1})
        return not drift.json()["items"]

    await _until(in_line, 600, "every device on the last-known-good bundle")
    spec = {
        "name": "staged", "selector": "endpoint=cs-*", "change": [{"config": "stage-v2"}],
        "canary": {"per_stratum": 5, "bake": 1},
        "waves": [{"percent": p, "bake": 1} for p in (10, 40, 50)],
        "pacing": {"rate": 1000, "max_rate": 1000, "concurrency": 100_000},
        "gates": {"min_sample": 3, "cohort_by": ["region"]},
        "revert_scope": "region",
    }  # fmt: skip
    t0 = time.perf_counter()
    answer = await api.post("/v1/campaigns", json=spec)
    answer.raise_for_status()
    cid = answer.json()["id"]
    status: dict[str, Any] = {}

    async def ended() -> bool:
        status.update((await api.get(f"/v1/campaigns/{cid}")).json())
        return bool(status["state"] not in ("running", "paused"))

    await _until(ended, 600, "the staged campaign ended")
    seconds = time.perf_counter() - t0
    per_region = devices // len(REGIONS)
    expected = {
        "succeeded": per_region * (len(REGIONS) - 1),
        "reverted": 5,
        "skipped": per_region - 5,
    }
    reverted = [(c["scope"], c["key"]) for c in status["reverted_cohorts"]]
    if (
        status["state"] != "completed"
        or status["counts"] != expected
        or reverted != [("region", REFUSING)]
    ):
        raise RuntimeError(
            f"staged campaign ended {status['state']} ({status['reason']}): "
            f"{status['counts']}, reverted {reverted}; expected {expected}"
        )
    return {"devices": devices, "seconds": seconds, "counts": status["counts"]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if args.baseline > 0:
        results["baseline"] = await asyncio.to_thread(_baseline, args.baseline)
    serve = Serve(100_000.0, args.concurrency)
    api = httpx.AsyncClient(
        base_url=serve.info["url"],
        headers={"Authorization": f"Bearer {serve.info['token']}"},
        timeout=300,
    )
    try:
        async with DeviceFleet(serve.coap_uri, seed=1, start_rate=args.start_rate) as fleet:
            if args.staged:
                refusing = Behaviour(config_reject_versions=frozenset({"stage-v2"}))
                for region in REGIONS:
                    profile = DeviceProfile(
                        lifetime=3600, behaviour=refusing if region == REFUSING else Behaviour()
                    )
                    fleet.spawn(
                        args.devices // len(REGIONS), prefix=f"cs-{region}-", profile=profile
                    )
                await fleet.wait_registered(timeout=600)
                results["staged"] = await _staged(
                    api, fleet, args.devices // len(REGIONS) * len(REGIONS)
                )
                return results
            fleet.spawn(args.devices, prefix="cb-", profile=DeviceProfile(lifetime=3600))
            await fleet.wait_registered(timeout=600)

            async def observed() -> bool:
                found = (await api.get("/v1/observations")).json()
                return bool(len(found) >= args.devices)

            await _until(observed, 600, "an observation on every device")
            bundle = await api.put("/v1/config-bundles/bench-v2", json={"interval": 60, "v": 2})
            bundle.raise_for_status()
            out = Path(args.profile) if args.profile else None
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
            results["campaign"] = await _campaign(
                api, serve, args.devices, args.canary, out and out / "campaign.txt"
            )
    finally:
        await api.aclose()
        serve.close()
    base = results.get("baseline")
    if base and "campaign" in results:
        results["campaign"]["cpu_ratio_to_baseline"] = (
            results["campaign"]["server_cpu_us_per_change"] / base["server_cpu_us_per_datagram"]
        )
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
    staged = results.get("staged")
    if staged:
        lines.append(
            f"| staged rollout, one region refuses (completed: {staged['counts']}) "
            f"| {staged['devices']} | {staged['seconds']:.2f} | - | - |"
        )
    r = results.get("campaign")
    if r:
        ratio = r.get("cpu_ratio_to_baseline")
        lines.append(
            f"| config campaign (write, apply, verify; canary + 1 wave) | {r['devices']} "
            f"| {r['seconds']:.2f} | {r['changes_per_s']:,.0f} "
            f"| {r['server_cpu_us_per_change']:,.0f} µs"
            + (f" ({ratio:.0f}x baseline)" if ratio else "")
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--canary", type=int, default=20, help="canary devices")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="reconciler workers (serve's default 256)"
    )
    parser.add_argument("--start-rate", type=float, default=500.0, help="device starts per s")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds (0: skip)")
    parser.add_argument("--profile", default=None, help="py-spy the campaign phase into DIR")
    parser.add_argument(
        "--staged", action="store_true", help="the staged rollout with one refusing region"
    )
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    results["machine"] = machine()
    results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(table(results))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
