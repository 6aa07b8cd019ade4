"""Memory bounds and the building blocks behind them: peer cap, block-wise cap, timer heap."""

from __future__ import annotations

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import CloseReason, ObserverRemoved, RequestReceived
from lwm2m.coap.timers import TimerHeap
from tests.coap.wire import PEER, con_get, datagram, endpoint, response, sent


class _Target:
    def __init__(self) -> None:
        self.timer_seq = 0


def test_the_timer_heap_fires_in_deadline_order_and_skips_cancelled_entries() -> None:
    heap = TimerHeap()
    a, b, c = _Target(), _Target(), _Target()
    heap.schedule(a, 3.0)
    heap.schedule(b, 1.0)
    heap.schedule(c, 2.0)
    heap.cancel(c)
    heap.schedule(a, 0.5)  # re-arming leaves the old entry stale
    assert heap.next_deadline() == 0.5
    assert heap.pop_due(10.0) is a
    assert heap.pop_due(10.0) is b
    assert heap.pop_due(10.0) is None and heap.next_deadline() is None


def test_the_timer_heap_compacts_when_stale_entries_dominate() -> None:
    heap = TimerHeap()
    targets = [_Target() for _ in range(5000)]
    for i, target in enumerate(targets):
        heap.schedule(target, float(i))
    for target in targets[:4000]:
        heap.cancel(target)
    assert len(heap) < 2100
    assert heap.next_deadline() == 4000.0


def test_a_new_peer_beyond_the_cap_evicts_an_idle_one_or_is_dropped() -> None:
    ep = endpoint(max_peers=2)
    ep.receive_datagram(con_get(1), "a", 0.0)
    ep.receive_datagram(con_get(1), "b", 0.0)
    for _ in range(2):
        event = ep.next_event()
        assert isinstance(event, RequestReceived)
        ep.respond(event.request, response(), 0.0)
    ep.receive_datagram(con_get(1), "c", 1.0)  # "a" holds only dedup records: evicted
    assert not ep.has_peer("a") and ep.has_peer("c")
    assert ep.stats.peers_evicted == 1
    ep.send_request("b", Message(code=Code.GET), 1.0)  # "b" now holds a request
    ep.send_request("c", Message(code=Code.GET), 1.0)
    ep.receive_datagram(con_get(1), "d", 2.0)
    assert not ep.has_peer("d") and ep.stats.peers_dropped == 1


def test_block1_uploads_beyond_the_global_cap_evict_the_oldest() -> None:
    ep = endpoint(max_blockwise_states=3)
    for i in range(5):
        raw = datagram(
            Type.CON, Code.PUT, i, b"t", b"x" * 1024, uri_path=(str(i),), block1=(0, True, 6)
        )
        ep.receive_datagram(raw, PEER, 0.0)
    assert [m.code for m in sent(ep)] == [Code.CONTINUE] * 5
    # Upload 0 was evicted: its next block is no longer expected.
    for i, expected in ((0, Code.REQUEST_ENTITY_INCOMPLETE), (4, Code.CONTINUE)):
        raw = datagram(
            Type.CON, Code.PUT, 10 + i, b"t", b"x" * 1024, uri_path=(str(i),), block1=(1, True, 6)
        )
        ep.receive_datagram(raw, PEER, 0.1)
        assert [m.code for m in sent(ep, 0.1)] == [expected]


def test_a_stalled_upload_expires_after_the_blockwise_lifetime() -> None:
    ep = endpoint(blockwise_lifetime=30.0)
    first = datagram(Type.CON, Code.PUT, 1, b"t", b"x" * 1024, uri_path=("f",), block1=(0, True, 6))
    ep.receive_datagram(first, PEER, 0.0)
    ep.datagrams_to_send(0.0)
    ep.handle_timer(31.0)
    second = datagram(Type.CON, Code.PUT, 2, b"t", b"x" * 10, uri_path=("f",), block1=(1, False, 6))
    ep.receive_datagram(second, PEER, 31.0)
    assert [m.code for m in sent(ep, 31.0)] == [Code.REQUEST_ENTITY_INCOMPLETE]


def test_forgetting_a_peer_removes_its_observers() -> None:
    ep = endpoint()
    ep.receive_datagram(datagram(Type.CON, Code.GET, 1, b"o", observe=0), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    observation = ep.respond(event.request, response(), 0.0)
    assert observation is not None
    ep.forget_peer(PEER, 1.0)
    removed = ep.next_event()
    assert isinstance(removed, ObserverRemoved) and removed.observation is observation
    assert removed.reason is CloseReason.PEER_FORGOTTEN and not observation.active


def test_a_deregistration_with_another_token_matches_the_observer_by_its_options() -> None:
    ep = endpoint()
    ep.receive_datagram(
        datagram(Type.CON, Code.GET, 1, b"o1", uri_path=("3", "0"), observe=0), PEER, 0.0
    )
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    observation = ep.respond(event.request, response(), 0.0)
    ep.receive_datagram(
        datagram(Type.CON, Code.GET, 2, b"o2", uri_path=("3", "0"), observe=1), PEER, 1.0
    )
    removed = ep.next_event()
    assert isinstance(removed, ObserverRemoved) and removed.observation is observation
    assert removed.reason is CloseReason.DEREGISTERED
    assert isinstance(ep.next_event(), RequestReceived)  # the GET itself is still answered
