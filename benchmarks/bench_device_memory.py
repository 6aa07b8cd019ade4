"""Python heap per idle simulated device, measured with tracemalloc (no sockets, fake clock).

Two layouts, each with N devices of the default model that register with an in-memory server,
then sit idle past the CoAP exchange lifetime (so deduplication records and peer state that an
idle device no longer needs have expired):

* ``own endpoint`` — :class:`DeviceCore`: object store + LwM2M client + a CoapEndpoint each
  (what the runner uses today, one socket per device);
* ``shared endpoint`` — object store + LwM2M client per device, one CoapEndpoint for all of
  them with events routed by peer (what a large fleet can do, since the client does not own
  its endpoint).

Heap per device = (traced heap after - before) / N, the server's endpoint freed before the
second snapshot. Also reports the CPU time to register the N devices (sans-IO, both sides).

    .venv/bin/python -m benchmarks.bench_device_memory [--devices 1000]
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import time
import tracemalloc
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import (
    CoapEndpoint,
    Event,
    ObserverRemoved,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from simulators.device import ClientConfig, DeviceCore, LwM2MClient, ObjectStore
from simulators.device.defaults import default_template

LIFETIME = 86_400
IDLE = 1000.0
"""Measured at t = 1000 s: registered at 0 with a one-day lifetime (first Update due at
77 760 s), more than the 247 s exchange lifetime ago, so only what an idle device keeps is
left."""


@dataclass
class Server:
    endpoint: CoapEndpoint
    registrations: int = 0

    def drain(self, now: float) -> None:
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, RequestReceived):
                path = tuple(event.message.opt.uri_path)
                if path == ("rd",):
                    self.registrations += 1
                    reply = Message(code=Code.CREATED)
                    reply.opt.location_path = ("rd", f"r{self.registrations}")
                else:
                    reply = Message(code=Code.CHANGED)
                self.endpoint.respond(event.request, reply, now)


def _peer_of(event: Event) -> Hashable:
    if isinstance(event, RequestReceived):
        return event.peer
    if isinstance(event, ResponseReceived | RequestFailed):
        return event.request.peer
    if isinstance(event, ObserverRemoved):
        return event.observation.peer
    return event.request.peer  # NotificationReceived, ObservationCancelled


def run_own(n: int, rng: random.Random) -> tuple[list[object], Server, float]:
    """N DeviceCores, each with its own endpoint; the server sees peer ("dev", i)."""
    server = Server(CoapEndpoint(rng=rng))
    template, config = default_template(lifetime=LIFETIME), ClientConfig()
    devices = [
        DeviceCore(template, f"sim-{i:06d}", "server", config=config, rng=rng) for i in range(n)
    ]
    started = time.process_time()
    now = 0.0
    for device in devices:
        device.start(now)
    _pump_own(devices, server, now)
    cpu = time.process_time() - started
    for now in (300.0, IDLE):
        for device in devices:
            if (timer := device.get_timer()) is not None and timer <= now:
                device.handle_timer(now)
        if (timer := server.endpoint.get_timer()) is not None and timer <= now:
            server.endpoint.handle_timer(now)
        _pump_own(devices, server, now)
    return list(devices), server, cpu


def _pump_own(devices: list[DeviceCore], server: Server, now: float) -> None:
    moved = True
    while moved:
        moved = False
        for i, device in enumerate(devices):
            for data, _ in device.datagrams_to_send(now):
                server.endpoint.receive_datagram(data, ("dev", i), now)
                moved = True
        server.drain(now)
        for data, peer in server.endpoint.datagrams_to_send(now):
            assert isinstance(peer, tuple)
            devices[peer[1]].receive_datagram(data, "server", now)
            moved = True
        for device in devices:
            while device.next_event() is not None:
                pass


def run_shared(n: int, rng: random.Random) -> tuple[list[object], Server, float]:
    """N clients on one shared endpoint; client i's server is peer ("srv", i)."""
    server = Server(CoapEndpoint(rng=rng))
    shared = CoapEndpoint(rng=rng)
    template, config = default_template(lifetime=LIFETIME), ClientConfig()
    clients = [
        LwM2MClient(
            ObjectStore(template, f"sim-{i:06d}"), shared, ("srv", i), config=config, rng=rng
        )
        for i in range(n)
    ]

    def pump(now: float) -> None:
        moved = True
        while moved:
            moved = False
            for data, peer in shared.datagrams_to_send(now):
                assert isinstance(peer, tuple)
                server.endpoint.receive_datagram(data, ("dev", peer[1]), now)
                moved = True
            server.drain(now)
            for data, peer in server.endpoint.datagrams_to_send(now):
                assert isinstance(peer, tuple)
                shared.receive_datagram(data, ("srv", peer[1]), now)
                moved = True
            while (event := shared.next_event()) is not None:
                target = _peer_of(event)
                assert isinstance(target, tuple)
                clients[target[1]].handle_coap_event(event, now)
            for client in clients:
                while client.next_event() is not None:
                    pass

    started = time.process_time()
    for client in clients:
        client.start(0.0)
    pump(0.0)
    cpu = time.process_time() - started
    for now in (300.0, IDLE):
        for client in clients:
            if (timer := client.get_timer()) is not None and timer <= now:
                client.handle_timer(now)
        for endpoint in (shared, server.endpoint):
            if (timer := endpoint.get_timer()) is not None and timer <= now:
                endpoint.handle_timer(now)
        pump(now)
    assert all(c.registered for c in clients)
    return list(clients), server, cpu


Run = Callable[[int, random.Random], tuple[list[object], Server, float]]


def measure(label: str, n: int, run: Run) -> None:
    default_template(lifetime=LIFETIME)  # built (and cached) before the baseline
    _, _, cpu = run(n, random.Random(1))  # CPU without tracemalloc's overhead
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    devices, server, _ = run(n, random.Random(1))
    registrations = server.registrations
    del server
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(devices) == n and registrations == n
    print(
        f"{label:16} {n:6d} devices  heap/device {grown / n:7.0f} B"
        f"  ({grown / n / 1024:4.2f} KiB)  register CPU {cpu / n * 1e6:6.0f} µs/device"
    )
    top = after.compare_to(before, "lineno")[:6]
    for stat in top:
        frame = stat.traceback[0]
        where = f"{frame.filename.split('/')[-1]}:{frame.lineno}"
        print(f"    {stat.size_diff / n:7.0f} B/device  {where}")
    del devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()} {platform.processor()}")
    measure("own endpoint", args.devices, run_own)
    measure("shared endpoint", args.devices, run_shared)


if __name__ == "__main__":
    main()
