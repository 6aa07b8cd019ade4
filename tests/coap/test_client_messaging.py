"""Client side: retransmission timing, token/MID matching, NSTART, timeouts (RFC 7252 §4.2,
§4.7, §5.3.2), bytes in and events out."""

from __future__ import annotations

import random

import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import (
    CloseReason,
    CoapEndpoint,
    EndpointConfig,
    RequestFailed,
    RequestState,
    ResponseReceived,
    TransmissionParameters,
)
from tests.coap.harness import get
from tests.coap.wire import EXACT, PEER, datagram, decode, endpoint, sent


def _run_timers(ep: CoapEndpoint, until: float) -> list[float]:
    """Fire every timer up to ``until``; return the times at which datagrams went out."""
    times = []
    while (t := ep.get_timer()) is not None and t <= until:
        ep.handle_timer(t)
        if ep.datagrams_to_send(t):
            times.append(t)
    return times


def test_a_con_is_retransmitted_at_exactly_2_4_8_16_s_intervals_and_then_times_out() -> None:
    ep = endpoint(transmission=EXACT)
    handle = ep.send_request(PEER, get("a"), 0.0)
    (first,) = sent(ep)
    assert first.mtype == Type.CON
    assert _run_timers(ep, 61.9) == [2.0, 6.0, 14.0, 30.0]
    assert ep.next_event() is None
    _run_timers(ep, 62.0)  # ACK_TIMEOUT * (2**5 - 1): the last wait ends, the request fails
    event = ep.next_event()
    assert isinstance(event, RequestFailed) and event.request is handle
    assert event.reason is CloseReason.TIMEOUT and handle.state is RequestState.DONE


def test_retransmissions_repeat_the_same_datagram() -> None:
    ep = endpoint(transmission=EXACT)
    ep.send_request(PEER, get("a"), 0.0)
    first = ep.datagrams_to_send(0.0)
    ep.handle_timer(2.0)
    assert ep.datagrams_to_send(2.0) == first


@pytest.mark.parametrize("seed", range(20))
def test_the_initial_timeout_is_jittered_within_ack_timeout_times_the_random_factor(
    seed: int,
) -> None:
    ep = CoapEndpoint(rng=random.Random(seed), config=EndpointConfig())
    ep.send_request(PEER, get("a"), 0.0)
    first = ep.get_timer()
    assert first is not None and 2.0 <= first <= 3.0
    ep.handle_timer(first)
    second = ep.get_timer()
    assert second is not None and second - first == pytest.approx(2 * first)


def test_max_retransmit_and_ack_timeout_are_configurable() -> None:
    params = TransmissionParameters(ack_timeout=1.0, ack_random_factor=1.0, max_retransmit=2)
    ep = endpoint(transmission=params)
    ep.send_request(PEER, get("a"), 0.0)
    ep.datagrams_to_send(0.0)
    assert _run_timers(ep, 100.0) == [1.0, 3.0]
    event = ep.next_event()
    assert isinstance(event, RequestFailed) and event.reason is CloseReason.TIMEOUT


def test_a_piggybacked_response_completes_the_request_once() -> None:
    ep = endpoint(transmission=EXACT)
    handle = ep.send_request(PEER, get("a"), 0.0)
    (req,) = sent(ep)
    ack = datagram(Type.ACK, Code.CONTENT, req.mid, req.token, b"v")
    ep.receive_datagram(ack, PEER, 0.1)
    event = ep.next_event()
    assert isinstance(event, ResponseReceived) and event.request is handle
    assert event.message.payload == b"v" and not event.observing
    ep.receive_datagram(ack, PEER, 0.2)  # a duplicated ACK matches nothing any more
    assert ep.next_event() is None
    assert _run_timers(ep, 100.0) == []


def test_a_piggybacked_response_must_match_token_and_message_id() -> None:
    ep = endpoint(transmission=EXACT)
    ep.send_request(PEER, get("a"), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.ACK, Code.CONTENT, req.mid, b"other"), PEER, 0.1)
    ep.receive_datagram(datagram(Type.ACK, Code.CONTENT, req.mid ^ 1, req.token), PEER, 0.1)
    assert ep.next_event() is None
    assert ep.stats.unmatched == 2
    assert _run_timers(ep, 2.0) == [2.0]  # still retransmitting


def test_a_separate_response_is_acknowledged_and_delivered_once() -> None:
    ep = endpoint(transmission=EXACT)
    handle = ep.send_request(PEER, get("a"), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.ACK, Code.EMPTY, req.mid), PEER, 0.5)
    assert ep.next_event() is None
    assert _run_timers(ep, 10.0) == []  # acknowledged: no retransmission
    response = datagram(Type.CON, Code.CONTENT, 0x4242, req.token, b"sep")
    ep.receive_datagram(response, PEER, 11.0)
    (ack,) = sent(ep, 11.0)
    assert (ack.mtype, ack.mid, ack.code) == (Type.ACK, 0x4242, Code.EMPTY)
    event = ep.next_event()
    assert isinstance(event, ResponseReceived) and event.request is handle
    ep.receive_datagram(response, PEER, 12.0)  # the peer did not get our ACK
    assert [m.mid for m in sent(ep, 12.0)] == [0x4242]
    assert ep.next_event() is None


