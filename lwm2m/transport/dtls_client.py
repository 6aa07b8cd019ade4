"""DTLS 1.2 client: one connected UDP socket, one python-mbedtls buffer, the same upward
interface as the server (``sink.datagram_received(data, peer)``, ``send(data, peer)``).

The simulated fleet's devices and the interop tests use it. ``connect`` returns once the
handshake completed (or raises :class:`HandshakeFailed`), so a caller never sends into a
half-open session.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, cast

from mbedtls import tls
from mbedtls.exceptions import TLSError
from mbedtls.tls import RaggedEOF, WantReadError

from lwm2m.transport._common import (
    DEFAULT_MTU,
    ERR_SSL_FATAL_ALERT_MESSAGE,
    ERR_SSL_PEER_CLOSE_NOTIFY,
    ERR_SSL_TIMEOUT,
    MAX_DATAGRAM,
    RateLimitedLog,
    describe,
    is_lost_session_alert,
    split_records,
    take_output,
    tls_error_code,
)
from lwm2m.transport._engine import (
    MAX_PLAINTEXT,
    TIMER_SLACK,
    KeyLog,
    check_handshake_settings,
    export_secrets,
    record_overhead,
    step_handshake,
)
from lwm2m.transport._socket import open_datagram_socket
from lwm2m.transport.credentials import CERTIFICATE_CIPHERS, PSK_CIPHERS, X509Credentials
from lwm2m.transport.errors import (
    ConfigurationError,
    HandshakeFailed,
    HandshakeTimeout,
    MessageTooLarge,
    NoSession,
    SendFailed,
    TransportClosed,
)
from lwm2m.transport.interface import DatagramSink, SessionClosed
from lwm2m.transport.peer import Address, CertificateIdentity, Identity, Peer, PskIdentity
from lwm2m.transport.stats import TransportStats

logger = logging.getLogger("lwm2m.transport.dtls.client")


@dataclass(frozen=True, slots=True)
class DtlsClientConfig:
    """Credentials of a DTLS client: exactly one of ``psk`` (identity, key) and ``x509``.

    In certificate mode the server certificate must chain to ``x509.trust_anchors``; with
    ``server_hostname`` set it must also name that host (CN or DNS SAN).
    """

    psk: tuple[bytes, bytes] | None = None
    x509: X509Credentials | None = None
    server_hostname: str | None = None
    psk_ciphers: tuple[str, ...] = PSK_CIPHERS
    certificate_ciphers: tuple[str, ...] = CERTIFICATE_CIPHERS
    handshake_timeout_min: float = 1.0
    handshake_timeout_max: float = 16.0
    mtu: int = DEFAULT_MTU
    key_log: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if (self.psk is None) == (self.x509 is None):
            raise ConfigurationError("a DTLS client needs exactly one of psk and x509")
        if self.psk is not None:
            identity, key = self.psk
            try:
                identity.decode("utf-8")
            except UnicodeDecodeError as exc:
                # python-mbedtls passes identities as str; non-UTF-8 cannot be expressed.
                raise ConfigurationError("PSK identity must be valid UTF-8") from exc
            if not key:
                raise ConfigurationError("PSK key must not be empty")
        check_handshake_settings(self.handshake_timeout_min, self.handshake_timeout_max, self.mtu)


@functools.lru_cache(maxsize=256)
def _context(config: DtlsClientConfig) -> Any:
    """One python-mbedtls ClientContext per configuration: building one parses certificates
    and sets up Mbed TLS's config, which a fleet of simulated devices should not repeat."""
    kwargs: dict[str, Any] = {
        "lowest_supported_version": tls.DTLSVersion.DTLSv1_2,
        "highest_supported_version": tls.DTLSVersion.DTLSv1_2,
        "handshake_timeout_min": config.handshake_timeout_min,
        "handshake_timeout_max": config.handshake_timeout_max,
    }
    if config.psk is not None:
        identity, key = config.psk
        kwargs["pre_shared_key"] = (identity.decode("utf-8"), key)
        kwargs["ciphers"] = config.psk_ciphers
        kwargs["validate_certificates"] = False
    else:
        assert config.x509 is not None
        chain, trust = config.x509.to_mbedtls()
        kwargs["certificate_chain"] = chain
        kwargs["trust_store"] = trust
        kwargs["ciphers"] = config.certificate_ciphers
        kwargs["validate_certificates"] = True
    try:
        return tls.ClientContext(tls.DTLSConfiguration(**kwargs))
    except (TLSError, NotImplementedError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"python-mbedtls refused the configuration: {exc}") from exc


