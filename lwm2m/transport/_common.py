"""Pieces shared by the UDP and DTLS transports: socket binding, rate-limited logging, and the
glue around python-mbedtls's ``TLSWrappedBuffer`` (handshake stepping, output splitting, error
classification).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any, Final

from lwm2m.transport.errors import ConfigurationError
from lwm2m.transport.peer import Address

logger = logging.getLogger("lwm2m.transport")

# --- binding -------------------------------------------------------------------------------


def bind_plan(host: str | None, port: int) -> tuple[socket.AddressFamily, Address, bool]:
    """Decide how to bind: ``(family, sockaddr, dual_stack)``.

    ``None`` (the default) means every address of both families through one IPv6 socket with
    ``IPV6_V6ONLY`` off, so one socket (one receive path, one session table) serves IPv4 and
    IPv6 devices. A literal address binds that family only; a name is resolved.
    """
    if port < 0 or port > 65535:
        raise ConfigurationError(f"port {port} out of range")
    if host is None or host == "":
        return socket.AF_INET6, ("::", port, 0, 0), True
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    else:
        return socket.AF_INET, (host, port), False
    try:
        socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        pass
    else:
        return socket.AF_INET6, (host, port, 0, 0), False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigurationError(f"cannot resolve {host!r}: {exc}") from exc
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr, False  # type: ignore[return-value]


def open_socket(host: str | None, port: int, receive_buffer: int | None = None) -> socket.socket:
    """A bound, non-blocking UDP socket per :func:`bind_plan` (IPv4 fallback without IPv6).

    ``receive_buffer`` asks for that ``SO_RCVBUF`` (bytes); the kernel caps it at
    ``net.core.rmem_max`` (and doubles it for bookkeeping), so the effective size is logged
    when it is smaller than asked. Why a server wants it: a datagram costs ~1.3 KB of buffer
    however small it is (skb overhead), so the default 208 KiB holds ~166 of them; a
    registration storm overflows that within milliseconds of the server being busy with a
    batch, and every dropped Register comes back 2-3 s later as a retransmission.
    """
    family, sockaddr, dual = bind_plan(host, port)
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        if dual and exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            family, sockaddr, dual = socket.AF_INET, ("0.0.0.0", port), False
            sock = socket.socket(family, socket.SOCK_DGRAM)
        else:
            raise
    try:
        if dual:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if receive_buffer is not None:
            set_receive_buffer(sock, receive_buffer)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; return what the kernel granted (its accounting
    value, about twice the request when not capped)."""
    if size <= 0:
        raise ConfigurationError(f"receive buffer must be positive, got {size}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < size:
        logger.info(
            "asked for a %d-byte UDP receive buffer, the kernel granted %d; raise "
            "net.core.rmem_max to hold larger bursts",
            size,
            granted,
        )
    return granted


# --- logging ---------------------------------------------------------------------------------


class RateLimitedLog:
    """Log a recurring problem at most once per ``interval`` seconds, with a suppressed count.

    The receive path can fail once per datagram under attack or with a broken sink; one line a
    second says so without turning the log into the bottleneck.
    """

    __slots__ = ("_interval", "_level", "_logger", "_next", "_suppressed")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, interval: float = 1.0):
        self._logger = logger
        self._level = level
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        if self._suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        self._logger.log(self._level, msg, *args, exc_info=exc_info)


# --- python-mbedtls glue ---------------------------------------------------------------------

# Mbed TLS 2.28 error codes (python-mbedtls's TLSError.err carries them positive).
ERR_SSL_TIMEOUT: Final = 0x6800
ERR_SSL_CLIENT_RECONNECT: Final = 0x6780
ERR_SSL_UNKNOWN_IDENTITY: Final = 0x6C80
ERR_SSL_PEER_CLOSE_NOTIFY: Final = 0x7880
ERR_SSL_FATAL_ALERT_MESSAGE: Final = 0x7780
ERR_SSL_INVALID_MAC: Final = 0x7180
ERR_SSL_BAD_HS_FINISHED: Final = 0x7E80
ERR_SSL_BAD_HS_CERTIFICATE: Final = 0x7A00
ERR_SSL_NO_CLIENT_CERTIFICATE: Final = 0x7480
ERR_SSL_PEER_VERIFY_FAILED: Final = 0x6E00
ERR_X509_CERT_VERIFY_FAILED: Final = 0x2700

#: Largest datagram handed to Mbed TLS: its input buffer holds one 16 KiB record plus overhead.
MAX_DATAGRAM: Final = 16384 + 512
#: Default path MTU for DTLS datagrams (the IPv6 minimum link MTU; fits NB-IoT deployments).
DEFAULT_MTU: Final = 1280


def tls_error_code(exc: BaseException) -> int:
    """The Mbed TLS error code of a python-mbedtls ``TLSError`` (0 if it has none)."""
    code = getattr(exc, "err", None)
    return abs(code) if isinstance(code, int) else 0


def describe(code: int) -> str:
    """A short name for the Mbed TLS errors operators meet; hex for the rest."""
    return _NAMES.get(code, f"mbedtls error -0x{code:04X}")


