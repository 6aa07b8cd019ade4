"""Firmware serving benchmark: blocks of a repository image served per second by fleetloop's
own ``/fw/<id>`` endpoint (Block2, 1 KiB blocks) while N devices pull it at once, with the
server's CPU per block from the OS beside a raw-UDP echo baseline from the same run -- and
how Registers of other devices fare meanwhile (the registration path must not stall).

The server (this process) is an :class:`~lwm2m.server.LwM2MServer` on a fresh SQLite store with
:class:`~lifecycle.artifacts.firmware_serving.FirmwareServing` installed and one signed image
published. A separate load process holds the N downloading devices, one UDP socket each,
every one pulling the image block after block with one request in flight (as a device does),
starting over at block 0 when it has the whole image; requests are pre-encoded (only the
Message ID and token are patched), so the devices cost less than the server they measure.
The same process sends a Register from a fresh socket every ``--register-every`` seconds and
records how long each took to be answered 2.01 (acknowledged after its group commit).

    .venv/bin/python -m benchmarks.bench_firmware --devices 1000 --duration 10 [--size 262144]

Prints one JSON line. ``server_cpu_us_per_block`` is the server process's utime + stime over
the run divided by the blocks answered; ``baseline_cpu_us_per_datagram`` is the same measure
for a bare asyncio echo server (``benchmarks.bench_fleet._baseline``), and ``cpu_ratio`` their
quotient. ``db_loads`` is how many times the image was read from the database (1: every block
after the first is a slice of the cached copy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import selectors
import socket
import statistics
import subprocess
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from benchmarks.loadgen import process_cpu_seconds

REGISTER_LINKS = b'</>;rt="oma.lwm2m";ct=112,</1/0>,</3/0>,</5/0>'


def _request(image_id: str, block: int) -> bytearray:
    """CON GET /fw/<id> with Block2 (block, szx 6), MID 0 and a 2-byte zero token."""
    message = Message(code=Code.GET)
    message.mtype, message.mid, message.token = Type.CON, 0, b"\0\0"
    message.opt.uri_path = ("fw", image_id)
    message.opt.block2 = (block, False, 6)
    return bytearray(message.encode())


def _register(name: str, mid: int) -> bytes:
    message = Message(code=Code.POST, payload=REGISTER_LINKS)
    message.mtype, message.mid, message.token = Type.CON, mid, mid.to_bytes(2, "big")
    message.opt.uri_path = ("rd",)
    message.opt.uri_query = (f"ep={name}", "lt=86400", "lwm2m=1.1")
    message.opt.content_format = 40
    return bytes(message.encode())


def _load(
    port: int, image_id: str, blocks: int, devices: int, duration: float, every: float
) -> dict[str, Any]:
    """The load process's loop (see the module docstring)."""
    templates = [_request(image_id, n) for n in range(blocks)]
    sel = selectors.DefaultSelector()
    state: list[list[int]] = []  # per device: [next block, mid, sent_at_ms]
    socks: list[socket.socket] = []

    def open_socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        return sock

    def send_block(index: int) -> None:
        block, mid = state[index][0], (state[index][1] + 1) & 0xFFFF
        state[index][1] = mid
        data = templates[block]
        data[2:4] = mid.to_bytes(2, "big")
        data[4:6] = data[2:4]
        socks[index].send(data)
        sent_at[index] = time.perf_counter()

    sent_at = [0.0] * devices
    for index in range(devices):
        sock = open_socket()
        socks.append(sock)
        state.append([0, index * 61 & 0xFFFF, 0])
        sel.register(sock, selectors.EVENT_READ, ("dl", index))
    completed = images = lost = 0
    registers: dict[int, tuple[socket.socket, float]] = {}
    latencies: list[float] = []
    register_failures = 0
    start = time.perf_counter()
    for index in range(devices):
        send_block(index)
    next_register = start + every
    reg_mid = 1
    deadline = start + duration
    next_check = start + 0.5
    while (now := time.perf_counter()) < deadline or registers:
        if now >= deadline + 10:
            register_failures += len(registers)
            break
        if now >= next_register and now < deadline:
            next_register = now + every
            sock = open_socket()
            reg_mid += 1
            sock.send(_register(f"reg-{reg_mid}", reg_mid))
            registers[reg_mid] = (sock, now)
            sel.register(sock, selectors.EVENT_READ, ("reg", reg_mid))
        for key, _ in sel.select(timeout=0.01):
            kind, ident = key.data
            sock = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    data = sock.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if kind == "reg":
                    answer = Message.decode(data)
                    if answer.mtype == Type.CON:  # a separate response: acknowledge it
                        ack = Message(code=Code.EMPTY)
                        ack.mtype, ack.mid = Type.ACK, answer.mid
                        sock.send(ack.encode())
                    if answer.code == Code.CREATED:
                        _, sent = registers.pop(ident)
                        latencies.append(time.perf_counter() - sent)
                        sel.unregister(sock)
                        sock.close()
                        break
                    if answer.code not in (Code.EMPTY,):
                        register_failures += 1
                        registers.pop(ident)
                        sel.unregister(sock)
                        sock.close()
                        break
                    continue
                row = state[ident]
                if len(data) < 4 or ((data[2] << 8) | data[3]) != row[1]:
                    continue  # a late answer to a retransmission
                if now < deadline:
                    completed += 1
                row[0] += 1
                if row[0] >= blocks:
                    row[0] = 0
                    images += 1
                if time.perf_counter() < deadline:
                    send_block(ident)
        if now >= next_check and now < deadline:  # retransmit what went unanswered (loss)
            next_check = now + 0.5
            for index in range(devices):
                if now - sent_at[index] > 2.0:
                    lost += 1
                    send_block(index)
    for sock in socks:
        sock.close()
    sel.close()
    latencies.sort()
    return {
        "blocks": completed,
        "images": images,
        "lost": lost,
        "seconds": duration,
        "registers": len(latencies),
        "register_failures": register_failures,
        "register_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "register_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1)
        if latencies
        else None,
        "register_max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
    }


