"""Memory benchmark: the DM server's RSS with a six-figure fleet registered (and observed), and
the Update latency at a steady Update rate on top of it.

    .venv/bin/python -m benchmarks.bench_memory [--devices 100000] [--window 400]
        [--observe] [--update-rate 5000] [--update-seconds 10]

Three processes, loopback only, every socket on an ephemeral port:

* the DM server (``LwM2MServer`` on a fresh SQLite store, as ``benchmarks.bench_fleet`` runs
  it); its RSS comes from ``/proc/<pid>/status`` (VmRSS), its CPU from ``/proc/<pid>/stat``;
* lightweight registrars: N raw-CoAP "devices", one UDP socket each (spread over
  127.0.0.2-17 so that N may exceed one address's ephemeral ports), ``--per-process`` of them
  per process (the open-file limit bounds one process), speaking aiocoap's Message codec and
  nothing else. They register them with at most ``--window`` Registers in flight in all,
  answer every GET (with the Observe option when asked to observe), and then send empty
  Updates open-loop at ``--update-rate`` in all for ``--update-seconds``, timing each from
  its send to the 2.04;
* this process, which drives them and prints one JSON line.

The figure is RSS after registration minus RSS of the idle server (per device and in all),
and the absolute RSS against the issue's 1.5 GB target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from benchmarks.bench_fleet import ServerProcess
from benchmarks.bench_server import PAYLOAD, _Device
from benchmarks.loadgen import process_cpu_seconds

HOSTS = 16  # loopback addresses the devices are spread over


class _Answering(_Device):
    """A bench device that also answers an Observe registration with the Observe option."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = Message.decode(data)
        if message.code.is_request():
            reply = Message(code=Code.CONTENT, payload=b"42")
            reply.opt.content_format = 0
            if message.opt.observe == 0:
                reply.opt.observe = 1
            reply.mtype, reply.mid, reply.token = Type.ACK, message.mid, message.token
            assert self.transport is not None
            self.transport.sendto(reply.encode(), addr)
            self.answered += 1
            return
        super().datagram_received(data, addr)


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError) as exc:
        raise SystemExit(
            f"the registrar needs {wanted} open files (one socket per device) and the limit "
            f"is {soft}/{hard}: {exc}; run with fewer --devices or raise `ulimit -n`"
        ) from None


async def _registrar(
    port: int, first: int, devices: int, window: int, conn: Connection
) -> None:  # pragma: no cover - a benchmark process
    loop = asyncio.get_running_loop()
    waiters: dict[tuple[int, int], asyncio.Future[Message]] = {}
    fleet: list[_Answering] = []
    for i in range(first, first + devices):
        device = _Answering(i, waiters)
        await loop.create_datagram_endpoint(
            lambda d=device: d,  # type: ignore[misc]
            local_addr=(f"127.0.0.{2 + i % HOSTS}", 0),
            remote_addr=("127.0.0.1", port),
        )
        fleet.append(device)
    gate = asyncio.Semaphore(window)
    locations: dict[int, tuple[str, ...]] = {}
    failures = 0

    async def register(device: _Answering) -> None:
        nonlocal failures
        async with gate:
            message = Message(code=Code.POST, payload=PAYLOAD)
            message.opt.uri_path = ("rd",)
            message.opt.uri_query = (f"ep=mem-{device.index}", "lt=86400", "lwm2m=1.1")
            message.opt.content_format = 40
            try:
                answer = await device.request(message)
            except TimeoutError:
                failures += 1
                return
            if answer.code != Code.CREATED:
                failures += 1
                return
            locations[device.index] = tuple(answer.opt.location_path)

    start = time.perf_counter()
    await asyncio.gather(*(register(d) for d in fleet))
    conn.send(
        {
            "seconds": time.perf_counter() - start,
            "retransmissions": sum(d.retransmissions for d in fleet),
            "failures": failures,
        }
    )
    command = await loop.run_in_executor(None, conn.recv)
    rate, seconds = command["rate"], command["seconds"]
    latencies: list[float] = []
    lost = 0
    tasks: set[asyncio.Task[None]] = set()

    async def update(device: _Answering) -> None:
        nonlocal lost
        message = Message(code=Code.POST)
        message.opt.uri_path = locations[device.index]
        sent = time.perf_counter()
        try:
            answer = await device.request(message)
        except TimeoutError:
            lost += 1
            return
        if answer.code == Code.CHANGED:
            latencies.append(time.perf_counter() - sent)
        else:
            lost += 1

    if rate > 0 and seconds > 0:
        nxt = 0
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds:
            due = rate * elapsed  # open loop: what should have gone out by now
            while nxt < due:
                device = fleet[nxt % devices]
                nxt += 1
                if device.index not in locations:
                    continue
                task = loop.create_task(update(device))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.005)
        if tasks:
            await asyncio.wait(tasks, timeout=120)
        sent_s = time.perf_counter() - began
    else:
        sent_s = 0.0
    conn.send({"latencies": latencies, "lost": lost, "seconds": sent_s})
    await loop.run_in_executor(None, conn.recv)


