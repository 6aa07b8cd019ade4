"""What the DM server acknowledged survives ``kill -9``: every Register answered 2.01 and every
Update answered 2.04 (the lifetime refresh too) is in the database of a killed ``fleetloop
serve``, however the answers were batched (group commit, commit callbacks: issue 13)."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.hardening.serve_proc import ServeProcess

pytestmark = pytest.mark.xdist_group("serve")

DEVICES = 30
UPDATES = 3


def _request(sock: socket.socket, mid: int, message: Message) -> Message:
    """One CON request; the answer (piggybacked, or separate after an empty ACK) within 10 s."""
    message.mtype, message.mid, message.token = Type.CON, mid, mid.to_bytes(2, "big")
    data = message.encode()
    deadline = time.monotonic() + 10.0
    sock.sendto(data, sock.getpeername())
    resend = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, min(resend, deadline) - time.monotonic()))
        try:
            answer = Message.decode(sock.recv(2048))
        except TimeoutError:
            if time.monotonic() >= resend:
                sock.sendto(data, sock.getpeername())
                resend = time.monotonic() + 2.0
            continue
        if answer.mtype == Type.CON:  # a separate response: acknowledge it
            ack = Message(code=Code.EMPTY)
            ack.mtype, ack.mid = Type.ACK, answer.mid
            sock.sendto(ack.encode(), sock.getpeername())
        if answer.code != Code.EMPTY and answer.token == message.token:
            return answer
    raise AssertionError(f"no answer to {message.code} within 10 s")


def test_registers_and_updates_answered_before_kill_9_are_in_the_database(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    serve = ServeProcess(data_dir)
    socks: list[socket.socket] = []
    serve.start()
    try:
        with serve.api() as api:
            for i in range(DEVICES):
                answer = api.put(f"/security/kill-{i}", json={"allow_nosec": True})
                assert answer.status_code == 200, answer.text

        for _ in range(DEVICES):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.connect(("127.0.0.1", serve.coap_port))
            socks.append(sock)
        locations: list[tuple[str, ...]] = []
        for i, sock in enumerate(socks):
            register = Message(code=Code.POST, payload=b"</1/0>,</3/0>")
            register.opt.uri_path = ("rd",)
            register.opt.uri_query = (f"ep=kill-{i}", "lt=600", "lwm2m=1.1")
            register.opt.content_format = 40
            answer = _request(sock, 1, register)
            assert answer.code == Code.CREATED, answer
            locations.append(tuple(answer.opt.location_path))
        acknowledged: dict[str, float] = {}
        for round_ in range(UPDATES):
            for i, sock in enumerate(socks):
                update = Message(code=Code.POST)
                update.opt.uri_path = locations[i]
                if round_ == UPDATES - 1 and i % 2:
                    update.opt.uri_query = ("lt=900",)  # a changed lifetime, the rest empty
                sent = time.time()
                answer = _request(sock, 2 + round_, update)
                assert answer.code == Code.CHANGED, answer
                acknowledged[locations[i][1]] = sent
    finally:
        serve.kill()  # SIGKILL right after the last 2.04
        for sock in socks:
            sock.close()
    with sqlite3.connect(data_dir / "fleetloop.db") as db:
        rows = {
            rid: (endpoint, lifetime, updated_at, expires_at)
            for rid, endpoint, lifetime, updated_at, expires_at in db.execute(
                "SELECT id, endpoint, lifetime, updated_at, expires_at FROM registration"
            )
        }
    assert len(rows) == DEVICES
    for i, location in enumerate(locations):
        endpoint, lifetime, updated_at, expires_at = rows[location[1]]
        assert endpoint == f"kill-{i}"
        assert lifetime == (900 if i % 2 else 600)
        # the last acknowledged Update (sent at ``acknowledged``) is the stored one
        assert updated_at >= acknowledged[location[1]] - 1.0
        assert expires_at == pytest.approx(updated_at + lifetime)
