"""UDP transport: real sockets on 127.0.0.1, aiocoap's client and libcoap's as peers."""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import pytest

from lwm2m.transport import (
    Peer,
    PskIdentity,
    TransportClosed,
    UdpTransport,
    WrongTransport,
)
from lwm2m.transport._common import bind_plan
from tests.transport.helpers import (
    CoapResponder,
    Collector,
    local_socket,
    require_binary,
    run,
    run_process,
)


def test_aiocoap_client_gets_an_answer_through_the_udp_transport() -> None:
    async def scenario() -> None:
        responder = CoapResponder()
        udp = await UdpTransport.create(responder, host="127.0.0.1", port=0)
        responder.transport = udp
        port = udp.local_address[1]
        assert port != 0
        client = await aiocoap.Context.create_client_context()
        try:
            request = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/echo")
            response = await asyncio.wait_for(client.request(request).response, 10)
            assert response.code == aiocoap.CONTENT
            assert response.payload == b"echo anonymous"
            missing = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/nothing")
            response = await asyncio.wait_for(client.request(missing).response, 10)
            assert response.code == aiocoap.NOT_FOUND
        finally:
            await client.shutdown()
            udp.close()
            await udp.wait_closed()
        assert udp.stats.messages_received == 2
        assert udp.stats.messages_sent == 2
        _, peer = responder.requests[0]
        assert peer.secure is False and peer.identity is None
        assert peer.address[0] == "127.0.0.1"

    run(scenario())


def test_libcoap_notls_client_gets_an_answer_through_the_udp_transport() -> None:
    binary = require_binary("coap-client-notls")

    async def scenario() -> None:
        responder = CoapResponder()
        udp = await UdpTransport.create(responder, host="127.0.0.1")
        responder.transport = udp
        try:
            uri = f"coap://127.0.0.1:{udp.local_address[1]}/echo"
            rc, out, err = await run_process(binary, "-m", "get", "-B", "5", uri)
        finally:
            udp.close()
        assert rc == 0, err
        assert out.strip() == b"echo anonymous"

    run(scenario())


def test_the_same_peer_object_is_reused_for_an_address() -> None:
    async def scenario() -> None:
        sink = Collector()
        udp = await UdpTransport.create(sink, host="127.0.0.1")
        sender = local_socket()
        try:
            sender.sendto(b"one", udp.local_address)
            sender.sendto(b"two", udp.local_address)
            sender_address = sender.getsockname()
            (d1, p1), (d2, p2) = await sink.get(), await sink.get()
        finally:
            sender.close()
            udp.close()
        assert (d1, d2) == (b"one", b"two")
        assert p1 is p2
        assert p1.address == sender_address

    run(scenario())


def test_a_failing_sink_is_counted_and_the_transport_keeps_receiving() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.seen: list[bytes] = []

        def datagram_received(self, data: bytes, peer: Peer) -> None:
            self.seen.append(data)
            if data == b"boom":
                raise RuntimeError("sink bug")

    async def scenario() -> None:
        sink = Flaky()
        udp = await UdpTransport.create(sink, host="127.0.0.1")
        sender = local_socket()
        try:
            sender.sendto(b"boom", udp.local_address)
            sender.sendto(b"fine", udp.local_address)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while len(sink.seen) < 2 and loop.time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            sender.close()
            udp.close()
        assert sink.seen == [b"boom", b"fine"]
        assert udp.stats.sink_errors == 1

    run(scenario())


def test_udp_refuses_to_send_plaintext_to_a_dtls_peer_and_after_close() -> None:
    async def scenario() -> None:
        udp = await UdpTransport.create(Collector(), host="127.0.0.1")
        secure = Peer(("127.0.0.1", 9), PskIdentity(b"dev"), secure=True)
        with pytest.raises(WrongTransport):
            udp.send(b"secret", secure)
        udp.close()
        with pytest.raises(TransportClosed):
            udp.send(b"late", Peer(("127.0.0.1", 9)))
        assert udp.stats.datagrams_sent == 0

    run(scenario())


def test_default_bind_is_one_dual_stack_socket_and_literals_pick_their_family() -> None:
    assert bind_plan(None, 5683) == (socket.AF_INET6, ("::", 5683, 0, 0), True)
    assert bind_plan("127.0.0.1", 0) == (socket.AF_INET, ("127.0.0.1", 0), False)
    assert bind_plan("::1", 5684) == (socket.AF_INET6, ("::1", 5684, 0, 0), False)
    with pytest.raises(ValueError):
        bind_plan("127.0.0.1", 70000)
