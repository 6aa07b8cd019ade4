"""The lean datagram transport under UDP and DTLS (``lwm2m.transport._socket``).

It replaces asyncio's datagram endpoint (256 KiB allocation per datagram, one datagram per
loop iteration): these tests pin the behaviour the transports above rely on — batches bigger
than one readiness event, replies held until the batch ends and then sent in order, immediate
sends outside a batch, connected sockets, ICMP errors, a full send buffer, close and abort.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from lwm2m.transport._common import open_socket
from lwm2m.transport._socket import READ_BATCH, SocketTransport, open_datagram_socket
from lwm2m.transport.errors import ConfigurationError
from tests.transport.helpers import eventually, local_socket, run


class Recorder(asyncio.DatagramProtocol):
    """Records everything; optionally echoes each datagram and notes what the peer had
    received by the time the echo was handed over (to see when sends really leave)."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: SocketTransport | None = None
        self.received: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, SocketTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))
        if self.echo:
            assert self.transport is not None
            self.transport.sendto(b"re:" + data, addr)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def _drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


def test_a_burst_larger_than_one_batch_arrives_complete_and_in_order() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        proto = Recorder(echo=True)
        transport = open_datagram_socket(loop, proto, local_socket())
        sender = local_socket()
        try:
            burst = [f"m{i}".encode() for i in range(3 * READ_BATCH + 5)]
            for data in burst:
                sender.sendto(data, transport.get_extra_info("sockname"))
            await eventually(lambda: len(proto.received) == len(burst))
            assert [d for d, _ in proto.received] == burst
            assert {a for _, a in proto.received} == {sender.getsockname()}
            await asyncio.sleep(0.05)
            assert _drain(sender) == [b"re:" + d for d in burst]
        finally:
            sender.close()
            transport.close()

    run(scenario())


def test_replies_wait_for_the_end_of_the_batch_and_other_sends_leave_at_once() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        peer = local_socket()
        peer_addr = peer.getsockname()
        seen_by_peer_during_batch: list[int] = []

        class Probe(Recorder):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                super().datagram_received(data, addr)
                assert self.transport is not None
                self.transport.sendto(b"reply", peer_addr)
                seen_by_peer_during_batch.append(len(_drain_keep(peer)))

        kept: list[bytes] = []

        def _drain_keep(sock: socket.socket) -> list[bytes]:
            kept.extend(_drain(sock))
            return kept

        proto = Probe()
        transport = open_datagram_socket(loop, proto, local_socket())
        try:
            transport.sendto(b"now", peer_addr)  # outside a batch: sent before returning
            assert _drain(peer) == [b"now"]
            for _ in range(3):
                peer.sendto(b"q", transport.get_extra_info("sockname"))
            await eventually(lambda: len(proto.received) == 3)
            assert seen_by_peer_during_batch == [0, 0, 0]  # nothing left during the batch
            await eventually(lambda: len(_drain_keep(peer)) == 3)
            assert kept == [b"reply"] * 3
        finally:
            peer.close()
            transport.close()

    run(scenario())


def test_a_connected_socket_sends_without_an_address_and_hears_icmp_errors() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gone = local_socket()
        gone_addr = gone.getsockname()
        gone.close()  # nobody listens there any more: the kernel answers ICMP unreachable
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(gone_addr)
        proto = Recorder()
        transport = open_datagram_socket(loop, proto, sock)
        try:
            assert transport.get_extra_info("peername") == gone_addr
            transport.sendto(b"anyone?")
            await eventually(lambda: bool(proto.errors))
            assert isinstance(proto.errors[0], ConnectionRefusedError)
        finally:
            transport.close()

    run(scenario())


def test_a_full_send_buffer_queues_datagrams_until_the_socket_drains() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        proto = Recorder()
        transport = open_datagram_socket(loop, proto, ours)
        try:
            sent = [i.to_bytes(4, "big") * 256 for i in range(2000)]
            for data in sent:  # far more than the receiver's queue holds
                transport.sendto(data)
            assert transport.get_write_buffer_size() > 0
            received: list[bytes] = []
            theirs.setblocking(False)

            def pull() -> bool:
                received.extend(_drain(theirs))
                return len(received) == len(sent)

            await eventually(pull)
            assert received == sent and transport.get_write_buffer_size() == 0
            assert not proto.errors
        finally:
            theirs.close()
            transport.close()

    run(scenario())


def test_close_releases_the_socket_once_and_later_sends_are_dropped() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        proto = Recorder()
        sock = local_socket()
        transport = open_datagram_socket(loop, proto, sock)
        transport.close()
        transport.close()
        assert transport.is_closing()
        transport.sendto(b"late", ("127.0.0.1", 9))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert proto.lost == [None]
        assert sock.fileno() == -1
        transport.abort()  # after the end: nothing happens
        await asyncio.sleep(0)
        assert proto.lost == [None]

    run(scenario())


def test_abort_discards_queued_datagrams_and_ends_at_once() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        proto = Recorder()
        transport = open_datagram_socket(loop, proto, ours)
        try:
            for _ in range(2000):
                transport.sendto(b"x" * 1024)
            assert transport.get_write_buffer_size() > 0
            transport.close()  # would wait for the queue to drain...
            await asyncio.sleep(0.01)
            assert proto.lost == []
            transport.abort()  # ...abort does not, and releases the socket before returning
            assert ours.fileno() == -1
            await asyncio.sleep(0)
            assert proto.lost == [None] and transport.get_write_buffer_size() == 0
        finally:
            theirs.close()

    run(scenario())


def test_datagrams_stop_being_delivered_when_the_protocol_closes_mid_batch() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        class ClosesOnFirst(Recorder):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                super().datagram_received(data, addr)
                assert self.transport is not None
                self.transport.sendto(b"bye", addr)  # sent although close() follows
                self.transport.close()

        proto = ClosesOnFirst()
        transport = open_datagram_socket(loop, proto, local_socket())
        sender = local_socket()
        try:
            for _ in range(5):
                sender.sendto(b"x", transport.get_extra_info("sockname"))
            await eventually(lambda: proto.lost == [None])
            assert len(proto.received) == 1
            await asyncio.sleep(0.02)
            assert _drain(sender) == [b"bye"]
        finally:
            sender.close()

    run(scenario())


def test_after_abort_the_same_port_can_be_bound_at_once() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sock = local_socket()
        address = sock.getsockname()
        transport = open_datagram_socket(loop, Recorder(), sock)
        transport.abort()
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.bind(address)  # a rebooting device keeping its port
        again.close()

    run(scenario())


def test_a_receive_buffer_is_asked_for_and_capped_by_the_kernel_not_refused() -> None:
    """The server asks for a large SO_RCVBUF so a registration storm's burst waits in the
    kernel instead of being dropped; Linux grants up to net.core.rmem_max (doubled)."""
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    wanted = 4 * 1024 * 1024
    sock = open_socket("127.0.0.1", 0, receive_buffer=wanted)
    try:
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert granted >= min(wanted, rmem_max)
    finally:
        sock.close()


def test_a_non_positive_receive_buffer_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="receive buffer"):
        open_socket("127.0.0.1", 0, receive_buffer=0)
