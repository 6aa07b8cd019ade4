"""Closed-loop CoAP load generator and server-CPU measurement, shared by the benchmarks.

The load client runs in its own process so it does not share the server's interpreter. It keeps
``window`` confirmable GETs outstanding on each of ``devices`` UDP sockets (each socket is one
"device" to the server), matches answers by Message ID, and counts completions over a fixed
duration. Requests are pre-encoded and a socket is replaced before its Message IDs could
repeat (see :data:`ROTATE_AFTER`), so the server never gets a cheap duplicate. Server CPU comes
from the OS (``/proc/PID/stat`` utime + stime), never wall time, so a figure is "CPU seconds the
server process spent per request".
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def coap_get(mid: int, token: bytes, path: str = "bench") -> bytes:
    """A CON GET with one Uri-Path option, built by hand so the client costs almost nothing."""
    seg = path.encode()
    header = bytes([0x40 | len(token), 0x01]) + struct.pack("!H", mid) + token
    assert len(seg) < 13
    return header + bytes([0xB0 | len(seg)]) + seg


#: Every CON GET /bench the load client sends, by Message ID (token = the MID's two bytes):
#: built once, so a request costs the client a list index, not an encode.
REQUESTS: list[bytes] = [coap_get(mid, mid.to_bytes(2, "big")) for mid in range(1 << 16)]

#: A device (socket) sends at most this many requests, then drains and is replaced by a fresh
#: socket (a new peer to the server). Message IDs are 16 bit and a server remembers each one
#: for EXCHANGE_LIFETIME (247 s): a device re-using a Message ID within a run would be answered
#: from the deduplication cache — cheaper than a real request, which would flatter the server.
ROTATE_AFTER = 60_000

#: How often the load loop looks for requests that went unanswered (lost).
STALE_CHECK_INTERVAL = 0.05


@dataclass
class LoadResult:
    completed: int
    lost: int
    seconds: float
    #: Sockets opened in all (devices plus replacements after ROTATE_AFTER requests).
    sockets: int = 0

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


class _UdpDevice:
    """One socket keeping ``window`` CON GETs in flight, matched by Message ID."""

    __slots__ = ("mid", "pending", "recv", "send", "sent", "sock")

    def __init__(self, sock: socket.socket, first_mid: int) -> None:
        self.sock = sock
        self.send = sock.send
        self.recv = sock.recv
        self.pending: dict[int, float] = {}
        self.mid = first_mid
        self.sent = 0


def run_load(
    make_socket: Callable[[], socket.socket],
    devices: int,
    duration: float,
    window: int,
    timeout: float = 0.5,
) -> LoadResult:
    """Drive ``devices`` connected UDP sockets with ``window`` requests in flight each.

    A device that has sent :data:`ROTATE_AFTER` requests stops, drains, and is replaced by a
    new socket, so no Message ID repeats within a peer during the run.
    """
    sel = selectors.DefaultSelector()
    requests = REQUESTS
    perf_counter = time.perf_counter
    opened = 0

    def new_device(slot: int) -> _UdpDevice:
        nonlocal opened
        opened += 1
        dev = _UdpDevice(make_socket(), (opened * 7919) & 0xFFFF)
        sel.register(dev.sock, selectors.EVENT_READ, slot)
        return dev

    def fill(dev: _UdpDevice) -> None:
        pending = dev.pending
        want = min(window - len(pending), ROTATE_AFTER - dev.sent)
        if want <= 0:
            return
        now = perf_counter()
        send = dev.send
        mid = dev.mid
        for _ in range(want):
            mid = (mid + 1) & 0xFFFF
            pending[mid] = now
            send(requests[mid])
        dev.mid = mid
        dev.sent += want

    def retire(slot: int) -> None:
        old = devs[slot]
        sel.unregister(old.sock)
        old.sock.close()
        devs[slot] = new_device(slot)
        fill(devs[slot])

    devs = [new_device(slot) for slot in range(devices)]
    completed = 0
    lost = 0
    start = perf_counter()
    deadline = start + duration
    next_stale_check = start + STALE_CHECK_INTERVAL
    for dev in devs:
        fill(dev)
    while True:
        now = perf_counter()
        if now >= deadline:
            break
        for key, _ in sel.select(timeout=0.05):
            slot = key.data
            dev = devs[slot]
            pending = dev.pending
            recv = dev.recv
            while True:
                try:
                    data = recv(2048)
                except BlockingIOError:
                    break
                if len(data) >= 4 and pending.pop((data[2] << 8) | data[3], None) is not None:
                    completed += 1
            if dev.sent >= ROTATE_AFTER and not pending:
                retire(slot)
            else:
                fill(dev)
        if now >= next_stale_check:
            next_stale_check = now + STALE_CHECK_INTERVAL
            for slot, dev in enumerate(devs):
                stale = [m for m, t in dev.pending.items() if now - t > timeout]
                for m in stale:
                    del dev.pending[m]
                lost += len(stale)
                if dev.sent >= ROTATE_AFTER and not dev.pending:
                    retire(slot)
                elif stale:
                    fill(dev)
    seconds = perf_counter() - start
    for dev in devs:
        dev.sock.close()
    sel.close()
    return LoadResult(completed, lost, seconds, opened)


def udp_socket(host: str, port: int) -> Callable[[], socket.socket]:
    """A factory of plain UDP "devices": connected, non-blocking sockets to ``host:port``."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect((host, port))
        sock.setblocking(False)
        return sock

    return make