def _load_main(conn: Connection, *args: Any) -> None:
    conn.send(_load(*args))


async def _bench(devices: int, duration: float, size: int, every: float) -> dict[str, Any]:
    from lifecycle.artifacts.firmware import FirmwareRepository, new_vendor_key, sign_image
    from lifecycle.artifacts.firmware_serving import FirmwareServing
    from lifecycle.schema import create_schema
    from lwm2m.server import LwM2MServer, ServerConfig
    from lwm2m.store import Store
    from simulators.device.firmware import build_image

    data_dir = tempfile.mkdtemp(prefix="fleetloop-bench-fw-")
    store = Store.open(None, data_dir)
    store.create_schema()
    create_schema(store)
    private, public = new_vendor_key()
    content = build_image("9.0.0", size)
    repo = FirmwareRepository(store.audit)
    with store.transaction() as tx:
        repo.add_vendor_key(tx, "bench", public.decode(), actor="bench", now=time.time())
        image = repo.publish(
            tx,
            content,
            version="9.0.0",
            signature=sign_image(content, private),
            actor="bench",
            now=time.time(),
        )
    server = await LwM2MServer.start(
        ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=None), store
    )
    serving = FirmwareServing(store, repo)
    serving.install(server)
    assert server.coap_address is not None
    blocks = -(-len(content) // 1024)
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    args = (server.coap_address[1], image.id, blocks, devices, duration, every)
    process = context.Process(target=_load_main, args=(child, *args))
    loop = asyncio.get_running_loop()
    cpu0 = process_cpu_seconds(os.getpid())
    process.start()
    result: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
    cpu = process_cpu_seconds(os.getpid()) - cpu0
    process.join(30)
    registered = len(server.registrations())
    await server.stop()
    await store.aclose()
    return {
        "devices": devices,
        "image_bytes": len(content),
        "blocks_per_s": round(result["blocks"] / result["seconds"]),
        "bytes_per_s": round(result["blocks"] / result["seconds"] * 1024),
        "images_completed": result["images"],
        "server_cpu_us_per_block": round(cpu / max(result["blocks"], 1) * 1e6, 1),
        "db_loads": serving.stats["loads"],
        "lost": result["lost"],
        "registers_during_download": result["registers"],
        "registers_stored": registered,
        "register_failures": result["register_failures"],
        "register_p50_ms": result["register_p50_ms"],
        "register_p99_ms": result["register_p99_ms"],
        "register_max_ms": result["register_max_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=256 * 1024, help="image body bytes")
    parser.add_argument(
        "--register-every", type=float, default=0.02, help="seconds between probe Registers"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw-UDP echo")
    args = parser.parse_args()
    run: dict[str, Any] = {}
    if not args.no_baseline:
        from benchmarks.bench_fleet import _baseline

        base = _baseline(5.0)
        run["baseline_round_trips_per_s"] = round(base["round_trips_per_s"])
        run["baseline_cpu_us_per_datagram"] = round(base["server_cpu_us_per_datagram"], 1)
    run.update(asyncio.run(_bench(args.devices, args.duration, args.size, args.register_every)))
    if "baseline_cpu_us_per_datagram" in run:
        run["cpu_ratio"] = round(
            run["server_cpu_us_per_block"] / max(run["baseline_cpu_us_per_datagram"], 0.1), 1
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    run["commit"] = commit or "unknown"
    run["machine"] = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}"
    )
    print(json.dumps(run), flush=True)


if __name__ == "__main__":
    main()
