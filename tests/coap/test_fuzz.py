"""Property tests: whatever arrives, the core neither raises nor grows without bound, and over
a lossy pair every request still ends exactly once."""

from __future__ import annotations

import random
from collections import Counter

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lwm2m.coap import (
    CoapEndpoint,
    EndpointConfig,
    NotificationReceived,
    Observation,
    ObservationCancelled,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
)
from tests.coap.harness import LinkModel, Network, Node, get

CAPS = EndpointConfig(max_dedup_entries=50, max_peers=8, max_blockwise_states=5)
PEERS = st.sampled_from([f"p{i}" for i in range(12)])


def _answering(
    endpoint: CoapEndpoint, now: float, observers: list[Observation] | None = None
) -> None:
    """Drain events, answering requests (large bodies too) and accepting observations."""
    while (event := endpoint.next_event()) is not None:
        if isinstance(event, RequestReceived):
            size = len(event.message.payload) % 3000
            reply = Message(code=Code.CONTENT, payload=b"r" * size)
            observation = endpoint.respond(event.request, reply, now)
            if observation is not None and observers is not None:
                observers.append(observation)
    endpoint.datagrams_to_send(now)


def _bounded(endpoint: CoapEndpoint) -> None:
    assert endpoint.dedup_size <= CAPS.max_dedup_entries
    assert endpoint.peer_count <= CAPS.max_peers + 1  # + peers we sent requests to ourselves


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), PEERS), max_size=40))
def test_random_bytes_never_raise(datagrams: list[tuple[bytes, str]]) -> None:
    endpoint = CoapEndpoint(rng=random.Random(0), config=CAPS)
    for i, (data, peer) in enumerate(datagrams):
        endpoint.receive_datagram(data, peer, i * 0.5)
        _answering(endpoint, i * 0.5)
        _bounded(endpoint)


OPTION_VALUES = {
    "observe": st.integers(0, (1 << 24) - 1),
    "block1": st.tuples(st.integers(0, 40), st.booleans(), st.integers(0, 7)),
    "block2": st.tuples(st.integers(0, 40), st.booleans(), st.integers(0, 7)),
    "size1": st.integers(0, 1 << 26),
    "size2": st.integers(0, 1 << 26),
    "etag": st.binary(min_size=1, max_size=8),
    "uri_path": st.lists(st.sampled_from(["3", "0", "5", "x"]), max_size=3).map(tuple),
}


