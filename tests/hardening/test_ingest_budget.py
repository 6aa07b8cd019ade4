"""Issue 14 item 3 (the budget part): one device cannot make a real ``fleetloop serve`` store
without bound -- Sends beyond its budget get 4.29 Too Many Requests with Max-Age (RFC 8516),
notifications beyond it are acknowledged but not stored; nothing queues.

Before the fix one device sent 5 000 Sends x 50 values in 18 s and every one was stored."""

from __future__ import annotations

import itertools
import json
import socket
import sqlite3
import threading
from pathlib import Path

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.hardening.serve_proc import ServeProcess

FLOOD = 400
BURST = 200  # IngestBudget.message_burst
_MIDS = itertools.count(1)


def _message(code: Code, mtype: Type, token: bytes, mid: int | None = None) -> Message:
    message = Message(code=code)
    message.mtype, message.token = mtype, token
    message.mid = next(_MIDS) & 0xFFFF if mid is None else mid
    return message


def _send(sock: socket.socket, port: int, message: Message) -> Message:
    sock.sendto(bytes(message.encode()), ("127.0.0.1", port))
    while True:
        answer = Message.decode(sock.recv(2048))
        if answer.mtype == Type.ACK and answer.mid == message.mid and answer.code != Code.EMPTY:
            return answer


def _register(sock: socket.socket, port: int, endpoint: str) -> None:
    message = _message(Code.POST, Type.CON, b"rg")
    message.opt.uri_path = ("rd",)
    message.opt.uri_query = (f"ep={endpoint}", "lt=300", "lwm2m=1.1")
    message.opt.content_format = 40
    message.payload = b"</1/0>,</3/0>"
    assert _send(sock, port, message).code == Code.CREATED


def _rows(data_dir: Path, endpoint: str) -> int:
    with sqlite3.connect(data_dir / "fleetloop.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM telemetry WHERE endpoint = ?", (endpoint,)
        ).fetchone()
    return int(count)


def test_sends_beyond_the_budget_get_4_29_and_are_not_stored(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    answers = []
    try:
        _register(sock, server.coap_port, "chatty-1")
        for index in range(FLOOD):
            send = _message(Code.POST, Type.CON, b"sd")
            send.opt.uri_path = ("dp",)
            send.opt.content_format = 110
            send.payload = json.dumps([{"bn": "/3/0/", "n": "9", "v": index % 100}]).encode()
            answers.append(_send(sock, server.coap_port, send))
    finally:
        sock.close()
        assert server.stop() == 0
    changed = [a for a in answers if a.code == Code.CHANGED]
    throttled = [a for a in answers if a.code == Code.TOO_MANY_REQUESTS]
    assert len(changed) + len(throttled) == FLOOD
    assert BURST <= len(changed) < FLOOD - 50, len(changed)
    assert all((a.opt.max_age or 0) >= 1 for a in throttled)
    assert _rows(server.data_dir, "chatty-1") == len(changed)


def test_notifications_beyond_the_budget_are_acknowledged_but_not_stored(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        port = server.coap_port
        _register(sock, port, "noisy-1")
        answer: list[int] = []

        def observe() -> None:
            with server.api() as api:
                answer.append(api.post("/devices/noisy-1/observe/3/0/9").status_code)

        caller = threading.Thread(target=observe)
        caller.start()
        while True:  # the server also reads the device's identity: not found here
            request = Message.decode(sock.recv(2048))
            if request.opt.observe == 0 and request.opt.uri_path == ("3", "0", "9"):
                break
            other = _message(Code.NOT_FOUND, Type.ACK, request.token, request.mid)
            sock.sendto(bytes(other.encode()), ("127.0.0.1", port))
        first = _message(Code.CONTENT, Type.ACK, request.token, request.mid)
        first.opt.observe = 1
        first.opt.content_format = 0
        first.payload = b"50"
        sock.sendto(bytes(first.encode()), ("127.0.0.1", port))
        caller.join(10)
        assert answer and answer[0] < 300, answer
        for index in range(FLOOD):
            note = _message(Code.CONTENT, Type.NON, request.token)
            note.opt.observe = index + 2
            note.opt.content_format = 0
            note.payload = str(index % 100).encode()
            sock.sendto(bytes(note.encode()), ("127.0.0.1", port))
    finally:
        sock.close()
        assert server.stop() == 0
    stored = _rows(server.data_dir, "noisy-1")
    assert BURST <= stored < FLOOD - 50, stored
