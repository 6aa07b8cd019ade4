"""Fleet benchmark: the DM server under a simulated fleet, with a raw-UDP baseline in the same
run, and what the fleet itself costs.

    .venv/bin/python -m benchmarks.bench_fleet [--devices 10000] [--dtls-devices 2000]
        [--duration 20] [--update-period 10] [--notify-rate 2000] [--phases ...]

Phases (``--phases``, default all, in this order):

* ``baseline`` -- a bare asyncio UDP echo (``benchmarks.servers`` "raw-echo") driven by the
  closed-loop UDP client of ``benchmarks.loadgen``, each in its own process: round trips/s
  and server CPU per datagram on this machine, now.
* ``storm`` -- N plain-CoAP devices register at once (no ramp); then ``notify``: the server
  observes /3/0/9 on every device and the fleet changes the value ``--notify-rate`` times a
  second for ``--duration`` s.
* ``updates`` -- a fresh fleet of N devices whose Registration Update comes every
  ``--update-period`` seconds (started over one period, so the load is steady), for
  ``--duration`` s: this is also the "10 000 devices registered and updating from one process"
  demonstration.
* ``dtls`` -- M devices register at once over DTLS-PSK (handshakes included).
* ``heap`` -- Python heap per idle plain-CoAP device of the fleet, measured with tracemalloc
  (real sockets, registered to the server); and the same on the engine alone on a fake clock
  after the CoAP exchange lifetime, when an idle device has nothing but its own state.

The DM server (``LwM2MServer`` on a fresh SQLite store, as ``fleetloop serve`` runs it) is its
own process, driven through a pipe; its figures come from itself: operation counts from its
``stats``, CPU from /proc (utime + stime, all threads, the store's writer included), RSS from
/proc. The fleet is this process. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.loadgen import process_cpu_seconds

PHASES = ("baseline", "storm", "notify", "updates", "dtls", "heap")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# -- the server process ---------------------------------------------------------------------


def _server_main(conn: Connection, data_dir: str) -> None:
    asyncio.run(_serve(conn, data_dir))


async def _serve(conn: Connection, data_dir: str) -> None:
    from lwm2m.server import LwM2MServer, ServerConfig
    from lwm2m.store import EndpointSecurity, PskCredential, Store

    store = Store.open(None, data_dir)
    store.create_schema()
    config = ServerConfig(
        coap_host="127.0.0.1",
        coap_port=0,
        coaps_host="127.0.0.1",
        coaps_port=0,
        request_timeout=60.0,
    )
    server = await LwM2MServer.start(config, store)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    busy: set[asyncio.Task[None]] = set()

    async def observe_all(path: str) -> None:
        sem = asyncio.Semaphore(64)
        ok = 0

        async def one(endpoint: str) -> None:
            nonlocal ok
            async with sem:
                result = await server.observe(endpoint, path)
                ok += result.ok

        await asyncio.gather(*(one(r.endpoint) for r in server.registrations()))
        conn.send({"observed": ok})

    async def provision(rows: list[tuple[str, str, str]]) -> None:
        def write(tx: Any) -> None:
            for endpoint, identity, key in rows:
                psk = PskCredential(identity, bytes.fromhex(key))
                store.security.set(tx, EndpointSecurity(endpoint, psk=psk), 0.0)

        await asyncio.to_thread(_in_tx, store, write)
        await store.refresh_security_cache()
        conn.send({"provisioned": len(rows)})

    lag = {"max": 0.0, "sum": 0.0, "n": 0}

    async def watch_loop() -> None:
        """Event-loop lag: how late a 10 ms sleep wakes (the loop blocked, or starved of the
        GIL by the store's threads)."""
        while not done.is_set():
            t0 = loop.time()
            await asyncio.sleep(0.01)
            late = loop.time() - t0 - 0.01
            lag["max"] = max(lag["max"], late)
            lag["sum"] += late
            lag["n"] += 1

    def stages() -> dict[str, Any]:
        """Per-stage counters: the store's group commits, the CoAP cores' duplicates, CPU per
        thread from /proc (event loop, store writer, store readers), event-loop lag."""
        batcher = store.batcher.stats
        channels = server._channels
        return {
            "batches": batcher.batches,
            "batch_items": batcher.items,
            "max_batch": batcher.max_batch_seen,
            "write_pending": store.batcher.pending,
            "coap_duplicates": sum(c.core.stats.duplicates for c in channels),
            "udp_rcvbuf_errors": udp_rcvbuf_errors(),
            "threads_cpu": thread_cpu_seconds(),
            "loop_lag_max_ms": round(lag["max"] * 1e3, 1),
            "loop_lag_mean_ms": round(lag["sum"] / max(lag["n"], 1) * 1e3, 2),
        }

    watcher = loop.create_task(watch_loop())

    def on_command() -> None:
        message = conn.recv()
        command = message["cmd"]
        if command == "ports":
            conn.send({"coap": server.coap_address[1], "coaps": server.coaps_address[1]})  # type: ignore[index]
        elif command == "stats":
            conn.send({**server.stats, "registered": len(server._by_endpoint), **stages()})
        elif command == "observe":
            task = loop.create_task(observe_all(message["path"]))
            busy.add(task)
            task.add_done_callback(busy.discard)
        elif command == "psk":
            task = loop.create_task(provision(message["rows"]))
            busy.add(task)
            task.add_done_callback(busy.discard)
        elif command == "stop":
            done.set()

    loop.add_reader(conn.fileno(), on_command)
    await done.wait()
    await watcher
    loop.remove_reader(conn.fileno())
    await server.stop()
    store.close()
    conn.send({"stopped": True})


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (utime + stime) of this process's threads, summed by thread name (the
    store's reader threads under one name)."""
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = names.get(int(tid), "other").rstrip("_0123456789")
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped because a UDP receive buffer was full (all sockets of
    the machine: read it as a difference over a phase)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


def _in_tx(store: Any, write: Any) -> None:
    with store.transaction() as tx:
        write(tx)


class ServerProcess:
    """The DM server in its own process (see the module docstring)."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-fleet-")
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_server_main, args=(child, self.tmp.name))
        self.process.start()
        self.pid = self.process.pid or 0
        ports = self.ask({"cmd": "ports"}, timeout=60)
        self.coap, self.coaps = ports["coap"], ports["coaps"]

    def ask(self, message: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        self.conn.send(message)
        if not self.conn.poll(timeout):
            raise TimeoutError(f"the server did not answer {message['cmd']}")
        answer: dict[str, Any] = self.conn.recv()
        return answer

    async def aask(self, message: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        return await asyncio.to_thread(self.ask, message, timeout)

    def sample(self) -> dict[str, Any]:
        stats = self.ask({"cmd": "stats"})
        stats["cpu"] = process_cpu_seconds(self.pid)
        stats["rss"] = rss_bytes(self.pid)
        stats["t"] = time.perf_counter()
        return stats

    async def asample(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sample)

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, OSError, EOFError):
            self.ask({"cmd": "stop"}, timeout=60)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
        self.tmp.cleanup()


# -- baseline -------------------------------------------------------------------------------


def _baseline(duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "echo.port"
        code = (
            "import pathlib; from benchmarks.servers import run; "
            f"run('raw-echo', pathlib.Path({str(port_file)!r}))"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
        try:
            for _ in range(200):
                if port_file.exists() and port_file.read_text().strip():
                    break
                time.sleep(0.05)
            port = int(port_file.read_text())
            context = mp.get_context("spawn")
            parent, child = context.Pipe()
            cpu0 = process_cpu_seconds(proc.pid)
            client = context.Process(target=_load_main, args=(child, port, duration))
            client.start()
            result: dict[str, Any] = parent.recv()
            client.join()
            cpu1 = process_cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    rate = result["completed"] / result["seconds"]
    return {
        "round_trips_per_s": rate,
        "server_cpu_us_per_datagram": (cpu1 - cpu0) / result["completed"] * 1e6,
    }


def _load_main(conn: Connection, port: int, duration: float) -> None:
    from benchmarks.loadgen import run_load, udp_socket

    result = run_load(udp_socket("127.0.0.1", port), 4, duration, 16)
    conn.send({"completed": result.completed, "seconds": result.seconds, "lost": result.lost})


# -- fleet phases ---------------------------------------------------------------------------


async def _wait_server(
    server: ServerProcess, key: str, target: int, timeout: float
) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout
    while True:
        sample = await server.asample()
        if sample[key] >= target or time.perf_counter() > deadline:
            return sample
        await asyncio.sleep(0.05)


def _fleet_cpu() -> float:
    return time.process_time()


async def phase_storm_and_notify(
    args: argparse.Namespace, results: dict[str, Any], storm: bool, notify: bool
) -> None:
    """The at-once storm on a fresh server; then a ramped one (``--storm-rate``) on another
    fresh server, whose fleet then carries the notification load."""
    if storm:
        await _storm(args, results, "storm", 0.0, notify=False)
    if notify or storm:
        await _storm(args, results, "storm_ramped", args.storm_rate, notify=notify)


async def _storm(
    args: argparse.Namespace, results: dict[str, Any], key: str, rate: float, *, notify: bool
) -> None:
    from simulators.fleet.runner import DeviceFleet
    from simulators.profiles import DeviceProfile

    n = args.devices
    server = ServerProcess()
    try:
        await asyncio.sleep(0.5)
        idle = await server.asample()
        async with DeviceFleet(f"coap://127.0.0.1:{server.coap}", seed=1, start_rate=rate) as fleet:
            cpu0 = _fleet_cpu()
            start = time.perf_counter()
            fleet.spawn(n, profile=DeviceProfile(lifetime=86_400))
            spawned = time.perf_counter()
            done = await _wait_server(server, "registrations", idle["registrations"] + n, 300)
            await fleet.wait_registered(timeout=60)
            seconds = done["t"] - start
            registered = done["registrations"] - idle["registrations"]
            results[key] = {
                "devices": n,
                "start_rate": rate or "all at once",
                "registered": registered,
                "seconds": round(seconds, 3),
                "registrations_per_s": round(registered / seconds, 1),
                "server_cpu_us_per_registration": round(
                    (done["cpu"] - idle["cpu"]) / max(registered, 1) * 1e6, 1
                ),
                "server_busy": round((done["cpu"] - idle["cpu"]) / seconds, 2),
                "server_rss_per_device_bytes": round((done["rss"] - idle["rss"]) / n),
                "retransmissions": fleet.counters.datagrams_sent - n,
                "fleet_spawn_s": round(spawned - start, 3),
                "fleet_cpu_us_per_device": round((_fleet_cpu() - cpu0) / n * 1e6, 1),
                "fleet_rss_bytes": rss_bytes(os.getpid()),
            }
            print(f"{key}: {results[key]}", file=sys.stderr)
            if notify:
                await _notify(args, results, server, fleet)
    finally:
        server.close()


async def _notify(
    args: argparse.Namespace, results: dict[str, Any], server: ServerProcess, fleet: Any
) -> None:
    n = args.devices
    answer = await server.aask({"cmd": "observe", "path": "/3/0/9"})
    observed = answer["observed"]
    await asyncio.sleep(1.0)
    before = await server.asample()
    fleet_cpu0 = _fleet_cpu()
    sent0 = fleet.counters.notifications
    rate = args.notify_rate
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    cursor = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + args.duration
    next_tick = loop.time()
    sets = 0
    while loop.time() < end:
        for _ in range(per_tick):
            # a new value on every pass over the fleet (95, the default, never comes)
            fleet.device(cursor).set("/3/0/9", (sets // n) % 90)
            sets += 1
            cursor = (cursor + 1) % n
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    sent = fleet.counters.notifications - sent0
    fleet_cpu = _fleet_cpu() - fleet_cpu0
    await asyncio.sleep(1.0)  # let the last ones arrive
    after = await server.asample()
    ingested = after["notifications"] - before["notifications"]
    seconds = after["t"] - before["t"] - 1.0
    results["notify"] = {
        "observed_devices": observed,
        "target_rate": rate,
        "sent_by_fleet": sent,
        "ingested": ingested,
        "notifications_per_s": round(ingested / seconds, 1),
        "server_cpu_us_per_notification": round(
            (after["cpu"] - before["cpu"]) / max(ingested, 1) * 1e6, 1
        ),
        "server_busy": round((after["cpu"] - before["cpu"]) / seconds, 2),
        "fleet_cpu_us_per_notification": round(fleet_cpu / max(sent, 1) * 1e6, 1),
        "fleet_busy": round(fleet_cpu / args.duration, 2),
    }
    print(f"notify: {results['notify']}", file=sys.stderr)


async def phase_updates(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from simulators.device.config import ClientConfig
    from simulators.fleet.runner import DeviceFleet
    from simulators.profiles import DeviceProfile

    n = args.devices
    period = args.update_period
    lifetime = 120
    profile = DeviceProfile(lifetime=lifetime, config=ClientConfig(update_margin=lifetime - period))
    server = ServerProcess()
    try:
        await asyncio.sleep(0.5)
        async with DeviceFleet(
            f"coap://127.0.0.1:{server.coap}", seed=2, start_rate=n / period
        ) as fleet:
            fleet.spawn(n, profile=profile)
            await fleet.wait_registered(timeout=period + 120)
            await asyncio.sleep(period)  # every device has updated once: steady state
            before = await server.asample()
            fleet_before = fleet.counters.updates
            fleet_cpu0 = _fleet_cpu()
            await asyncio.sleep(args.duration)
            after = await server.asample()
            seconds = after["t"] - before["t"]
            updates = after["updates"] - before["updates"]
            registered = fleet.counts()["registered"]
            fleet_cpu = _fleet_cpu() - fleet_cpu0
            results["updates"] = {
                "devices": n,
                "registered_at_end": registered,
                "server_registered": after["registered"],
                "update_period_s": period,
                "updates_per_s": round(updates / seconds, 1),
                "expected_per_s": round(n / period, 1),
                "server_cpu_us_per_update": round(
                    (after["cpu"] - before["cpu"]) / max(updates, 1) * 1e6, 1
                ),
                "server_busy": round((after["cpu"] - before["cpu"]) / seconds, 2),
                "server_rss_bytes": after["rss"],
                "fleet_updates": fleet.counters.updates - fleet_before,
                "update_failures": fleet.counters.update_failures,
                "fleet_busy": round(fleet_cpu / seconds, 2),
                "fleet_cpu_us_per_update": round(fleet_cpu / max(updates, 1) * 1e6, 1),
                "fleet_rss_bytes": rss_bytes(os.getpid()),
            }
            print(f"updates: {results['updates']}", file=sys.stderr)
    finally:
        server.close()


async def phase_dtls(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from simulators.fleet.runner import DeviceFleet
    from simulators.identities import generate
    from simulators.profiles import DeviceProfile

    m = args.dtls_devices
    identities = generate(m, prefix="dtls-", seed=9)
    server = ServerProcess()
    try:
        rows = [(i.endpoint, i.endpoint, i.psk_key.hex()) for i in identities if i.psk_key]
        await server.aask({"cmd": "psk", "rows": rows})
        await asyncio.sleep(0.5)
        idle = await server.asample()
        async with DeviceFleet(f"coaps://127.0.0.1:{server.coaps}", seed=9) as fleet:
            cpu0 = _fleet_cpu()
            start = time.perf_counter()
            fleet.spawn(identities=identities, profile=DeviceProfile(lifetime=86_400))
            done = await _wait_server(server, "registrations", idle["registrations"] + m, 600)
            seconds = done["t"] - start
            registered = done["registrations"] - idle["registrations"]
            server_cpu = done["cpu"] - idle["cpu"]
            fleet_cpu = _fleet_cpu() - cpu0
            results["dtls"] = {
                "devices": m,
                "registered": registered,
                "seconds": round(seconds, 3),
                "registrations_per_s": round(registered / seconds, 1),
                "server_cpu_us_per_registration": round(server_cpu / max(registered, 1) * 1e6, 1),
                # What one server core sustains at that cost, and which side was busy (the
                # fleet is one process: benchmarks/bench_dtls.py drives the server harder).
                "server_max_rate_per_s": round(max(registered, 1) / max(server_cpu, 1e-9), 1),
                "server_busy": round(server_cpu / seconds, 2),
                "fleet_busy": round(fleet_cpu / seconds, 2),
                "server_rss_per_device_bytes": round((done["rss"] - idle["rss"]) / m),
                "handshake_failures": fleet.handshake_failures,
                "fleet_cpu_us_per_device": round(fleet_cpu / m * 1e6, 1),
            }
            print(f"dtls: {results['dtls']}", file=sys.stderr)
    finally:
        server.close()


async def phase_heap(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from simulators.fleet.runner import DeviceFleet
    from simulators.profiles import DeviceProfile

    n = args.devices
    server = ServerProcess()
    try:
        async with DeviceFleet(f"coap://127.0.0.1:{server.coap}", seed=3, start_rate=2000) as fleet:
            fleet.spawn(1, prefix="warm-", profile=DeviceProfile(lifetime=86_400))
            await fleet.wait_registered()
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            fleet.spawn(n, profile=DeviceProfile(lifetime=86_400))
            await fleet.wait_registered(timeout=300)
            await asyncio.sleep(2.0)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            results["heap"] = {
                "devices": n,
                "registered_heap_per_device_bytes": round((after - before) / n),
                "note": "real sockets, right after registration: includes each device's CoAP "
                "peer state, freed after the 247 s exchange lifetime",
            }
            if args.heap_idle_wait:
                await asyncio.sleep(args.heap_idle_wait)
                gc.collect()
                idle = tracemalloc.get_traced_memory()[0]
                results["heap"]["idle_real_heap_per_device_bytes"] = round((idle - before) / n)
                results["heap"]["idle_real_after_s"] = args.heap_idle_wait
            tracemalloc.stop()
    finally:
        server.close()
    results["heap"]["idle_heap_per_device_bytes"] = round(idle_heap_fake_clock(min(n, 10_000)))
    print(f"heap: {results['heap']}", file=sys.stderr)


def idle_heap_fake_clock(n: int) -> float:
    """Heap per device of the engine alone after 1000 s idle on a fake clock (registered at 0
    with a one-day lifetime), with an in-memory registrar that is freed before measuring;
    plus a real socket object per device, as the runner holds."""
    import socket as socket_module

    from aiocoap import Message
    from aiocoap.numbers.codes import Code

    from lwm2m.coap import CoapEndpoint, RequestReceived
    from simulators.fleet.engine import FleetEngine
    from simulators.profiles import DeviceProfile

    server_address = ("10.0.0.1", 5683)

    class Net:
        def __init__(self) -> None:
            self.server: CoapEndpoint | None = CoapEndpoint(rng=random.Random(1))
            self.queue: list[tuple[int, bytes]] = []
            self.registered = 0
            self.engine = FleetEngine(self, seed=1)

        def send(self, index: int, data: bytes, address: Any) -> None:
            self.queue.append((index, data))

        def rebind(self, index: int) -> None:
            pass

        def flush(self, now: float) -> None:
            server = self.server
            assert server is not None
            while True:
                queue, self.queue = self.queue, []
                for index, data in queue:
                    server.receive_datagram(data, index, now)
                while (event := server.next_event()) is not None:
                    if isinstance(event, RequestReceived):
                        if tuple(event.message.opt.uri_path) == ("rd",):
                            self.registered += 1
                            reply = Message(code=Code.CREATED)
                            reply.opt.location_path = ("rd", f"r{self.registered:08d}")
                        else:
                            reply = Message(code=Code.CHANGED)
                        server.respond(event.request, reply, now)
                out = server.datagrams_to_send(now)
                for data, peer in out:
                    assert isinstance(peer, int)
                    self.engine.receive(peer, data, server_address, now)
                self.engine.process(now)
                if not out and not self.queue:
                    return

        def run(self, end: float) -> None:
            now = 0.0
            while True:
                assert self.server is not None
                times = [t for t in (self.engine.get_timer(), self.server.get_timer()) if t]
                if not times or min(times) > end:
                    return
                now = max(now, min(times))
                self.server.handle_timer(now)
                self.engine.handle_timer(now)
                self.flush(now)

    net = Net()
    group = net.engine.add_group(DeviceProfile(lifetime=86_400))
    names = [f"sim-{i:06d}" for i in range(n)]
    warm = net.engine.add_device(group, "warm")
    net.engine.start(warm, 0.0, server=server_address)
    net.flush(0.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sockets = []
    for name in names:
        index = net.engine.add_device(group, name)
        net.engine.start(index, 0.0, server=server_address)
        sockets.append(socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM))
    net.flush(0.0)
    net.run(1000.0)
    net.server = None
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert net.registered == n + 1
    for sock in sockets:
        sock.close()
    names_bytes = sum(sys.getsizeof(name) for name in names)  # the test's list, not the fleet's
    return (after - before - names_bytes) / n


# -- report ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    base = results.get("baseline")
    if base:
        rows.append(
            (
                "raw UDP echo (baseline)",
                f"{base['round_trips_per_s']:,.0f} round trips/s",
                f"{base['server_cpu_us_per_datagram']:.0f} µs CPU/datagram",
            )
        )
    if "storm" in results:
        s = results["storm"]
        rows.append(
            (
                f"registration storm, plain CoAP, {s['devices']:,} at once",
                f"{s['registrations_per_s']:,.0f} registrations/s ({s['seconds']} s)",
                f"{s['server_cpu_us_per_registration']:.0f} µs CPU/registration, "
                f"{s['server_rss_per_device_bytes'] / 1024:.1f} KiB RSS/device, "
                f"{s['retransmissions']:,} retransmissions",
            )
        )
    if "storm_ramped" in results:
        s = results["storm_ramped"]
        rows.append(
            (
                f"registrations, plain CoAP, {s['devices']:,} at {s['start_rate']:,.0f}/s",
                f"{s['registrations_per_s']:,.0f} registrations/s ({s['seconds']} s)",
                f"{s['server_cpu_us_per_registration']:.0f} µs CPU/registration, server busy "
                f"{s['server_busy']:.2f}, {s['retransmissions']:,} retransmissions",
            )
        )
    if "dtls" in results:
        d = results["dtls"]
        rows.append(
            (
                f"registration storm, DTLS-PSK, {d['devices']:,} at once",
                f"{d['registrations_per_s']:,.0f} registrations/s ({d['seconds']} s)",
                f"{d['server_cpu_us_per_registration']:.0f} µs CPU/registration (handshake "
                f"included), {d['server_rss_per_device_bytes'] / 1024:.1f} KiB RSS/device",
            )
        )
    if "updates" in results:
        u = results["updates"]
        rows.append(
            (
                f"steady updates, {u['devices']:,} devices every {u['update_period_s']:g} s",
                f"{u['updates_per_s']:,.0f} updates/s (of {u['expected_per_s']:,.0f})",
                f"{u['server_cpu_us_per_update']:.0f} µs CPU/update, server busy "
                f"{u['server_busy']:.2f}, fleet busy {u['fleet_busy']:.2f}",
            )
        )
    if "notify" in results:
        m = results["notify"]
        rows.append(
            (
                f"notifications, {m['observed_devices']:,} observed devices",
                f"{m['notifications_per_s']:,.0f} notifications/s ingested "
                f"(target {m['target_rate']:,})",
                f"{m['server_cpu_us_per_notification']:.0f} µs CPU/notification, "
                f"server busy {m['server_busy']:.2f}",
            )
        )
    lines = ["| load | server throughput | server cost |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


async def run_phases(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    phases = set(args.phases)
    if "baseline" in phases:
        results["baseline"] = await asyncio.to_thread(_baseline, args.baseline_duration)
        print(f"baseline: {results['baseline']}", file=sys.stderr)
    if "storm" in phases or "notify" in phases:
        await phase_storm_and_notify(
            args, results, storm="storm" in phases, notify="notify" in phases
        )
    if "updates" in phases:
        await phase_updates(args, results)
    if "dtls" in phases:
        await phase_dtls(args, results)
    if "heap" in phases:
        await phase_heap(args, results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--dtls-devices", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--baseline-duration", type=float, default=5.0)
    parser.add_argument("--update-period", type=float, default=10.0)
    parser.add_argument("--notify-rate", type=float, default=8000.0)
    parser.add_argument("--storm-rate", type=float, default=1000.0)
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument(
        "--heap-idle-wait",
        type=float,
        default=0.0,
        help="heap phase: also measure after this many idle seconds (> 247 frees peer state)",
    )
    args = parser.parse_args(argv)
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = args.devices + args.dtls_devices + 4096
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    except (ImportError, ValueError, OSError):
        pass
    results = asyncio.run(run_phases(args))
    results["machine"] = machine()
    results["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    results["command"] = "python -m benchmarks.bench_fleet " + " ".join(argv or sys.argv[1:])
    print(table(results))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
