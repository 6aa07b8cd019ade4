"""Fixtures of the server tests: a real store (SQLite and PostgreSQL), the server on
ephemeral ports, and a minimal raw LwM2M client for what the simulator will not send.

Integration tests take the ``store`` fixture (parametrised over both backends, via
``tests/store/conftest.py``) and run their coroutine with :func:`run`. The simulated device
(``simulators.runner.SimulatedDevice``) is the normal client; :class:`RawClient` sends
hand-made Registers, malformed payloads, answers server requests with canned responses and
can move to a new source port (NAT rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import (
    CoapEndpoint,
    Event,
    Observation,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.server import LwM2MServer, ServerConfig, ServerEvent
from lwm2m.store import EndpointSecurity, PskCredential, Store
from lwm2m.transport import (
    DtlsClient,
    DtlsClientConfig,
    Peer,
    Transport,
    UdpTransport,
    X509Credentials,
)
from lwm2m.transport.coap_shell import CoapShell
from tests.store.conftest import StoreTarget, pg_admin, target  # noqa: F401  (fixtures)

T = TypeVar("T")

__all__ = ["RawClient", "eventually", "run", "running_server"]


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test coroutine on a fresh loop, with a ceiling so a hang fails the test."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.fixture
def store(target: StoreTarget) -> Iterator[Store]:  # noqa: F811
    """An open store with its schema; SQLite and PostgreSQL."""
    s = target.open()
    s.create_schema()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Any) -> Iterator[Store]:
    """SQLite only: for the format matrix, where the backend plays no part."""
    s = Store.open(None, tmp_path)
    s.create_schema()
    try:
        yield s
    finally:
        s.close()


def server_config(**overrides: Any) -> ServerConfig:
    """Loopback, ephemeral ports, short timeouts."""
    settings: dict[str, Any] = {
        "coap_host": "127.0.0.1",
        "coap_port": 0,
        "coaps_host": "127.0.0.1",
        "coaps_port": 0,
        "request_timeout": 5.0,
    }
    settings.update(overrides)
    return ServerConfig(**settings)


@contextlib.asynccontextmanager
async def running_server(store: Store, **overrides: Any) -> AsyncIterator[LwM2MServer]:
    server = await LwM2MServer.start(server_config(**overrides), store)
    try:
        yield server
    finally:
        await server.stop()


def coap_uri(server: LwM2MServer) -> str:
    address = server.coap_address
    assert address is not None
    return f"coap://{address[0]}:{address[1]}"


def coaps_uri(server: LwM2MServer) -> str:
    address = server.coaps_address
    assert address is not None
    return f"coaps://{address[0]}:{address[1]}"


def grant_psk(store: Store, endpoint: str, identity: bytes, key: bytes, **extra: Any) -> None:
    with store.transaction() as tx:
        store.security.set(
            tx, EndpointSecurity(endpoint, psk=PskCredential(identity.decode(), key), **extra), 0.0
        )


def set_security(store: Store, security: EndpointSecurity) -> None:
    with store.transaction() as tx:
        store.security.set(tx, security, 0.0)


@dataclass
class EventLog:
    """Collects a server's events in the background."""

    events: list[ServerEvent] = field(default_factory=list)

    def of(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def collecting(server: LwM2MServer) -> AsyncIterator[EventLog]:
    log = EventLog()
    subscription = server.subscribe()

    async def pump() -> None:
        async for event in subscription:
            log.events.append(event)

    task = asyncio.get_running_loop().create_task(pump())
    try:
        yield log
    finally:
        await subscription.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


Handler = Callable[[Message], Message | None]


class RawClient:
    """A bare CoAP endpoint on its own socket that speaks LwM2M only as far as a test says.

    ``handler(request) -> response | None`` answers the server's requests (None: stay
    silent); the default answers 4.04. ``requests`` records what the server asked.
    """

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler: Handler = handler or (lambda _m: Message(code=Code.NOT_FOUND))
        self.requests: list[Message] = []
        self.observations: list[Observation] = []
        self._futures: dict[Any, asyncio.Future[Message]] = {}
        self.core: CoapEndpoint | None = None
        self.shell: CoapShell[Event] | None = None
        self.transport: Transport | None = None
        self.server: Peer | None = None

    async def connect(
        self,
        address: Any,
        *,
        psk: tuple[bytes, bytes] | None = None,
        x509: X509Credentials | None = None,
        local_port: int = 0,
    ) -> RawClient:
        host, port = address[0], address[1]
        self.core = CoapEndpoint(rng=random.Random(7))
        self.shell = CoapShell(self.core, self._on_event)
        if psk is not None or x509 is not None:
            dtls = await DtlsClient.connect(
                self.shell,
                host,
                port,
                DtlsClientConfig(psk=psk, x509=x509),
                local_addr=("127.0.0.1", local_port),
                on_session_closed=self.shell.session_closed,
            )
            self.transport, self.server = dtls, dtls.peer
        else:
            udp = await UdpTransport.create(self.shell, host="127.0.0.1", port=local_port)
            self.transport, self.server = udp, Peer((host, port))
        self.shell.attach(self.transport)
        return self

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return int(self.transport.local_address[1])

    def _on_event(self, event: Event) -> None:
        assert self.core is not None and self.shell is not None
        if isinstance(event, RequestReceived):
            self.requests.append(event.message)
            reply = self.handler(event.message)
            if reply is not None:
                observation = self.core.respond(event.request, reply, self.shell.now())
                if observation is not None:
                    self.observations.append(observation)
        elif isinstance(event, ResponseReceived | RequestFailed):
            future = self._futures.pop(event.request, None)
            if future is not None and not future.done():
                if isinstance(event, ResponseReceived):
                    future.set_result(event.message)
                else:
                    future.set_exception(TimeoutError(f"request failed: {event.reason}"))

    async def request(
        self,
        method: Code,
        path: str,
        *,
        query: tuple[str, ...] = (),
        payload: bytes = b"",
        content_format: int | None = None,
        timeout: float = 5.0,
    ) -> Message:
        assert self.core is not None and self.shell is not None and self.server is not None
        message = Message(code=method, payload=payload)
        segments = tuple(p for p in path.split("/") if p)
        if segments:
            message.opt.uri_path = segments
        if query:
            message.opt.uri_query = query
        if content_format is not None:
            message.opt.content_format = content_format
        handle = self.core.send_request(self.server, message, self.shell.now())
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._futures[handle] = future
        self.shell.flush()
        return await asyncio.wait_for(future, timeout)

    async def register(
        self,
        endpoint: str,
        *,
        lifetime: int | None = 60,
        version: str | None = "1.1",
        payload: bytes = b'</>;rt="oma.lwm2m";ct="0 11542",</1/0>,</3/0>',
        extra: tuple[str, ...] = (),
    ) -> Message:
        query = [f"ep={endpoint}"]
        if lifetime is not None:
            query.append(f"lt={lifetime}")
        if version is not None:
            query.append(f"lwm2m={version}")
        return await self.request(
            Code.POST,
            "/rd",
            query=(*query, *extra),
            payload=payload,
            content_format=40,
        )

    def notify(self, observation: Observation, message: Message) -> None:
        assert self.core is not None and self.shell is not None
        self.core.send_notification(observation, message, self.shell.now())
        self.shell.flush()

    def close(self) -> None:
        if self.shell is not None:
            self.shell.close()
            self.shell = None


@contextlib.asynccontextmanager
async def resetting_peer(port: int) -> AsyncIterator[None]:
    """A peer on 127.0.0.1:``port`` that answers every request with a CoAP Reset -- what a
    device that rebooted and lost its exchange state does."""
    loop = asyncio.get_running_loop()

    class Resetter(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            request = Message.decode(data)
            rst = Message(code=Code.EMPTY)
            rst.mtype, rst.mid = Type.RST, request.mid
            self.transport.sendto(rst.encode(), addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Resetter, local_addr=("127.0.0.1", port))
    try:
        yield
    finally:
        transport.close()


def location(response: Message) -> str:
    """``/rd/<id>`` of a 2.01."""
    return "/" + "/".join(response.opt.location_path)
