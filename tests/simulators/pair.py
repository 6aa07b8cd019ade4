"""A simulated device wired to a server-side CoAP endpoint that the test drives, on a fake
clock, with no sockets.

The test plays the LwM2M server: it sends requests built with aiocoap ``Message`` and the
codecs through a real :class:`~lwm2m.coap.CoapEndpoint` and reads the device's answers. A small
built-in registrar answers Register (2.01, ``Location-Path: rd/r<n>``), Update (2.04),
De-register (2.02) and Send (2.04) unless the test installs its own ``registrar``.
Datagrams arrive instantly and in order; ``drop_to_device`` / ``drop_to_server`` lose them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import (
    CoapEndpoint,
    EndpointConfig,
    NotificationReceived,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
    TransmissionParameters,
)
from lwm2m.model import Path
from simulators.device.client import LwM2MClient
from simulators.device.config import ClientConfig
from simulators.device.core import DeviceCore
from simulators.device.defaults import default_template
from simulators.device.events import ClientEvent
from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceTemplate

SERVER, DEVICE = "server", "device"
CLOCK = 1_700_000_000.0
"""Wall-clock time at ``now == 0`` (the device's Current Time and SenML times use it)."""

Registrar = Callable[[Message], Message | None]
E = TypeVar("E")


def exact_coap() -> EndpointConfig:
    """RFC timing without jitter, so retransmission times are exact."""
    return EndpointConfig(transmission=TransmissionParameters(ack_random_factor=1.0))


def request(
    code: Code,
    path: str,
    *,
    accept: int | None = None,
    content_format: int | None = None,
    payload: bytes = b"",
    query: tuple[str, ...] = (),
    observe: int | None = None,
) -> Message:
    """A request from the server to the device."""
    segments = tuple(s for s in path.split("/") if s)
    message = Message(code=code, uri_path=segments, payload=payload)
    if accept is not None:
        message.opt.accept = accept
    if content_format is not None:
        message.opt.content_format = content_format
    if query:
        message.opt.uri_query = query
    if observe is not None:
        message.opt.observe = observe
    return message


@dataclass
class Received:
    """A request the device sent to the server, with when it arrived."""

    at: float
    message: Message

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.message.opt.uri_path)

    @property
    def query(self) -> tuple[str, ...]:
        return tuple(self.message.opt.uri_query)


@dataclass
class Pair:
    config: ClientConfig = field(default_factory=ClientConfig)
    template: DeviceTemplate | None = None
    endpoint: str = "sim-0001"
    seed: int = 1

    def __post_init__(self) -> None:
        self.now = 0.0
        self.server = CoapEndpoint(rng=random.Random(self.seed), config=exact_coap())
        self.device = DeviceCore(
            self.template or default_template(),
            self.endpoint,
            SERVER,
            config=self.config,
            rng=random.Random(self.seed + 1),
            coap_config=exact_coap(),
            clock_offset=CLOCK,
        )
        self.events: list[ClientEvent] = []
        self.received: list[Received] = []
        self.responses: dict[RequestHandle, Message] = {}
        self.failures: dict[RequestHandle, RequestFailed] = {}
        self.notifications: dict[RequestHandle, list[tuple[float, Message]]] = {}
        self.registrar: Registrar | None = None
        self.drop_to_device = False
        self.drop_to_server = False
        self._registrations = 0

    @property
    def store(self) -> ObjectStore:
        return self.device.store

    @property
    def client(self) -> LwM2MClient:
        return self.device.client

    # -- the server side ------------------------------------------------------------------------
    def _default_registrar(self, message: Message) -> Message:
        path = tuple(message.opt.uri_path)
        if message.code == Code.POST and path == ("rd",):
            self._registrations += 1
            reply = Message(code=Code.CREATED)
            reply.opt.location_path = ("rd", f"r{self._registrations}")
            return reply
        if message.code == Code.POST and path[:1] == ("rd",):
            return Message(code=Code.CHANGED)
        if message.code == Code.DELETE:
            return Message(code=Code.DELETED)
        if message.code == Code.POST and path == ("dp",):
            return Message(code=Code.CHANGED)
        return Message(code=Code.NOT_FOUND)

    def _server_events(self) -> None:
        while (event := self.server.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self.received.append(Received(self.now, event.message))
                reply = None
                if self.registrar is not None:
                    reply = self.registrar(event.message)
                if reply is None:
                    reply = self._default_registrar(event.message)
                self.server.respond(event.request, reply, self.now)
            elif isinstance(event, ResponseReceived):
                self.responses[event.request] = event.message
            elif isinstance(event, NotificationReceived):
                self.notifications.setdefault(event.request, []).append((self.now, event.message))
            elif isinstance(event, RequestFailed):
                self.failures[event.request] = event

    def _device_events(self) -> None:
        while (event := self.device.next_event()) is not None:
            self.events.append(event)

    def flush(self) -> None:
        """Deliver every datagram in flight until both sides are quiet (no time passes)."""
        self._server_events()
        self._device_events()
        while True:
            moved = False
            for data, _ in self.device.datagrams_to_send(self.now):
                moved = True
                if not self.drop_to_server:
                    self.server.receive_datagram(data, DEVICE, self.now)
                self._server_events()
            for data, _ in self.server.datagrams_to_send(self.now):
                moved = True
                if not self.drop_to_device:
                    self.device.receive_datagram(data, SERVER, self.now)
                self._device_events()
            self._server_events()
            self._device_events()
            if not moved:
                return

    def _next_time(self) -> float | None:
        times = [t for t in (self.device.get_timer(), self.server.get_timer()) if t is not None]
        return min(times) if times else None

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass, firing every timer on the way."""
        self.run_until_time(self.now + seconds)

    def run_until_time(self, end: float) -> None:
        self.flush()
        while True:
            when = self._next_time()
            if when is None or when > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, when)
            self.server.handle_timer(self.now)
            self.device.handle_timer(self.now)
            self.flush()

    def run_until(self, done: Callable[[], bool], *, limit: float = 100_000.0) -> None:
        self.flush()
        while not done():
            when = self._next_time()
            if when is None or when > limit:
                raise AssertionError(f"condition not reached by t={self.now}")
            self.now = max(self.now, when)
            self.server.handle_timer(self.now)
            self.device.handle_timer(self.now)
            self.flush()

    # -- conveniences -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the device and let it register."""
        self.device.start(self.now)
        self.run_until(lambda: self.client.registered)

    def send(self, message: Message) -> RequestHandle:
        handle = self.server.send_request(DEVICE, message, self.now)
        self.flush()
        return handle

    def ask(self, message: Message) -> Message:
        """Send a request to the device and return its response."""
        handle = self.send(message)
        self.run_until(lambda: handle in self.responses or handle in self.failures)
        assert handle not in self.failures, self.failures[handle]
        return self.responses[handle]

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def take(self, kind: type[E]) -> list[E]:
        """Events of ``kind`` so far, removed from ``events``."""
        taken = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return taken

    def registers(self) -> list[Received]:
        return [r for r in self.received if r.path == ("rd",)]

    def updates(self) -> list[Received]:
        return [r for r in self.received if len(r.path) == 2 and r.message.code == Code.POST]


def code(message: Message) -> str:
    return f"{message.code >> 5}.{message.code & 31:02d}"


def p(text: str) -> Path:
    return Path.parse(text)
