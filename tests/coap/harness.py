"""Two (or more) endpoints wired by a fake clock and a lossy, duplicating, reordering link.

No sockets and no real time: ``Network.run_until`` jumps the clock to the next datagram arrival
or endpoint timer, so a 93-second retransmission schedule takes microseconds. The link's
randomness comes from its own seeded ``random.Random`` (separate from the endpoints'), so a
failing seed replays exactly.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from aiocoap import Message

from lwm2m.coap import CoapEndpoint, EndpointConfig, Event
from lwm2m.coap.events import RequestReceived


@dataclass
class LinkModel:
    """Per-datagram fate: dropped, duplicated, and a latency with optional extra jitter that
    reorders datagrams in flight."""

    latency: float = 0.05
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.5


Handler = Callable[["Node", Event], None]
E = TypeVar("E")


@dataclass
class Node:
    net: Network
    address: str
    endpoint: CoapEndpoint
    handler: Handler | None = None
    events: list[Event] = field(default_factory=list)
    #: Every datagram this node sent, with the time: (time, destination, bytes).
    sent: list[tuple[float, Hashable, bytes]] = field(default_factory=list)

    def drain(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.events.append(event)
            if self.handler is not None:
                self.handler(self, event)
        for data, peer in self.endpoint.datagrams_to_send(self.net.now):
            self.sent.append((self.net.now, peer, data))
            self.net.transmit(self.address, peer, data)

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


class Network:
    def __init__(self, *, seed: int = 0, link: LinkModel | None = None) -> None:
        self.now = 0.0
        self.link = link or LinkModel()
        self.rng = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self._transit: list[tuple[float, int, str, str, bytes]] = []
        self._seq = 0
        #: When set, datagrams are dropped while this returns True for (src, dst, data).
        self.blackhole: Callable[[str, Hashable, bytes], bool] | None = None
        self._calls: list[tuple[float, int, Callable[[], None]]] = []

    def at(self, when: float, call: Callable[[], None]) -> None:
        """Run ``call`` (an application action) at simulated time ``when``."""
        self._seq += 1
        heapq.heappush(self._calls, (when, self._seq, call))

    def add(
        self,
        address: str,
        *,
        config: EndpointConfig | None = None,
        handler: Handler | None = None,
        seed: int | None = None,
    ) -> Node:
        rng = random.Random(self.rng.getrandbits(32) if seed is None else seed)
        node = Node(self, address, CoapEndpoint(rng=rng, config=config), handler)
        self.nodes[address] = node
        return node

    def transmit(self, src: str, dst: Hashable, data: bytes) -> None:
        assert isinstance(dst, str)
        link, rng = self.link, self.rng
        if self.blackhole is not None and self.blackhole(src, dst, data):
            return
        copies = 2 if rng.random() < link.duplicate else 1
        for _ in range(copies):
            if rng.random() < link.drop:
                continue
            delay = link.latency
            if rng.random() < link.reorder:
                delay += rng.random() * link.reorder_delay
            self._seq += 1
            heapq.heappush(self._transit, (self.now + delay, self._seq, src, dst, data))

    def next_time(self) -> float | None:
        times = [t for n in self.nodes.values() if (t := n.endpoint.get_timer()) is not None]
        if self._transit:
            times.append(self._transit[0][0])
        if self._calls:
            times.append(self._calls[0][0])
        return min(times) if times else None

    def step(self) -> bool:
        when = self.next_time()
        if when is None:
            return False
        self.now = max(self.now, when)
        while self._calls and self._calls[0][0] <= self.now:
            heapq.heappop(self._calls)[2]()
        while self._transit and self._transit[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._transit)
            node = self.nodes[dst]
            node.endpoint.receive_datagram(data, src, self.now)
            node.drain()
        for node in self.nodes.values():
            timer = node.endpoint.get_timer()
            if timer is not None and timer <= self.now:
                node.endpoint.handle_timer(self.now)
            node.drain()
        return True

    def run_until(self, done: Callable[[], bool], *, limit: float = 10_000.0) -> None:
        """Advance until ``done()`` or the clock passes ``limit`` seconds (then fail)."""
        for node in self.nodes.values():
            node.drain()
        while not done():
            if not self.step() or self.now > limit:
                raise AssertionError(f"condition not reached by t={self.now}")

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        for node in self.nodes.values():
            node.drain()
        while True:
            when = self.next_time()
            if when is None or when > end:
                self.now = end
                return
            self.step()

    def idle(self) -> bool:
        """True when no endpoint holds any state or timer and nothing is in flight."""
        return not self._transit and all(
            n.endpoint.get_timer() is None and n.endpoint.peer_count == 0
            for n in self.nodes.values()
        )


def echo_handler(node: Node, event: Event) -> None:
    """A server application that answers every request at once with 2.05 and its payload."""
    if isinstance(event, RequestReceived):
        reply = Message(code=69, payload=b"echo:" + event.message.payload)
        node.endpoint.respond(event.request, reply, node.net.now)


def get(*path: str, **options: object) -> Message:
    message = Message(code=1, uri_path=path)
    for name, value in options.items():
        setattr(message.opt, name, value)
    return message
