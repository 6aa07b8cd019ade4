"""The fuzz run's only store error, ``a fire-and-forget write failed: registration '…' is
unknown``: a device answered an Observe just after it sent a new Register. The server queued
the observation row for the old registration behind the Register that replaced it, and the
write failed once the old registration was gone. The observation was moot (the old
registration's observations end when the new one is applied), so the row is now dropped
quietly -- against a real ``fleetloop serve``."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from pathlib import Path

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.hardening.serve_proc import ServeProcess

_MIDS = itertools.count(1)


def _message(code: Code, mtype: Type, token: bytes, mid: int | None = None) -> Message:
    message = Message(code=code)
    message.mtype, message.token = mtype, token
    message.mid = next(_MIDS) & 0xFFFF if mid is None else mid
    return message


def _register_datagram(endpoint: str) -> bytes:
    message = _message(Code.POST, Type.CON, b"rg")
    message.opt.uri_path = ("rd",)
    message.opt.uri_query = (f"ep={endpoint}", "lt=300", "lwm2m=1.1")
    message.opt.content_format = 40
    message.payload = b"</1/0>,</3/0>"
    return bytes(message.encode())


def _until(sock: socket.socket, wanted: object) -> Message:
    while True:
        message = Message.decode(sock.recv(2048))
        if message.code == wanted:
            return message
        if message.mtype == Type.CON:  # the server's reads of the device: not found
            other = _message(Code.NOT_FOUND, Type.ACK, message.token, message.mid)
            sock.sendto(bytes(other.encode()), sock.getpeername())


def test_an_observe_answer_racing_a_new_register_fails_no_store_write(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    try:
        for attempt in range(6):
            endpoint = f"racer-{attempt}"
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.connect(("127.0.0.1", server.coap_port))
            sock.settimeout(5)
            try:
                sock.send(_register_datagram(endpoint))
                _until(sock, Code.CREATED)

                def observe(endpoint: str = endpoint) -> None:
                    with server.api() as api:
                        api.post(f"/devices/{endpoint}/observe/3/0/9", params={"timeout": 5})

                caller = threading.Thread(target=observe)
                caller.start()
                while True:
                    request = Message.decode(sock.recv(2048))
                    if request.opt.observe == 0 and request.opt.uri_path == ("3", "0", "9"):
                        break
                    other = _message(Code.NOT_FOUND, Type.ACK, request.token, request.mid)
                    sock.send(bytes(other.encode()))
                sock.send(_register_datagram(endpoint))  # the device re-registers ...
                time.sleep(0.002 * attempt)
                answer = _message(Code.CONTENT, Type.ACK, request.token, request.mid)
                answer.opt.observe = 1
                answer.opt.content_format = 0
                answer.payload = b"50"
                sock.send(bytes(answer.encode()))  # ... and answers the Observe meanwhile
                _until(sock, Code.CREATED)
                caller.join(10)
            finally:
                sock.close()
        time.sleep(0.5)  # the last group commits
    finally:
        assert server.stop() == 0
    log = server.log()
    assert "fire-and-forget write failed" not in log
    assert "Traceback" not in log
