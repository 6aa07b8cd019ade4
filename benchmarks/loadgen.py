"""Closed-loop CoAP load generator and server-CPU measurement, shared by the benchmarks.

The load client runs in its own process so it does not share the server's interpreter. It keeps
``window`` confirmable GETs outstanding on each of ``sockets`` UDP sockets (each socket is one
"device" to the server), matches answers by Message ID, and counts completions over a fixed
duration. Server CPU comes from the OS (``/proc/PID/stat`` utime + stime), never wall time, so a
figure is "CPU seconds the server process spent per request".
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


@dataclass
class LoadResult:
    completed: int
    lost: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


def run_load(
    send_factories: list[tuple[Callable[[bytes], None], Callable[[], list[bytes]], socket.socket]],
    duration: float,
    window: int,
    timeout: float = 0.5,
) -> LoadResult:
    """Drive each (send, receive_all, sock) "device" with ``window`` requests in flight."""
    sel = selectors.DefaultSelector()
    state: dict[int, dict[int, float]] = {}
    mids: dict[int, int] = {}
    for index, (_send, _recv, sock) in enumerate(send_factories):
        sel.register(sock, selectors.EVENT_READ, index)
        state[index] = {}
        mids[index] = (index * 7919) & 0xFFFF
    completed = 0
    lost = 0
    start = time.perf_counter()
    deadline = start + duration

    def fill(index: int) -> None:
        send = send_factories[index][0]
        pending = state[index]
        while len(pending) < window:
            mid = mids[index] = (mids[index] + 1) & 0xFFFF
            pending[mid] = time.perf_counter()
            send(coap_get(mid, mid.to_bytes(2, "big")))

    for index in state:
        fill(index)
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        for key, _ in sel.select(timeout=0.05):
            index = key.data
            pending = state[index]
            for data in send_factories[index][1]():
                if len(data) >= 4:
                    mid = int.from_bytes(data[2:4], "big")
                    if pending.pop(mid, None) is not None:
                        completed += 1
            fill(index)
        now = time.perf_counter()
        for index, pending in state.items():
            stale = [m for m, t in pending.items() if now - t > timeout]
            for m in stale:
                del pending[m]
                lost += 1
            if stale:
                fill(index)
    sel.close()
    return LoadResult(completed, lost, time.perf_counter() - start)


def udp_device(
    host: str, port: int
) -> tuple[Callable[[bytes], None], Callable[[], list[bytes]], socket.socket]:
    """A plain UDP "device": connected socket, non-blocking receive of everything queued."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect((host, port))
    sock.setblocking(False)

    def recv_all() -> list[bytes]:
        out = []
        while True:
            try:
                out.append(sock.recv(2048))
            except BlockingIOError:
                return out

    return sock.send, recv_all, sock
