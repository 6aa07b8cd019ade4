"""Plain CoAP over UDP: one socket feeding a sink.

Deliberately nothing but the socket: every datagram goes up unchanged with a ``Peer`` (cached
per address, so a busy device costs one dict lookup, not an allocation), and ``send`` is one
``sendto``. All protocol work happens in the sans-IO core above. The socket is driven by
:mod:`lwm2m.transport._socket` rather than asyncio's datagram endpoint, which allocates 256 KiB
per received datagram and reads one datagram per trip through the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from lwm2m.transport._common import RateLimitedLog, open_socket
from lwm2m.transport._socket import open_datagram_socket
from lwm2m.transport.errors import TransportClosed, WrongTransport
from lwm2m.transport.interface import DatagramSink
from lwm2m.transport.peer import Address, Peer
from lwm2m.transport.stats import TransportStats

logger = logging.getLogger("lwm2m.transport.udp")

#: Peers cached per address; the cache is simply cleared when it grows past this (a re-created
#: Peer compares and hashes equal, so clearing only costs allocations).
PEER_CACHE_SIZE = 65536


class UdpTransport(asyncio.DatagramProtocol):
    """CoAP over plain UDP on one socket. Create with :meth:`create`.

    With ``host=None`` the socket is IPv6 dual-stack (``IPV6_V6ONLY`` off), so IPv4 and IPv6
    devices share it; a literal host binds that family only.
    """

    def __init__(self, sink: DatagramSink) -> None:
        self._sink = sink
        self.stats = TransportStats()
        self._transport: asyncio.DatagramTransport | None = None
        self._local: Address = ("", 0)
        self._peers: dict[Address, Peer] = {}
        self._closed = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._log_sink = RateLimitedLog(logger, logging.ERROR)
        self._log_socket = RateLimitedLog(logger, logging.INFO)

    @classmethod
    async def create(
        cls,
        sink: DatagramSink,
        host: str | None = None,
        port: int = 0,
        *,
        receive_buffer: int | None = None,
    ) -> UdpTransport:
        """Bind ``host``:``port`` (port 0: an ephemeral port, see :attr:`local_address`);
        ``receive_buffer``: ``SO_RCVBUF`` bytes (see :func:`open_socket`)."""
        loop = asyncio.get_running_loop()
        sock = open_socket(host, port, receive_buffer)
        self = cls(sink)
        self._closed_waiter = loop.create_future()
        try:
            open_datagram_socket(loop, self, sock)
        except BaseException:
            sock.close()
            raise
        return self

    # -- asyncio.DatagramProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._local = transport.get_extra_info("sockname")

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        stats = self.stats
        stats.datagrams_received += 1
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= PEER_CACHE_SIZE:
                self._peers.clear()
            peer = self._peers[addr] = Peer(addr)
        stats.messages_received += 1
        try:
            self._sink.datagram_received(data, peer)
        except Exception:
            stats.sink_errors += 1
            self._log_sink("sink failed on a datagram from %s", peer, exc_info=True)

    def error_received(self, exc: Exception) -> None:
        # Linux reports ICMP port-unreachable for an earlier sendto here: a device went away.
        self.stats.socket_errors += 1
        self._log_socket("UDP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    # -- Transport ----------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self._local

    def send(self, data: bytes, peer: Peer) -> None:
        """Send ``data`` to ``peer.address``; refuses DTLS peers (their data must be encrypted)."""
        if peer.secure:
            raise WrongTransport(f"{peer} is a DTLS peer; refusing to send it plaintext")
        transport = self._transport
        if transport is None or self._closed:
            raise TransportClosed("UDP transport is closed")
        transport.sendto(data, peer.address)
        self.stats.messages_sent += 1
        self.stats.datagrams_sent += 1

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the socket is released (after :meth:`close`)."""
        if self._closed_waiter is not None:
            await self._closed_waiter
