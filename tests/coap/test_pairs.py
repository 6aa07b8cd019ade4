"""A client core and a server core over a lossy link: exactly-once behaviour end to end."""

from __future__ import annotations

from collections import Counter

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import (
    EndpointConfig,
    Event,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
)
from tests.coap.harness import LinkModel, Network, Node, echo_handler
from tests.coap.wire import EXACT

HOSTILE = LinkModel(drop=0.25, duplicate=0.25, reorder=0.3, reorder_delay=3.0)


def _terminal(events: list[Event]) -> Counter[RequestHandle]:
    return Counter(e.request for e in events if isinstance(e, ResponseReceived | RequestFailed))


@pytest.mark.parametrize("confirmable", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_every_request_ends_exactly_once_and_the_server_sees_it_at_most_once(
    seed: int, confirmable: bool
) -> None:
    net = Network(seed=seed, link=HOSTILE)
    server = net.add("server", handler=echo_handler)
    clients = [net.add(f"client{i}") for i in range(3)]
    handles: dict[RequestHandle, bytes] = {}
    for c in clients:
        for i in range(30):
            body = f"{c.address}/{i}".encode()
            message = Message(code=Code.POST, uri_path=("x",), payload=body)
            handles[c.endpoint.send_request("server", message, 0.0, confirmable=confirmable)] = body
    net.run_until(lambda: all(h.done for h in handles), limit=10_000)
    terminal: Counter[RequestHandle] = Counter()
    for c in clients:
        terminal += _terminal(c.events)
        for event in c.events:
            if isinstance(event, ResponseReceived):
                assert event.message.payload == b"echo:" + handles[event.request]
    assert set(terminal) == set(handles) and set(terminal.values()) == {1}
    seen = Counter(e.message.payload for e in server.of_type(RequestReceived))
    assert set(seen.values()) <= {1}
    completed = sum(isinstance(e, ResponseReceived) for c in clients for e in c.events)
    assert completed >= len(handles) * (0.97 if confirmable else 0.3)
    net.run_for(1_000.0)
    assert net.idle()  # every peer state, dedup record and timer is gone


def test_a_slow_application_answers_through_separate_responses_under_loss() -> None:
    net = Network(seed=11, link=LinkModel(drop=0.2, duplicate=0.2))

    def slow(node: Node, event: Event) -> None:
        if isinstance(event, RequestReceived):
            reply = Message(code=Code.CONTENT, payload=event.message.payload)
            net.at(net.now + 4.0, lambda: node.endpoint.respond(event.request, reply, net.now))

    server = net.add("server", handler=slow)
    client = net.add("client", config=EndpointConfig(transmission=EXACT))
    handles = {
        client.endpoint.send_request(
            "server", Message(code=Code.POST, payload=b"%d" % i), 0.0
        ): b"%d" % i
        for i in range(10)
    }
    net.run_until(lambda: all(h.done for h in handles), limit=10_000)
    assert set(_terminal(client.events).values()) == {1}
    got = {e.request: e.message.payload for e in client.of_type(ResponseReceived)}
    assert all(got[h] == body for h, body in handles.items() if h in got)
    assert len(got) >= 9
    assert server.endpoint.stats.empty_acks_sent >= 10
    assert len(server.of_type(RequestReceived)) == len({e.message.payload for e in server.events})


def test_nstart_serialises_requests_to_one_peer_but_not_across_peers() -> None:
    net = Network(seed=12)
    net.add("a", handler=echo_handler)
    net.add("b", handler=echo_handler)
    client = net.add("client")
    for i in range(5):
        for peer in ("a", "b"):
            client.endpoint.send_request(peer, Message(code=Code.GET, payload=b"%d" % i), 0.0)
    client.drain()
    assert sorted(p for _, p, _ in client.sent) == ["a", "b"]
    net.run_until(lambda: len(client.events) == 10)
    order = [e.message.payload for e in client.events if e.request.peer == "a"]
    assert order == [b"echo:%d" % i for i in range(5)]


def test_the_dedup_cap_holds_under_200k_distinct_message_ids() -> None:
    net = Network(seed=13)
    cap = 5_000
    server = net.add("server", config=EndpointConfig(max_dedup_entries=cap))
    endpoint = server.endpoint
    message = Message(code=Code.GET, uri_path=("1",))
    message.mtype = Type.CON
    message.token = b"\x01"
    peak = 0
    for i in range(200_000):
        message.mid = i & 0xFFFF
        endpoint.receive_datagram(message.encode(), f"peer{i % 200}", i * 1e-4)
        event = endpoint.next_event()
        assert isinstance(event, RequestReceived)
        endpoint.respond(event.request, Message(code=Code.CONTENT), i * 1e-4)
        endpoint.datagrams_to_send(0.0)
        if i % 997 == 0:
            peak = max(peak, endpoint.dedup_size)
    assert peak <= cap and endpoint.dedup_size <= cap
    assert endpoint.dedup_evicted >= 200_000 - cap - 1
    assert endpoint.peer_count == 200
