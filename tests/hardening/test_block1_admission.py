"""Issue 14 item 1: Block1 bodies are not buffered for a peer that may not register, and are
bounded per peer and in total -- against a real ``fleetloop serve`` over real UDP.

Before the fix every block 0 from anybody got 2.31 Continue and its bytes were held (up to
16 MiB per transfer, 10 000 transfers), even with ``--secure-only``."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from tests.hardening.serve_proc import ServeProcess

BLOCK = 1024  # szx 6
_MIDS = itertools.count(1)


def _register_block(num: int, more: bool, payload: bytes, *, size1: int | None = None) -> bytes:
    message = Message(code=Code.POST)
    message.mtype, message.mid, message.token = Type.CON, next(_MIDS) & 0xFFFF, b"b1"
    message.opt.uri_path = ("rd",)
    message.opt.uri_query = ("ep=block1-dev", "lt=300", "lwm2m=1.1")
    message.opt.content_format = 40
    message.opt.block1 = (num, more, 6)
    if size1 is not None:
        message.opt.size1 = size1
    message.payload = payload
    return bytes(message.encode())


def _exchange(sock: socket.socket, port: int, datagram: bytes) -> Message:
    sock.sendto(datagram, ("127.0.0.1", port))
    while True:
        answer = Message.decode(sock.recv(2048))
        if answer.mtype == Type.ACK and answer.code != Code.EMPTY:
            return answer


def _links(size: int) -> bytes:
    links = b",".join(b"</%d/0>" % (1000 + i) for i in range(size // 8 + 1))
    text = (b"</1/0>,</3/0>," + links)[:size]
    return text[: text.rindex(b",")]  # whole links only


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_secure_only_buffers_nothing_for_a_plain_coap_peer(
    tmp_path: Path, udp: socket.socket
) -> None:
    server = ServeProcess(tmp_path / "data", extra_args=("--secure-only",))
    server.start()
    try:
        answer = _exchange(udp, server.coap_port, _register_block(0, True, bytes(BLOCK)))
        assert answer.code == Code.UNAUTHORIZED, answer
        assert b"may not register over plain CoAP" in answer.payload
    finally:
        assert server.stop() == 0


def test_register_bodies_are_capped_and_unregistered_peers_share_a_pool(
    tmp_path: Path, udp: socket.socket
) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    peers: list[socket.socket] = []
    try:
        port = server.coap_port
        # Size1 announcing a 1 MiB object list: 4.13 at block 0, Size1 naming the cap.
        answer = _exchange(udp, port, _register_block(0, True, bytes(BLOCK), size1=1 << 20))
        assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE, answer
        assert answer.opt.size1 == 16 * 1024
        # No Size1: the block that crosses the cap gets 4.13.
        body = _links(40 * BLOCK)
        codes = []
        for num in range(40):
            answer = _exchange(udp, port, _register_block(num, True, body[num * BLOCK :][:BLOCK]))
            codes.append(answer.code)
            if answer.code != Code.CONTINUE:
                break
        assert codes == [Code.CONTINUE] * 16 + [Code.REQUEST_ENTITY_TOO_LARGE]
        # Unregistered peers together hold at most 1 MiB: the 65th peer with 15 KiB gets 5.03.
        refused = None
        for index in range(80):
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind(("127.0.0.1", 0))
            peer.settimeout(5)
            peers.append(peer)
            for num in range(15):
                answer = _exchange(peer, port, _register_block(num, True, bytes(BLOCK)))
                if answer.code != Code.CONTINUE:
                    refused = (index, answer.code)
                    break
            if refused:
                break
        assert refused is not None and refused[1] == Code.SERVICE_UNAVAILABLE, refused
        assert 60 <= refused[0] <= 70, refused
        # A normal block-wise Register of a few KiB still registers.
        small = _links(3 * BLOCK - 100)
        blocks = [small[i : i + BLOCK] for i in range(0, len(small), BLOCK)]
        fresh = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fresh.bind(("127.0.0.1", 0))
        fresh.settimeout(5)
        peers.append(fresh)
        for peer in peers[:-1]:  # the flood's peers give up (their transfers dropped)
            peer.sendto(_register_block(99, False, b"x"), ("127.0.0.1", port))
        answers = [
            _exchange(fresh, port, _register_block(n, n < len(blocks) - 1, b))
            for n, b in enumerate(blocks)
        ]
        assert answers[-1].code == Code.CREATED, answers[-1].payload
    finally:
        for peer in peers:
            peer.close()
        assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_a_block_wise_send_from_an_unregistered_address_is_refused_unbuffered(
    tmp_path: Path, udp: socket.socket
) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    try:
        message = Message(code=Code.POST)
        message.mtype, message.mid, message.token = Type.CON, 7, b"s1"
        message.opt.uri_path = ("dp",)
        message.opt.content_format = 112
        message.opt.block1 = (0, True, 6)
        message.payload = bytes(BLOCK)
        answer = _exchange(udp, server.coap_port, bytes(message.encode()))
        assert answer.code == Code.UNAUTHORIZED, answer
    finally:
        assert server.stop() == 0


def test_the_bootstrap_sockets_buffer_no_block_wise_body(
    tmp_path: Path, udp: socket.socket
) -> None:
    """No bootstrap request needs Block1, and its peers are not authenticated yet: block 0
    is refused with 4.13 before a byte is held (it was 2.31 Continue, up to 16 MiB)."""
    server = ServeProcess(tmp_path / "data", extra_args=("--bs-coap", "127.0.0.1:0"))
    server.start()
    try:
        port = int(server.info["extra"]["bs_coap"]["port"])
        message = Message(code=Code.POST)
        message.mtype, message.mid, message.token = Type.CON, next(_MIDS) & 0xFFFF, b"bs"
        message.opt.uri_path = ("bs",)
        message.opt.uri_query = ("ep=block1-dev",)
        message.opt.block1 = (0, True, 6)
        message.payload = bytes(BLOCK)
        answer = _exchange(udp, port, bytes(message.encode()))
        assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE, answer
        assert b"no block-wise request bodies" in answer.payload
    finally:
        assert server.stop() == 0
