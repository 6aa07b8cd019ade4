"""A fake network for the fleet engine: a fake clock, an in-memory LwM2M registrar and a CoAP
file server, each a real :class:`~lwm2m.coap.CoapEndpoint`, and datagrams carried in lists.

The engine under test is the real one; only the sockets and the clock are replaced. Every
device has a source "port" that :meth:`SimNet.rebind` bumps, and a server answer addressed to
an old port is lost, as it is when a NAT binding or a socket is gone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import (
    CoapEndpoint,
    EndpointConfig,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
    TransmissionParameters,
)
from lwm2m.model import Path
from simulators.fleet.engine import Address, FleetEngine, Group
from simulators.profiles import DeviceProfile

SERVER: Address = ("10.0.0.1", 5683)
FILES: Address = ("10.0.0.2", 5683)
CLOCK = 1_700_000_000.0


def exact() -> EndpointConfig:
    return EndpointConfig(transmission=TransmissionParameters(ack_random_factor=1.0))


@dataclass
class Registration:
    location: str
    peer: tuple[Any, ...]
    registered_at: float
    updates: list[tuple[float, tuple[Any, ...]]] = field(default_factory=list)


def code(message: Message) -> str:
    return f"{message.code >> 5}.{message.code & 31:02d}"


class SimNet:
    """The engine on a fake network (see the module docstring); it is the engine's Wire."""

    def __init__(self, *, seed: int = 1, start: float = 1000.0) -> None:
        self.now = start
        self.server = CoapEndpoint(rng=random.Random(seed), config=exact())
        self.files_endpoint = CoapEndpoint(rng=random.Random(seed + 1), config=exact())
        self.files: dict[str, bytes] = {}
        self.engine = FleetEngine(self, seed=seed, record_events=True)
        self.ports: list[int] = []
        self.queue: list[tuple[Address, tuple[Any, ...], bytes]] = []
        self.registrations: dict[str, Registration] = {}
        self.by_location: dict[str, str] = {}
        self.received: list[tuple[float, str, Message]] = []
        self.responses: dict[RequestHandle, Message] = {}
        self.failures: dict[RequestHandle, RequestFailed] = {}
        self.refuse: Callable[[Message], Message | None] | None = None
        self.blocked = False  # the server is unreachable (every datagram to it is lost)

    # -- Wire ---------------------------------------------------------------------------------
    def send(self, index: int, data: bytes, address: Address) -> None:
        while len(self.ports) <= index:
            self.ports.append(40_000)
        self.queue.append((address, ("dev", index, self.ports[index]), data))

    def rebind(self, index: int) -> None:
        while len(self.ports) <= index:
            self.ports.append(40_000)
        self.ports[index] += 1

    # -- building -----------------------------------------------------------------------------
    def group(self, profile: DeviceProfile | None = None) -> Group:
        return self.engine.add_group(profile or DeviceProfile(), server_uri="coap://10.0.0.1")

    def spawn(self, count: int, group: Group | None = None, prefix: str = "sim-") -> list[int]:
        group = group or self.group()
        indices = []
        for _ in range(count):
            index = self.engine.add_device(
                group, f"{prefix}{len(self.engine):06d}", clock_offset=CLOCK
            )
            self.engine.start(index, self.now, server=SERVER)
            indices.append(index)
        self.flush()
        return indices

    # -- the network and servers ----------------------------------------------------------------
    def _serve(self, endpoint: CoapEndpoint, files: bool) -> None:
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, RequestReceived):
                if files:
                    body = self.files.get("/".join(event.message.opt.uri_path))
                    reply = (
                        Message(code=Code.CONTENT, payload=body)
                        if body is not None
                        else Message(code=Code.NOT_FOUND)
                    )
                else:
                    reply = self._registrar(event.message, event.peer)
                endpoint.respond(event.request, reply, self.now)
            elif isinstance(event, ResponseReceived):
                self.responses[event.request] = event.message
            elif isinstance(event, RequestFailed):
                self.failures[event.request] = event

    def _registrar(self, message: Message, peer: Any) -> Message:
        path = tuple(message.opt.uri_path)
        query = {q.partition("=")[0]: q.partition("=")[2] for q in message.opt.uri_query}
        self.received.append((self.now, "/".join(path), message))
        if self.refuse is not None and (refusal := self.refuse(message)) is not None:
            return refusal
        if message.code == Code.POST and path == ("rd",):
            endpoint = query["ep"]
            location = f"r{len(self.by_location) + 1}"
            self.registrations[endpoint] = Registration(location, peer, self.now)
            self.by_location[location] = endpoint
            reply = Message(code=Code.CREATED)
            reply.opt.location_path = ("rd", location)
            return reply
        if len(path) == 2 and path[0] == "rd" and path[1] in self.by_location:
            registration = self.registrations[self.by_location[path[1]]]
            if message.code == Code.DELETE:
                del self.registrations[self.by_location.pop(path[1])]
                return Message(code=Code.DELETED)
            registration.peer = peer
            registration.updates.append((self.now, peer))
            return Message(code=Code.CHANGED)
        if message.code == Code.POST and path == ("dp",):
            return Message(code=Code.CHANGED)
        return Message(code=Code.NOT_FOUND)

    def flush(self) -> None:
        """Carry datagrams both ways until nothing moves (no time passes)."""
        engine = self.engine
        for _ in range(10_000):
            self._serve(self.server, files=False)
            self._serve(self.files_endpoint, files=True)
            moved = False
            queue, self.queue = self.queue, []
            for address, source, data in queue:
                moved = True
                if address == SERVER and not self.blocked:
                    self.server.receive_datagram(data, source, self.now)
                elif address == FILES:
                    self.files_endpoint.receive_datagram(data, source, self.now)
            for endpoint, address in ((self.server, SERVER), (self.files_endpoint, FILES)):
                for data, peer in endpoint.datagrams_to_send(self.now):
                    moved = True
                    assert isinstance(peer, tuple)
                    index, port = int(peer[1]), int(peer[2])
                    if port == self.ports[index] and not (address == SERVER and self.blocked):
                        engine.receive(index, data, address, self.now)
            engine.process(self.now)
            self._serve(self.server, files=False)
            self._serve(self.files_endpoint, files=True)
            if not moved and not self.queue:
                return
        raise AssertionError("the network never went quiet")

    def _next(self) -> float | None:
        times = [
            t
            for t in (
                self.engine.get_timer(),
                self.server.get_timer(),
                self.files_endpoint.get_timer(),
            )
            if t is not None
        ]
        return min(times) if times else None

    def _step(self, when: float) -> None:
        self.now = max(self.now, when)
        for endpoint in (self.server, self.files_endpoint):
            timer = endpoint.get_timer()
            if timer is not None and timer <= self.now:
                endpoint.handle_timer(self.now)
        timer = self.engine.get_timer()
        if timer is not None and timer <= self.now:
            self.engine.handle_timer(self.now)
        self.flush()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        self.flush()
        while (when := self._next()) is not None and when <= end:
            self._step(when)
        self.now = end

    def run_until(self, done: Callable[[], bool], *, within: float = 10_000.0) -> None:
        end = self.now + within
        self.flush()
        while not done():
            when = self._next()
            if when is None or when > end:
                raise AssertionError(f"condition not reached by t={self.now}")
            self._step(when)

    # -- playing the DM server ------------------------------------------------------------------
    def endpoint(self, index: int) -> str:
        return self.engine.clients[index].store.endpoint

    def request(self, index: int, message: Message) -> RequestHandle:
        registration = self.registrations[self.endpoint(index)]
        handle = self.server.send_request(registration.peer, message, self.now)
        self.flush()
        return handle

    def ask(self, index: int, message: Message, *, within: float = 1000.0) -> Message:
        handle = self.request(index, message)
        self.run_until(lambda: handle in self.responses or handle in self.failures, within=within)
        assert handle not in self.failures, self.failures[handle]
        return self.responses[handle]

    def value(self, index: int, path: str) -> object:
        return self.engine.clients[index].store.get(Path.parse(path), self.now)

    def events(self, index: int) -> list[Any]:
        assert self.engine.events is not None
        return self.engine.events.get(index, [])


def request(
    code_: Code,
    path: str,
    *,
    payload: bytes = b"",
    content_format: int | None = None,
    accept: int | None = None,
) -> Message:
    message = Message(code=code_, uri_path=tuple(s for s in path.split("/") if s), payload=payload)
    if content_format is not None:
        message.opt.content_format = content_format
    if accept is not None:
        message.opt.accept = accept
    return message
