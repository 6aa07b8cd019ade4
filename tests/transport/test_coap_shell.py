"""The asyncio shell running the real sans-IO CoAP core on the real transports."""

from __future__ import annotations

import asyncio
import random

import aiocoap
from aiocoap import CONTENT, GET, Message

from lwm2m.coap import (
    CloseReason,
    CoapEndpoint,
    EndpointConfig,
    Event,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    TransmissionParameters,
)
from lwm2m.transport import (
    DtlsClient,
    DtlsClientConfig,
    DtlsServer,
    Peer,
    PskIdentity,
    UdpTransport,
)
from lwm2m.transport.coap_shell import CoapShell
from tests.transport.helpers import (
    PSK_IDENTITY,
    PSK_KEY,
    eventually,
    local_socket,
    psk_server_config,
    require_binary,
    run,
    run_process,
)


class App:
    """Records events; answers requests with 2.05 naming the path and the peer's identity
    (unless ``answer`` is off)."""

    def __init__(self, answer: bool = True) -> None:
        self.events: list[Event] = []
        self.answer = answer
        self.shell: CoapShell[Event] | None = None

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, RequestReceived) and self.answer:
            assert self.shell is not None
            peer = event.peer
            who = str(peer.identity) if isinstance(peer, Peer) and peer.identity else "anonymous"
            path = "/".join(event.message.opt.uri_path)
            response = Message(code=CONTENT, payload=f"{path} for {who}".encode())
            core = self.shell.core
            assert isinstance(core, CoapEndpoint)
            core.respond(event.request, response, self.shell.now())

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def make_shell(app: App, config: EndpointConfig | None = None) -> CoapShell[Event]:
    core = CoapEndpoint(rng=random.Random(7), config=config)
    shell: CoapShell[Event] = CoapShell(core, app)
    app.shell = shell
    return shell


def get(path: str) -> Message:
    return Message(code=GET, uri_path=tuple(path.split("/")))


def test_aiocoap_client_talks_to_the_core_over_udp() -> None:
    async def scenario() -> None:
        app = App()
        shell = make_shell(app)
        udp = await UdpTransport.create(shell, host="127.0.0.1")
        shell.attach(udp)
        client = await aiocoap.Context.create_client_context()
        try:
            uri = f"coap://127.0.0.1:{udp.local_address[1]}/3/0/1"
            response = await asyncio.wait_for(
                client.request(aiocoap.Message(code=GET, uri=uri)).response, 10
            )
        finally:
            await client.shutdown()
            shell.close()
        assert response.code == CONTENT
        assert response.payload == b"3/0/1 for anonymous"
        assert len(app.of_type(RequestReceived)) == 1

    run(scenario())


def test_a_device_and_the_server_exchange_requests_both_ways_over_dtls() -> None:
    async def scenario() -> None:
        server_app, device_app = App(), App()
        server_shell = make_shell(server_app)
        server = await DtlsServer.create(
            server_shell,
            psk_server_config(),
            host="127.0.0.1",
            on_session_closed=server_shell.session_closed,
        )
        server_shell.attach(server)
        device_shell = make_shell(device_app)
        client = await DtlsClient.connect(
            device_shell,
            "127.0.0.1",
            server.local_address[1],
            DtlsClientConfig(psk=(PSK_IDENTITY, PSK_KEY)),
            local_addr=("127.0.0.1", 0),
            on_session_closed=device_shell.session_closed,
        )
        device_shell.attach(client)
        try:
            # Device -> server (a registration would go this way).
            device_core = device_shell.core
            assert isinstance(device_core, CoapEndpoint)
            device_core.send_request(client.peer, get("rd"), device_shell.now())
            device_shell.flush()
            await eventually(lambda: bool(device_app.of_type(ResponseReceived)))
            response = device_app.of_type(ResponseReceived)[0]
            assert isinstance(response, ResponseReceived)
            assert response.message.payload == b"rd for psk:" + PSK_IDENTITY

            # Server -> device, addressed to the Peer the server saw (a DM Read).
            request_event = server_app.of_type(RequestReceived)[0]
            assert isinstance(request_event, RequestReceived)
            device_peer = request_event.peer
            assert isinstance(device_peer, Peer)
            assert device_peer.identity == PskIdentity(PSK_IDENTITY) and device_peer.secure
            server_core = server_shell.core
            assert isinstance(server_core, CoapEndpoint)
            server_core.send_request(device_peer, get("3/0/0"), server_shell.now())
            server_shell.flush()
            await eventually(lambda: bool(server_app.of_type(ResponseReceived)))
            read = server_app.of_type(ResponseReceived)[0]
            assert isinstance(read, ResponseReceived)
            assert read.message.payload.startswith(b"3/0/0 for psk:")
        finally:
            device_shell.close()
            server_shell.close()
        assert server_shell.send_errors == 0 and server_shell.handler_errors == 0

    run(scenario())


