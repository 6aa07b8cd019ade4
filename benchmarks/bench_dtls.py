"""DTLS-PSK handshake + Register storm against the real DM server, from several load processes.

    .venv/bin/python -m benchmarks.bench_dtls [--devices 6000] [--procs 3] [--inflight 48]
        [--repeat 3] [--time-limit 60] [--baseline-seconds 3]

Issue 13 asks for >= 2 000 full DTLS-PSK handshakes + Register per second from a fresh fleet.
One load process cannot drive that: a python-mbedtls client spends more CPU on its half of a
handshake than the server does on its half (docs/BENCHMARKS.md), and waits three round trips
per device. So this benchmark splits the fleet over ``--procs`` processes, each running a
plain ``selectors`` loop (no asyncio) over up to ``--inflight`` devices at once; every device
is one UDP socket of its own on its own loopback address (``127.P.x.y``, ephemeral port), so
the server's per-source handshake cap never applies and every device is a new peer. A device
handshakes (cookie exchange included), sends one CON Register (``/rd?ep=...``), and is done
when the server's 2.01 comes back; a lost flight or Register is retransmitted (Mbed TLS's own
handshake timer; the Register after 2 s).

The server is ``LwM2MServer`` on a fresh SQLite store as ``fleetloop serve`` runs it
(``benchmarks.bench_fleet.ServerProcess``: its DTLS sessions are persisted, the Register is
committed before the 2.01), every device's PSK provisioned before the storm. Reported, per
run: the achieved rate (devices whose 2.01 arrived / wall seconds); the server's CPU per
handshake + Register (utime + stime from /proc over the storm, all threads) and the rate one
server core could sustain at that cost (1 / CPU per op); the busy fractions (CPU seconds per
wall second) of the server and of the load processes together -- with 2 cores, a side near
its core count bounds the rate; and the same-run raw-UDP echo baseline (server CPU per
datagram) so the figures can be read as ratios on a noisy machine.

Bounded: at most ``--devices`` handshakes per run, and a run stops after ``--time-limit``
seconds whatever is left (reported as ``unfinished``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
CIPHERS = ("TLS-PSK-WITH-AES-128-CCM-8",)
REGISTER_TIMEOUT = 2.0
#: How often the load loop looks at handshake/Register timers.
TICK = 0.05


def endpoint(run: int, proc: int, index: int) -> str:
    """Endpoint name = PSK identity of one benchmark device."""
    return f"hs{run}-{proc}-{index}"


def local_address(proc: int, index: int) -> str:
    """Every device its own loopback address: 127.(10+proc).hi.lo, lo in 1..250."""
    return f"127.{10 + proc}.{index // 250}.{index % 250 + 1}"


def register_request(name: str, mid: int) -> bytes:
    """CON POST /rd?ep=NAME&lt=86400&lwm2m=1.1&b=U with a small object list (encoded once per
    device before the storm, so the client's timed work is DTLS only)."""
    from aiocoap import Message
    from aiocoap.numbers.codes import Code
    from aiocoap.numbers.contentformat import ContentFormat
    from aiocoap.numbers.types import Type

    msg = Message(
        mtype=Type.CON,
        code=Code.POST,
        mid=mid,
        token=mid.to_bytes(2, "big") + b"rg",
        payload=b"</1/0>,</3/0>,</4/0>",
        uri_path=("rd",),
        uri_query=(f"ep={name}", "lt=86400", "lwm2m=1.1", "b=U"),
        content_format=ContentFormat.LINKFORMAT,
    )
    encoded: bytes = msg.encode()
    return encoded


# -- the load processes -----------------------------------------------------------------------


class _Device:
    __slots__ = ("buf", "deadline", "done", "mid", "registered", "request", "sock", "stage")

    def __init__(self, sock: socket.socket, buf: Any, request: bytes, mid: int) -> None:
        self.sock = sock
        self.buf = buf
        self.request = request
        self.mid = mid
        self.stage = 0  # 0 handshaking, 1 registering
        self.deadline = 0.0
        self.done = False
        self.registered = False


def _load_main(
    conn: Connection,
    run: int,
    proc: int,
    count: int,
    port: int,
    inflight: int,
    limit: float,
    records: int = 0,
    prebuild: bool = False,
) -> None:
    """One load process: ``count`` devices, at most ``inflight`` at once; with ``records``,
    the registered devices keep their sessions and, when told, each sends that many more
    CON requests, one at a time (``_records_phase``)."""
    from mbedtls import tls
    from mbedtls.exceptions import TLSError
    from mbedtls.tls import WantReadError, WantWriteError

    over = tls.HandshakeStep.HANDSHAKE_OVER
    requests = [register_request(endpoint(run, proc, i), i & 0xFFFF) for i in range(count)]

    def client_buffer(i: int) -> Any:
        config = tls.DTLSConfiguration(
            pre_shared_key=(endpoint(run, proc, i), BENCH_KEY),
            ciphers=CIPHERS,
            validate_certificates=False,
            lowest_supported_version=tls.DTLSVersion.DTLSv1_2,
            highest_supported_version=tls.DTLSVersion.DTLSv1_2,
            handshake_timeout_min=1.0,
            handshake_timeout_max=16.0,
        )
        buf = tls.ClientContext(config).wrap_buffers(None)
        buf.setmtu(1280)
        return buf

    # Every device's Mbed TLS context is built before the storm (a real device has its own
    # ready; here building one is ~80 us of the load process's CPU, which the server's
    # measurement does not need and the shared machine's CPU share does).
    buffers: list[Any] = [client_buffer(i) for i in range(count)] if prebuild else []
    conn.send({"ready": True})
    start_at: float = conn.recv()["go"]
    while time.time() < start_at:
        time.sleep(0.001)
    sel = selectors.DefaultSelector()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + limit
    next_index = 0
    active: dict[int, _Device] = {}
    ok = failed = retransmits = 0
    rbuf = bytearray(4096)
    latencies: list[float] = []
    started: dict[int, float] = {}
    kept: list[_Device] = []

    def flush(d: _Device) -> None:
        out = d.buf.peek_outgoing(1 << 16)
        if out:
            d.buf.consume_outgoing(len(out))
            # A flight larger than one datagram would need splitting at record boundaries;
            # PSK flights are far below the MTU.
            d.sock.send(out)

    def step(d: _Device) -> None:
        buf = d.buf
        while buf._handshake_state is not over:
            try:
                buf.do_handshake()
            except WantWriteError:
                continue
            except WantReadError:
                break
        flush(d)
        if buf._handshake_state is over and d.stage == 0:
            d.stage = 1
            send_register(d)

    def send_register(d: _Device) -> None:
        n = d.buf.write(d.request)
        out = d.buf.peek_outgoing(n)
        d.buf.consume_outgoing(n)
        d.sock.send(out)
        d.deadline = time.perf_counter() + REGISTER_TIMEOUT

    def finish(d: _Device, good: bool) -> None:
        nonlocal ok, failed
        d.done = True
        fd = d.sock.fileno()
        sel.unregister(d.sock)
        if good and records:
            kept.append(d)
        else:
            d.sock.close()
        del active[fd]
        if good:
            ok += 1
            latencies.append(time.perf_counter() - started.pop(fd))
        else:
            failed += 1
            started.pop(fd, None)

    def open_device(i: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((local_address(proc, i), 0))
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        if buffers:
            buf = buffers[i]
            buffers[i] = None
        else:
            buf = client_buffer(i)
        d = _Device(sock, buf, requests[i], i & 0xFFFF)
        d.deadline = time.perf_counter() + 1.0
        active[sock.fileno()] = d
        started[sock.fileno()] = time.perf_counter()
        sel.register(sock, selectors.EVENT_READ, d)
        try:
            step(d)
        except TLSError:
            finish(d, False)

    def on_readable(d: _Device) -> None:
        while not d.done:
            try:
                n = d.sock.recv_into(rbuf)
            except BlockingIOError:
                return
            except OSError:
                finish(d, False)
                return
            try:
                d.buf.receive_from_network(bytes(rbuf[:n]))
                if d.stage == 0:
                    step(d)
                    d.deadline = time.perf_counter() + 1.0
                    continue
                try:
                    m = d.buf.readinto(rbuf, len(rbuf))
                except WantReadError:
                    continue
                # 2.01 Created (0x41) in an ACK (0x6x) for our Message ID
                if m >= 4 and rbuf[1] == 0x41 and ((rbuf[2] << 8) | rbuf[3]) == d.mid:
                    finish(d, True)
                    return
            except TLSError:
                finish(d, False)
                return

    while True:
        now = time.perf_counter()
        while next_index < count and len(active) < inflight and now < stop_at:
            open_device(next_index)
            next_index += 1
        if not active or now >= stop_at:
            break
        for key, _ in sel.select(TICK):
            on_readable(key.data)
        now = time.perf_counter()
        for d in [d for d in active.values() if d.deadline <= now]:
            retransmits += 1
            try:
                if d.stage == 0:
                    step(d)  # Mbed TLS resends its last flight once its own timer expired
                    d.deadline = now + 1.0
                else:
                    send_register(d)
            except TLSError:
                finish(d, False)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    unfinished = len(active) + (count - next_index)
    for d in list(active.values()):
        sel.unregister(d.sock)
        d.sock.close()
    latencies.sort()
    conn.send(
        {
            "ok": ok,
            "failed": failed,
            "unfinished": unfinished,
            "retransmits": retransmits,
            "seconds": seconds,
            "cpu": cpu,
            "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else 0.0,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else 0.0,
        }
    )
    if records:
        conn.recv()  # go
        conn.send(_records_phase(kept, records, inflight, limit))


def _records_phase(
    devices: list[_Device], records: int, inflight: int, limit: float
) -> dict[str, Any]:
    """Each device sends ``records`` CON GETs over its session, one at a time, ``inflight``
    devices at once: what a record costs the server on a session that is already stored
    (parked, so the first record restores it)."""
    from mbedtls.exceptions import TLSError
    from mbedtls.tls import WantReadError

    sel = selectors.DefaultSelector()
    rbuf = bytearray(4096)
    left = {id(d): records for d in devices}
    todo = list(reversed(devices))
    active: set[int] = set()
    ok = lost = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + limit

    def send(d: _Device) -> None:
        d.mid = (d.mid + 1) & 0xFFFF
        request = bytes((0x42, 0x01)) + d.mid.to_bytes(2, "big") + b"rq" + b"\xb5bench"
        n = d.buf.write(request)
        out = d.buf.peek_outgoing(n)
        d.buf.consume_outgoing(n)
        d.sock.send(out)
        d.deadline = time.perf_counter() + REGISTER_TIMEOUT

    def start() -> None:
        while todo and len(active) < inflight:
            d = todo.pop()
            active.add(id(d))
            sel.register(d.sock, selectors.EVENT_READ, d)
            send(d)

    def done(d: _Device) -> None:
        active.discard(id(d))
        sel.unregister(d.sock)
        d.sock.close()

    start()
    while active and time.perf_counter() < stop_at:
        for key, _ in sel.select(TICK):
            d = key.data
            try:
                n = d.sock.recv_into(rbuf)
                d.buf.receive_from_network(bytes(rbuf[:n]))
                m = d.buf.readinto(rbuf, len(rbuf))
            except (BlockingIOError, WantReadError):
                continue
            except (OSError, TLSError):
                lost += left[id(d)]
                done(d)
                continue
            if m >= 4 and ((rbuf[2] << 8) | rbuf[3]) == d.mid:
                ok += 1
                left[id(d)] -= 1
                if left[id(d)]:
                    send(d)
                else:
                    done(d)
        now = time.perf_counter()
        for key in list(sel.get_map().values()):
            d = key.data
            if d.deadline <= now:
                lost += 1
                send(d)  # a new record: the lost one is not resent
        start()
    for key in list(sel.get_map().values()):
        key.data.sock.close()
    return {
        "ok": ok,
        "lost": lost,
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - cpu0,
    }


# -- Mbed TLS alone -----------------------------------------------------------------------------


def mbedtls_costs(n: int) -> dict[str, float]:
    """The server side of ``n`` DTLS-PSK handshakes with python-mbedtls alone, in memory (no
    sockets, no asyncio, no fleetloop): microseconds per handshake for each step, so the
    transport's figures can be read against what Mbed TLS itself must do."""
    from mbedtls import tls
    from mbedtls.tls import HelloVerifyRequest, WantReadError, WantWriteError

    over = tls.HandshakeStep.HANDSHAKE_OVER
    common: dict[str, Any] = {
        "ciphers": CIPHERS,
        "lowest_supported_version": tls.DTLSVersion.DTLSv1_2,
        "highest_supported_version": tls.DTLSVersion.DTLSv1_2,
        "validate_certificates": False,
    }
    server = tls.ServerContext(
        tls.DTLSConfiguration(anti_replay=True, pre_shared_key_store={"dev": BENCH_KEY}, **common)
    )
    client = tls.ClientContext(tls.DTLSConfiguration(pre_shared_key=("dev", BENCH_KEY), **common))

    def step(buf: Any) -> None:
        while buf._handshake_state is not over:
            try:
                buf.do_handshake()
            except WantWriteError:
                continue
            except WantReadError:
                return

    def out(buf: Any) -> bytes:
        data: bytes = buf.peek_outgoing(1 << 16)
        buf.consume_outgoing(len(data))
        return data

    names = ("context", "cookie", "handshake", "record_in_out", "save", "restore")
    spent = dict.fromkeys(names, 0.0)
    clock = time.perf_counter
    for i in range(n):
        c = client.wrap_buffers(None)
        step(c)
        hello = out(c)
        t0 = clock()
        s = server.wrap_buffers()
        t1 = clock()
        cookie = b"127.0.0.1:%d" % i
        s.setcookieparam(cookie)
        s.receive_from_network(hello)
        with contextlib.suppress(HelloVerifyRequest):
            step(s)
        verify = out(s)
        t2 = clock()
        c.receive_from_network(verify)
        step(c)
        hello = out(c)
        t3 = clock()
        s.setcookieparam(cookie)
        s.receive_from_network(hello)
        step(s)
        flight = out(s)
        t4 = clock()
        c.receive_from_network(flight)
        step(c)
        finished = out(c)
        t5 = clock()
        s.receive_from_network(finished)
        step(s)
        flight = out(s)
        t6 = clock()
        c.receive_from_network(flight)
        step(c)
        c.write(b"\x44\x02\x00\x01" + b"x" * 60)
        record = out(c)
        t7 = clock()
        s.receive_from_network(record)
        s.read(2048)
        s.write(b"\x64\x41\x00\x01")
        out(s)
        t8 = clock()
        connection = s.__getstate__()["connection"]  # type: ignore[index]
        t9 = clock()
        restored: Any = tls.TLSWrappedBuffer.__new__(tls.TLSWrappedBuffer)
        restored.__setstate__(
            {"connection": connection, "context": server, "server_hostname": None}
        )
        t10 = clock()
        spent["context"] += t1 - t0
        spent["cookie"] += t2 - t1
        spent["handshake"] += (t4 - t3) + (t6 - t5)
        spent["record_in_out"] += t8 - t7
        spent["save"] += t9 - t8
        spent["restore"] += t10 - t9
    result = {f"{k}_us": round(v / n * 1e6, 1) for k, v in spent.items()}
    result["handshake_total_us"] = round(
        sum(spent[k] for k in ("context", "cookie", "handshake", "record_in_out")) / n * 1e6, 1
    )
    return result


# -- the transport alone ---------------------------------------------------------------------------


def _bare_main(conn: Connection, data_dir: str, marks: bool) -> None:
    asyncio.run(_bare(conn, data_dir, marks))


async def _bare(conn: Connection, data_dir: str, marks: bool) -> None:
    """``--server transport``: what the DM server's DTLS channel costs without LwM2M: the
    ``DtlsServer`` with a sealed SQLite session store (as ``serve`` wires it), the CoAP core
    and shell, and a handler answering every request 2.01 at once (no registration)."""
    import random

    from aiocoap import Message
    from aiocoap.numbers.codes import Code

    from benchmarks.bench_fleet import thread_cpu_seconds
    from lwm2m.coap import CoapEndpoint, Event, RequestReceived
    from lwm2m.store import Store
    from lwm2m.store.dtls_sessions import StoreDtlsSessions
    from lwm2m.store.secrets import bind, load_box
    from lwm2m.transport import DtlsServer, DtlsServerConfig
    from lwm2m.transport.coap_shell import CoapShell

    class AnyBenchKey:
        def lookup(self, identity: bytes) -> bytes | None:
            return BENCH_KEY if identity.startswith(b"hs") else None

    store = Store.open(None, data_dir)
    store.create_schema()
    bind(store, load_box(Path(data_dir)))  # blobs sealed, as in serve
    core = CoapEndpoint(rng=random.Random(1))
    shell: CoapShell[Event]
    answered = 0

    def on_event(event: Event) -> None:
        nonlocal answered
        if isinstance(event, RequestReceived):
            answered += 1
            core.respond(event.request, Message(code=Code.CREATED), shell.now())

    shell = CoapShell(core, on_event)
    server = await DtlsServer.create(
        shell,
        DtlsServerConfig(
            psk_store=AnyBenchKey(),
            session_store=StoreDtlsSessions(store),
            persist_incoming=marks,
        ),
        "127.0.0.1",
        0,
        on_session_closed=shell.session_closed,
        receive_buffer=4 << 20,
    )
    shell.attach(server)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_command() -> None:
        command = conn.recv()["cmd"]
        if command == "ports":
            conn.send({"coaps": server.local_address[1]})
        elif command == "stats":
            conn.send(
                {
                    "registrations": answered,
                    "threads_cpu": thread_cpu_seconds(),
                    "transport": server.stats.snapshot(),
                }
            )
        elif command == "psk":
            conn.send({"provisioned": 0})  # every hs* identity has the key
        elif command == "stop":
            done.set()

    loop.add_reader(conn.fileno(), on_command)
    await done.wait()
    loop.remove_reader(conn.fileno())
    server.close()
    await server.wait_closed()
    await store.aclose()
    conn.send({"stopped": True})


def _transport_server(marks: bool) -> Any:
    """The bare transport in a ``ServerProcess`` of its own (same interface)."""
    import tempfile

    from benchmarks.bench_fleet import ServerProcess

    class TransportProcess(ServerProcess):
        def __init__(self) -> None:
            self.tmp = tempfile.TemporaryDirectory(prefix="bench-dtls-")
            context = mp.get_context("spawn")
            self.conn, child = context.Pipe()
            self.process = context.Process(target=_bare_main, args=(child, self.tmp.name, marks))
            self.process.start()
            self.pid = self.process.pid or 0
            self.coaps = self.ask({"cmd": "ports"}, timeout=60)["coaps"]

    return TransportProcess()


# -- one run ------------------------------------------------------------------------------------


def one_run(run: int, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.bench_fleet import ServerProcess, rss_bytes

    per_proc = [
        args.devices // args.procs + (1 if p < args.devices % args.procs else 0)
        for p in range(args.procs)
    ]
    server = (
        ServerProcess() if args.server == "lwm2m" else _transport_server(marks=not args.no_marks)
    )
    try:
        rows = [
            (endpoint(run, p, i), endpoint(run, p, i), BENCH_KEY.hex())
            for p in range(args.procs)
            for i in range(per_proc[p])
        ]
        server.ask({"cmd": "psk", "rows": rows})
        context = mp.get_context("spawn")
        workers = []
        for p in range(args.procs):
            parent, child = context.Pipe()
            process = context.Process(
                target=_load_main,
                args=(
                    child,
                    run,
                    p,
                    per_proc[p],
                    server.coaps,
                    args.inflight,
                    args.time_limit,
                    args.records,
                    args.prebuild,
                ),
            )
            process.start()
            workers.append((process, parent))
        for _, parent in workers:
            parent.recv()  # ready: requests encoded, mbedtls imported
        time.sleep(0.5)
        spy = None
        if args.profile:  # py-spy on the server over the storm (raw collapsed stacks)
            spy = subprocess.Popen(
                [
                    os.path.join(os.path.dirname(sys.executable), "py-spy"),
                    "record",
                    "-p",
                    str(server.pid),
                    "-r",
                    "250",
                    "-f",
                    "raw",
                    "-o",
                    f"{args.profile}.{run}.txt",
                    *(["--native"] if args.native else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        before = server.sample()
        go = time.time() + 0.2
        for _, parent in workers:
            parent.send({"go": go})
        results = [parent.recv() for _, parent in workers]
        wall_end = time.time()
        after = server.sample()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        # Deferred work of the storm (the sessions' store writes every persist_interval, the
        # group commits still queued) counts too: sample again once it is done.
        time.sleep(args.settle)
        settled = server.sample()
        phase2: dict[str, Any] = {}
        if args.records:
            for _, parent in workers:
                parent.send({"go": True})
            p2 = [parent.recv() for _, parent in workers]
            time.sleep(args.settle)
            ended = server.sample()
            done = sum(r["ok"] for r in p2)
            took = max(r["seconds"] for r in p2)
            cpu2 = ended["cpu"] - settled["cpu"]
            phase2 = {
                "records_answered": done,
                "records_lost": sum(r["lost"] for r in p2),
                "records_per_s": round(done / took, 1),
                "server_cpu_us_per_record": round(cpu2 / max(done, 1) * 1e6, 1),
                "record_threads_cpu_s": {
                    k: round(v - settled["threads_cpu"].get(k, 0.0), 3)
                    for k, v in ended["threads_cpu"].items()
                },
                "incoming_marks": ended.get("transport", {}).get("incoming_marks"),
            }
        for process, _ in workers:
            process.join(10)
        server_cpu = settled["cpu"] - before["cpu"]
        storm_cpu = after["cpu"] - before["cpu"]
        rss = rss_bytes(server.pid)
    finally:
        server.close()
    ok = sum(r["ok"] for r in results)
    seconds = wall_end - go
    registered = after["registrations"] - before["registrations"]
    load_cpu = sum(r["cpu"] for r in results)
    return {
        "run": run,
        "devices": args.devices,
        "registered_2_01": ok,
        "registrations_counted_by_server": registered,
        "failed": sum(r["failed"] for r in results),
        "unfinished": sum(r["unfinished"] for r in results),
        "retransmits": sum(r["retransmits"] for r in results),
        "seconds": round(seconds, 3),
        "rate_per_s": round(ok / seconds, 1),
        "server_cpu_us_per_op": round(server_cpu / max(ok, 1) * 1e6, 1),
        "server_max_rate_per_s": round(max(ok, 1) / server_cpu, 1) if server_cpu else 0.0,
        "server_cpu_us_per_op_storm_only": round(storm_cpu / max(ok, 1) * 1e6, 1),
        "server_busy": round(storm_cpu / seconds, 2),
        "load_busy": round(load_cpu / seconds, 2),
        "load_cpu_us_per_op": round(load_cpu / max(ok, 1) * 1e6, 1),
        "latency_p50_ms": round(statistics.median(r["p50_ms"] for r in results), 1),
        "latency_p99_ms": round(max(r["p99_ms"] for r in results), 1),
        "server_rss_bytes": rss,
        **phase2,
        "threads_cpu_s": {
            k: round(v - before["threads_cpu"].get(k, 0.0), 3)
            for k, v in settled["threads_cpu"].items()
        },
    }


def baseline(seconds: float) -> dict[str, Any]:
    from benchmarks.bench_fleet import _baseline

    return _baseline(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=6000, help="handshakes per run")
    parser.add_argument("--procs", type=int, default=3, help="load processes")
    parser.add_argument("--inflight", type=int, default=48, help="devices at once per process")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per run, at most")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds after the last 2.01 whose server CPU still counts (deferred store writes)",
    )
    parser.add_argument(
        "--profile", default="", help="py-spy the server over each storm into PREFIX.RUN.txt"
    )
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument(
        "--records",
        type=int,
        default=0,
        help="then every registered device sends this many CON requests over its (stored,"
        " parked) session, one at a time: server CPU per record",
    )
    parser.add_argument(
        "--prebuild",
        action="store_true",
        help="build every device's Mbed TLS context before the storm (less load-process CPU"
        " in the measured window)",
    )
    parser.add_argument(
        "--no-marks",
        action="store_true",
        help="--server transport with persist_incoming=False (no incoming marks)",
    )
    parser.add_argument(
        "--mbedtls",
        action="store_true",
        help="instead: Mbed TLS's own server-side cost per handshake, in memory",
    )
    parser.add_argument(
        "--server",
        choices=("lwm2m", "transport"),
        default="lwm2m",
        help="the DM server (default), or its DTLS channel alone answering 2.01 at once",
    )
    args = parser.parse_args()
    if args.mbedtls:
        costs = [mbedtls_costs(2000) for _ in range(args.repeat)]
        print("| Mbed TLS, server side, per handshake | median (range), us |")
        print("|---|---:|")
        for key in costs[0]:
            values = [c[key] for c in costs]
            print(f"| {key} | {statistics.median(values):g} ({min(values):g}-{max(values):g}) |")
        return
    runs = []
    for run in range(args.repeat):
        base = baseline(args.baseline_seconds)
        r = one_run(run, args)
        echo = base["server_cpu_us_per_datagram"]
        r["echo_us_per_datagram"] = round(echo, 1)
        r["ratio_to_echo"] = round(r["server_cpu_us_per_op"] / echo, 1)
        runs.append(r)
        print(json.dumps(r), file=sys.stderr)

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    def rng(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{med(key):g} ({min(values):g}-{max(values):g})"

    print("| figure | median (range) |")
    print("|---|---:|")
    for key in (
        "rate_per_s",
        "server_cpu_us_per_op",
        "server_cpu_us_per_op_storm_only",
        "server_max_rate_per_s",
        "echo_us_per_datagram",
        "ratio_to_echo",
        "server_busy",
        "load_busy",
        "load_cpu_us_per_op",
        "latency_p50_ms",
        "latency_p99_ms",
        "retransmits",
        "failed",
        "unfinished",
    ):
        print(f"| {key} | {rng(key)} |")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "args": vars(args),
    }
    print(json.dumps({"meta": meta, "runs": runs}))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
