"""Server side of the message layer, bytes in and events out (RFC 7252 §4, §5.2)."""

from __future__ import annotations

import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import LocalProtocolError, RequestReceived
from tests.coap.wire import PEER, con_get, datagram, endpoint, response, sent


def test_a_con_request_becomes_one_event_and_the_response_is_piggybacked() -> None:
    ep = endpoint()
    ep.receive_datagram(con_get(0x1234, b"tok"), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    assert event.peer == PEER and event.message.opt.uri_path == ("3", "0", "0")
    assert ep.next_event() is None
    ep.respond(event.request, response(payload=b"hi"), 0.0)
    (ack,) = sent(ep)
    assert (ack.mtype, ack.mid, ack.token, ack.code, ack.payload) == (
        Type.ACK,
        0x1234,
        b"tok",
        Code.CONTENT,
        b"hi",
    )


def test_a_duplicate_of_an_answered_con_replays_the_cached_response_byte_for_byte() -> None:
    ep = endpoint()
    ep.receive_datagram(con_get(7), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.request, response(payload=b"x"), 0.0)
    first = ep.datagrams_to_send(0.0)
    ep.receive_datagram(con_get(7), PEER, 3.0)
    assert ep.next_event() is None
    assert ep.datagrams_to_send(3.0) == first
    assert ep.stats.duplicates == 1


def test_a_duplicate_of_an_unanswered_con_is_acknowledged_at_once_and_answered_separately() -> None:
    """The peer retransmitted: its ACK_TIMEOUT ran out, so it gets an empty ACK now instead of
    retransmitting on while the application is busy; the request is delivered only once."""
    ep = endpoint()
    ep.receive_datagram(con_get(7, b"t7"), PEER, 0.0)
    ep.receive_datagram(con_get(7, b"t7"), PEER, 0.5)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    assert ep.next_event() is None
    (ack,) = sent(ep, 0.5)
    assert (ack.mtype, ack.code, ack.mid) == (Type.ACK, Code.EMPTY, 7)
    assert ep.stats.empty_acks_sent == 1
    ep.receive_datagram(con_get(7, b"t7"), PEER, 0.7)  # the same empty ACK again
    assert [m.code for m in sent(ep, 0.7)] == [Code.EMPTY]
    ep.respond(event.request, response(payload=b"late"), 1.0)
    (separate,) = sent(ep, 1.0)
    assert separate.mtype == Type.CON and separate.token == b"t7" and separate.payload == b"late"


def test_a_slow_application_gets_an_empty_ack_then_a_separate_con_response() -> None:
    ep = endpoint(empty_ack_delay=1.0)
    ep.receive_datagram(con_get(9, b"ab"), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    assert ep.get_timer() == 1.0
    ep.handle_timer(1.0)
    (ack,) = sent(ep, 1.0)
    assert (ack.mtype, ack.code, ack.mid, ack.token) == (Type.ACK, Code.EMPTY, 9, b"")
    # The client retransmits its CON: it gets the empty ACK again, the application nothing.
    ep.receive_datagram(con_get(9, b"ab"), PEER, 2.0)
    assert ep.next_event() is None
    assert [m.code for m in sent(ep, 2.0)] == [Code.EMPTY]
    ep.respond(event.request, response(payload=b"late"), 5.0)
    (separate,) = sent(ep, 5.0)
    assert separate.mtype == Type.CON and separate.token == b"ab" and separate.mid != 9
    # It is retransmitted until the client acknowledges it.
    deadline = ep.get_timer()
    assert deadline is not None and 7.0 <= deadline <= 8.0
    ep.handle_timer(deadline)
    (again,) = sent(ep, deadline)
    assert again.mid == separate.mid
    ep.receive_datagram(datagram(Type.ACK, Code.EMPTY, separate.mid), PEER, deadline + 0.1)
    assert ep.next_event() is None
    ep.handle_timer(deadline + 100)
    assert sent(ep, deadline + 100) == []


def test_a_non_request_gets_a_non_response_and_its_duplicates_are_dropped() -> None:
    ep = endpoint()
    raw = datagram(Type.NON, Code.GET, 44, b"n", uri_path=("1",))
    ep.receive_datagram(raw, PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.request, response(payload=b"v"), 0.0)
    (reply,) = sent(ep)
    assert reply.mtype == Type.NON and reply.token == b"n"
    ep.receive_datagram(raw, PEER, 1.0)
    assert ep.next_event() is None and ep.datagrams_to_send(1.0) == []


def test_answering_twice_is_a_local_protocol_error() -> None:
    ep = endpoint()
    ep.receive_datagram(con_get(1), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.request, response(), 0.0)
    with pytest.raises(LocalProtocolError):
        ep.respond(event.request, response(), 0.0)
    with pytest.raises(LocalProtocolError):
        ep.respond(event.request, response(code=Code.GET), 0.0)


def test_a_coap_ping_is_answered_with_rst() -> None:
    ep = endpoint()
    ep.receive_datagram(datagram(Type.CON, Code.EMPTY, 0x0505), PEER, 0.0)
    (rst,) = sent(ep)
    assert (rst.mtype, rst.mid, rst.code) == (Type.RST, 0x0505, Code.EMPTY)
    assert ep.next_event() is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\x40",  # shorter than the header
        b"\x80\x01\x00\x01",  # version 2
        bytes([0x49, 1, 0, 1]) + b"123456789",  # token length 9
        bytes([0x44, 1, 0, 1]) + b"ab",  # token cut short
        bytes([0x40, 0, 0, 1, 0xFF, 0x41]),  # Empty message with a payload
        bytes([0x40, 0x21, 0, 1]),  # code 1.01: not a request or response
        bytes([0x40, 0xE1, 0, 1]),  # 7.01 signalling: TCP only
        bytes([0x40, 1, 0, 1, 0xF1, 0x00]),  # option delta 15: reserved
    ],
)
def test_a_malformed_con_is_rejected_with_rst_when_its_header_parses(raw: bytes) -> None:
    ep = endpoint()
    ep.receive_datagram(raw, PEER, 0.0)
    assert ep.next_event() is None
    out = sent(ep)
    if raw[0] >> 6 == 1 and len(raw) >= 4:
        assert [(m.mtype, m.mid) for m in out] == [(Type.RST, 1)]
    else:
        assert out == []
    assert ep.stats.malformed == 1


