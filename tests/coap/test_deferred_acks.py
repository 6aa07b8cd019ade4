"""``EndpointConfig.defer_notification_acks``: a fresh CON notification is acknowledged only
when the application calls ``acknowledge(event.ack)`` (the LwM2M server does that once the
values are committed); a retransmission before then gets nothing, one after gets the ACK again;
notifications the application never sees (stale ones) are acknowledged at once, as without the
option."""

from __future__ import annotations

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import CoapEndpoint, NotificationReceived, ResponseReceived
from tests.coap.wire import EXACT, PEER, datagram, endpoint, sent


def _observing(defer: bool) -> tuple[CoapEndpoint, bytes]:
    ep = endpoint(transmission=EXACT, defer_notification_acks=defer)
    request = Message(code=Code.GET)
    request.opt.uri_path = ("3", "0", "9")
    request.opt.observe = 0
    ep.send_request(PEER, request, 0.0)
    (get,) = sent(ep)
    ep.receive_datagram(
        datagram(Type.ACK, Code.CONTENT, get.mid, get.token, b"1", observe=1), PEER, 0.1
    )
    assert isinstance(ep.next_event(), ResponseReceived)
    return ep, get.token


def _note(ep: CoapEndpoint, mid: int, token: bytes, seq: int, now: float) -> None:
    ep.receive_datagram(
        datagram(Type.CON, Code.CONTENT, mid, token, b"%d" % seq, observe=seq), PEER, now
    )


def test_the_ack_waits_for_acknowledge_and_a_retransmission_meanwhile_gets_nothing() -> None:
    ep, token = _observing(defer=True)
    _note(ep, 500, token, 2, 1.0)
    event = ep.next_event()
    assert isinstance(event, NotificationReceived) and event.ack is not None
    assert sent(ep, 1.0) == []  # held
    _note(ep, 500, token, 2, 1.5)  # the device retransmits: a duplicate, still not answered
    assert ep.next_event() is None and sent(ep, 1.5) == []
    ep.acknowledge(event.ack, 2.0)
    (ack,) = sent(ep, 2.0)
    assert (ack.mtype, ack.code, ack.mid) == (Type.ACK, Code.EMPTY, 500)
    ep.acknowledge(event.ack, 2.1)  # twice: nothing more
    assert sent(ep, 2.1) == []
    _note(ep, 500, token, 2, 2.5)  # a later retransmission gets the same ACK again
    (again,) = sent(ep, 2.5)
    assert (again.mtype, again.mid) == (Type.ACK, 500)


def test_without_the_option_the_ack_goes_at_once_and_the_event_carries_no_receipt() -> None:
    ep, token = _observing(defer=False)
    _note(ep, 600, token, 2, 1.0)
    event = ep.next_event()
    assert isinstance(event, NotificationReceived) and event.ack is None
    (ack,) = sent(ep, 1.0)
    assert (ack.mtype, ack.mid) == (Type.ACK, 600)


def test_a_stale_notification_is_acknowledged_at_once() -> None:
    ep, token = _observing(defer=True)
    _note(ep, 700, token, 5, 1.0)
    fresh = ep.next_event()
    assert isinstance(fresh, NotificationReceived) and fresh.ack is not None
    _note(ep, 701, token, 3, 1.1)  # older sequence: dropped, never shown to the application
    assert ep.next_event() is None
    (ack,) = sent(ep, 1.1)
    assert (ack.mtype, ack.mid) == (Type.ACK, 701)


def test_a_non_notification_carries_no_receipt() -> None:
    ep, token = _observing(defer=True)
    ep.receive_datagram(datagram(Type.NON, Code.CONTENT, 800, token, b"2", observe=2), PEER, 1.0)
    event = ep.next_event()
    assert isinstance(event, NotificationReceived) and event.ack is None
    assert sent(ep, 1.0) == []
