"""What an idle endpoint keeps, and the cached housekeeping deadline behind ``get_timer``.

A simulated device owns an endpoint that is idle almost all the time, and an empty ``deque``
costs ~760 bytes: the queues exist only while in use. ``get_timer`` runs after every datagram,
so its housekeeping part is cached; the cache may be early (one spurious wake-up) but must
never be late.
"""

from __future__ import annotations

import random

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import CoapEndpoint, RequestReceived
from tests.coap.wire import PEER, con_get, datagram, endpoint, response


def _answer_all(ep: CoapEndpoint, now: float) -> int:
    answered = 0
    while (event := ep.next_event()) is not None:
        if isinstance(event, RequestReceived):
            ep.respond(event.request, response(), now)
            answered += 1
    ep.datagrams_to_send(now)
    return answered


def _run_timers(ep: CoapEndpoint, until: float) -> float:
    """Fire the endpoint's timer whenever due, as a transport would, up to ``until``."""
    now = 0.0
    while (deadline := ep.get_timer()) is not None and deadline <= until:
        now = max(now, deadline)
        ep.handle_timer(now)
        _answer_all(ep, now)
    return now


def _holds_no_queue(ep: CoapEndpoint) -> bool:
    return (
        ep._events is None
        and ep._ack_fifo is None
        and ep._dedup._con is None
        and ep._dedup._non is None
        and ep._blockwise._fifo is None
    )


def test_a_fresh_endpoint_allocates_no_queue() -> None:
    assert _holds_no_queue(endpoint())


def test_an_endpoint_idle_past_the_exchange_lifetime_has_released_every_queue() -> None:
    ep = endpoint()
    ep.receive_datagram(con_get(1), PEER, 0.0)
    ep.receive_datagram(datagram(Type.NON, Code.GET, 2, b"n", uri_path=("a",)), PEER, 0.0)
    upload = datagram(
        Type.CON, Code.PUT, 3, b"u", b"x" * 1024, uri_path=("f",), block1=(0, True, 6)
    )
    ep.receive_datagram(upload, PEER, 0.0)  # a Block1 assembly: the block-wise FIFO
    assert _answer_all(ep, 0.0) == 2
    ep.send_request("other", Message(code=Code.GET, uri_path=("x",)), 0.0)
    ep.datagrams_to_send(0.0)
    assert not _holds_no_queue(ep)
    _run_timers(ep, 10_000.0)  # the request to "other" times out, everything expires
    assert ep.peer_count == 0 and ep.dedup_size == 0
    assert ep.get_timer() is None
    assert _holds_no_queue(ep)


def test_the_nstart_queue_exists_only_while_requests_wait() -> None:
    ep = endpoint()
    first = ep.send_request(PEER, Message(code=Code.GET, uri_path=("1",)), 0.0)
    ep.send_request(PEER, Message(code=Code.GET, uri_path=("2",)), 0.0)  # waits for NSTART
    ps = ep._peers[PEER]
    assert ps.queue is not None and len(ps.queue) == 1
    ((data, _),) = ep.datagrams_to_send(0.0)
    sent = Message.decode(data)
    ack = datagram(Type.ACK, Code.CONTENT, sent.mid, sent.token)
    ep.receive_datagram(ack, PEER, 0.1)
    assert first.done
    assert ps.queue is None  # the second request started and the queue went with it
    assert len(ep.datagrams_to_send(0.1)) == 1


def test_a_non_record_after_con_records_brings_the_timer_forward() -> None:
    """CON records live 247 s, NON records 145 s: a NON record arriving 100 s later expires
    before the oldest CON record, so the cached deadline has to move earlier."""
    ep = endpoint()
    ep.receive_datagram(con_get(1), PEER, 0.0)
    _answer_all(ep, 0.0)
    assert ep.get_timer() == 247.0
    non = datagram(Type.NON, Code.GET, 7, b"n", uri_path=("a",))
    ep.receive_datagram(non, PEER, 100.0)
    _answer_all(ep, 100.0)
    assert ep.get_timer() == 245.0
    ep.handle_timer(245.0)
    ep.receive_datagram(non, PEER, 245.5)  # its record expired: a new request, not a duplicate
    assert isinstance(ep.next_event(), RequestReceived)
    assert ep.stats.duplicates == 0


def test_a_new_peer_on_an_idle_endpoint_arms_the_timer_again() -> None:
    ep = endpoint()
    ep.receive_datagram(con_get(1), PEER, 0.0)
    _answer_all(ep, 0.0)
    _run_timers(ep, 1000.0)
    assert ep.get_timer() is None and ep.peer_count == 0
    ep.receive_datagram(con_get(2), "newcomer", 2000.0)
    _answer_all(ep, 2000.0)
    assert ep.get_timer() == 2000.0 + 247.0


def test_the_cached_timer_is_never_later_than_the_uncached_one() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        ep = CoapEndpoint(rng=random.Random(seed))
        now = 0.0
        mid = 0
        for _ in range(300):
            now += rng.choice((0.001, 0.5, 3.0, 60.0, 200.0))
            due = ep.get_timer()
            if due is not None and due <= now:
                ep.handle_timer(now)
            action = rng.random()
            peer = f"p{rng.randrange(4)}"
            mid = (mid + 1) & 0xFFFF
            if action < 0.5:
                ep.receive_datagram(con_get(mid), peer, now)
            elif action < 0.8:
                raw = datagram(Type.NON, Code.GET, mid, b"n", uri_path=("a",))
                ep.receive_datagram(raw, peer, now)
            elif action < 0.9:
                ep.send_request(peer, Message(code=Code.GET, uri_path=("x",)), now)
            else:
                ep.forget_peer(peer, now)
            if rng.random() < 0.8:
                _answer_all(ep, now)
            cached = ep.get_timer()
            ep._chores_dirty = True
            fresh = ep.get_timer()
            # Early (or armed when nothing is due any more) is allowed; late or missing is not.
            if fresh is not None:
                assert cached is not None and cached <= fresh, (seed, now, cached, fresh)