def test_malformed_non_ack_and_rst_are_dropped_silently() -> None:
    ep = endpoint()
    for first in (0x50, 0x60, 0x70):  # NON, ACK, RST with a broken option
        ep.receive_datagram(bytes([first, 1, 0, 1, 0xF1, 0]), PEER, 0.0)
    ep.receive_datagram(datagram(Type.ACK, Code.GET, 5), PEER, 0.0)  # request in an ACK
    assert ep.datagrams_to_send(0.0) == [] and ep.next_event() is None
    assert ep.stats.malformed == 4


def test_a_response_with_an_unknown_token_is_rejected_with_rst() -> None:
    ep = endpoint()
    ep.receive_datagram(datagram(Type.CON, Code.CONTENT, 77, b"zz"), PEER, 0.0)
    (rst,) = sent(ep)
    assert (rst.mtype, rst.mid) == (Type.RST, 77)
    # Its retransmission gets the same RST from the dedup cache.
    ep.receive_datagram(datagram(Type.CON, Code.CONTENT, 77, b"zz"), PEER, 1.0)
    assert [(m.mtype, m.mid) for m in sent(ep, 1.0)] == [(Type.RST, 77)]
    assert ep.next_event() is None


def test_message_ids_are_remembered_for_the_exchange_lifetime_then_forgotten() -> None:
    ep = endpoint()
    ep.receive_datagram(con_get(3), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.request, response(), 0.0)
    ep.datagrams_to_send(0.0)
    ep.receive_datagram(con_get(3), PEER, 246.0)
    assert ep.next_event() is None
    ep.receive_datagram(con_get(3), PEER, 247.5)
    assert isinstance(ep.next_event(), RequestReceived)


def test_non_message_ids_are_remembered_for_non_lifetime() -> None:
    ep = endpoint()
    raw = datagram(Type.NON, Code.GET, 3, b"q")
    ep.receive_datagram(raw, PEER, 0.0)
    assert isinstance(ep.next_event(), RequestReceived)
    ep.receive_datagram(raw, PEER, 144.0)
    assert ep.next_event() is None
    ep.receive_datagram(raw, PEER, 145.5)
    assert isinstance(ep.next_event(), RequestReceived)


def test_idle_peer_state_is_freed_after_the_exchange_lifetime() -> None:
    ep = endpoint()
    ep.receive_datagram(con_get(1), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.request, response(), 0.0)
    assert ep.has_peer(PEER)
    t = ep.get_timer()
    while t is not None:
        ep.handle_timer(t)
        t = ep.get_timer()
    assert not ep.has_peer(PEER)
    assert ep.dedup_size == 0


def test_the_global_dedup_cap_evicts_the_oldest_records() -> None:
    ep = endpoint(max_dedup_entries=100)
    for mid in range(250):
        ep.receive_datagram(con_get(mid), PEER, mid * 0.001)
        event = ep.next_event()
        assert isinstance(event, RequestReceived)
        ep.respond(event.request, response(), 0.0)
    assert ep.dedup_size == 100 and ep.dedup_evicted == 150
    ep.datagrams_to_send(1.0)
    ep.receive_datagram(con_get(249), PEER, 1.0)  # recent: still a duplicate
    assert ep.next_event() is None
    ep.receive_datagram(con_get(0), PEER, 1.0)  # evicted: processed again
    assert isinstance(ep.next_event(), RequestReceived)


def test_an_unrecognised_critical_option_in_a_request_gets_4_02() -> None:
    ep = endpoint()
    raw = con_get(5)
    # Append option 2049 (critical: odd): delta 2049-11 = 2038 -> extended 14 (2038 - 269).
    ext = (2038 - 269).to_bytes(2, "big")
    ep.receive_datagram(raw + bytes([0xE0]) + ext, PEER, 0.0)
    assert ep.next_event() is None
    (reply,) = sent(ep)
    assert (reply.mtype, reply.mid, reply.code) == (Type.ACK, 5, Code.BAD_OPTION)


def test_an_unrecognised_elective_option_is_ignored() -> None:
    ep = endpoint()
    ext = (2038 - 269 - 1).to_bytes(2, "big")  # option 2048: elective
    ep.receive_datagram(con_get(5) + bytes([0xE0]) + ext, PEER, 0.0)
    assert isinstance(ep.next_event(), RequestReceived)


def test_a_proxy_request_gets_5_05() -> None:
    ep = endpoint()
    ep.receive_datagram(
        datagram(Type.CON, Code.GET, 6, b"p", proxy_uri="coap://elsewhere/x"), PEER, 0.0
    )
    assert ep.next_event() is None
    (reply,) = sent(ep)
    assert reply.code == Code.PROXYING_NOT_SUPPORTED
