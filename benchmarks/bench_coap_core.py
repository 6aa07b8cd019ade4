"""Per-request CPU cost of the sans-IO CoAP core, in-process, against aiocoap's codec alone.

What it measures (single thread, no sockets, ``time.process_time``):

* ``codec``   — the floor: ``Message.decode`` of a CON GET, build a 2.05 response, ``encode``.
* ``server``  — the server hot path through :class:`CoapEndpoint`: ``receive_datagram`` →
  ``next_event`` → ``respond`` (piggybacked) → ``datagrams_to_send`` → ``get_timer``, over
  many peers and distinct Message IDs (so dedup records are created and expired as in
  production).
* ``shell``   — the same server path as a transport drives it: ``UdpTransport`` sink (Peer
  cache) → :class:`~lwm2m.transport.coap_shell.CoapShell` (loop clock, event drain, send, timer
  re-arm) → core, with the socket replaced by a counter; the difference to ``server`` is the
  per-datagram cost of the glue.
* ``client``  — the client path: ``send_request`` → ``datagrams_to_send``, then the peer's
  piggybacked ACK through ``receive_datagram`` → ``ResponseReceived``; its floor is the same
  four codec operations (encode request, peer decodes, peer encodes ACK, decode ACK).

The core's own cost is the difference to ``codec``. Goal: server overhead well under 30 µs.

    .venv/bin/python benchmarks/bench_coap_core.py [--requests 200000] [--peers 1000]
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import time
from collections.abc import Callable

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import CoapEndpoint, EndpointConfig, Event, RequestReceived, ResponseReceived

PAYLOAD = b"21.5"


def _datagrams(count: int, peers: int) -> list[tuple[bytes, tuple[str, int]]]:
    """``count`` distinct CON GET /3303/0/5700 datagrams spread over ``peers`` addresses."""
    out = []
    for i in range(count):
        message = Message(code=Code.GET, uri_path=("3303", "0", "5700"))
        message.mtype = Type.CON
        message.mid = (i // peers) & 0xFFFF
        message.token = (i & 0xFFFFFFFF).to_bytes(4, "big")
        out.append((message.encode(), (f"10.0.{i % peers // 250}.{i % 250}", 5683)))
    return out


def _timed(label: str, count: int, body: Callable[[], None]) -> float:
    gc.collect()
    start = time.process_time()
    body()
    elapsed = time.process_time() - start
    per = elapsed / count * 1e6
    print(f"{label:<44} {per:8.2f} µs/request   ({count / elapsed:9.0f} req/s)")
    return per


def bench_codec(datagrams: list[tuple[bytes, tuple[str, int]]]) -> float:
    def run() -> None:
        for data, _peer in datagrams:
            request = Message.decode(data)
            response = Message(code=Code.CONTENT, payload=PAYLOAD)
            response.mtype = Type.ACK
            response.mid = request.mid
            response.token = request.token
            response.encode()

    return _timed("aiocoap decode + build + encode (floor)", len(datagrams), run)


def bench_server(datagrams: list[tuple[bytes, tuple[str, int]]]) -> float:
    endpoint = CoapEndpoint(rng=random.Random(1), config=EndpointConfig())
    sent = 0

    def run() -> None:
        nonlocal sent
        receive = endpoint.receive_datagram
        next_event = endpoint.next_event
        respond = endpoint.respond
        flush = endpoint.datagrams_to_send
        get_timer = endpoint.get_timer
        now = 0.0
        for data, peer in datagrams:
            now += 0.00002  # 50k req/s of simulated time: dedup records expire as in production
            receive(data, peer, now)
            event = next_event()
            assert isinstance(event, RequestReceived)
            respond(event.request, Message(code=Code.CONTENT, payload=PAYLOAD), now)
            sent += len(flush(now))
            get_timer()  # a transport re-arms its timer after every datagram

    per = _timed("CoapEndpoint server: receive→event→respond→out", len(datagrams), run)
    assert sent == len(datagrams), sent
    return per


class _CountingSocket:
    """Stands in for the datagram transport under ``UdpTransport``: counts what is sent."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent += 1

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5683)

    def close(self) -> None:
        pass


def bench_shell(datagrams: list[tuple[bytes, tuple[str, int]]]) -> float:
    import asyncio

    from lwm2m.transport.coap_shell import CoapShell
    from lwm2m.transport.udp import UdpTransport

    sock = _CountingSocket()

    async def run_async() -> None:
        endpoint = CoapEndpoint(rng=random.Random(1), config=EndpointConfig())
        shell: CoapShell[Event]

        def on_event(event: Event) -> None:
            if isinstance(event, RequestReceived):
                reply = Message(code=Code.CONTENT, payload=PAYLOAD)
                endpoint.respond(event.request, reply, shell.now())

        shell = CoapShell(endpoint, on_event)
        udp = UdpTransport(shell)
        udp.connection_made(sock)  # type: ignore[arg-type]
        shell.attach(udp)
        receive = udp.datagram_received
        for data, peer in datagrams:
            receive(data, peer)
        shell.close()

    per = _timed(
        "UdpTransport sink → CoapShell → server", len(datagrams), lambda: asyncio.run(run_async())
    )
    assert sock.sent == len(datagrams), sock.sent
    return per


def bench_client_codec(count: int) -> float:
    template = Message(code=Code.CONTENT, payload=PAYLOAD)

    def run() -> None:
        for i in range(count):
            request = Message(code=Code.GET, uri_path=("3", "0", "9"))
            request.mtype = Type.CON
            request.mid = i & 0xFFFF
            request.token = (i & 0xFFFFFFFF).to_bytes(8, "big")
            seen = Message.decode(request.encode())
            template.mtype = Type.ACK
            template.mid = seen.mid
            template.token = seen.token
            Message.decode(template.encode())

    return _timed("aiocoap: request + response codec (floor)", count, run)


def bench_client(count: int, peers: int) -> float:
    endpoint = CoapEndpoint(rng=random.Random(2), config=EndpointConfig())
    addresses = [(f"10.1.{i // 250}.{i % 250}", 5683) for i in range(peers)]
    template = Message(code=Code.CONTENT, payload=PAYLOAD)

    def run() -> None:
        now = 0.0
        for i in range(count):
            now += 0.00002
            peer = addresses[i % peers]
            endpoint.send_request(peer, Message(code=Code.GET, uri_path=("3", "0", "9")), now)
            ((data, _),) = endpoint.datagrams_to_send(now)
            request = Message.decode(data)  # the device's side, inlined: piggybacked 2.05
            template.mtype = Type.ACK
            template.mid = request.mid
            template.token = request.token
            endpoint.receive_datagram(template.encode(), peer, now)
            event = endpoint.next_event()
            assert isinstance(event, ResponseReceived)

    return _timed("CoapEndpoint client: send→(peer codec)→response", count, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--peers", type=int, default=1_000)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()} ({platform.node()})")
    datagrams = _datagrams(args.requests, args.peers)
    codec = bench_codec(datagrams)
    server = bench_server(datagrams)
    shell = bench_shell(datagrams)
    client_codec = bench_client_codec(args.requests // 2)
    client = bench_client(args.requests // 2, args.peers)
    print(f"core overhead, server path: {server - codec:6.2f} µs/request (goal < 30)")
    print(f"transport glue (sink + shell): {shell - server:6.2f} µs/request")
    print(f"core overhead, client path: {client - client_codec:6.2f} µs/request")


if __name__ == "__main__":
    main()