def test_a_separate_response_before_the_ack_also_stops_retransmission() -> None:
    ep = endpoint(transmission=EXACT)
    ep.send_request(PEER, get("a"), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.NON, Code.CONTENT, 99, req.token, b"x"), PEER, 0.5)
    assert isinstance(ep.next_event(), ResponseReceived)
    assert _run_timers(ep, 100.0) == []


def test_a_separate_response_that_never_comes_times_out() -> None:
    ep = endpoint(transmission=EXACT, response_timeout=30.0)
    handle = ep.send_request(PEER, get("a"), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.ACK, Code.EMPTY, req.mid), PEER, 1.0)
    _run_timers(ep, 30.9)
    assert ep.next_event() is None
    _run_timers(ep, 31.0)
    event = ep.next_event()
    assert isinstance(event, RequestFailed) and event.request is handle
    assert event.reason is CloseReason.TIMEOUT


def test_a_reset_fails_the_request() -> None:
    ep = endpoint(transmission=EXACT)
    handle = ep.send_request(PEER, get("a"), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.RST, Code.EMPTY, req.mid), PEER, 0.3)
    event = ep.next_event()
    assert isinstance(event, RequestFailed) and event.request is handle
    assert event.reason is CloseReason.RESET
    assert _run_timers(ep, 100.0) == []


def test_nstart_1_queues_requests_to_a_peer_until_the_outstanding_one_completes() -> None:
    ep = endpoint(transmission=EXACT)
    first = ep.send_request(PEER, get("1"), 0.0)
    second = ep.send_request(PEER, get("2"), 0.0)
    other = ep.send_request(("198.51.100.1", 5683), get("3"), 0.0)
    out = ep.datagrams_to_send(0.0)
    assert len(out) == 2  # one to PEER, one to the other peer
    assert second.state is RequestState.QUEUED and other.state is RequestState.ACTIVE
    req = next(decode(d) for d, p in out if p == PEER)
    ep.receive_datagram(datagram(Type.ACK, Code.CONTENT, req.mid, req.token), PEER, 1.0)
    assert isinstance(ep.next_event(), ResponseReceived) and first.done
    (next_req,) = sent(ep, 1.0)
    assert next_req.opt.uri_path == ("2",) and second.state is RequestState.ACTIVE


def test_an_empty_ack_frees_the_nstart_slot() -> None:
    ep = endpoint(transmission=EXACT)
    ep.send_request(PEER, get("1"), 0.0)
    second = ep.send_request(PEER, get("2"), 0.0)
    (req,) = sent(ep)
    ep.receive_datagram(datagram(Type.ACK, Code.EMPTY, req.mid), PEER, 0.5)
    (next_req,) = sent(ep, 0.5)
    assert next_req.opt.uri_path == ("2",) and second.state is RequestState.ACTIVE


def test_a_timed_out_request_starts_the_next_queued_one() -> None:
    ep = endpoint(transmission=EXACT)
    ep.send_request(PEER, get("1"), 0.0)
    second = ep.send_request(PEER, get("2"), 0.0)
    ep.datagrams_to_send(0.0)
    _run_timers(ep, 62.0)
    assert isinstance(ep.next_event(), RequestFailed)
    assert second.state is RequestState.ACTIVE


def test_cancelling_stops_retransmission_and_produces_no_event() -> None:
    ep = endpoint(transmission=EXACT)
    handle = ep.send_request(PEER, get("1"), 0.0)
    queued = ep.send_request(PEER, get("2"), 0.0)
    ep.datagrams_to_send(0.0)
    ep.cancel_request(queued, 0.0)
    ep.cancel_request(handle, 0.0)
    ep.cancel_request(handle, 0.0)  # idempotent
    assert _run_timers(ep, 100.0) == [] and ep.next_event() is None


def test_tokens_are_unique_among_outstanding_requests_to_a_peer() -> None:
    ep = endpoint(token_length=1)
    handles = [ep.send_request(PEER, get(str(i)), 0.0, confirmable=False) for i in range(200)]
    assert len({h.token for h in handles}) == 200


def test_a_non_request_without_response_times_out() -> None:
    ep = endpoint(transmission=EXACT, response_timeout=10.0)
    handle = ep.send_request(PEER, get("1"), 0.0, confirmable=False)
    (req,) = sent(ep)
    assert req.mtype == Type.NON
    _run_timers(ep, 10.0)
    event = ep.next_event()
    assert isinstance(event, RequestFailed) and event.request is handle
    assert event.reason is CloseReason.TIMEOUT


def test_forgetting_a_peer_fails_its_requests() -> None:
    ep = endpoint()
    first = ep.send_request(PEER, get("1"), 0.0)
    second = ep.send_request(PEER, get("2"), 0.0)
    ep.datagrams_to_send(0.0)
    ep.forget_peer(PEER, 1.0)
    events = [ep.next_event(), ep.next_event()]
    assert {e.request for e in events if isinstance(e, RequestFailed)} == {first, second}
    assert all(
        isinstance(e, RequestFailed) and e.reason is CloseReason.PEER_FORGOTTEN for e in events
    )
    assert ep.datagrams_to_send(1.0) == [] and not ep.has_peer(PEER)
    assert _run_timers(ep, 1000.0) == []
