"""The servers a benchmark compares, each run in its own process by ``bench_transport``.

Every server answers ``GET /bench`` (or, for the raw echo, echoes the datagram) on 127.0.0.1 at
an ephemeral port and writes that port to a file, so the orchestrator can find it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

SERVERS: dict[str, Callable[[Path], Coroutine[Any, Any, None]]] = {}


def server(name: str) -> Callable[[Callable[[Path], Coroutine[Any, Any, None]]], Any]:
    def register(fn: Callable[[Path], Coroutine[Any, Any, None]]) -> Any:
        SERVERS[name] = fn
        return fn

    return register


async def _forever() -> None:
    await asyncio.Event().wait()


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


@server("aiocoap")
async def aiocoap_stack(port_file: Path) -> None:
    """(b) aiocoap's own server stack with one resource."""
    import socket

    import aiocoap
    import aiocoap.resource as resource

    class Bench(resource.Resource):
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
