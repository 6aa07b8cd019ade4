"""Block-wise transfers (RFC 7959) in both directions, through pairs and bytes-level."""

from __future__ import annotations

import hashlib

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import (
    CloseReason,
    EndpointConfig,
    Event,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from tests.coap.harness import LinkModel, Network, Node, get
from tests.coap.wire import PEER, datagram, decode, endpoint, response, sent

BODY = hashlib.shake_256(b"firmware").digest(100 * 1024)
LOSSY = LinkModel(drop=0.1, duplicate=0.1, reorder=0.2)


def _serve_body(body: bytes) -> tuple[list[RequestReceived], object]:
    seen: list[RequestReceived] = []

    def handler(node: Node, event: Event) -> None:
        if isinstance(event, RequestReceived):
            seen.append(event)
            payload = body if event.message.code == Code.GET else b"stored"
            node.endpoint.respond(event.request, Message(code=Code.CONTENT, payload=payload), 0)

    return seen, handler


def test_a_100_kb_response_is_served_block_wise_and_reassembled_intact_over_a_lossy_link() -> None:
    net = Network(seed=3, link=LOSSY)
    seen, handler = _serve_body(BODY)
    net.add("device", handler=handler)  # type: ignore[arg-type]
    server = net.add("server")
    handle = server.endpoint.send_request("device", get("5", "0", "0"), net.now)
    net.run_until(lambda: handle.done, limit=5_000)
    (event,) = server.events
    assert isinstance(event, ResponseReceived)
    assert event.message.payload == BODY
    assert event.message.opt.block2 is None
    assert len(seen) == 1  # blocks 1..99 came from the block-wise cache, not the application
    # 1 KiB blocks: 100 block requests, plus retransmissions.
    gets = [m for m in (decode(d) for _, _, d in server.sent) if m.code == Code.GET]
    assert len({m.opt.block2.block_number for m in gets if m.opt.block2}) == 99


def test_a_100_kb_request_body_is_sent_block1_and_delivered_once_over_a_lossy_link() -> None:
    net = Network(seed=4, link=LOSSY)
    seen, handler = _serve_body(b"")
    net.add("device", handler=handler)  # type: ignore[arg-type]
    server = net.add("server")
    push = Message(code=Code.PUT, uri_path=("5", "0", "0"), payload=BODY)
    handle = server.endpoint.send_request("device", push, net.now)
    net.run_until(lambda: handle.done, limit=5_000)
    (event,) = server.events
    assert isinstance(event, ResponseReceived) and event.message.code == Code.CONTENT
    assert event.message.opt.block1 is not None and not event.message.opt.block1.more
    (received,) = seen
    assert received.message.payload == BODY
    assert received.message.opt.block1 is None and received.message.opt.size1 is None


def test_the_server_s_smaller_block_size_is_adopted_by_the_uploading_client() -> None:
    net = Network(seed=5)
    seen, handler = _serve_body(b"")
    net.add("device", handler=handler, config=EndpointConfig(max_block_szx=4))  # type: ignore[arg-type]
    server = net.add("server")
    body = BODY[:5000]
    handle = server.endpoint.send_request(
        "device", Message(code=Code.PUT, uri_path=("x",), payload=body), net.now
    )
    net.run_until(lambda: handle.done)
    assert seen[0].message.payload == body
    blocks = [m.opt.block1 for m in (decode(d) for _, _, d in server.sent)]
    assert blocks[0].size_exponent == 6 and blocks[0].block_number == 0
    assert {b.size_exponent for b in blocks[1:]} == {4}
    assert blocks[1].block_number == 4  # continues after the first 1024 bytes in 256-byte blocks
    assert sum(len(decode(d).payload) for _, _, d in server.sent) == len(body)


def test_a_client_with_a_smaller_max_block_size_negotiates_it_early() -> None:
    net = Network(seed=6)
    _seen, handler = _serve_body(BODY[:3000])
    device = net.add("device", handler=handler)  # type: ignore[arg-type]
    server = net.add("server", config=EndpointConfig(max_block_szx=3))
    handle = server.endpoint.send_request("device", get("big"), net.now)
    net.run_until(lambda: handle.done)
    (event,) = server.events
    assert isinstance(event, ResponseReceived) and event.message.payload == BODY[:3000]
    sizes = {len(decode(d).payload) for _, _, d in device.sent}
    assert max(sizes) == 128
    first = decode(device.sent[0][2])
    assert first.opt.size2 == 3000


def test_a_block1_block_out_of_order_gets_4_08() -> None:
    ep = endpoint()
    block = BODY[:1024]
    ep.receive_datagram(
        datagram(Type.CON, Code.PUT, 1, b"a", block, uri_path=("f",), block1=(1, True, 6)),
        PEER,
        0.0,
    )
    (reply,) = sent(ep)
    assert reply.code == Code.REQUEST_ENTITY_INCOMPLETE and ep.next_event() is None
    ep.receive_datagram(
        datagram(Type.CON, Code.PUT, 2, b"a", block, uri_path=("f",), block1=(0, True, 6)),
        PEER,
        0.1,
    )
    (cont,) = sent(ep, 0.1)
    assert cont.code == Code.CONTINUE and tuple(cont.opt.block1) == (0, True, 6)
    ep.receive_datagram(
        datagram(Type.CON, Code.PUT, 3, b"a", block, uri_path=("f",), block1=(2, True, 6)),
        PEER,
        0.2,
    )
    (gap,) = sent(ep, 0.2)
    assert gap.code == Code.REQUEST_ENTITY_INCOMPLETE


def test_a_body_announced_larger_than_the_limit_gets_4_13_with_size1() -> None:
    ep = endpoint(max_body_size=4096)
    ep.receive_datagram(
        datagram(
            Type.CON,
            Code.PUT,
            1,
            b"a",
            BODY[:1024],
            uri_path=("f",),
            block1=(0, True, 6),
            size1=10_000,
        ),
        PEER,
        0.0,
    )
    (reply,) = sent(ep)
    assert reply.code == Code.REQUEST_ENTITY_TOO_LARGE and reply.opt.size1 == 4096


def test_a_body_growing_past_the_limit_gets_4_13() -> None:
    ep = endpoint(max_body_size=2048)
    codes = []
    for num in range(3):
        raw = datagram(
            Type.CON,
            Code.PUT,
            num,
            b"a",
            BODY[num * 1024 : (num + 1) * 1024],
            uri_path=("f",),
            block1=(num, True, 6),
        )
        ep.receive_datagram(raw, PEER, num)
        codes += [m.code for m in sent(ep, num)]
    assert codes == [Code.CONTINUE, Code.CONTINUE, Code.REQUEST_ENTITY_TOO_LARGE]
    assert ep.next_event() is None


def test_a_response_larger_than_the_client_limit_fails_with_too_large() -> None:
    net = Network(seed=7)
    _seen, handler = _serve_body(BODY)
    net.add("device", handler=handler)  # type: ignore[arg-type]
    server = net.add("server", config=EndpointConfig(max_body_size=10_000))
    handle = server.endpoint.send_request("device", get("big"), net.now)
    net.run_until(lambda: handle.done)
    (event,) = server.events
    assert isinstance(event, RequestFailed) and event.reason is CloseReason.TOO_LARGE


def test_a_changed_etag_between_blocks_fails_the_transfer() -> None:
    ep = endpoint()
    handle = ep.send_request(PEER, get("f"), 0.0)
    (req,) = sent(ep)
    first = datagram(
        Type.ACK, Code.CONTENT, req.mid, req.token, BODY[:1024], block2=(0, True, 6), etag=b"v1"
    )
    ep.receive_datagram(first, PEER, 0.1)
    (follow,) = sent(ep, 0.1)
    assert tuple(follow.opt.block2) == (1, False, 6) and follow.token != req.token
    second = datagram(
        Type.ACK,
        Code.CONTENT,
        follow.mid,
        follow.token,
        BODY[1024:1500],
        block2=(1, False, 6),
        etag=b"v2",
    )
    ep.receive_datagram(second, PEER, 0.2)
    event = ep.next_event()
    assert isinstance(event, RequestFailed) and event.request is handle
    assert event.reason is CloseReason.BLOCKWISE


def test_a_later_block_without_a_cached_body_is_cut_from_the_application_s_full_response() -> None:
    ep = endpoint()
    ep.receive_datagram(con_block2_get(5, num=2, szx=4), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    assert event.message.opt.block2 is not None
    ep.respond(event.request, response(payload=BODY[:1000]), 0.0)
    (reply,) = sent(ep)
    assert reply.payload == BODY[512:768] and tuple(reply.opt.block2) == (2, True, 4)
    # The next block now comes from the cache.
    ep.receive_datagram(con_block2_get(6, num=3, szx=4), PEER, 0.1)
    assert ep.next_event() is None
    (last,) = sent(ep, 0.1)
    assert last.payload == BODY[768:1000] and tuple(last.opt.block2) == (3, False, 4)


def test_a_block_beyond_the_body_is_a_bad_request() -> None:
    ep = endpoint()
    ep.receive_datagram(con_block2_get(5, num=9, szx=4), PEER, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    ep.respond(event.request, response(payload=b"short"), 0.0)
    (reply,) = sent(ep)
    assert reply.code == Code.BAD_REQUEST


def test_a_bert_block_size_is_rejected_over_udp() -> None:
    ep = endpoint()
    ep.receive_datagram(con_block2_get(5, num=0, szx=7), PEER, 0.0)
    assert ep.next_event() is None
    (reply,) = sent(ep)
    assert reply.code == Code.BAD_REQUEST and reply.mtype == Type.ACK


def test_a_block1_upload_with_a_block2_response_works_both_ways() -> None:
    net = Network(seed=8, link=LOSSY)

    def handler(node: Node, event: Event) -> None:
        if isinstance(event, RequestReceived):
            reply = Message(code=Code.CHANGED, payload=event.message.payload[::-1])
            node.endpoint.respond(event.request, reply, 0)

    net.add("device", handler=handler)
    server = net.add("server")
    body = BODY[:20_000]
    handle = server.endpoint.send_request(
        "device", Message(code=Code.POST, uri_path=("x",), payload=body), net.now
    )
    net.run_until(lambda: handle.done, limit=5_000)
    (event,) = server.events
    assert isinstance(event, ResponseReceived) and event.message.payload == body[::-1]


def con_block2_get(mid: int, *, num: int, szx: int) -> bytes:
    return datagram(Type.CON, Code.GET, mid, b"b", uri_path=("big",), block2=(num, False, szx))


def test_a_request_for_a_later_block_gets_that_block_untouched() -> None:
    ep = endpoint()
    handle = ep.send_request(PEER, get("f", block2=(3, False, 4)), 0.0)
    (req,) = sent(ep)
    reply = datagram(
        Type.ACK, Code.CONTENT, req.mid, req.token, BODY[768:1024], block2=(3, True, 4)
    )
    ep.receive_datagram(reply, PEER, 0.1)
    event = ep.next_event()
    assert isinstance(event, ResponseReceived) and event.request is handle
    assert event.message.payload == BODY[768:1024] and ep.datagrams_to_send(0.1) == []


def test_a_4_13_naming_a_smaller_block_size_restarts_the_upload_in_that_size() -> None:
    ep = endpoint()
    handle = ep.send_request(PEER, Message(code=Code.PUT, uri_path=("f",), payload=BODY[:900]), 0.0)
    (whole,) = sent(ep)
    assert whole.opt.block1 is None and len(whole.payload) == 900
    too_large = datagram(
        Type.ACK, Code.REQUEST_ENTITY_TOO_LARGE, whole.mid, whole.token, block1=(0, False, 4)
    )
    ep.receive_datagram(too_large, PEER, 0.1)
    (first,) = sent(ep, 0.1)
    assert tuple(first.opt.block1) == (0, True, 4) and first.payload == BODY[:256]
    assert first.opt.size1 == 900 and ep.next_event() is None
    # A second 4.13 asking for the same size is the server's final word.
    again = datagram(
        Type.ACK, Code.REQUEST_ENTITY_TOO_LARGE, first.mid, first.token, block1=(0, False, 4)
    )
    ep.receive_datagram(again, PEER, 0.2)
    event = ep.next_event()
    assert isinstance(event, ResponseReceived) and event.request is handle
    assert event.message.code == Code.REQUEST_ENTITY_TOO_LARGE