def _registrar_main(port: int, first: int, devices: int, window: int, conn: Connection) -> None:
    _raise_file_limit(devices + 200)
    asyncio.run(_registrar(port, first, devices, window, conn))


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 1)


def _wait(conn: Connection, timeout: float, what: str) -> dict[str, Any]:
    if not conn.poll(timeout):
        raise TimeoutError(f"the registrar did not finish {what} within {timeout:g} s")
    answer: dict[str, Any] = conn.recv()
    return answer


def run(
    devices: int, window: int, observe: bool, rate: float, seconds: float, per_process: int
) -> dict[str, Any]:
    server = ServerProcess()
    registrars: list[Any] = []
    pipes: list[Connection] = []
    try:
        time.sleep(1.0)  # let the server settle before the idle figure
        idle = server.sample()
        context = mp.get_context("spawn")
        count = -(-devices // per_process)
        for k in range(count):
            first = k * per_process
            parent, child = context.Pipe()
            process = context.Process(
                target=_registrar_main,
                args=(
                    server.coap,
                    first,
                    min(per_process, devices - first),
                    max(1, window // count),
                    child,
                ),
            )
            process.start()
            registrars.append(process)
            pipes.append(parent)
        parts = [_wait(parent, 120 + devices / 100, "registering") for parent in pipes]
        register_s = max(p["seconds"] for p in parts)  # the registrars ran side by side
        after_register = server.sample()
        result: dict[str, Any] = {
            "devices": devices,
            "registrar_processes": count,
            "registered": after_register["registered"],
            "register_failures": sum(p["failures"] for p in parts),
            "register_retransmissions": sum(p["retransmissions"] for p in parts),
            "register_per_s": round(devices / register_s),
            "rss_idle_mib": round(idle["rss"] / 2**20, 1),
            "rss_registered_mib": round(after_register["rss"] / 2**20, 1),
            "rss_per_device_bytes": round(
                (after_register["rss"] - idle["rss"]) / max(after_register["registered"], 1)
            ),
        }
        if observe:
            started = time.perf_counter()
            observed = server.ask({"cmd": "observe", "path": "/3/0/9"}, timeout=600)
            after_observe = server.sample()
            result.update(
                {
                    "observed": observed["observed"],
                    "observe_s": round(time.perf_counter() - started, 1),
                    "rss_observed_mib": round(after_observe["rss"] / 2**20, 1),
                    "rss_per_observation_bytes": round(
                        (after_observe["rss"] - after_register["rss"])
                        / max(observed["observed"], 1)
                    ),
                }
            )
        before = server.sample()
        fleet_cpu0 = sum(process_cpu_seconds(p.pid) for p in registrars)
        for parent in pipes:
            parent.send({"rate": rate / count, "seconds": seconds})
        updated = [_wait(parent, seconds + 180, "the Updates") for parent in pipes]
        after = server.sample()
        fleet_cpu = sum(process_cpu_seconds(p.pid) for p in registrars) - fleet_cpu0
        wall = after["t"] - before["t"]
        # CPU seconds per wall second over the Update phase: a side near 1.0 limited it.
        result["update_server_busy"] = round((after["cpu"] - before["cpu"]) / wall, 2)
        result["update_registrars_busy"] = round(fleet_cpu / wall, 2)
        result["load_average"] = os.getloadavg()[0]
        latencies = sorted(x for part in updated for x in part["latencies"])
        longest = max(part["seconds"] for part in updated)
        result.update(
            {
                "updates": len(latencies),
                "updates_lost": sum(part["lost"] for part in updated),
                "updates_per_s": round(len(latencies) / longest) if longest else 0,
                "update_p50_ms": _percentile(latencies, 0.50),
                "update_p99_ms": _percentile(latencies, 0.99),
                "update_max_ms": round(latencies[-1] * 1e3, 1) if latencies else None,
            }
        )
        if latencies:
            result["update_cpu_us"] = round(
                (after["cpu"] - before["cpu"]) / len(latencies) * 1e6, 1
            )
        result["rss_end_mib"] = round(after["rss"] / 2**20, 1)
        result["machine"] = (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}"
        )
        for parent in pipes:
            parent.send("stop")
        return result
    finally:
        for process in registrars:
            process.join(30)
            if process.is_alive():
                process.kill()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=400, help="Registers in flight")
    parser.add_argument("--observe", action="store_true", help="observe /3/0/9 on every device")
    parser.add_argument("--update-rate", type=float, default=5000.0, help="Updates per second")
    parser.add_argument("--update-seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--per-process",
        type=int,
        default=16_000,
        help="devices per registrar process (one socket each; the file limit bounds it)",
    )
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        run_result = run(
            args.devices,
            args.window,
            args.observe,
            args.update_rate,
            args.update_seconds,
            args.per_process,
        )
        print(json.dumps(run_result), flush=True)
        runs.append(run_result)
    if len(runs) > 1:
        median = {
            key: statistics.median(r[key] for r in runs)
            for key, value in runs[0].items()
            if isinstance(value, int | float)
        }
        print(json.dumps({"median_of": len(runs), **median}))


if __name__ == "__main__":
    main()
