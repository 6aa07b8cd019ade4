"""Issue 14 item 8: one endpoint-name rule for the whole system (``lwm2m.naming``) -- the DM
Register, the bootstrap request, the identities import and the API paths of a real
``fleetloop serve`` refuse the same names with the same message naming the rule.

Before the fix the DM server registered ``a/b``, ``..``, ``a b`` and a Cyrillic look-alike of
``dev-a`` (only control characters were refused), names bootstrap refused."""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path
from urllib.parse import quote

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.naming import ENDPOINT_NAME_RULE
from tests.hardening.serve_proc import ServeProcess

BAD_NAMES = ["a/b", "..", "a b", "dev-\u0430", "-dev", "x" * 129]
_MIDS = itertools.count(1)


def _request(sock: socket.socket, port: int, path: str, name: str, method: Code) -> Message:
    message = Message(code=method)
    message.mtype, message.mid, message.token = Type.CON, next(_MIDS), b"ep"
    message.opt.uri_path = (path,)
    message.opt.uri_query = (f"ep={name}", "lwm2m=1.1")
    if path == "rd":
        message.opt.content_format = 40
        message.payload = b"</1/0>,</3/0>"
    sock.sendto(bytes(message.encode()), ("127.0.0.1", port))
    while True:
        answer = Message.decode(sock.recv(2048))
        if answer.mtype == Type.ACK and answer.code != Code.EMPTY:
            return answer


def test_every_entry_refuses_the_same_names_with_the_rule(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data", extra_args=("--bs-coap", "127.0.0.1:0"))
    info = server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        bs_port = int(info["extra"]["bs_coap"]["port"])
        for name in BAD_NAMES:
            registered = _request(sock, server.coap_port, "rd", name, Code.POST)
            assert registered.code == Code.BAD_REQUEST, (name, registered.payload)
            assert ENDPOINT_NAME_RULE.encode() in registered.payload, registered.payload
            bootstrap = _request(sock, bs_port, "bs", name, Code.POST)
            assert bootstrap.code == Code.BAD_REQUEST, (name, bootstrap.payload)
            assert ENDPOINT_NAME_RULE.encode() in bootstrap.payload, bootstrap.payload
        good = _request(sock, server.coap_port, "rd", "urn:imei:490154203237518", Code.POST)
        assert good.code == Code.CREATED, good.payload
        with server.api() as api:
            for name in BAD_NAMES:
                for answer in (
                    api.get(f"/devices/{quote(name, safe='')}"),
                    api.put(
                        f"/security/{quote(name, safe='')}",
                        json={"psk_identity": "x", "psk_key": "00" * 16},
                    ),
                ):
                    if "/" in name or name == "..":  # another path (.. is normalised away)
                        assert answer.status_code == 404, (name, answer.text)
                        continue
                    assert answer.status_code == 422, (name, answer.text)
                    assert ENDPOINT_NAME_RULE in answer.json()["message"], answer.text
            csv = "endpoint,security_mode\n" + "".join(
                f"{json.dumps(name)},nosec\n" for name in BAD_NAMES
            )
            imported = api.post(
                "/identities/import", json={"content": csv, "source": "names.csv", "format": "csv"}
            )
            assert imported.status_code == 422, imported.text
            assert imported.text.count(ENDPOINT_NAME_RULE) >= len(BAD_NAMES), imported.text
    finally:
        sock.close()
        assert server.stop() == 0
