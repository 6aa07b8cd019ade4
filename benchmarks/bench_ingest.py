"""Ingest benchmark: telemetry values persisted per second from Sends and notifications, on
SQLite and on PostgreSQL, with the server's CPU per value and per message (issue 13: "Notifications
and Send ingested and persisted: >= 20 000 values/s on SQLite and >= 10 000/s on PostgreSQL").

    .venv/bin/python -m benchmarks.bench_ingest [--store sqlite|postgresql] [--devices 1000]
        [--messages 10] [--values 10] [--window 200] [--repeat 3] [--baseline]

The server (``LwM2MServer``, default ingest budget) runs in this process on a fresh store: a
SQLite file in a temporary directory (``synchronous=FULL``, as serve runs it) or a new schema in
the PostgreSQL at ``--pg-url`` (dropped afterwards). A load process holds ``--devices`` raw-CoAP
devices (aiocoap's Message codec and nothing else, one UDP socket each, loopback, ephemeral
ports). Two phases, each timed from its first datagram to the moment every value is committed
(the telemetry table's row count, read back from the database):

* **send**: every device sends ``--messages`` CON Sends (``POST /dp``, SenML-CBOR), each with
  ``--values`` timestamped readings of /3/0/9 (a device flushing buffered readings), at most
  ``--window`` in flight; each Send is answered 2.04 only after its rows are committed;
* **notify**: the server observes /3/0 on every device; every device sends ``--messages`` CON
  notifications, each a SenML-CBOR object instance of four resources (9, 10, 20, 21), so four
  values per notification, at most ``--window`` unacknowledged in all (closed loop: the
  server's ACK frees a slot; nothing is lost to a full socket buffer).

Values per second = rows committed / phase seconds; CPU = the server process's utime + stime
from /proc (every thread: the store's writer and PostgreSQL's client side; the PostgreSQL
server's own processes are *not* counted, reported separately as ``pg_backend_cpu_s`` when
readable). Prints one JSON line per run and, with ``--repeat``, the median.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from benchmarks.bench_server import PAYLOAD, _Device
from benchmarks.loadgen import process_cpu_seconds
from lwm2m.codec import ContentFormat, encode_timestamped
from lwm2m.codec.api import TimestampedNodes
from lwm2m.model import Path, SingleResource, Value
from lwm2m.server import LwM2MServer, ServerConfig
from lwm2m.store import Store
from lwm2m.store.tables import TELEMETRY
from objects import BUILTIN_MODEL

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOTIFY_RESOURCES = (9, 10, 20, 21)  # battery level, memory free, battery status, memory total


def _instance_body(seq: int) -> bytes:
    """A SenML-CBOR /3/0 with four integer resources (a notification of the object instance)."""
    nodes = {
        Path.parse(f"/3/0/{r}"): SingleResource(r, Value.integer(seq + r)) for r in NOTIFY_RESOURCES
    }
    return encode_timestamped(
        ContentFormat.SENML_CBOR, [TimestampedNodes(None, nodes)], BUILTIN_MODEL
    )


def _send_body(values: int) -> bytes:
    """``values`` readings of /3/0/9, one second apart, ending now (buffered readings)."""
    now = time.time()
    batches = [
        TimestampedNodes(
            now - (values - i), {Path.parse("/3/0/9"): SingleResource(9, Value.integer(i % 100))}
        )
        for i in range(values)
    ]
    return encode_timestamped(ContentFormat.SENML_CBOR, batches, BUILTIN_MODEL)


class _IngestDevice(_Device):
    """A bench device whose answer to the server's GET (the Observe registration) is the /3/0
    instance in SenML-CBOR, and which sends CON notifications (acknowledged: nothing is lost
    to a full socket buffer, and the window keeps the load closed-loop)."""

    notes: dict[int, asyncio.Future[None]]

    async def notify(self, seq: int) -> None:
        assert self.transport is not None and self.observed is not None
        self.mid = (self.mid + 1) % 65536
        note = Message(code=Code.CONTENT, payload=_instance_body(seq))
        note.opt.content_format = ContentFormat.SENML_CBOR
        note.opt.observe = seq
        note.mtype, note.mid, note.token = Type.CON, self.mid, self.observed
        data = note.encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not hasattr(self, "notes"):
            self.notes = {}
        self.notes[self.mid] = future
        timeout = 2.0
        try:
            for attempt in range(5):
                self.transport.sendto(data)
                self.retransmissions += attempt > 0
                try:
                    return await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    timeout *= 2
        finally:
            self.notes.pop(note.mid, None)
        raise TimeoutError(f"device {self.index}: notification {seq} not acknowledged")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = Message.decode(data)
        if message.mtype in (Type.ACK, Type.RST) and message.code == Code.EMPTY:
            waiting = getattr(self, "notes", {}).get(message.mid)
            if waiting is not None:
                if not waiting.done():
                    waiting.set_result(None)
                return
        if message.code.is_request():
            reply = Message(code=Code.CONTENT, payload=_instance_body(0))
            reply.opt.content_format = ContentFormat.SENML_CBOR
            if message.opt.observe == 0:
                reply.opt.observe = 1
                self.observed = message.token
            reply.mtype, reply.mid, reply.token = Type.ACK, message.mid, message.token
            assert self.transport is not None
            self.transport.sendto(reply.encode(), addr)
            self.answered += 1
            return
        super().datagram_received(data, addr)


def _same(device: _Device) -> _Device:
    return device


async def _load(
    port: int, devices: int, messages: int, values: int, window: int, conn: Connection
) -> None:
    loop = asyncio.get_running_loop()
    waiters: dict[tuple[int, int], asyncio.Future[Message]] = {}
    fleet: list[_IngestDevice] = []
    for i in range(devices):
        device = _IngestDevice(i, waiters)
        await loop.create_datagram_endpoint(
            functools.partial(_same, device), remote_addr=("127.0.0.1", port)
        )
        fleet.append(device)
    gate = asyncio.Semaphore(window)

    async def register(device: _Device) -> None:
        async with gate:
            message = Message(code=Code.POST, payload=PAYLOAD)
            message.opt.uri_path = ("rd",)
            message.opt.uri_query = (f"ep=ingest-{device.index}", "lt=86400", "lwm2m=1.1")
            message.opt.content_format = 40
            answer = await device.request(message)
            assert answer.code == Code.CREATED, answer

    await asyncio.gather(*(register(d) for d in fleet))
    conn.send("registered")
    await loop.run_in_executor(None, conn.recv)  # "send"
    body = _send_body(values)

    async def send(device: _Device) -> None:
        for _ in range(messages):
            async with gate:
                message = Message(code=Code.POST, payload=body)
                message.opt.uri_path = ("dp",)
                message.opt.content_format = ContentFormat.SENML_CBOR
                answer = await device.request(message)
                assert answer.code == Code.CHANGED, answer

    start = time.perf_counter()
    await asyncio.gather(*(send(d) for d in fleet))
    conn.send(("sent", time.perf_counter() - start))
    await loop.run_in_executor(None, conn.recv)  # "notify": every device is observed

    async def notify(device: _IngestDevice) -> None:
        for seq in range(2, messages + 2):
            async with gate:
                await device.notify(seq)

    await asyncio.gather(*(notify(d) for d in fleet if d.observed is not None))
    conn.send(("notified", sum(d.retransmissions for d in fleet)))
    await loop.run_in_executor(None, conn.recv)  # "stop"


def _load_main(
    port: int, devices: int, messages: int, values: int, window: int, conn: Connection
) -> None:
    asyncio.run(_load(port, devices, messages, values, window, conn))


def _cpu() -> float:
    return process_cpu_seconds(os.getpid())


def _pg_backend_cpu(url: str) -> float | None:
    """CPU seconds of every PostgreSQL backend process this user may read (None if none)."""
    total, seen = 0.0, False
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += process_cpu_seconds(int(pid))
            seen = True
        except (OSError, ValueError):
            continue
    return total if seen else None


class _Target:
    """Where the run's store lives: a SQLite file or a fresh PostgreSQL schema."""

    def __init__(self, kind: str, pg_url: str) -> None:
        self.kind = kind
        self.data_dir = tempfile.mkdtemp(prefix="fleetloop-ingest-")
        self.schema = f"bench_{secrets.token_hex(5)}"
        self.pg_url = pg_url
        self.url: str | None = None
        if kind == "postgresql":
            with create_engine(pg_url).begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={self.schema}"})
            self.url = url.render_as_string(hide_password=False)

    def close(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.kind == "postgresql":
            engine = create_engine(self.pg_url)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            engine.dispose()


async def _rows(store: Store) -> int:
    def count(tx: Any) -> int:
        return int(tx.execute(select(func.count()).select_from(TELEMETRY)).scalar_one())

    result: int = await store.read(count)
    return result


async def _until_rows(store: Store, expected: int, timeout: float) -> tuple[int, float]:
    """Wait until ``expected`` telemetry rows are committed (or nothing moves for 2 s)."""
    deadline = time.perf_counter() + timeout
    last, still_since = -1, time.perf_counter()
    while True:
        await store.flush()
        now_rows = await _rows(store)
        now = time.perf_counter()
        if now_rows >= expected or now > deadline:
            return now_rows, now
        if now_rows != last:
            last, still_since = now_rows, now
        elif now - still_since > 2.0:
            return now_rows, now
        await asyncio.sleep(0.02)


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    target = _Target(args.store, args.pg_url)
    try:
        return await _bench_in(args, target)
    finally:
        target.close()


async def _bench_in(args: argparse.Namespace, target: _Target) -> dict[str, Any]:
    store = Store.open(target.url, target.data_dir)
    store.create_schema()
    config = ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=None)
    server = await LwM2MServer.start(config, store)
    assert server.coap_address is not None
    devices, messages, values = args.devices, args.messages, args.values
    context = mp.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(
        target=_load_main,
        args=(server.coap_address[1], devices, messages, values, args.window, child),
    )
    loop = asyncio.get_running_loop()
    process.start()
    try:
        await loop.run_in_executor(None, parent.recv)  # registered
        rows0 = await _rows(store)
        # -- Sends ---------------------------------------------------------------------------
        pg0 = _pg_backend_cpu(args.pg_url) if target.kind == "postgresql" else None
        cpu0, start = _cpu(), time.perf_counter()
        parent.send("send")
        await loop.run_in_executor(None, parent.recv)
        expected = rows0 + devices * messages * values
        rows1, end = await _until_rows(store, expected, timeout=120)
        cpu_send, send_s = _cpu() - cpu0, end - start
        pg1 = _pg_backend_cpu(args.pg_url) if target.kind == "postgresql" else None
        send_values = rows1 - rows0
        # -- notifications -------------------------------------------------------------------
        gate = asyncio.Semaphore(args.window)

        async def observe(ep: str) -> None:
            async with gate:
                result = await server.observe(ep, "/3/0")
                assert result.ok and result.observation_id, result

        await asyncio.gather(*(observe(f"ingest-{i}") for i in range(devices)))
        await store.flush()
        rows2 = await _rows(store)  # the Observe answers' values are stored too
        notes0 = server.stats["notifications"]
        cpu2, start = _cpu(), time.perf_counter()
        parent.send("notify")
        _, retransmitted = await loop.run_in_executor(None, parent.recv)
        expected = rows2 + devices * messages * len(NOTIFY_RESOURCES)
        rows3, end = await _until_rows(store, expected, timeout=120)
        cpu_notify, notify_s = _cpu() - cpu2, end - start
        pg3 = _pg_backend_cpu(args.pg_url) if target.kind == "postgresql" else None
        notified = server.stats["notifications"] - notes0
        notify_values = rows3 - rows2
        parent.send("stop")
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
        await server.stop()
        await store.aclose()
    result: dict[str, Any] = {
        "store": target.kind,
        "devices": devices,
        "send_values": send_values,
        "send_values_expected": devices * messages * values,
        "send_values_per_s": round(send_values / send_s),
        "send_messages_per_s": round(devices * messages / send_s),
        "send_cpu_us_per_value": round(cpu_send / max(send_values, 1) * 1e6, 1),
        "send_cpu_us_per_message": round(cpu_send / max(devices * messages, 1) * 1e6, 1),
        "notifications": notified,
        "notify_retransmissions": retransmitted,
        "notify_values": notify_values,
        "notify_values_expected": devices * messages * len(NOTIFY_RESOURCES),
        "notify_values_per_s": round(notify_values / notify_s),
        "notify_cpu_us_per_value": round(cpu_notify / max(notify_values, 1) * 1e6, 1),
        "notify_cpu_us_per_notification": round(cpu_notify / max(notified, 1) * 1e6, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}",
    }
    if pg0 is not None and pg1 is not None and pg3 is not None:
        result["pg_backend_cpu_s"] = [round(pg1 - pg0, 2), round(pg3 - pg1, 2)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("FLEETLOOP_TEST_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10, help="Sends and notifications each")
    parser.add_argument("--values", type=int, default=10, help="readings per Send")
    parser.add_argument("--window", type=int, default=200, help="Sends in flight")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", action="store_true", help="the raw-UDP echo before each run")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        run: dict[str, Any] = {}
        if args.baseline:
            from benchmarks.bench_fleet import _baseline

            base = _baseline(5.0)
            run["baseline_round_trips_per_s"] = round(base["round_trips_per_s"])
            run["baseline_cpu_us_per_datagram"] = round(base["server_cpu_us_per_datagram"], 1)
        run.update(asyncio.run(_bench(args)))
        print(json.dumps(run), flush=True)
        runs.append(run)
    if len(runs) > 1:
        median = {
            key: statistics.median(run[key] for run in runs)
            for key, value in runs[0].items()
            if isinstance(value, int | float)
        }
        print(json.dumps({"median_of": len(runs), "store": args.store, **median}))


if __name__ == "__main__":
    main()
