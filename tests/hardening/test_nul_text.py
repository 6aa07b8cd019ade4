"""Issue 14 item 6: NUL (U+0000) in text is refused at the edge with a typed error, identically
on SQLite and PostgreSQL -- against a real ``fleetloop serve`` on each store.

Before the fix PostgreSQL (whose ``text`` cannot hold NUL) turned a Register with NUL in
``sms=`` or a link attribute into 5.03 "store unavailable; retry" (a permanent error shown as
transient: the device retries for ever) and API requests with ``%00`` / ``\\u0000`` into
HTTP 500, while SQLite stored the NUL."""

from __future__ import annotations

import itertools
import json
import socket
import time
from pathlib import Path

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.hardening.serve_proc import ServeProcess
from tests.store.conftest import StoreTarget

_MIDS = itertools.count(1)


def _post(
    sock: socket.socket, port: int, path: tuple[str, ...], query: tuple[str, ...], payload: bytes
) -> Message:
    message = Message(code=Code.POST)
    message.mtype, message.mid, message.token = Type.CON, next(_MIDS), b"nul"
    message.opt.uri_path = path
    message.opt.uri_query = query
    message.opt.content_format = 40 if path == ("rd",) else 110
    message.payload = payload
    sock.sendto(bytes(message.encode()), ("127.0.0.1", port))
    while True:
        answer = Message.decode(sock.recv(2048))
        if answer.mtype == Type.ACK and answer.code != Code.EMPTY:
            return answer


def test_nul_in_text_gets_a_typed_refusal_on_either_store(
    target: StoreTarget, tmp_path: Path
) -> None:
    database_url = None if target.backend == "sqlite" else target.url
    server = ServeProcess(tmp_path / "data", database_url=database_url)
    server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        port = server.coap_port
        objects = b"</1/0>,</3/0>"
        for query, payload, named in [
            (("ep=nul-1", "sms=12\x0034", "lwm2m=1.1"), objects, b"'sms'"),
            (("ep=nul-2", "lwm2m=1.1"), b'</1/0>;x="a\x00b",</3/0>', b"object list"),
        ]:
            answer = _post(sock, port, ("rd",), query, payload)
            assert answer.code == Code.BAD_REQUEST, (query, answer.code, answer.payload)
            assert b"NUL" in answer.payload and named in answer.payload
        # The same device registers once it sends clean text; a Send with a NUL in a string
        # value is refused whole (4.00) instead of failing a store batch on PostgreSQL.
        answer = _post(sock, port, ("rd",), ("ep=nul-1", "sms=1234", "lwm2m=1.1"), objects)
        assert answer.code == Code.CREATED, answer.payload
        send = json.dumps(
            [
                {"bn": "/3/0/", "n": "0", "vs": "maker\x00x"},
                {"n": "1", "vs": "model-1"},
            ]
        ).encode()
        answer = _post(sock, port, ("dp",), (), send)
        assert answer.code == Code.BAD_REQUEST and b"NUL" in answer.payload, answer.payload
        clean = json.dumps([{"bn": "/3/0/", "n": "1", "vs": "model-1"}]).encode()
        assert _post(sock, port, ("dp",), (), clean).code == Code.CHANGED
        with server.api() as api:
            for path, params, body in [
                ("/devices/a%00b", {}, None),
                ("/security/a%00b", {}, None),
                ("/identities/a%00b", {}, None),
                ("/audit", {"endpoint": "a\x00b"}, None),
                ("/devices", {"select": "endpoint=a\x00b"}, None),
                ("/security/nul-9", {}, {"psk_identity": "a\x00b", "psk_key": "00" * 16}),
            ]:
                answer = api.get(path, params=params) if body is None else api.put(path, json=body)
                assert answer.status_code == 422, (path, answer.status_code, answer.text)
                assert "NUL" in answer.json()["message"], answer.text
            for _ in range(30):  # telemetry is committed by the next group commit
                values = api.get("/devices/nul-1").json()["last_values"]
                if values:
                    break
                time.sleep(0.1)
            assert [(v["path"], v["value"]) for v in values] == [("/3/0/1", "model-1")]
    finally:
        sock.close()
        assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log
    assert "NUL (0x00)" not in log  # PostgreSQL's refusal never reached
