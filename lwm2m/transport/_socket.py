"""A lean asyncio datagram transport for the UDP and DTLS transports (server and client).

Why not ``loop.create_datagram_endpoint``: asyncio's selector datagram transport receives with
``sock.recvfrom(262144)``, and a 256 KiB allocation per datagram is above glibc's mmap
threshold, so every datagram costs an ``mmap``/``munmap`` pair and page faults — about 9 µs,
more than the whole CoAP exchange layer spends on a request. It also reads one datagram per
readiness event, so a busy socket pays one trip through the event loop (``epoll_wait``, handle,
context) per datagram.

This transport registers the socket with ``loop.add_reader`` and, per readiness event, reads up
to :data:`READ_BATCH` datagrams into 64 KiB buffers (every UDP payload fits; the allocation stays
on the heap) until the socket is drained. Datagrams the protocol sends while a batch is being
delivered (the replies) are held and sent together when the batch ends: each ``sendto`` to a
sleeping receiver costs the sender a wake-up, and replies trickling out one per request keep a
busy peer waking once per datagram (on loopback this was a fifth of the server's CPU). A batch
is at most READ_BATCH datagrams, so a reply waits at most that long; outside a batch (timers,
application actions) ``sendto`` is immediate. Only when the kernel buffer is full does sending
queue and wait for writability, as asyncio does. The protocol side is ``asyncio.DatagramProtocol``
unchanged (``connection_made``, ``datagram_received``, ``error_received``, ``connection_lost``),
so the transports above keep their shape.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any

#: Receive buffer size: the largest UDP payload (65 507 bytes over IPv4, 65 527 over IPv6)
#: fits, and 64 KiB stays below glibc's mmap threshold (128 KiB).
RECV_SIZE = 65536
#: Datagrams read per readiness event before yielding to the loop (timers, other sockets).
#: At ~10-40 µs of work per datagram this bounds a batch to about a millisecond or two.
READ_BATCH = 64


class SocketTransport(asyncio.DatagramTransport):
    """An ``asyncio.DatagramTransport`` over a bound (optionally connected) non-blocking socket.

    Create with :func:`open_datagram_socket`. ``sendto(data, addr)`` on an unconnected socket,
    ``sendto(data)`` on a connected one. A datagram sent after :meth:`close` is dropped.
    """

    __slots__ = (
        "_buffer",
        "_closing",
        "_connected",
        "_corked",
        "_fd",
        "_finished",
        "_loop",
        "_protocol",
        "_sock",
        "_writing",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        try:
            peername = sock.getpeername()
        except OSError:
            peername = None
        super().__init__({"socket": sock, "sockname": sock.getsockname(), "peername": peername})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._connected = peername is not None
        #: Datagrams waiting for the kernel's send buffer to drain (rare: UDP seldom blocks).
        self._buffer: deque[tuple[bytes, Any]] = deque()
        #: While a received batch is delivered: the datagrams sent meanwhile, sent at its end.
        self._corked: list[tuple[bytes, Any]] | None = None
        self._writing = False
        self._closing = False
        self._finished = False

    # -- receiving ----------------------------------------------------------------------------

    def _read_ready(self) -> None:
        """Drain up to READ_BATCH datagrams, then send the replies they caused; the selector
        reports the socket again if more datagrams remain."""
        recvfrom = self._sock.recvfrom
        protocol = self._protocol
        deliver = protocol.datagram_received
        corked: list[tuple[bytes, Any]] = []
        self._corked = corked
        try:
            for _ in range(READ_BATCH):
                if self._closing:
                    break
                try:
                    data, addr = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # a pending ICMP error for an earlier send
                    protocol.error_received(exc)
                    continue
                deliver(data, addr)
        finally:
            self._corked = None
            if corked:
                self._send_all(corked)

    # -- sending ------------------------------------------------------------------------------

    def sendto(self, data: Any, addr: Any = None) -> None:
        corked = self._corked
        if corked is not None:
            corked.append((data if type(data) is bytes else bytes(data), addr))
            return
        if self._buffer or self._closing:
            if not self._closing:
                self._queue(data, addr)
            return
        try:
            if self._connected:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._queue(data, addr)
        except OSError as exc:
            self._protocol.error_received(exc)

    def _send_all(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send what a batch produced, in order (also after close(): it was sent before)."""
        sock = self._sock
        if sock.fileno() < 0:  # aborted during the batch
            return
        connected = self._connected
        for data, addr in datagrams:
            if self._buffer:
                self._queue(data, addr)
                continue
            try:
                if connected:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                self._queue(data, addr)
            except OSError as exc:
                self._protocol.error_received(exc)

    def _queue(self, data: Any, addr: Any) -> None:
        self._buffer.append((bytes(data), addr))
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self) -> None:
        buffer = self._buffer
        sock = self._sock
        while buffer:
            data, addr = buffer[0]
            try:
                if self._connected:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                buffer.popleft()
                self._protocol.error_received(exc)
                continue
            buffer.popleft()
        self._writing = False
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._loop.call_soon(self._finish)

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data, _ in self._buffer)

    # -- closing ------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; release the socket once queued datagrams are sent (as asyncio)."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._writing:
            self._loop.call_soon(self._finish)

    def abort(self) -> None:
        """Stop at once: queued datagrams are discarded and the socket is released before this
        returns (a device simulating a power loss may bind the same port again right away);
        ``connection_lost`` follows on the next loop iteration, as with :meth:`close`."""
        if self._finished:
            return
        self._buffer.clear()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._fd)
        self._sock.close()
        self._loop.call_soon(self._finish)  # idempotent if close() scheduled it already

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._writing:  # datagrams a closing batch could not send: dropped with the socket
            self._writing = False
            self._buffer.clear()
            self._loop.remove_writer(self._fd)
        try:
            self._protocol.connection_lost(None)
        finally:
            self._sock.close()


def open_datagram_socket(
    loop: asyncio.AbstractEventLoop, protocol: asyncio.DatagramProtocol, sock: socket.socket
) -> SocketTransport:
    """Drive ``protocol`` from ``sock`` (bound, non-blocking) on ``loop``; returns the transport
    after ``protocol.connection_made``. The socket is not closed on failure."""
    sock.setblocking(False)
    transport = SocketTransport(loop, sock, protocol)
    protocol.connection_made(transport)
    loop.add_reader(transport._fd, transport._read_ready)
    return transport
