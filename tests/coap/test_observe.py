"""Observe (RFC 7641): the server observing devices, and a device being observed."""

from __future__ import annotations

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import (
    CloseReason,
    EndpointConfig,
    Event,
    LocalProtocolError,
    NotificationReceived,
    Observation,
    ObservationCancelled,
    ObserverRemoved,
    RequestHandle,
    RequestReceived,
    RequestState,
    ResponseReceived,
    TransmissionParameters,
)
from lwm2m.coap.observe import is_fresh
from tests.coap.harness import LinkModel, Network, Node, get
from tests.coap.wire import EXACT, PEER, datagram, decode, endpoint, sent


class Device:
    """A device application: accepts every observation, remembers it, answers the rest."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.requests: list[RequestReceived] = []

    def __call__(self, node: Node, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self.requests.append(event)
            reply = Message(code=Code.CONTENT, payload=b"state-0")
            observation = node.endpoint.respond(event.request, reply, node.net.now)
            if observation is not None:
                self.observations.append(observation)


def _observed_pair(
    *, seed: int = 1, link: LinkModel | None = None, device_config: EndpointConfig | None = None
) -> tuple[Network, Node, Node, Device, RequestHandle]:
    net = Network(seed=seed, link=link)
    device_app = Device()
    device = net.add("device", handler=device_app, config=device_config)
    server = net.add("server", config=EndpointConfig(transmission=EXACT))
    handle = server.endpoint.send_request("device", get("3303", "0", "5700", observe=0), net.now)
    net.run_until(lambda: bool(server.events))
    return net, server, device, device_app, handle


def _notify(
    net: Network, device: Node, observation: Observation, payload: bytes, **kw: object
) -> None:
    message = Message(code=Code.CONTENT, payload=payload)
    device.endpoint.send_notification(observation, message, net.now, **kw)  # type: ignore[arg-type]
    device.drain()


def test_the_registration_response_and_notifications_arrive_on_one_handle_in_order() -> None:
    net, server, device, app, handle = _observed_pair()
    (first,) = server.events
    assert isinstance(first, ResponseReceived) and first.observing and first.request is handle
    assert handle.state is RequestState.OBSERVING
    (observation,) = app.observations
    for i in range(1, 6):
        _notify(net, device, observation, b"state-%d" % i, confirmable=i % 2 == 0)
        net.run_for(1.0)
    notes = server.of_type(NotificationReceived)
    assert [n.message.payload for n in notes] == [b"state-%d" % i for i in range(1, 6)]
    sequences = [n.sequence for n in notes]
    assert sequences == sorted(sequences) and all(n.request is handle for n in notes)


def test_stale_and_reordered_notifications_are_dropped() -> None:
    ep = endpoint()
    handle = ep.send_request(PEER, get("o", observe=0), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.ACK, Code.CONTENT, req.mid, req.token, observe=10), PEER, 0)
    assert isinstance(ep.next_event(), ResponseReceived)

    def note(mid: int, seq: int, now: float) -> int | None:
        ep.receive_datagram(
            datagram(Type.NON, Code.CONTENT, mid, req.token, observe=seq), PEER, now
        )
        event = ep.next_event()
        assert event is None or (
            isinstance(event, NotificationReceived) and event.request is handle
        )
        return None if event is None else event.sequence

    assert note(1, 12, 1.0) == 12
    assert note(2, 11, 2.0) is None  # older than 12: arrived out of order
    assert note(3, 12, 3.0) is None  # same number again (not a MID duplicate)
    assert note(4, 13, 4.0) == 13
    assert note(5, 5, 200.0) == 5  # more than 128 s later: fresh whatever the number
    assert ep.stats.stale_notifications == 2


@pytest.mark.parametrize(
    ("v1", "v2", "dt", "fresh"),
    [
        (1, 2, 0, True),
        (2, 1, 0, False),
        ((1 << 24) - 1, 0, 0, True),  # wrapped around
        (0, (1 << 24) - 1, 0, False),
        (0, (1 << 23) - 1, 0, True),
        (0, 1 << 23, 0, False),
        (5, 4, 128.5, True),
        (5, 4, 128.0, False),
    ],
)
def test_freshness_follows_rfc_7641_section_3_4(v1: int, v2: int, dt: float, fresh: bool) -> None:
    assert is_fresh(v1, 0.0, v2, dt) is fresh


def test_con_notifications_are_acknowledged_and_their_duplicates_delivered_once() -> None:
    ep = endpoint()
    ep.send_request(PEER, get("o", observe=0), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.ACK, Code.CONTENT, req.mid, req.token, observe=1), PEER, 0)
    ep.next_event()
    raw = datagram(Type.CON, Code.CONTENT, 500, req.token, b"n", observe=2)
    ep.receive_datagram(raw, PEER, 1.0)
    ep.receive_datagram(raw, PEER, 3.0)
    assert [(m.mtype, m.mid) for m in sent(ep, 3.0)] == [(Type.ACK, 500), (Type.ACK, 500)]
    assert isinstance(ep.next_event(), NotificationReceived) and ep.next_event() is None


def test_a_forgotten_observation_is_ended_by_rst_on_its_next_notification() -> None:
    net, server, device, app, handle = _observed_pair()
    (observation,) = app.observations
    server.endpoint.cancel_request(handle, net.now)
    _notify(net, device, observation, b"unwanted")
    net.run_for(5.0)
    removed = device.of_type(ObserverRemoved)
    assert [(r.observation, r.reason) for r in removed] == [(observation, CloseReason.RESET)]
    assert not observation.active
    with pytest.raises(LocalProtocolError):
        _notify(net, device, observation, b"again")


def test_deregistering_sends_get_observe_1_with_the_registration_token() -> None:
    net, server, device, app, handle = _observed_pair()
    (observation,) = app.observations
    dereg = server.endpoint.cancel_observation(handle, net.now)
    assert dereg is not None and dereg.token == handle.token
    net.run_until(lambda: dereg.done)
    assert [(r.observation, r.reason) for r in device.of_type(ObserverRemoved)] == [
        (observation, CloseReason.DEREGISTERED)
    ]
    last = app.requests[-1].message
    assert last.opt.observe == 1 and last.token == handle.token
    final = server.events[-1]
    assert isinstance(final, ResponseReceived) and final.request is dereg and not final.observing


def test_a_con_notification_that_is_never_acknowledged_removes_the_observer() -> None:
    net, _server, device, app, _handle = _observed_pair()
    (observation,) = app.observations
    net.blackhole = lambda src, dst, data: src == "device"
    _notify(net, device, observation, b"lost", confirmable=True)
    net.run_for(200.0)
    assert [(r.observation, r.reason) for r in device.of_type(ObserverRemoved)] == [
        (observation, CloseReason.TIMEOUT)
    ]


def test_every_nth_notification_is_confirmable() -> None:
    config = EndpointConfig(notification_con_every=3)
    net, _server, device, app, _handle = _observed_pair(device_config=config)
    (observation,) = app.observations
    before = len(device.sent)
    for i in range(6):
        _notify(net, device, observation, b"%d" % i)
        net.run_for(1.0)
    notes = [decode(d) for _, _, d in device.sent[before:]]
    kinds = [m.mtype for m in notes if m.code == Code.CONTENT]
    assert kinds == [Type.NON, Type.NON, Type.CON, Type.NON, Type.NON, Type.CON]


def test_a_notification_is_confirmable_at_least_once_per_interval() -> None:
    config = EndpointConfig(notification_con_every=1000, notification_con_interval=60.0)
    net, _server, device, app, _handle = _observed_pair(device_config=config)
    (observation,) = app.observations
    before = len(device.sent)
    for _ in range(4):
        net.run_for(25.0)
        _notify(net, device, observation, b"x")
    kinds = [decode(d).mtype for _, _, d in device.sent[before:]]
    assert kinds == [Type.NON, Type.NON, Type.CON, Type.NON]


def test_a_newer_notification_replaces_an_unacknowledged_con_at_its_retransmission() -> None:
    net, server, device, app, _handle = _observed_pair()
    (observation,) = app.observations
    net.blackhole = lambda src, dst, data: src == "device"
    _notify(net, device, observation, b"old", confirmable=True)
    (first,) = [decode(d) for _, _, d in device.sent[-1:]]
    _notify(net, device, observation, b"new")
    assert decode(device.sent[-1][2]).payload == b"old"  # held back while the CON is in flight
    net.blackhole = None
    net.run_until(lambda: len(server.of_type(NotificationReceived)) == 1)
    (note,) = server.of_type(NotificationReceived)
    assert note.message.payload == b"new"
    notes = [decode(d) for _, _, d in device.sent if decode(d).code == Code.CONTENT]
    assert [m.payload for m in notes[1:]].count(b"old") == 1  # never retransmitted
    resent = [m for m in notes if m.payload == b"new"]
    assert resent and {(m.mtype, m.mid) for m in resent} == {(Type.CON, resent[0].mid)}
    assert resent[0].mid != first.mid and resent[0].opt.observe > first.opt.observe


def test_an_error_notification_ends_the_observation_on_both_sides() -> None:
    net, server, device, app, handle = _observed_pair()
    (observation,) = app.observations
    device.endpoint.send_notification(observation, Message(code=Code.NOT_FOUND), net.now)
    device.drain()
    assert not observation.active
    net.run_until(lambda: handle.done)
    note, cancelled = server.events[-2:]
    assert isinstance(note, NotificationReceived) and note.sequence is None
    assert isinstance(cancelled, ObservationCancelled)
    assert cancelled.reason is CloseReason.ENDED_BY_PEER


def test_a_large_notification_is_completed_block_wise_before_delivery() -> None:
    net, server, device, app, handle = _observed_pair(link=LinkModel(drop=0.1, duplicate=0.1))
    (observation,) = app.observations
    big = bytes(range(256)) * 20
    _notify(net, device, observation, big, confirmable=True)
    net.run_until(lambda: bool(server.of_type(NotificationReceived)), limit=2_000)
    (note,) = server.of_type(NotificationReceived)
    assert note.message.payload == big and note.message.opt.block2 is None
    assert len(app.requests) == 1  # the block fetches were served from the cache
    assert handle.state is RequestState.OBSERVING


def test_registering_again_with_the_same_token_replaces_the_observer() -> None:
    ep = endpoint()
    observations = []
    for mid in (1, 2):
        raw = datagram(Type.CON, Code.GET, mid, b"ob", uri_path=("3",), observe=0)
        ep.receive_datagram(raw, PEER, float(mid))
        event = ep.next_event()
        assert isinstance(event, RequestReceived)
        observations.append(ep.respond(event.request, Message(code=Code.CONTENT), float(mid)))
    first, second = observations
    assert first is not None and second is not None and second.active and not first.active
    removed = ep.next_event()
    assert isinstance(removed, ObserverRemoved) and removed.reason is CloseReason.REPLACED


def test_an_error_response_to_a_registration_registers_nothing() -> None:
    ep = endpoint()
    ep.receive_datagram(datagram(Type.CON, Code.GET, 1, b"o", observe=0), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    assert ep.respond(event.request, Message(code=Code.NOT_FOUND), 0.0) is None
    (reply,) = sent(ep)
    assert reply.opt.observe is None


def test_a_device_that_does_not_grant_observe_completes_the_request() -> None:
    ep = endpoint()
    handle = ep.send_request(PEER, get("o", observe=0), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.ACK, Code.CONTENT, req.mid, req.token), PEER, 0.1)
    event = ep.next_event()
    assert isinstance(event, ResponseReceived) and not event.observing and handle.done


def test_a_reset_to_a_non_notification_removes_the_observer() -> None:
    ep = endpoint(transmission=TransmissionParameters())
    ep.receive_datagram(datagram(Type.CON, Code.GET, 1, b"o", observe=0), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    observation = ep.respond(event.request, Message(code=Code.CONTENT), 0.0)
    assert observation is not None
    ep.datagrams_to_send(0.0)
    ep.send_notification(observation, Message(code=Code.CONTENT), 1.0, confirmable=False)
    (note,) = sent(ep, 1.0)
    ep.receive_datagram(datagram(Type.RST, Code.EMPTY, note.mid), PEER, 1.1)
    removed = ep.next_event()
    assert isinstance(removed, ObserverRemoved) and removed.reason is CloseReason.RESET
