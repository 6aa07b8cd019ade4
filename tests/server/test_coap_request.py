"""``LwM2MServer.coap_request``: a non-LwM2M CoAP request to a registered device over the
channel its registration came in on. Over a real DTLS-PSK session a large body goes Block1
and a large answer comes back Block2, whole, with its code and Content-Format; over plain
CoAP it leaves from the server's socket (the one the device registered with). An unknown
endpoint and a method that is no request raise before anything is sent; a silent device is
a RequestTimeout, an RST a NoResponse (not a timeout), and the server serves on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import Event, RequestReceived
from lwm2m.server import (
    InvalidRequest,
    NoResponse,
    RequestTimeout,
    ServerError,
    UnknownEndpoint,
)
from lwm2m.store import Store
from tests.server.conftest import (
    Handler,
    RawClient,
    grant_psk,
    resetting_peer,
    run,
    running_server,
)

KEY = bytes(range(16))
SEGMENTS = ("gsma", "rsp2", "asn1")


class PeerClient(RawClient):
    """A RawClient that records where each request came from."""

    def __init__(self, handler: Handler | None = None) -> None:
        super().__init__(handler)
        self.sources: list[tuple[str, int]] = []

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            where: Any = getattr(event.peer, "address", event.peer)
            self.sources.append((str(where[0]), int(where[1])))
        super()._on_event(event)


def _echo(seen: list[Message]) -> PeerClient:
    """Answers POST /gsma/rsp2/asn1 with 2.04, CF 42 and the body reversed and doubled."""

    def handler(message: Message) -> Message | None:
        if tuple(message.opt.uri_path) != SEGMENTS:
            return Message(code=Code.NOT_FOUND)
        seen.append(message)
        answer = Message(code=Code.CHANGED, payload=bytes(message.payload[::-1]) * 2)
        answer.opt.content_format = 42
        return answer

    return PeerClient(handler)


def test_a_raw_request_rides_the_devices_dtls_session_blockwise(store: Store) -> None:
    grant_psk(store, "dtls-ipa", b"dtls-ipa-id", KEY)
    body = bytes(i % 251 for i in range(2500))  # several 1 KiB blocks each way

    async def scenario() -> None:
        async with running_server(store) as server:
            seen: list[Message] = []
            client = await _echo(seen).connect(server.coaps_address, psk=(b"dtls-ipa-id", KEY))
            assert (await client.register("dtls-ipa")).code == Code.CREATED
            registration = server.registration("dtls-ipa")
            assert registration is not None and registration.secure
            response = await server.coap_request(
                "dtls-ipa", "POST", SEGMENTS, body, content_format=42, timeout=5.0
            )
            assert response.code == Code.CHANGED and response.success
            assert response.content_format == 42
            assert response.payload == body[::-1] * 2
            assert len(seen) == 1  # reassembled by the device's core: one request, whole
            assert bytes(seen[0].payload) == body
            assert seen[0].opt.content_format == 42
            assert seen[0].code == Code.POST
            # an error code is a response like any other, not an exception
            missing = await server.coap_request("dtls-ipa", Code.GET, ("nothing",))
            assert missing.code == Code.NOT_FOUND and not missing.success
            client.close()

    run(scenario())


def test_a_raw_request_leaves_from_the_servers_socket_to_the_registered_address(
    store: Store,
) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            seen: list[Message] = []
            client = _echo(seen)
            await client.connect(server.coap_address)
            assert (await client.register("plain-ipa")).code == Code.CREATED
            response = await server.coap_request("plain-ipa", 2, SEGMENTS, b"abc")
            assert (response.code, response.payload) == (Code.CHANGED, b"cbacba")
            coap = server.coap_address
            assert coap is not None
            assert client.sources == [(str(coap[0]), int(coap[1]))]  # the server's own socket
            client.close()

    run(scenario())


def test_unknown_endpoint_and_bad_method_raise_before_sending(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            with pytest.raises(UnknownEndpoint):
                await server.coap_request("nobody", "POST", SEGMENTS, b"x")
            client = await RawClient().connect(server.coap_address)
            assert (await client.register("dev")).code == Code.CREATED
            for method in ("CONTENT", 69, "NOPE"):
                with pytest.raises(InvalidRequest):
                    await server.coap_request("dev", method, SEGMENTS)
            assert client.requests == []
            client.close()

    run(scenario())


def test_silence_is_a_request_timeout_and_rst_is_no_response(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            client = await RawClient(lambda _m: None).connect(server.coap_address)
            assert (await client.register("mute")).code == Code.CREATED
            with pytest.raises(RequestTimeout) as timed_out:
                await server.coap_request("mute", "POST", SEGMENTS, b"x", timeout=0.3)
            assert timed_out.value.endpoint == "mute" and timed_out.value.status == "timeout"
            assert isinstance(timed_out.value, NoResponse | ServerError)
            assert len(client.requests) >= 1  # it was sent; nobody answered
            port = client.local_port
            client.close()
            await asyncio.sleep(0.05)
            async with resetting_peer(port):
                with pytest.raises(NoResponse) as reset:
                    await server.coap_request("mute", "POST", SEGMENTS, b"x", timeout=5.0)
                assert not isinstance(reset.value, RequestTimeout)
                assert reset.value.status == "unreachable"
            assert server.handler_errors == 0

    run(scenario())