@st.composite
def coap_datagrams(draw: st.DrawFn, tokens: list[bytes]) -> bytes:
    message = Message(
        code=draw(st.sampled_from([0, 1, 2, 3, 4, 65, 68, 69, 95, 128, 132, 136, 141, 160])),
        payload=draw(st.sampled_from([b"", b"x" * 16, b"y" * 1024, b"z" * 600])),
    )
    message.mtype = draw(st.sampled_from(list(Type)))
    message.mid = draw(st.integers(0, 20))
    message.token = draw(st.sampled_from([*tokens, b"", b"\x01"]))
    for name in draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), max_size=4, unique=True)):
        setattr(message.opt, name, draw(OPTION_VALUES[name]))
    return bytes(message.encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_well_formed_but_arbitrary_messages_never_raise(data: st.DataObject) -> None:
    """Messages that parse, with every combination of block, observe and size options, aimed at
    an endpoint that has requests, observations and block transfers of its own in flight."""
    endpoint = CoapEndpoint(rng=random.Random(1), config=CAPS)
    handles = [
        endpoint.send_request("p0", get("o", observe=0), 0.0),
        endpoint.send_request("p0", Message(code=Code.PUT, payload=b"b" * 3000), 0.0),
        endpoint.send_request("p1", get("big"), 0.0, confirmable=False),
    ]
    tokens = [h.token for h in handles]
    observers: list[Observation] = []
    now = 0.0
    for _ in range(data.draw(st.integers(1, 30))):
        now += data.draw(st.sampled_from([0.0, 0.3, 2.5, 40.0, 130.0]))
        raw = data.draw(coap_datagrams(tokens))
        endpoint.receive_datagram(raw, data.draw(st.sampled_from(["p0", "p1"])), now)
        _answering(endpoint, now, observers)
        timer = endpoint.get_timer()
        if timer is not None and timer <= now:
            endpoint.handle_timer(now)
        _bounded(endpoint)
    # Whatever happened, once the application lets go of its observations on both sides, the
    # clock alone drains every piece of state.
    for observation in observers:
        endpoint.remove_observer(observation, now)
    for _ in range(2_000):
        timer = endpoint.get_timer()
        if timer is None:
            break
        endpoint.handle_timer(timer)
        _answering(endpoint, timer)
        for handle in handles:
            if not handle.done and handle.observe:
                endpoint.cancel_request(handle, timer)
    assert endpoint.get_timer() is None and endpoint.peer_count == 0


class LossyPair(RuleBasedStateMachine):
    """A server observing and commanding a device over a link whose loss the rules change."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Network(seed=5, link=LinkModel(drop=0.0, duplicate=0.1, reorder=0.1))
        self.observations: list[Observation] = []
        self.seen: Counter[bytes] = Counter()
        self.device = self.net.add("device", handler=self._device_app)
        self.server = self.net.add("server")
        self.handles: list[RequestHandle] = []
        self.counter = 0

    @initialize(seed=st.integers(0, 1 << 16))
    def seed_the_link(self, seed: int) -> None:
        self.net.rng.seed(seed)

    def _device_app(self, node: Node, event: object) -> None:
        if isinstance(event, RequestReceived):
            if event.message.payload:  # POSTs carry a unique body; GETs none
                self.seen[event.message.payload] += 1
            reply = Message(code=Code.CHANGED, payload=event.message.payload[:2000])
            observation = node.endpoint.respond(event.request, reply, self.net.now)
            if observation is not None:
                self.observations.append(observation)

    @rule(size=st.sampled_from([4, 1500, 5000]), confirmable=st.booleans())
    def request(self, size: int, confirmable: bool) -> None:
        self.counter += 1
        body = (b"%08d" % self.counter) * (size // 8)
        message = Message(code=Code.POST, uri_path=("x",), payload=body)
        self.handles.append(
            self.server.endpoint.send_request(
                "device", message, self.net.now, confirmable=confirmable
            )
        )

    @rule()
    def observe(self) -> None:
        self.handles.append(
            self.server.endpoint.send_request("device", get("3303", observe=0), self.net.now)
        )

    @precondition(lambda self: any(o.active for o in self.observations))
    @rule(size=st.sampled_from([3, 2500]), confirmable=st.sampled_from([None, True, False]))
    def notify(self, size: int, confirmable: bool | None) -> None:
        observation = next(o for o in self.observations if o.active)
        message = Message(code=Code.CONTENT, payload=b"n" * size)
        self.device.endpoint.send_notification(
            observation, message, self.net.now, confirmable=confirmable
        )
        self.device.drain()

    @rule(drop=st.sampled_from([0.0, 0.2, 1.0]))
    def set_loss(self, drop: float) -> None:
        self.net.link.drop = drop

    @rule(seconds=st.sampled_from([0.5, 3.0, 30.0]))
    def wait(self, seconds: float) -> None:
        self.net.run_for(seconds)

    @precondition(lambda self: any(not h.done for h in self.handles))
    @rule(index=st.integers(0, 1000))
    def cancel(self, index: int) -> None:
        live = [h for h in self.handles if not h.done]
        self.server.endpoint.cancel_request(live[index % len(live)], self.net.now)

    @invariant()
    def requests_end_at_most_once(self) -> None:
        ends = Counter(
            e.request
            for e in self.server.events
            if isinstance(e, RequestFailed | ObservationCancelled)
            or (isinstance(e, ResponseReceived) and not e.observing)
        )
        assert not ends or max(ends.values()) == 1
        notified = {e.request for e in self.server.events if isinstance(e, NotificationReceived)}
        assert all(h.observe for h in notified)

    @invariant()
    def the_device_sees_each_request_once(self) -> None:
        assert not self.seen or max(self.seen.values()) == 1

    def teardown(self) -> None:
        """Without loss, ending every observation (by deregistering, or by the RST that answers
        a notification for a forgotten one) lets both sides drain to nothing."""
        self.net.link.drop = 0.0
        self.net.run_for(300.0)
        for handle in list(self.handles):
            if handle.observe and not handle.done:
                dereg = self.server.endpoint.cancel_observation(handle, self.net.now)
                assert dereg is not None
                self.handles.append(dereg)
        self.net.run_for(300.0)
        for observation in self.observations:
            if observation.active:
                message = Message(code=Code.CONTENT)
                self.device.endpoint.send_notification(observation, message, self.net.now)
        self.net.run_for(2_000.0)
        assert all(h.done for h in self.handles)
        assert not any(o.active for o in self.observations)
        assert self.net.idle()


TestLossyPair = LossyPair.TestCase
TestLossyPair.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