def _literal_address(host: str, port: int) -> tuple[socket.AddressFamily, Any] | None:
    """``(family, sockaddr)`` for an IPv4/IPv6 literal (no zone id), else None."""
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    else:
        return socket.AF_INET, (host, port)
    try:
        socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return None
    return socket.AF_INET6, (host, port, 0, 0)


class _State(enum.Enum):
    HANDSHAKING = 1
    ESTABLISHED = 2
    CLOSED = 3


class DtlsClient(asyncio.DatagramProtocol):
    """One DTLS session to one server. Create with :meth:`connect`."""

    def __init__(
        self,
        sink: DatagramSink,
        config: DtlsClientConfig,
        on_session_closed: SessionClosed | None = None,
    ) -> None:
        self._sink = sink
        self._on_session_closed = on_session_closed
        self._config = config
        self.stats = TransportStats()
        self._loop = asyncio.get_running_loop()
        self._buffer: Any = _context(config).wrap_buffers(config.server_hostname)
        self._buffer.setmtu(config.mtu)
        self._state = _State.HANDSHAKING
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self._closed_waiter: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.DatagramTransport | None = None
        self._local: Address = ("", 0)
        self._remote: Address = ("", 0)
        self._peer: Peer | None = None
        self._rto = config.handshake_timeout_min
        self._timer: asyncio.TimerHandle | None = None
        self._fresh = True
        self._keylog_tries = 0
        self._max_payload = 0
        self._rbuf = bytearray(MAX_PLAINTEXT)
        self._rview = memoryview(self._rbuf)
        self._log_sink = RateLimitedLog(logger, logging.ERROR)
        self._log_internal = RateLimitedLog(logger, logging.ERROR)

    @classmethod
    async def connect(
        cls,
        sink: DatagramSink,
        host: str,
        port: int,
        config: DtlsClientConfig,
        *,
        local_addr: tuple[str, int] | None = None,
        timeout: float | None = None,
        on_session_closed: SessionClosed | None = None,
    ) -> DtlsClient:
        """Open a socket to ``host``:``port`` and complete the handshake.

        ``local_addr`` binds the client socket first (a device keeping its port across a
        reconnect, as NATs often preserve it); by default the OS picks.
        ``on_session_closed(peer, reason)`` is called if the server ends the session (close_notify,
        fatal alert) or it fails; not on a local :meth:`close`.

        Raises :class:`HandshakeFailed` (:class:`HandshakeTimeout` when the server never
        answered within the retransmission budget, or ``timeout`` seconds).
        """
        loop = asyncio.get_running_loop()
        literal = _literal_address(host, port)
        if literal is not None:
            # No resolver round trip (asyncio runs getaddrinfo in a thread): a simulated fleet
            # connects thousands of devices to one address.
            family, sockaddr = literal
        else:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise ConfigurationError(f"cannot resolve {host!r}: {exc}") from exc
            family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if local_addr is not None:
                # No SO_REUSEADDR: on Linux it lets an ephemeral bind land on a port another
                # live socket holds, and UDP needs it for nothing else.
                sock.bind(local_addr)
            sock.connect(sockaddr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self = cls(sink, config, on_session_closed)
        try:
            open_datagram_socket(loop, self, sock)
        except BaseException:
            sock.close()
            raise
        try:
            self._advance(from_timer=False)
            await asyncio.wait_for(asyncio.shield(self._handshake), timeout)
        except TimeoutError:
            self.close()
            raise HandshakeTimeout(
                f"no DTLS session with {host}:{port} within {timeout} s"
            ) from None
        except BaseException:
            self.close()
            raise
        return self

    # -- introspection ------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def peer(self) -> Peer:
        """The server, with the identity the handshake authenticated (its certificate's, or
        in PSK mode the PSK identity this client used)."""
        if self._peer is None:
            raise TransportClosed("no DTLS session")
        return self._peer

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher suite (Mbed TLS name)."""
        name: str | None = self._buffer.cipher()
        return name

    # -- asyncio.DatagramProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._local = transport.get_extra_info("sockname")
        self._remote = transport.get_extra_info("peername")

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_closed(TransportClosed("socket closed"))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected socket: the server is not (yet) there. Mbed TLS
        # retransmits; the handshake times out if it stays away.
        self.stats.socket_errors += 1

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.stats.datagrams_received += 1
        try:
            if len(data) > MAX_DATAGRAM:
                self.stats.dropped_oversized += 1
            elif self._state is _State.ESTABLISHED:
                if is_lost_session_alert(data):
                    self._server_lost_session()
                else:
                    self._on_record(data)
            elif self._state is _State.HANDSHAKING:
                self._buffer.receive_from_network(data)
                self._advance(from_timer=False)
        except Exception:
            self.stats.internal_errors += 1
            self._log_internal("DTLS client receive path failed", exc_info=True)

    # -- handshake ----------------------------------------------------------------------------

    def _advance(self, *, from_timer: bool) -> None:
        buf = self._buffer
        try:
            over = step_handshake(buf)
        except TLSError as exc:
            self._flush()
            code = tls_error_code(exc)
            self.stats.handshakes_failed += 1
            error: HandshakeFailed
            if code == ERR_SSL_TIMEOUT:
                self.stats.handshake_timeouts += 1
                error = HandshakeTimeout(f"DTLS handshake with {self._remote} timed out", code=code)
            else:
                if code == ERR_SSL_FATAL_ALERT_MESSAGE:
                    self.stats.fatal_alerts_received += 1
                error = HandshakeFailed(
                    f"DTLS handshake with {self._remote} failed: {describe(code)}", code=code
                )
            self._fail(error)
            return
        cfg = self._config
        if self._flush():
            self._rto = (
                min(self._rto * 2, cfg.handshake_timeout_max)
                if from_timer
                else cfg.handshake_timeout_min
            )
            self._arm(self._rto + TIMER_SLACK)
        elif from_timer:
            self._arm(min(self._rto, 0.25))
        if over:
            self._established()

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._state is not _State.HANDSHAKING:
            return
        try:
            self._advance(from_timer=True)
        except Exception:
            self.stats.internal_errors += 1
            self._log_internal("DTLS client handshake timer failed", exc_info=True)
            self._fail(HandshakeFailed("internal error during the handshake"))

    def _established(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        buf = self._buffer
        identity: Identity | None
        if self._config.psk is not None:
            identity = PskIdentity(self._config.psk[0])
        else:
            der = buf.getpeercert(binary_form=True)
            identity = CertificateIdentity.from_der(der) if der else None
        self._peer = Peer(self._remote, identity, True)
        cipher = buf.cipher()
        self._max_payload = self._config.mtu - record_overhead(cipher)
        self._state = _State.ESTABLISHED
        self.stats.handshakes_completed += 1
        logger.debug("DTLS session with %s established (%s)", self._peer, cipher)
        self._try_keylog()
        if not self._handshake.done():
            self._handshake.set_result(None)

    def _fail(self, error: HandshakeFailed) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(error)
            # Retrieved by connect(); mark it so a failure after connect() never warns.
            self._handshake.exception()
        self._set_closed(error)
        if self._transport is not None:
            self._transport.close()

    # -- established --------------------------------------------------------------------------

    def _on_record(self, data: bytes) -> None:
        n_data = len(data)
        single = n_data >= 13 and ((data[11] << 8) | data[12]) + 13 == n_data
        buf = self._buffer
        delivered = 0
        try:
            buf.receive_from_network(data)
            while True:
                n = buf.readinto(self._rbuf, MAX_PLAINTEXT)
                delivered += 1
                self.stats.messages_received += 1
                try:
                    self._sink.datagram_received(bytes(self._rview[:n]), self._peer)  # type: ignore[arg-type]
                except Exception:
                    self.stats.sink_errors += 1
                    self._log_sink("sink failed on a message from %s", self._peer, exc_info=True)
                if single:
                    break
        except WantReadError:
            pass
        except RaggedEOF:
            pass
        except TLSError as exc:
            self._flush()
            code = tls_error_code(exc)
            if code == ERR_SSL_PEER_CLOSE_NOTIFY:
                self.stats.sessions_closed_by_peer += 1
            elif code == ERR_SSL_FATAL_ALERT_MESSAGE:
                self.stats.fatal_alerts_received += 1
            else:
                self.stats.session_errors += 1
            logger.info("DTLS session with %s ended: %s", self._peer, describe(code))
            self._set_closed(TransportClosed(describe(code)))
            if self._transport is not None:
                self._transport.close()
            callback = self._on_session_closed
            if callback is not None and self._peer is not None:
                reason = "closed by peer" if code == ERR_SSL_PEER_CLOSE_NOTIFY else "error"
                try:
                    callback(self._peer, reason)
                except Exception:
                    self.stats.sink_errors += 1
                    self._log_sink("session-closed callback failed", exc_info=True)
            return
        if self._fresh or not delivered:
            self._flush()
            if delivered and self._fresh:
                self._try_keylog()

    def _server_lost_session(self) -> None:
        """The server answered our record with a plaintext fatal alert: it has no session for
        us (it restarted after a crash, or evicted us). Mbed TLS ignores unprotected alerts, so
        without this the device learns only when its CoAP exchange times out (~93 s). It cannot
        be authenticated; the cost of a forged one is one new handshake, which the owner starts
        from the session-closed callback (reason ``"lost by server"``)."""
        self.stats.fatal_alerts_received += 1
        logger.info("DTLS server %s no longer has our session; handshake again", self._peer)
        self._set_closed(TransportClosed("the server lost the DTLS session"))
        if self._transport is not None:
            self._transport.close()
        callback = self._on_session_closed
        if callback is not None and self._peer is not None:
            try:
                callback(self._peer, "lost by server")
            except Exception:
                self.stats.sink_errors += 1
                self._log_sink("session-closed callback failed", exc_info=True)

    def _try_keylog(self) -> None:
        if self._config.key_log is None:
            self._fresh = False
            return
        exported = export_secrets(self._buffer)
        if exported is None:
            self._keylog_tries += 1
            if self._keylog_tries >= 3:
                self._fresh = False
                self.stats.keylog_failures += 1
                logger.warning("key log: Mbed TLS cannot export this session (%s)", self.cipher)
            return
        self._fresh = False
        replacement, client_random, master = exported
        if replacement is None:
            self.stats.keylog_failures += 1
            self._set_closed(TransportClosed("session lost during key export"))
            return
        replacement.setmtu(self._config.mtu)
        self._buffer = replacement
        if master:
            keylog = KeyLog(self._config.key_log)
            try:
                keylog.write(client_random, master)
            finally:
                keylog.close()
        else:
            self.stats.keylog_failures += 1

    # -- sending ------------------------------------------------------------------------------

    def _flush(self) -> int:
        out = take_output(self._buffer)
        if not out:
            return 0
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0
        datagrams = [out] if len(out) <= self._config.mtu else split_records(out, self._config.mtu)
        for d in datagrams:
            transport.sendto(d)
        self.stats.datagrams_sent += len(datagrams)
        return len(datagrams)

    def send(self, data: bytes, peer: Peer | None = None) -> None:
        """Encrypt and send one message to the server (``peer`` defaults to :attr:`peer`)."""
        if self._state is not _State.ESTABLISHED:
            raise TransportClosed("DTLS session is closed")
        if peer is not None and peer is not self._peer and peer != self._peer:
            raise NoSession(peer, "this client's session is with another peer")
        if len(data) > self._max_payload:
            raise MessageTooLarge(
                f"{len(data)} bytes do not fit one DTLS record (at most {self._max_payload})"
            )
        buf = self._buffer
        try:
            n = buf.write(data)
            out = buf.peek_outgoing(n)
            buf.consume_outgoing(n)
        except TLSError as exc:
            self.stats.session_errors += 1
            self._set_closed(TransportClosed("DTLS write failed"))
            raise SendFailed(f"DTLS write failed: {describe(tls_error_code(exc))}") from exc
        self._transport.sendto(out)  # type: ignore[union-attr]  # set while established
        self.stats.messages_sent += 1
        self.stats.datagrams_sent += 1

    # -- closing ------------------------------------------------------------------------------

    def _set_closed(self, reason: Exception) -> None:
        self._state = _State.CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._handshake.done():
            self._handshake.set_exception(
                reason if isinstance(reason, HandshakeFailed) else HandshakeFailed(str(reason))
            )
            self._handshake.exception()
        if not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    def close(self) -> None:
        """Send close_notify (if established) and release the socket."""
        if self._state is _State.ESTABLISHED:
            try:
                self._buffer.shutdown()
                self._flush()
            except TLSError:
                pass
        self._set_closed(TransportClosed("closed"))
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the session silently, as a device losing power would (no close_notify): the
        server only learns from its idle timeout or the device's next handshake."""
        self._set_closed(TransportClosed("aborted"))
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the session ended (closed locally, by the server, or by an error)."""
        await asyncio.shield(self._closed_waiter)
