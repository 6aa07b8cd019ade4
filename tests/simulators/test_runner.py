"""The asyncio runner over real sockets on 127.0.0.1: a tiny registrar written here (plain UDP,
and DTLS with PSK) registers a small fleet, reads and observes a device, and sees the
De-registers when the fleet closes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.transport import (
    CertificateIdentity,
    DtlsServer,
    DtlsServerConfig,
    MappingPskStore,
    Peer,
    Transport,
    UdpTransport,
)
from simulators.device.events import Notified, Registered
from simulators.runner import Fleet, RegistrationError, ServerUri, SimulatedDevice
from tests.transport.helpers import Pki


class Registrar:
    """A minimal LwM2M server: answers Register/Update/De-register, sends CON requests to
    devices and collects their responses and notifications."""

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.registered: dict[str, Peer] = {}
        self.requests: list[tuple[Peer, Message]] = []
        self.notifications: list[Message] = []
        self.refuse: Code | None = None
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()

    def datagram_received(self, data: bytes, peer: Peer) -> None:
        message = Message.decode(data)
        if message.code.is_request():
            self.requests.append((peer, message))
            reply = self._answer(message, peer)
            reply.mtype, reply.mid, reply.token = Type.ACK, message.mid, message.token
            self._send(reply, peer)
        elif message.code.is_response():
            if message.mtype == Type.CON:
                ack = Message(code=Code.EMPTY)
                ack.mtype, ack.mid = Type.ACK, message.mid
                self._send(ack, peer)
            future = self._pending.pop(message.token, None)
            if future is not None and not future.done():
                future.set_result(message)
            elif message.opt.observe is not None:
                self.notifications.append(message)
        self._changed.set()

    def _answer(self, message: Message, peer: Peer) -> Message:
        path = tuple(message.opt.uri_path)
        if self.refuse is not None:
            return Message(code=self.refuse)
        if message.code == Code.POST and path == ("rd",):
            query = dict(q.split("=", 1) for q in message.opt.uri_query if "=" in q)
            self.registered[query["ep"]] = peer
            reply = Message(code=Code.CREATED)
            reply.opt.location_path = ("rd", query["ep"])
            return reply
        if message.code == Code.DELETE:
            return Message(code=Code.DELETED)
        return Message(code=Code.CHANGED)

    def _send(self, message: Message, peer: Peer) -> None:
        assert self.transport is not None
        self.transport.send(message.encode(), peer)

    async def ask(self, endpoint: str, message: Message) -> Message:
        token = next(self._ids).to_bytes(4, "big")
        message.mtype, message.mid, message.token = Type.CON, next(self._ids) & 0xFFFF, token
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        self._send(message, self.registered[endpoint])
        return await asyncio.wait_for(future, 5)

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        async def poll() -> None:
            while not done():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(poll(), timeout)


async def udp_registrar() -> tuple[Registrar, str]:
    registrar = Registrar()
    transport = await UdpTransport.create(registrar, host="127.0.0.1", port=0)
    registrar.transport = transport
    return registrar, f"coap://127.0.0.1:{transport.local_address[1]}"


KEY = bytes(range(16))


async def dtls_registrar() -> tuple[Registrar, str]:
    registrar = Registrar()
    store = MappingPskStore({b"sim-psk-0": KEY, b"sim-psk-1": KEY})
    server = await DtlsServer.create(
        registrar, DtlsServerConfig(psk_store=store), host="127.0.0.1", port=0
    )
    registrar.transport = server
    return registrar, f"coaps://127.0.0.1:{server.local_address[1]}"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_fleet_registers_is_read_and_observed_and_deregisters_over_udp() -> None:
    async def scenario() -> None:
        registrar, uri = await udp_registrar()
        try:
            async with Fleet(uri, seed=7) as fleet:
                for i in range(3):
                    fleet.add(f"sim-{i}")
                await fleet.wait_registered(timeout=5)
                assert set(registrar.registered) == {"sim-0", "sim-1", "sim-2"}
                device = fleet["sim-1"]
                assert device.local_address[1] == registrar.registered["sim-1"].address[1]
                reply = await registrar.ask(
                    "sim-1", Message(code=Code.GET, uri_path=("3", "0", "2"))
                )
                assert (reply.code, reply.payload) == (Code.CONTENT, b"sim-1")

                observe = Message(code=Code.GET, uri_path=("3", "0", "9"), observe=0)
                first = await registrar.ask("sim-1", observe)
                assert (first.opt.observe, first.payload) == (0, b"95")
                device.set("/3/0/9", 42)
                await registrar.until(lambda: bool(registrar.notifications))
                assert registrar.notifications[0].payload == b"42"
                assert isinstance(device.events[-1], Notified)
        finally:
            assert registrar.transport is not None
            deletes = [m for _, m in registrar.requests if m.code == Code.DELETE]
            registrar.transport.close()
        assert sorted(tuple(m.opt.uri_path) for m in deletes) == [
            ("rd", "sim-0"),
            ("rd", "sim-1"),
            ("rd", "sim-2"),
        ]

    run(scenario)


def test_devices_register_over_dtls_with_psk() -> None:
    async def scenario() -> None:
        registrar, uri = await dtls_registrar()
        try:
            async with SimulatedDevice("sim-psk-0", uri, psk=(b"sim-psk-0", KEY)) as device:
                registered = await device.wait_registered(timeout=5)
                assert registered.location == ("rd", "sim-psk-0")
                peer = registrar.registered["sim-psk-0"]
                assert peer.secure and str(peer.identity) == "psk:sim-psk-0"
                reply = await registrar.ask(
                    "sim-psk-0", Message(code=Code.GET, uri_path=("3", "0", "0"))
                )
                assert reply.payload == b"fleetloop-sim"
                assert device.read("/0/0/3") == b"sim-psk-0"
        finally:
            assert registrar.transport is not None
            registrar.transport.close()

    run(scenario)


def test_a_device_registers_over_dtls_with_a_certificate() -> None:
    pki = Pki.create()
    server_credentials = pki.credentials("dm.test", pki.ca_pem, dns=("dm.test",))
    device_credentials = pki.credentials("sim-x509", pki.ca_pem)

    async def scenario() -> None:
        registrar = Registrar()
        server = await DtlsServer.create(
            registrar, DtlsServerConfig(x509=server_credentials), host="127.0.0.1", port=0
        )
        registrar.transport = server
        uri = f"coaps://127.0.0.1:{server.local_address[1]}"
        try:
            device = SimulatedDevice(
                "sim-x509", uri, x509=device_credentials, server_hostname="dm.test"
            )
            async with device:
                await device.wait_registered(timeout=5)
                identity = registrar.registered["sim-x509"].identity
                assert isinstance(identity, CertificateIdentity)
                assert identity.common_name == "sim-x509"
                assert device.read("/0/0/2") == 2  # security mode: certificate
        finally:
            server.close()

    run(scenario)


def test_wait_registered_raises_when_the_device_gives_up() -> None:
    async def scenario() -> None:
        registrar, uri = await udp_registrar()
        registrar.refuse = Code.FORBIDDEN
        try:
            device = SimulatedDevice("sim-x", uri)
            await device.start()
            device.store.set("/1/0/17", 1)  # one attempt per sequence, one sequence
            with pytest.raises(RegistrationError, match=r"4\.03"):
                await device.wait_registered(timeout=5)
            assert not any(isinstance(e, Registered) for e in device.events)
            await device.stop()
        finally:
            assert registrar.transport is not None
            registrar.transport.close()

    run(scenario)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("coap://h", ServerUri("coap", "h", 5683)),
        ("coaps://10.0.0.1:9000", ServerUri("coaps", "10.0.0.1", 9000)),
        ("coap://[::1]:5", ServerUri("coap", "::1", 5)),
    ],
)
def test_server_uris_parse(uri: str, expected: ServerUri) -> None:
    assert ServerUri.parse(uri) == expected


@pytest.mark.parametrize("uri", ["http://h", "coap://", "h:5683"])
def test_bad_server_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="coap"):
        ServerUri.parse(uri)


def test_a_coaps_device_needs_credentials() -> None:
    with pytest.raises(ValueError, match="psk"):
        SimulatedDevice("d", "coaps://127.0.0.1:1")