_NAMES: Final = {
    ERR_SSL_TIMEOUT: "handshake timed out",
    ERR_SSL_CLIENT_RECONNECT: "client reconnected",
    ERR_SSL_UNKNOWN_IDENTITY: "unknown PSK identity",
    ERR_SSL_PEER_CLOSE_NOTIFY: "peer sent close_notify",
    ERR_SSL_FATAL_ALERT_MESSAGE: "peer sent a fatal alert",
    ERR_SSL_INVALID_MAC: "record MAC did not verify (wrong key?)",
    ERR_SSL_BAD_HS_FINISHED: "Finished did not verify (wrong key?)",
    ERR_SSL_BAD_HS_CERTIFICATE: "bad certificate message",
    ERR_SSL_NO_CLIENT_CERTIFICATE: "client sent no certificate",
    ERR_SSL_PEER_VERIFY_FAILED: "peer verification failed",
    ERR_X509_CERT_VERIFY_FAILED: "certificate verification failed",
}


def is_client_hello(data: bytes) -> bool:
    """Whether a datagram starts with an epoch-0 DTLS handshake record carrying a ClientHello.

    Cheap pre-filter for datagrams from addresses without a session: anything else is dropped
    before Mbed TLS sees it.
    """
    return (
        len(data) >= 25
        and data[0] == 22  # handshake
        and data[1] == 0xFE  # DTLS major version
        and data[3] == 0
        and data[4] == 0  # epoch 0
        and data[13] == 1  # client_hello
    )


#: The server answers records of a session it does not have at most this often per address,
#: remembering this many addresses.
LOST_SESSION_ALERT_INTERVAL = 1.0
LOST_SESSION_ALERT_MEMORY = 4096
_ALERT, _APPLICATION_DATA = 21, 23
_FATAL, _UNEXPECTED_MESSAGE = 2, 10


def is_foreign_record(data: bytes) -> bool:
    """An application-data record of an established session (epoch > 0): from an address
    the server has no session with, it means the device still holds one we lost."""
    return (
        len(data) >= 13
        and data[0] == _APPLICATION_DATA
        and data[1] == 0xFE
        and (data[3] or data[4]) != 0
    )


def lost_session_alert(record: bytes) -> bytes:
    """A plaintext (epoch 0) fatal ``unexpected_message`` alert in the record's version."""
    return bytes(
        (_ALERT, record[1], record[2], 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, _FATAL, _UNEXPECTED_MESSAGE)
    )


def is_lost_session_alert(data: bytes) -> bool:
    """A plaintext (epoch 0) fatal alert: the server has no session for us (it restarted).
    Mbed TLS drops it (wrong epoch), so the client checks the raw datagram itself."""
    return (
        len(data) == 15
        and data[0] == _ALERT
        and data[1] == 0xFE
        and data[3] == 0
        and data[4] == 0
        and data[11] == 0
        and data[12] == 2
        and data[13] == _FATAL
    )


def hello_in_session_version(data: bytes) -> bytes:
    """An epoch-0 ClientHello whose record version Mbed TLS would refuse inside a live session,
    with the record version set to DTLS 1.0 (0xFEFF); anything else unchanged.

    Why (issue 14 item 13): Anjay 3.14 (mbedtls) opens its new handshake from the address of
    its live session with record version 0xFE00. Mbed TLS takes any 0xFExx on a fresh
    context, but a live one checks the record version against the negotiated one and drops
    the record silently, so the device got neither HelloVerifyRequest nor ServerHello until
    its handshake timed out (~140 s). RFC 6347 §4.1 lets the ClientHello's record version
    differ; for epoch 0 it is authenticated by nothing (the handshake hash covers handshake
    messages, not record headers), so normalising it changes no security property.
    """
    if not is_client_hello(data) or data[2] in (0xFF, 0xFD):
        return data
    return data[:1] + b"\xfe\xff" + data[3:]


def cookie_param(addr: Address) -> bytes:
    """The transport-level client id Mbed TLS binds cookies to: address bytes + port."""
    host = addr[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.inet_pton(family, host.split("%", 1)[0]) + addr[1].to_bytes(2, "big")


def split_records(out: bytes, mtu: int) -> list[bytes]:
    """Split concatenated DTLS records into datagrams of at most ``mtu`` bytes.

    python-mbedtls collects everything Mbed TLS sends into one ring buffer, losing the datagram
    boundaries Mbed TLS chose; a whole handshake flight (certificates included) would otherwise
    leave as one IP-fragmented datagram. Records are never split; one larger than the MTU
    travels alone.
    """
    n = len(out)
    datagrams: list[bytes] = []
    start = pos = 0
    while pos + 13 <= n:
        end = pos + 13 + ((out[pos + 11] << 8) | out[pos + 12])
        if end - start > mtu and pos > start:
            datagrams.append(out[start:pos])
            start = pos
        pos = end
    if start < n:
        datagrams.append(out[start:])
    return datagrams


def take_output(buf: Any) -> bytes:
    """Everything Mbed TLS wrote since the last call (empty bytes if nothing)."""
    n = len(buf._output_buffer)
    if not n:
        return b""
    out: bytes = buf.peek_outgoing(n)
    buf.consume_outgoing(n)
    return out


def scrub(buf: Any) -> None:
    """Return a buffer to its pristine state: fresh Mbed TLS session, empty ring buffers."""
    buf._reset()
    buf._input_buffer.clear()
    buf._output_buffer.clear()
