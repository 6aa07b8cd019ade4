"""The servers a benchmark compares, each run in its own process by ``bench_transport``.

Every server answers ``GET /bench`` (or, for the raw echo, echoes the datagram) on 127.0.0.1 at
an ephemeral port and writes that port to a file, so the orchestrator can find it.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

SERVERS: dict[str, Callable[[Path], Coroutine[Any, Any, None]]] = {}


def server(name: str) -> Callable[[Callable[[Path], Coroutine[Any, Any, None]]], Any]:
    def register(fn: Callable[[Path], Coroutine[Any, Any, None]]) -> Any:
        SERVERS[name] = fn
        return fn

    return register


async def _forever(
    stats: Callable[[], dict[str, Any]] | None = None, where: Path | None = None
) -> None:
    """Serve until SIGTERM; then write ``stats()`` as JSON to ``where`` (if given) and return,
    so the orchestrator can check what the server saw (e.g. no duplicate requests)."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    if stats is not None and where is not None:
        where.write_text(json.dumps(stats()))


@server("raw-echo")
async def raw_echo(port_file: Path) -> None:
    """(a) the baseline: a bare asyncio datagram endpoint echoing every datagram."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port_file.write_text(str(transport.get_extra_info("sockname")[1]))
    await _forever()


@server("lean-echo")
async def lean_echo(port_file: Path) -> None:
    """(a2) the same bare echo on the socket loop fleetloop's transports use
    (``lwm2m.transport._socket``: batched reads into 64 KiB buffers, replies sent at the end
    of each batch) — the I/O floor under (c) and (d), so the CoAP work can be read off."""
    import socket

    from lwm2m.transport._socket import open_datagram_socket

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    open_datagram_socket(asyncio.get_running_loop(), Echo(), sock)
    port_file.write_text(str(sock.getsockname()[1]))
    await _forever()


@server("aiocoap")
async def aiocoap_stack(port_file: Path) -> None:
    """(b) aiocoap's own server stack with one resource."""
    import socket

    import aiocoap
    import aiocoap.resource as resource

    class Bench(resource.Resource):  # type: ignore[misc]  # aiocoap is untyped
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(payload=b"ok")

    root = resource.Site()
    root.add_resource(["bench"], Bench())
    # aiocoap binds a fixed port; find a free one first (bench only, loopback).
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    await aiocoap.Context.create_server_context(root, bind=("127.0.0.1", port))
    port_file.write_text(str(port))
    await _forever()


def run(name: str, port_file: Path) -> None:
    asyncio.run(SERVERS[name](port_file))


BENCH_PSK_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
"""Every benchmark device shares this key; identities are ``bench-N``."""


class _BenchPsk:
    """Any ``bench-*`` identity gets the benchmark key (a PskStore; no table to fill)."""

    def lookup(self, identity: bytes) -> bytes | None:
        return BENCH_PSK_KEY if identity.startswith(b"bench-") else None


async def _fleetloop(port_file: Path, dtls: bool) -> None:
    """fleetloop's CoAP core on its UDP or DTLS transport, answering GET /bench with 2.05."""
    import random

    from aiocoap import Message
    from aiocoap.numbers.codes import Code

    from lwm2m.coap import CoapEndpoint, Event, RequestReceived
    from lwm2m.transport import DtlsServer, DtlsServerConfig, UdpTransport
    from lwm2m.transport.coap_shell import CoapShell

    core = CoapEndpoint(rng=random.Random(1))
    shell: CoapShell[Event]

    def on_event(event: Event) -> None:
        if isinstance(event, RequestReceived):
            response = Message(code=Code.CONTENT, payload=b"ok")
            core.respond(event.request, response, shell.now())

    shell = CoapShell(core, on_event)
    if dtls:
        config = DtlsServerConfig(psk_store=_BenchPsk(), max_handshakes_per_source=64)
        transport: Any = await DtlsServer.create(
            shell, config, "127.0.0.1", 0, on_session_closed=shell.session_closed
        )
    else:
        transport = await UdpTransport.create(shell, "127.0.0.1", 0)
    shell.attach(transport)
    port_file.write_text(str(transport.local_address[1]))

    def stats() -> dict[str, Any]:
        return {
            "core": core.stats.as_dict(),
            "peers": core.peer_count,
            "dedup_evicted": core.dedup_evicted,
            "transport": transport.stats.snapshot(),
            "shell_send_errors": shell.send_errors,
            "shell_handler_errors": shell.handler_errors,
        }

    await _forever(stats, port_file.with_suffix(".stats"))


@server("fleetloop-udp")
async def fleetloop_udp(port_file: Path) -> None:
    """(c) fleetloop's exchange layer over its UDP transport."""
    await _fleetloop(port_file, dtls=False)


@server("fleetloop-dtls")
async def fleetloop_dtls(port_file: Path) -> None:
    """(d)/(e) fleetloop's exchange layer over DTLS 1.2 PSK."""
    await _fleetloop(port_file, dtls=True)