def test_libcoap_openssl_client_talks_to_the_core_over_dtls() -> None:
    binary = require_binary("coap-client-openssl")

    async def scenario() -> None:
        app = App()
        shell = make_shell(app)
        server = await DtlsServer.create(shell, psk_server_config(), host="127.0.0.1")
        shell.attach(server)
        try:
            uri = f"coaps://127.0.0.1:{server.local_address[1]}/3/0/1"
            argv = ("-m", "get", "-B", "10", "-u", PSK_IDENTITY.decode(), "-k", PSK_KEY.decode())
            rc, out, err = await run_process(binary, *argv, uri)
        finally:
            shell.close()
        assert rc == 0, err
        assert out.strip() == b"3/0/1 for psk:" + PSK_IDENTITY

    run(scenario())


def test_the_shell_timer_drives_retransmission_until_the_core_gives_up() -> None:
    async def scenario() -> None:
        app = App()
        params = TransmissionParameters(ack_timeout=0.05, ack_random_factor=1.0, max_retransmit=2)
        shell = make_shell(app, EndpointConfig(transmission=params))
        udp = await UdpTransport.create(shell, host="127.0.0.1")
        shell.attach(udp)
        silent = local_socket()  # a device that went away
        silent.setblocking(False)
        try:
            core = shell.core
            assert isinstance(core, CoapEndpoint)
            core.send_request(Peer(silent.getsockname()), get("3/0/0"), shell.now())
            shell.flush()
            await eventually(lambda: bool(app.of_type(RequestFailed)), timeout=5)
            copies = []
            while True:
                try:
                    copies.append(silent.recv(2048))
                except BlockingIOError:
                    break
        finally:
            silent.close()
            shell.close()
        failed = app.of_type(RequestFailed)[0]
        assert isinstance(failed, RequestFailed) and failed.reason is CloseReason.TIMEOUT
        assert len(copies) == 3 and len(set(copies)) == 1  # first send + 2 retransmissions

    run(scenario())


def test_a_closed_dtls_session_makes_the_core_forget_the_peer_at_once() -> None:
    async def scenario() -> None:
        server_app = App()
        server_shell = make_shell(server_app)
        server = await DtlsServer.create(
            server_shell,
            psk_server_config(),
            host="127.0.0.1",
            on_session_closed=server_shell.session_closed,
        )
        server_shell.attach(server)
        device_app = App(answer=False)  # the device never answers ...
        device_shell = make_shell(device_app)
        client = await DtlsClient.connect(
            device_shell,
            "127.0.0.1",
            server.local_address[1],
            DtlsClientConfig(psk=(PSK_IDENTITY, PSK_KEY)),
            local_addr=("127.0.0.1", 0),
        )
        device_shell.attach(client)
        try:
            device_core = device_shell.core
            assert isinstance(device_core, CoapEndpoint)
            device_core.send_request(client.peer, get("rd"), device_shell.now())
            device_shell.flush()
            await eventually(lambda: bool(server_app.of_type(RequestReceived)))
            event = server_app.of_type(RequestReceived)[0]
            assert isinstance(event, RequestReceived)
            server_core = server_shell.core
            assert isinstance(server_core, CoapEndpoint)
            server_core.send_request(event.peer, get("3/0/0"), server_shell.now())
            server_shell.flush()
            await eventually(lambda: bool(device_app.of_type(RequestReceived)))
            client.close()  # ... and leaves (close_notify)
            await eventually(lambda: bool(server_app.of_type(RequestFailed)), timeout=3)
        finally:
            device_shell.close()
            server_shell.close()
        failed = server_app.of_type(RequestFailed)[0]
        assert isinstance(failed, RequestFailed)
        assert failed.reason is CloseReason.PEER_FORGOTTEN

    run(scenario())
