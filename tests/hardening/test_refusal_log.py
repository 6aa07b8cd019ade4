"""Issue 14 item 2: the DM server's refusal log does not scale with the attacker -- a flood of
refused Registers against a real ``fleetloop serve`` writes a few lines and a summary with the
count, and the attacker's text is cut.

Before the fix every refused Register wrote one line (~1.3 KB with the attacker's text inside;
~3.1 GB/h under a flood)."""

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

_MIDS = itertools.count(1)
FLOOD = 150


def _register(sock: socket.socket, port: int, endpoint: str) -> Message:
    message = Message(code=Code.POST)
    message.mtype, message.mid, message.token = Type.CON, next(_MIDS) & 0xFFFF, b"rf"
    message.opt.uri_path = ("rd",)
    message.opt.uri_query = (f"ep={endpoint}", "lt=not-a-number", "lwm2m=1.1")
    message.opt.content_format = 40
    message.payload = b"</1/0>,</3/0>"
    sock.sendto(bytes(message.encode()), ("127.0.0.1", port))
    while True:
        answer = Message.decode(sock.recv(2048))
        if answer.mtype == Type.ACK and answer.code != Code.EMPTY:
            return answer


def test_a_flood_of_refused_registers_logs_a_few_lines_and_a_count(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        for index in range(FLOOD):
            answer = _register(sock, server.coap_port, f"flood-{index}-" + "x" * 100)
            assert answer.code == Code.BAD_REQUEST, answer.payload
        time.sleep(1.2)  # the interval is over: the next refusal closes it with a summary
        assert _register(sock, server.coap_port, "late-1").code == Code.BAD_REQUEST
    finally:
        sock.close()
        assert server.stop() == 0
    messages = []
    for line in server.log().splitlines():
        try:
            messages.append(str(json.loads(line).get("msg", "")))
        except ValueError:
            continue
    refused = [m for m in messages if m.startswith("refused ")]
    assert 2 <= len(refused) <= 8, refused
    summaries = [m for m in refused if " more like this from 127.0.0.1" in m]
    assert summaries, refused
    counted = sum(int(m.split()[1]) for m in summaries)
    assert counted + len(refused) - len(summaries) == FLOOD + 1, refused
    assert all(len(m) < 400 for m in refused)  # the attacker's 100 x are cut
