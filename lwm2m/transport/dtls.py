"""DTLS 1.2 server: one UDP socket, one python-mbedtls ``TLSWrappedBuffer`` per device.

Design (the *why*; numbers and counters are in docs/TRANSPORT.md):

* **Stateless cookie exchange.** A ClientHello from an unknown address is run through one spare
  buffer: without a valid cookie Mbed TLS answers HelloVerifyRequest and resets, so a flood of
  (possibly spoofed) ClientHellos costs no memory. Only a ClientHello with a valid cookie (the
  sender proved it receives at its address) takes the spare buffer as a new session, and only
  after the per-source and global handshake limits agree.
* **Two tables.** Handshakes in progress and established sessions live apart, each an
  ``OrderedDict`` keyed by address: handshakes are capped globally (oldest evicted) and per source
  IP, established sessions are capped with least-recently-used eviction. Handshakes therefore
  never push out established devices, and all bookkeeping is O(1) per datagram (O(per-source
  cap) when a source is full).
* **Fair handshake slots** (issue 14 item 4). A source IP at its cap does not lock out the next
  device behind the same NAT: its oldest *half-open* handshake (the client never answered the
  server's flight) makes room, else its oldest handshake. Half-open handshakes also time out
  sooner (``half_open_timeout``) than progressing ones. A flood of stalled handshakes from one
  IP thus only evicts itself, while a real client, which answers within a round trip, finishes.
* **Identity.** The PSK identity is captured during the handshake through the store adapter;
  the certificate identity is read from the verified peer certificate. The ``Peer`` built once
  at the end of the handshake goes with every message of the session.
* **Retransmission.** Mbed TLS keeps its own handshake timer; an asyncio timer per handshake
  steps the handshake when the current timeout should have expired, which makes Mbed TLS resend
  (or give up after ``handshake_timeout_max``).
* **Steady state** is ``receive_from_network`` + ``readinto`` into one preallocated buffer, and
  ``write`` + ``peek_outgoing`` for sending: no logging, no scans, one ``bytes`` per message.
* **Sessions outlive the process** (with a ``session_store``; docs/TRANSPORT.md "Parked
  sessions and restarts"): store writes are queued in call order with the server's own, so
  a record's incoming mark, queued before its message goes up, commits no later than what
  the record causes; a graceful stop queues everything before ``close()`` returns. A new
  session is parked at its first flush when its device went quiet (a storm's devices), and
  its reset Mbed TLS context carries the next handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import Any, cast

from mbedtls import tls
from mbedtls.exceptions import TLSError
from mbedtls.tls import HelloVerifyRequest, RaggedEOF, WantReadError, WantWriteError

from lwm2m.transport._common import (
    DEFAULT_MTU,
    ERR_SSL_BAD_HS_CERTIFICATE,
    ERR_SSL_BAD_HS_FINISHED,
    ERR_SSL_CLIENT_RECONNECT,
    ERR_SSL_FATAL_ALERT_MESSAGE,
    ERR_SSL_INVALID_MAC,
    ERR_SSL_NO_CLIENT_CERTIFICATE,
    ERR_SSL_PEER_CLOSE_NOTIFY,
    ERR_SSL_PEER_VERIFY_FAILED,
    ERR_SSL_TIMEOUT,
    ERR_SSL_UNKNOWN_IDENTITY,
    ERR_X509_CERT_VERIFY_FAILED,
    LOST_SESSION_ALERT_INTERVAL,
    LOST_SESSION_ALERT_MEMORY,
    MAX_DATAGRAM,
    RateLimitedLog,
    cookie_param,
    describe,
    hello_in_session_version,
    is_client_hello,
    is_foreign_record,
    lost_session_alert,
    open_socket,
    split_records,
    take_output,
    tls_error_code,
)
from lwm2m.transport._engine import (
    MAX_PLAINTEXT,
    PRE_ADMISSION,
    TIMER_SLACK,
    KeyLog,
    check_handshake_settings,
    export_secrets,
    record_overhead,
    scrub,
    step_handshake,
)
from lwm2m.transport._socket import open_datagram_socket
from lwm2m.transport.credentials import (
    CERTIFICATE_CIPHERS,
    PSK_CIPHERS,
    PskLookup,
    PskStore,
    X509Credentials,
)
from lwm2m.transport.errors import (
    ConfigurationError,
    MessageTooLarge,
    NoSession,
    SendFailed,
    TransportClosed,
    WrongTransport,
)
from lwm2m.transport.interface import DatagramSink, SessionClosed
from lwm2m.transport.parking import (
    OUT_RESERVATION,
    OrderedSessionStore,
    ParkingError,
    SessionStore,
    blob_header,
    blob_reservation,
    blob_tail,
    counters,
    decode_blob,
    encode_blob,
    key_address,
    pack_parked,
    parked_blob,
    parked_last_seen,
    parked_limit,
    patch_counters,
    peer_key,
    restore_connection,
    save_connection,
)
from lwm2m.transport.peer import Address, CertificateIdentity, Identity, Peer, PskIdentity
from lwm2m.transport.stats import TransportStats

logger = logging.getLogger("lwm2m.transport.dtls")

#: A session that settled and then stayed silent this long when the next flush comes is
#: parked there rather than snapshotted (see ``_save_new``).
NEW_SESSION_IDLE = 0.25
#: Most reset Mbed TLS contexts kept for the next handshakes (see ``_save_new``).
POOL_MAX = 4096
#: Session blobs per store write when many are written at once (a graceful stop).
SAVE_CHUNK = 2000

# Session timestamps use time.monotonic directly (the default loop's clock, minus two Python
# calls per datagram); they are only compared with each other.


@dataclass(frozen=True, slots=True)
class DtlsServerConfig:
    """Credentials and limits of a :class:`DtlsServer` (defaults in docs/TRANSPORT.md).

    At least one of ``psk_store`` and ``x509`` is required; with both, one socket serves PSK
    and certificate devices (the cipher suite the device offers decides). In certificate mode
    the client certificate is mandatory and must chain to ``x509.trust_anchors``.
    """

    psk_store: PskStore | None = None
    x509: X509Credentials | None = None
    psk_ciphers: tuple[str, ...] = PSK_CIPHERS
    certificate_ciphers: tuple[str, ...] = CERTIFICATE_CIPHERS
    #: Live established sessions (≈ 45 KiB of Mbed TLS context each); beyond, the least
    #: recently used is parked (or evicted when parking is off or it cannot be parked).
    max_sessions: int = 10_000
    #: Handshakes in progress, all sources together; the oldest is dropped beyond.
    max_handshakes: int = 1_000
    #: Handshakes in progress from one source IP; further ClientHellos from it are ignored
    #: (the device retransmits and gets in once a slot frees). Devices behind one carrier NAT
    #: share an IP: raise this for fleets that reboot together behind CGNAT.
    max_handshakes_per_source: int = 16
    #: Seconds a handshake may stay half-open (its client never answered our flight) before it
    #: is dropped; progressing handshakes get the full retransmission budget.
    half_open_timeout: float = 4.0
    #: Seconds without a datagram from the device after which its session is closed.
    idle_timeout: float = 3600.0
    #: Mbed TLS's initial and maximum handshake retransmission timeouts (seconds); the
    #: handshake fails once doubling would exceed the maximum (about 2 x max after the start).
    handshake_timeout_min: float = 1.0
    handshake_timeout_max: float = 16.0
    #: Largest datagram sent: handshake flights are split at record boundaries to fit, and a
    #: message that does not fit one record is refused (use block-wise transfer).
    mtu: int = DEFAULT_MTU
    #: Append NSS key-log lines (``CLIENT_RANDOM ...``) for Wireshark here. Debugging only.
    key_log: str | os.PathLike[str] | None = None
    #: Park a session after this many seconds without a record from its device: its state
    #: is saved (≈ 300 bytes) and its context freed; the device's next record restores it,
    #: with no handshake. ``None`` keeps every session live until ``idle_timeout``.
    park_after: float | None = 60.0
    #: Parked sessions kept; beyond, the oldest is dropped (its device handshakes again).
    max_parked: int = 1_000_000
    #: Where parked sessions (and live sessions' counters) are written so that sessions
    #: survive a restart, graceful or ``kill -9`` (see :mod:`lwm2m.transport.parking`).
    session_store: SessionStore | None = None
    #: Seconds between writes of changed sessions to ``session_store`` (new sessions,
    #: reservations, parks); a new session reaches the store within one or two of these.
    persist_interval: float = 1.0
    #: Queue a stored session's incoming high-water mark with each record it receives, before
    #: the record's message goes up (≈ 20 µs per record, half of it the store's writer), so
    #: that no record whose effects survived a crash can be replayed afterwards (needs an
    #: ``OrderedSessionStore``; with another store the marks go out every
    #: ``persist_interval``). Off: a record received since the session's last write can be
    #: replayed once after a crash. Outgoing sequence numbers are safe either way.
    persist_incoming: bool = True

    def __post_init__(self) -> None:
        if self.psk_store is None and self.x509 is None:
            raise ConfigurationError("a DTLS server needs a PSK store, X.509 credentials, or both")
        if self.psk_store is not None and not isinstance(self.psk_store, PskStore):
            raise ConfigurationError("psk_store must have lookup(identity: bytes) -> bytes | None")
        for name in ("max_sessions", "max_handshakes", "max_handshakes_per_source", "max_parked"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        if self.idle_timeout <= 0 or self.half_open_timeout <= 0:
            raise ConfigurationError("idle_timeout and half_open_timeout must be positive")
        if self.park_after is not None and self.park_after <= 0:
            raise ConfigurationError("park_after must be positive (or None: never park)")
        if self.persist_interval <= 0:
            raise ConfigurationError("persist_interval must be positive")
        if self.session_store is not None and not isinstance(self.session_store, SessionStore):
            raise ConfigurationError("session_store must have load_all, load, save and delete")
        check_handshake_settings(self.handshake_timeout_min, self.handshake_timeout_max, self.mtu)

    def ciphers(self) -> tuple[str, ...]:
        return (self.psk_ciphers if self.psk_store is not None else ()) + (
            self.certificate_ciphers if self.x509 is not None else ()
        )


class _Session:
    """One device: its buffer and bookkeeping. Lives in exactly one of the server's tables."""

    __slots__ = (
        "address",
        "buffer",
        "fresh",
        "in_top",
        "key",
        "keylog_tries",
        "last_seen",
        "limit",
        "max_payload",
        "out_next",
        "parkable",
        "peer",
        "psk_identity",
        "reserve",
        "rto",
        "snap",
        "source",
        "started",
        "state0",
        "tail",
        "timer",
    )

    def __init__(self, address: Address, buffer: Any, now: float, rto: float) -> None:
        self.address = address
        self.buffer = buffer
        self.source: str = address[0]
        self.peer: Peer | None = None
        self.psk_identity: bytes | None = None
        self.last_seen = now
        self.started = now
        self.rto = rto
        self.timer: asyncio.TimerHandle | None = None
        #: True from handshake end until the first application record (Mbed TLS may still owe a
        #: retransmission of its last flight; the key log waits for this too).
        self.fresh = True
        self.keylog_tries = 0
        self.max_payload = 0
        #: Mbed TLS's handshake state once the server's first flight went out: a handshake
        #: still there is half-open (the client never answered).
        self.state0: object = None
        #: Parking and persistence (see :mod:`lwm2m.transport.parking`): the last saved
        #: connection state, the next outgoing and the highest incoming sequence number, the
        #: outgoing reservation, and ``limit``: no record at or above it may be sent, because a
        #: blob with that reservation may be in the store (-1: no blob of this session yet).
        self.parkable = True
        self.snap: bytes | None = None
        self.out_next = 0
        self.in_top = 0
        self.reserve = 0
        self.limit = -1
        #: Cached for the per-record mark: the store key and ``blob_tail`` of ``snap``.
        self.key: str | None = None
        self.tail: bytes | None = None

    def half_open(self) -> bool:
        return self.state0 is None or self.buffer._handshake_state == self.state0


#: A write in flight: the live session (or parked entry), its address, the reservation written.
_Issued = tuple["_Session | bytes", Address, int]


class DtlsServer(asyncio.DatagramProtocol):
    """DTLS 1.2 server transport (PSK and/or X.509) on one socket. Create with :meth:`create`."""

    def __init__(
        self,
        sink: DatagramSink,
        config: DtlsServerConfig,
        on_session_closed: SessionClosed | None = None,
    ) -> None:
        self._sink = sink
        self._on_session_closed = on_session_closed
        self._config = config
        self.stats = TransportStats()
        self._psk = PskLookup(config.psk_store) if config.psk_store is not None else None
        self._context = tls.ServerContext(self._mbedtls_configuration())
        self._keylog = KeyLog(config.key_log) if config.key_log is not None else None
        self._established: OrderedDict[Address, _Session] = OrderedDict()
        self._handshaking: OrderedDict[Address, _Session] = OrderedDict()
        #: When each address was last told its session is gone (see ``_tell_session_lost``).
        self._told_lost: OrderedDict[Address, float] = OrderedDict()
        #: Handshakes in progress per source IP, oldest first.
        self._by_source: dict[str, OrderedDict[Address, _Session]] = {}
        self._spare: Any = None
        self._rbuf = bytearray(MAX_PLAINTEXT)
        self._rview = memoryview(self._rbuf)
        self._transport: asyncio.DatagramTransport | None = None
        # Created by ``create()`` on the running loop; all timers and clocks come from it.
        self._loop = asyncio.get_running_loop()
        self._local: Address = ("", 0)
        self._closed = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        first_deadline = min(config.idle_timeout, config.park_after or config.idle_timeout)
        self._sweep_interval = max(0.05, min(first_deadline / 4, 5.0))
        #: Parked sessions by address, oldest first (see ``parking.pack_parked``).
        self._parked: dict[Address, bytes] = {}
        self._store = config.session_store
        self._persist = self._store is not None
        self._track_incoming = self._persist and config.persist_incoming
        #: The store queues writes in call order with the server's own (see _mark_now).
        self._ordered = isinstance(self._store, OrderedSessionStore)
        #: Addresses whose stored session must be written (or deleted) at the next flush.
        self._dirty: dict[Address, None] = {}
        #: Sessions that settled since the last flush and have nothing stored yet.
        self._unsaved: dict[Address, _Session] = {}
        #: Reset Mbed TLS contexts of sessions parked by ``_save_new``, for new handshakes;
        #: at most as many as handshakes started in the last two flush intervals.
        self._pool: list[Any] = []
        self._pool_cap = 0
        #: ``handshakes_started`` at the last two flushes.
        self._handshake_marks = [0, 0]
        self._writer: asyncio.Task[None] | None = None
        #: Deletions queued outside the flush (``_forget_stored``), until they settle.
        self._side_writes: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.TimerHandle | None = None
        self._handshake_deadline = 2 * config.handshake_timeout_max + 1.0
        self._log_internal = RateLimitedLog(logger, logging.ERROR)
        self._log_sink = RateLimitedLog(logger, logging.ERROR)
        self._log_refused = RateLimitedLog(logger, logging.WARNING)
        self._log_failed = RateLimitedLog(logger, logging.WARNING, interval=0.1)
        self._log_socket = RateLimitedLog(logger, logging.INFO)

    def _mbedtls_configuration(self) -> Any:
        config = self._config
        kwargs: dict[str, Any] = {
            "ciphers": config.ciphers(),
            "lowest_supported_version": tls.DTLSVersion.DTLSv1_2,
            "highest_supported_version": tls.DTLSVersion.DTLSv1_2,
            "handshake_timeout_min": config.handshake_timeout_min,
            "handshake_timeout_max": config.handshake_timeout_max,
            "anti_replay": True,
            "validate_certificates": config.x509 is not None,
        }
        if self._psk is not None:
            kwargs["pre_shared_key_store"] = self._psk
        if config.x509 is not None:
            chain, trust = config.x509.to_mbedtls()
            kwargs["certificate_chain"] = chain
            kwargs["trust_store"] = trust
        try:
            return tls.DTLSConfiguration(**kwargs)
        except (TLSError, NotImplementedError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"python-mbedtls refused the configuration: {exc}") from exc

    @classmethod
    async def create(
        cls,
        sink: DatagramSink,
        config: DtlsServerConfig,
        host: str | None = None,
        port: int = 0,
        *,
        on_session_closed: SessionClosed | None = None,
        receive_buffer: int | None = None,
    ) -> DtlsServer:
        """Bind ``host``:``port`` (``None``: dual-stack on all addresses; port 0: ephemeral).

        ``on_session_closed(peer, reason)`` is called when an established session ends
        (``"evicted"``, ``"expired"``, ``"closed by peer"``, ``"fatal alert"``, ``"error"``,
        ``"replaced"`` by a new handshake from the address, ``"closed"`` by
        :meth:`close_session`), so the CoAP core can forget the peer at once.
        ``receive_buffer``: ``SO_RCVBUF`` bytes (see :func:`open_socket`).
        """
        self = cls(sink, config, on_session_closed)
        loop = self._loop
        if self._persist:
            await self._load_parked()
        sock = open_socket(host, port, receive_buffer)
        self._closed_waiter = loop.create_future()
        try:
            open_datagram_socket(loop, self, sock)
        except BaseException:
            sock.close()
            raise
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)
        if self._persist:
            self._flusher = loop.call_later(config.persist_interval, self._on_flush_timer)
        return self

    # -- introspection ------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def session_count(self) -> int:
        """Established sessions."""
        return len(self._established)

    @property
    def handshake_count(self) -> int:
        """Handshakes in progress."""
        return len(self._handshaking)

    @property
    def parked_count(self) -> int:
        """Parked sessions (state saved, no live context)."""
        return len(self._parked)

    def peers(self) -> list[Peer]:
        """The peers of all established sessions, least recently active first."""
        return [s.peer for s in self._established.values() if s.peer is not None]

    # -- asyncio.DatagramProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._local = transport.get_extra_info("sockname")

    def connection_lost(self, exc: Exception | None) -> None:
        self._shutdown_tables(notify=False)
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    def error_received(self, exc: Exception) -> None:
        self.stats.socket_errors += 1
        self._log_socket("DTLS socket error: %s", exc)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.stats.datagrams_received += 1
        try:
            session = self._established.get(addr)
            if session is not None:
                if data and data[0] == 22:  # a handshake record: a new ClientHello? (item 13)
                    data = hello_in_session_version(data)
                self._on_established(session, data)
                return
            session = self._handshaking.get(addr)
            if session is not None:
                self._on_handshaking(session, data)
            elif (
                addr in self._parked
                and len(data) >= 13
                and data[1] == 0xFE
                and (data[3] or data[4])  # epoch > 0: a record of the parked session
            ):
                session = self._unpark(addr)
                if session is not None:
                    if data[0] == 22:  # a ClientHello inside the session (item 13)
                        data = hello_in_session_version(data)
                    self._on_established(session, data)
            else:
                self._on_unknown(data, addr)
        except Exception:
            self.stats.internal_errors += 1
            self._log_internal("DTLS receive failed (datagram from %s)", addr, exc_info=True)

    # -- receive paths ------------------------------------------------------------------------

    def _on_established(self, s: _Session, data: bytes) -> None:
        n_data = len(data)
        if n_data > MAX_DATAGRAM:
            self.stats.dropped_oversized += 1
            return
        s.last_seen = _monotonic()
        self._established.move_to_end(s.address)
        buf = s.buffer
        # A datagram holding exactly one record yields at most one message: skip the extra
        # readinto (and its WantReadError) that would only confirm that.
        single = n_data >= 13 and ((data[11] << 8) | data[12]) + 13 == n_data
        track = self._track_incoming
        if track and not single and n_data > 13:
            # Several records: hand them to Mbed TLS one by one, so that each message
            # delivered has the sequence number of its own (authenticated) record.
            records = split_records(data, 1)
            if len(records) > 1:
                for record in records:
                    if self._established.get(s.address) is not s:
                        return  # the session ended on an earlier record
                    self._on_established(s, record)
                return
        delivered = 0
        # Once Mbed TLS returns the record's plaintext it is authentic: its sequence number is
        # the incoming high-water mark persisted for restores after a crash.
        track = single and track
        seq = int.from_bytes(data[5:11], "big") if track else 0
        try:
            buf.receive_from_network(data)
            while True:
                n = buf.readinto(self._rbuf, MAX_PLAINTEXT)
                if track and seq > s.in_top:
                    s.in_top = seq
                    if self._ordered and s.limit >= 0:
                        self._mark_now(s)  # before the message goes up: see _mark_now
                    else:
                        self._dirty[s.address] = None
                delivered += 1
                self.stats.messages_received += 1
                try:
                    self._sink.datagram_received(bytes(self._rview[:n]), s.peer)  # type: ignore[arg-type]
                except Exception:
                    self.stats.sink_errors += 1
                    self._log_sink("sink failed on a message from %s", s.peer, exc_info=True)
                if single:
                    break
        except WantReadError:
            pass
        except RaggedEOF:
            pass  # an empty application record: nothing to deliver
        except TLSError as exc:
            self._session_error(s, exc)
            return
        if s.fresh or not delivered:
            self._flush(s.buffer, s.address)
            if delivered and s.fresh:
                self._session_settled(s)

    def _on_handshaking(self, s: _Session, data: bytes) -> None:
        if len(data) > MAX_DATAGRAM:
            self.stats.dropped_oversized += 1
            return
        s.buffer.receive_from_network(data)
        self._advance(s, from_timer=False)

    def _on_unknown(self, data: bytes, addr: Address) -> None:
        stats = self.stats
        if not is_client_hello(data):
            stats.dropped_no_session += 1
            if is_foreign_record(data):
                self._tell_session_lost(data, addr)
            return
        if len(data) > MAX_DATAGRAM:
            stats.dropped_oversized += 1
            return
        buf = self._spare
        if buf is None:
            if self._pool:
                buf = self._pool.pop()
                buf.setmtu(self._config.mtu)
                stats.contexts_reused += 1
            else:
                buf = self._new_buffer()
            self._spare = buf
        cookie = cookie_param(addr)
        buf.setcookieparam(cookie)
        buf.receive_from_network(data)
        try:
            # Step up to the first message that depends on the cookie check: Mbed TLS parses
            # the ClientHello, then writes either HelloVerifyRequest (and raises at the next
            # step) or ServerHello (cheap: no key exchange yet).
            for _ in range(6):
                if buf._handshake_state not in PRE_ADMISSION:
                    break
                with contextlib.suppress(WantWriteError):
                    buf.do_handshake()
        except HelloVerifyRequest:
            # No (valid) cookie: Mbed TLS wrote HelloVerifyRequest and reset the buffer.
            out = take_output(buf)
            if out:
                self._sendto(out, addr)
            stats.hello_verify_sent += 1
            return
        except TLSError:  # includes WantReadError: a truncated ClientHello
            stats.bad_client_hello += 1
            scrub(buf)
            return
        if buf._handshake_state in PRE_ADMISSION:
            stats.bad_client_hello += 1
            scrub(buf)
            return
        # The cookie was valid: the sender really receives at ``addr``. Admit it?
        self._make_room(addr[0])
        self._spare = None
        s = _Session(addr, buf, _monotonic(), self._config.handshake_timeout_min)
        self._admit_handshake(s)
        self._advance(s, from_timer=False)
        s.state0 = buf._handshake_state

    def _make_room(self, source: str) -> None:
        """A source at its cap gives up its oldest half-open handshake (else its oldest)."""
        mine = self._by_source.get(source)
        if mine is None or len(mine) < self._config.max_handshakes_per_source:
            return
        victim = next((s for s in mine.values() if s.half_open()), None)
        if victim is None:
            victim = next(iter(mine.values()))
        self._drop_handshake(victim)
        self.stats.handshakes_evicted_per_source += 1
        self._log_refused(
            "%s is at its %d handshakes in progress; dropped its oldest stalled one",
            source,
            self._config.max_handshakes_per_source,
        )

    def _tell_session_lost(self, data: bytes, addr: Address) -> None:
        """Application data of a session we do not have (we restarted, e.g. after kill -9, or
        evicted it): answer a plaintext fatal alert so the device handshakes again now instead
        of after its CoAP exchange times out (~93 s). At most one per address per second; the
        alert (15 bytes) is smaller than any record that triggers it, so it amplifies nothing."""
        now = _monotonic()
        told = self._told_lost
        last = told.get(addr)
        if last is not None and now - last < LOST_SESSION_ALERT_INTERVAL:
            return
        told[addr] = now
        told.move_to_end(addr)
        if len(told) > LOST_SESSION_ALERT_MEMORY:
            told.popitem(last=False)
        self._sendto(lost_session_alert(data), addr)
        self.stats.lost_session_alerts += 1

    def _admit_handshake(self, s: _Session) -> None:
        if len(self._handshaking) >= self._config.max_handshakes:
            _, oldest = self._handshaking.popitem(last=False)
            self._forget_handshake(oldest)
            self.stats.handshakes_evicted += 1
            self._log_refused("handshake table full; dropped the oldest handshake")
        self._handshaking[s.address] = s
        mine = self._by_source.get(s.source)
        if mine is None:
            mine = self._by_source[s.source] = OrderedDict()
        mine[s.address] = s
        self.stats.handshakes_started += 1

    def _new_buffer(self) -> Any:
        buf = self._context.wrap_buffers()
        buf.setmtu(self._config.mtu)
        return buf

    # -- handshakes ---------------------------------------------------------------------------

    def _advance(self, s: _Session, *, from_timer: bool) -> None:
        """Step a handshake with whatever input arrived, flush output, promote or re-arm."""
        buf = s.buffer
        psk = self._psk
        if psk is not None:
            psk.found = psk.missing = None
            store_errors = psk.errors
        try:
            over = step_handshake(buf)
        except HelloVerifyRequest:
            # The device restarted its handshake without a cookie; answer and forget this
            # attempt: its next ClientHello (with the cookie) opens a fresh one.
            self._flush(buf, s.address)
            self.stats.hello_verify_sent += 1
            self._drop_handshake(s)
            return
        except TLSError as exc:
            self._handshake_failed(s, exc)
            return
        finally:
            if psk is not None:
                if psk.found is not None:
                    s.psk_identity = psk.found
                if psk.errors != store_errors:
                    self.stats.psk_store_errors += psk.errors - store_errors
        sent = self._flush(buf, s.address)
        if over:
            # No timer: if our last flight is lost, the client resends its own, and Mbed TLS
            # answers that from the established session (see _on_established).
            self._promote(s)
            return
        if sent:
            # New flight (the peer's flight completed) or a retransmission (our timer fired):
            # Mbed TLS restarted its timer at rto, or at twice the previous one.
            cfg = self._config
            if from_timer:
                s.rto = min(s.rto * 2, cfg.handshake_timeout_max)
            else:
                s.rto = cfg.handshake_timeout_min
            self._arm(s, s.rto + TIMER_SLACK)
        elif from_timer:
            # Mbed TLS's timer had not expired yet (our estimate ran early): look again soon.
            self._arm(s, min(s.rto, 0.25))

    def _arm(self, s: _Session, delay: float) -> None:
        if s.timer is not None:
            s.timer.cancel()
        s.timer = self._loop.call_later(delay, self._on_timer, s)

    def _on_timer(self, s: _Session) -> None:
        s.timer = None
        if self._handshaking.get(s.address) is not s:
            return
        try:
            self._advance(s, from_timer=True)
        except Exception:
            self.stats.internal_errors += 1
            self._log_internal("DTLS handshake timer failed for %s", s.address, exc_info=True)
            self._drop_handshake(s)

    def _handshake_failed(self, s: _Session, exc: BaseException) -> None:
        code = tls_error_code(exc)
        self._flush(s.buffer, s.address)  # the alert Mbed TLS wrote, if any
        self._drop_handshake(s)
        stats = self.stats
        stats.handshakes_failed += 1
        detail = ""
        if code == ERR_SSL_TIMEOUT:
            stats.handshake_timeouts += 1
        elif code == ERR_SSL_UNKNOWN_IDENTITY:
            stats.unknown_identity += 1
            missing = self._psk.missing if self._psk is not None else None
            if missing is not None:
                detail = f" (identity {missing[:64]!r})"
        elif code in (ERR_SSL_INVALID_MAC, ERR_SSL_BAD_HS_FINISHED):
            stats.bad_finished += 1
            if s.psk_identity is not None:
                detail = f" (identity {s.psk_identity[:64]!r}: wrong key?)"
        elif code in (
            ERR_X509_CERT_VERIFY_FAILED,
            ERR_SSL_BAD_HS_CERTIFICATE,
            ERR_SSL_NO_CLIENT_CERTIFICATE,
            ERR_SSL_PEER_VERIFY_FAILED,
        ):
            stats.certificate_rejected += 1
        elif code == ERR_SSL_FATAL_ALERT_MESSAGE:
            stats.fatal_alerts_received += 1
        self._log_failed("DTLS handshake with %s failed: %s%s", s.address, describe(code), detail)

    def _drop_handshake(self, s: _Session) -> None:
        if self._handshaking.get(s.address) is s:
            del self._handshaking[s.address]
            self._forget_handshake(s)

    def _forget_handshake(self, s: _Session) -> None:
        """Release a session already removed from the handshake table."""
        if s.timer is not None:
            s.timer.cancel()
            s.timer = None
        mine = self._by_source.get(s.source)
        if mine is not None and mine.get(s.address) is s:
            del mine[s.address]
            if not mine:
                del self._by_source[s.source]

    def _promote(self, s: _Session) -> None:
        del self._handshaking[s.address]
        self._forget_handshake(s)
        buf = s.buffer
        identity: Identity | None = None
        if s.psk_identity is not None:
            identity = PskIdentity(s.psk_identity)
        else:
            der = buf.getpeercert(binary_form=True)
            if der:
                if not buf._verified:
                    self.stats.handshakes_failed += 1
                    self.stats.certificate_rejected += 1
                    self._log_failed("DTLS peer %s: certificate not verified", s.address)
                    self._close_buffer(buf, s.address)
                    return
                identity = CertificateIdentity.from_der(der)
        s.peer = Peer(s.address, identity, True)
        cipher = buf.cipher()
        s.max_payload = self._config.mtu - record_overhead(cipher)
        s.last_seen = _monotonic()
        s.fresh = True
        old = self._parked.pop(s.address, None)
        if old is not None:
            if self._persist and parked_limit(old) >= 0:
                self._forget_stored(s.address)
            self._ended_peer(self._parked_peer(s.address, old), "replaced")
        self._insert_established(s)
        self.stats.handshakes_completed += 1
        logger.info("DTLS session with %s established (%s)", s.peer, cipher)

    def _insert_established(self, s: _Session) -> None:
        """Add a live session; at the cap the least recently used one is parked (or, when it
        cannot be, evicted)."""
        established = self._established
        while len(established) >= self._config.max_sessions:
            lru = next(iter(established.values()))
            if self._config.park_after is not None and self._park(lru):
                continue
            del established[lru.address]
            self.stats.sessions_evicted += 1
            self._close_buffer(lru.buffer, lru.address)
            self._log_refused("session table full; evicted the least recently used session")
            self._ended(lru, "evicted")
        established[s.address] = s

    def _session_settled(self, s: _Session) -> None:
        """First application record after the handshake: Mbed TLS has wrapped it up."""
        s.fresh = False
        self._keylog_settled(s)
        if self._persist and not s.fresh and self._established.get(s.address) is s:
            self._unsaved[s.address] = s  # saved at the next flush (``_save_new``)

    def _keylog_settled(self, s: _Session) -> None:
        if self._keylog is None:
            return
        exported = export_secrets(s.buffer)
        if exported is None:
            s.keylog_tries += 1
            if s.keylog_tries < 3:
                s.fresh = True  # try again on the next record
            else:
                self.stats.keylog_failures += 1
                logger.warning("key log: Mbed TLS cannot export %s (%s)", s.peer, s.buffer.cipher())
            return
        replacement, client_random, master = exported
        if replacement is None:
            self.stats.keylog_failures += 1
            self._remove_established(s)
            self._ended(s, "error")
            return
        replacement.setmtu(self._config.mtu)
        replacement.setcookieparam(cookie_param(s.address))
        s.buffer = replacement
        if master:
            self._keylog.write(client_random, master)
        else:
            self.stats.keylog_failures += 1

    # -- established sessions -----------------------------------------------------------------

    def _session_error(self, s: _Session, exc: BaseException) -> None:
        code = tls_error_code(exc)
        if code == ERR_SSL_CLIENT_RECONNECT:
            self._reconnect(s)
            return
        self._flush(s.buffer, s.address)
        self._remove_established(s)
        stats = self.stats
        if code == ERR_SSL_PEER_CLOSE_NOTIFY:
            stats.sessions_closed_by_peer += 1
            logger.info("DTLS peer %s closed its session", s.peer)
        elif code == ERR_SSL_FATAL_ALERT_MESSAGE:
            stats.fatal_alerts_received += 1
            self._log_failed("DTLS peer %s sent a fatal alert; session dropped", s.peer)
        else:
            stats.session_errors += 1
            self._log_failed("DTLS session with %s failed: %s", s.peer, describe(code))
        self._ended(
            s,
            "closed by peer"
            if code == ERR_SSL_PEER_CLOSE_NOTIFY
            else "fatal alert"
            if code == ERR_SSL_FATAL_ALERT_MESSAGE
            else "error",
        )

    def _reconnect(self, s: _Session) -> None:
        """The device handshook again from the same address (it rebooted, or the NAT reused
        the port): Mbed TLS verified the new ClientHello's cookie and partially reset the
        context. The old ``Peer`` is now stale; the new handshake decides the identity."""
        del self._established[s.address]
        self.stats.reconnects += 1
        logger.info("DTLS peer %s started a new handshake", s.peer)
        self._ended(s, "replaced")
        self._make_room(s.source)
        now = _monotonic()
        s.peer = None
        s.psk_identity = None
        s.started = s.last_seen = now
        s.rto = self._config.handshake_timeout_min
        s.fresh = True
        s.keylog_tries = 0
        # Nothing of the new session is saved or stored yet: it is saved afresh once it
        # settles, and the old session's row goes now (see _forget_stored).
        if self._persist and s.limit >= 0:
            self._forget_stored(s.address)
        s.parkable = True
        s.snap = s.tail = None
        s.out_next = s.in_top = s.reserve = 0
        s.limit = -1
        self._admit_handshake(s)
        self._advance(s, from_timer=False)
        s.state0 = s.buffer._handshake_state

    def _ended(self, s: _Session, reason: str) -> None:
        """Tell the owner a session's ``Peer`` is gone for good (not on ``close()``)."""
        if self._persist:
            self._dirty[s.address] = None  # its stored copy goes too (unless replaced)
        if s.peer is not None:
            self._ended_peer(s.peer, reason)

    def _ended_peer(self, peer: Peer, reason: str) -> None:
        if self._persist:
            self._dirty[peer.address] = None
        callback = self._on_session_closed
        if callback is None:
            return
        try:
            callback(peer, reason)
        except Exception:
            self.stats.sink_errors += 1
            self._log_sink("session-closed callback failed for %s", peer, exc_info=True)

    def _remove_established(self, s: _Session) -> None:
        if self._established.get(s.address) is s:
            del self._established[s.address]

    def close_session(self, peer: Peer) -> bool:
        """Close the session of ``peer`` (close_notify sent); ``False`` if there was none."""
        s = self._established.get(peer.address)
        if s is None:
            parked = self._parked.get(peer.address)
            if parked is not None and self._parked_peer(peer.address, parked) == peer:
                s = self._unpark(peer.address)  # to say close_notify in it
        if s is None or s.peer != peer:
            return False
        del self._established[peer.address]
        self._close_buffer(s.buffer, s.address)
        self._ended(s, "closed")
        return True

    def _close_buffer(self, buf: Any, addr: Address) -> None:
        """Best-effort close_notify; the buffer is discarded afterwards."""
        try:
            buf.shutdown()
        except TLSError:
            return
        self._flush(buf, addr)

    def _sweep(self) -> None:
        """Expire idle sessions and overdue handshakes. Both tables are ordered by the
        timestamp tested, so each sweep stops at the first entry still alive."""
        loop = self._loop
        if self._closed:
            return
        try:
            now = _monotonic()
            cutoff = now - self._config.idle_timeout
            expired = []
            for s in self._established.values():
                if s.last_seen > cutoff:
                    break
                expired.append(s)
            for s in expired:
                del self._established[s.address]
                self._close_buffer(s.buffer, s.address)
                self.stats.sessions_expired += 1
                self._ended(s, "expired")
            if expired:
                logger.info("expired %d idle DTLS session(s)", len(expired))
            gone = []
            wall_cutoff = time.time() - self._config.idle_timeout
            for addr, entry in self._parked.items():
                if parked_last_seen(entry) > wall_cutoff:
                    break
                gone.append(addr)
            for addr in gone:
                entry = self._parked.pop(addr)
                self.stats.parked_expired += 1
                self._ended_peer(self._parked_peer(addr, entry), "expired")
            if self._config.park_after is not None:
                park_cutoff = now - self._config.park_after
                idle = []
                for s in self._established.values():
                    if s.last_seen > park_cutoff:
                        break
                    if s.parkable and not s.fresh:
                        idle.append(s)
                for s in idle:
                    self._park(s)
            overdue = []
            hs_cutoff = now - self._handshake_deadline
            half_open_cutoff = now - self._config.half_open_timeout
            for s in self._handshaking.values():
                if s.started > half_open_cutoff:
                    break
                if s.started <= hs_cutoff or s.half_open():
                    overdue.append(s)
            for s in overdue:
                self._drop_handshake(s)
                self.stats.handshakes_failed += 1
                self.stats.handshake_timeouts += 1
        except Exception:
            self.stats.internal_errors += 1
            self._log_internal("DTLS session sweep failed", exc_info=True)
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)

    # -- sending ------------------------------------------------------------------------------

    def _flush(self, buf: Any, addr: Address) -> int:
        out = take_output(buf)
        if not out:
            return 0
        if len(out) <= self._config.mtu:
            self._sendto(out, addr)
            return 1
        datagrams = split_records(out, self._config.mtu)
        for d in datagrams:
            self._sendto(d, addr)
        return len(datagrams)

    def _sendto(self, data: bytes, addr: Address) -> None:
        transport = self._transport
        if transport is not None and not self._closed:
            transport.sendto(data, addr)
            self.stats.datagrams_sent += 1

    def send(self, data: bytes, peer: Peer) -> None:
        """Encrypt ``data`` as one record to ``peer``'s session.

        Raises :class:`NoSession` unless ``peer`` is exactly the peer of the live session at
        its address (so a message meant for one identity never reaches another device that
        took over the address), :class:`MessageTooLarge` if it does not fit one record in the
        MTU, :class:`SendFailed` if Mbed TLS fails (the session is then dropped).
        """
        s = self._established.get(peer.address)
        if s is None and not self._closed:
            parked = self._parked.get(peer.address)
            if parked is not None and self._parked_peer(peer.address, parked) == peer:
                s = self._unpark(peer.address)
        if s is None or (s.peer is not peer and s.peer != peer):
            if self._closed:
                raise TransportClosed("DTLS server is closed")
            if not peer.secure:
                raise WrongTransport(f"{peer} is not a DTLS peer")
            raise NoSession(peer)
        if len(data) > s.max_payload:
            raise MessageTooLarge(
                f"{len(data)} bytes do not fit one DTLS record (at most {s.max_payload} with "
                f"MTU {self._config.mtu}); use block-wise transfer"
            )
        if self._persist and not self._may_send(s):
            raise SendFailed(
                f"DTLS write to {peer} deferred: its sequence-number reservation is not stored "
                "yet (retry shortly)"
            )
        buf = s.buffer
        try:
            n = buf.write(data)
            out = buf.peek_outgoing(n)
            buf.consume_outgoing(n)
            if self._persist:
                s.out_next = int.from_bytes(out[5:11], "big") + 1
        except TLSError as exc:
            self._remove_established(s)
            self.stats.session_errors += 1
            self._ended(s, "error")
            reason = describe(tls_error_code(exc))
            raise SendFailed(f"DTLS write to {peer} failed: {reason}") from exc
        self._transport.sendto(out, s.address)  # type: ignore[union-attr]  # set while open
        stats = self.stats
        stats.messages_sent += 1
        stats.datagrams_sent += 1

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Drop handshakes and release the socket. Established sessions get close_notify --
        except with a session store, where they are parked and written to it instead, so that
        devices carry on with the next server process without a handshake."""
        if self._closed:
            return
        final: list[Awaitable[None]] = []
        if self._persist:
            try:
                final = self._persist_all()
            except Exception:  # the store refused (closed, overloaded): sessions are lost
                self.stats.session_store_errors += 1
                logger.exception("could not write the DTLS sessions at stop")
        self._unsaved.clear()
        self._pool.clear()
        self._shutdown_tables(notify=True)
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._persist:
            self._writer = self._loop.create_task(self._final_write(self._writer, final))
        if self._transport is not None:
            self._transport.close()
        if self._keylog is not None:
            self._keylog.close()
            self._keylog = None

    def _persist_all(self) -> list[Awaitable[None]]:
        """Graceful stop: leave every session the next process can resume, in bounded time.

        A session already in the store and unchanged since (the mark of every record it
        received went out with the record, see ``_mark_now``) needs nothing: the stored
        blob resumes it. Sessions that changed are written from their snapshot; new ones
        that were never saved are parked now (a save, ~5-15 us each). Everything is queued
        on the store *before* this returns, in chunks of ``SAVE_CHUNK`` rows, so the
        store's own flush at shutdown commits it even if the caller stops waiting for
        :meth:`wait_closed`. Sessions left this way get no close_notify."""
        established = self._established
        exact = self._track_incoming  # else stored marks lag: park all, as the state is exact
        for s in list(established.values()):
            if (s.snap is None or not exact) and not (s.parkable and not s.fresh and self._park(s)):
                self._dirty[s.address] = None  # cannot be resumed: its stored copy goes
        saves, deletes, _ = self._collect()
        for s in list(established.values()):
            if s.snap is not None and s.peer is not None:
                del established[s.address]  # stored: resumed by the next process
        return self._submit(saves, deletes)

    def _submit(self, saves: dict[str, bytes], deletes: list[str]) -> list[Awaitable[None]]:
        """Queue these writes on the store now (see ``SessionStore``), in order."""
        store = self._store
        assert store is not None
        pending: list[Awaitable[None]] = []
        keys = list(saves)
        for start in range(0, len(keys), SAVE_CHUNK):
            pending.append(store.save({k: saves[k] for k in keys[start : start + SAVE_CHUNK]}))
        if deletes:
            pending.append(store.delete(deletes))
        return pending

    def _shutdown_tables(self, *, notify: bool) -> None:
        for s in list(self._handshaking.values()):
            self._drop_handshake(s)
        sessions = list(self._established.values())
        self._established.clear()
        if notify:
            for s in sessions:
                self._close_buffer(s.buffer, s.address)

    async def wait_closed(self) -> None:
        """Wait until the socket is released (after :meth:`close`) and, with a session
        store, the parked sessions are written."""
        if self._closed_waiter is not None:
            await self._closed_waiter
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    # -- parking ------------------------------------------------------------------------------

    def _snapshot(self, s: _Session) -> None:
        """Save a settled session's state for the store (Mbed TLS resets the buffer on save,
        so the state is loaded straight back into a fresh buffer)."""
        try:
            conn = save_connection(s.buffer)
        except ParkingError:
            s.parkable = False  # e.g. a CBC suite: stays live, does not survive a restart
            self.stats.park_failures += 1
            return
        try:
            buf = restore_connection(self._context, conn)
        except ParkingError:
            self.stats.park_failures += 1
            self._remove_established(s)
            self._ended(s, "error")
            return
        buf.setmtu(self._config.mtu)
        buf.setcookieparam(cookie_param(s.address))
        s.buffer = buf
        s.snap = conn
        s.tail = None
        s.out_next, s.in_top = counters(conn)
        s.reserve = s.out_next + OUT_RESERVATION
        self._dirty[s.address] = None

    def _save_new(self) -> None:
        """Give the sessions that settled since the last flush something to store.

        A new session that has been silent since (a device that handshook, registered and
        went quiet: every device of a registration storm) is parked: saving is ~5 us, while
        a snapshot is a save *and* a reload into a fresh Mbed TLS context (~35 us, mostly
        allocating and clearing its 2 x 16 KiB record buffers). Its device's next record, or
        the server's next message to it, restores it -- the reload a snapshot would have done
        now, and a session idle for ``park_after`` is parked anyway. The parked sessions'
        contexts (reset by the save) are kept for the next handshakes instead of
        allocating new ones, at most as many as handshakes started in the last two
        intervals (so the pool empties once handshakes stop).
        A session still talking is snapshotted, as a parked one would only be restored at
        once."""
        started = self.stats.handshakes_started
        marks = self._handshake_marks
        self._pool_cap = min(POOL_MAX, started - marks[0])
        marks[0], marks[1] = marks[1], started
        del self._pool[self._pool_cap :]
        unsaved = self._unsaved
        if not unsaved:
            return
        self._unsaved = later = {}
        now = _monotonic()
        cutoff = now - NEW_SESSION_IDLE
        young = now - self._config.persist_interval
        park = self._config.park_after is not None
        established = self._established
        for addr, s in unsaved.items():
            if established.get(addr) is not s or s.snap is not None:
                continue  # gone, or restored/snapshotted since (keylog, unpark)
            if park and s.last_seen <= cutoff and s.parkable and self._park(s, recycle=True):
                continue
            if s.started > young:
                later[addr] = s  # still talking but only just begun: look again next time
                continue
            self._snapshot(s)

    def _park(self, s: _Session, *, recycle: bool = False) -> bool:
        """Save ``s`` and free its context (``recycle``: keep the reset context in the pool
        for a new handshake); ``False`` (and ``s`` untouched) if Mbed TLS cannot save it."""
        if s.peer is None or s.fresh:
            return False
        try:
            conn = save_connection(s.buffer)
        except ParkingError:
            s.parkable = False
            self.stats.park_failures += 1
            return False
        self._remove_established(s)
        if recycle and len(self._pool) < self._pool_cap:
            self._pool.append(s.buffer)  # reset by the save: as good as a new context
            s.buffer = None
        out_next, _ = counters(conn)
        reserve = s.reserve
        if self._persist and reserve < out_next + OUT_RESERVATION // 2:
            reserve = out_next + OUT_RESERVATION
        last_seen = time.time() - (_monotonic() - s.last_seen)
        blob = encode_blob(last_seen, reserve, 0, s.peer.identity, conn)
        parked = self._parked
        parked.pop(s.address, None)  # (never there: keeps the table in parking order)
        parked[s.address] = pack_parked(s.limit, blob)
        self.stats.sessions_parked += 1
        if self._persist:
            self._dirty[s.address] = None
        while len(parked) > self._config.max_parked:
            oldest = next(iter(parked))
            entry = parked.pop(oldest)
            self.stats.parked_evicted += 1
            self._ended_peer(self._parked_peer(oldest, entry), "evicted")
        return True

    @staticmethod
    def _parked_peer(addr: Address, entry: bytes) -> Peer:
        try:
            identity = decode_blob(parked_blob(entry)).identity
        except ParkingError:
            identity = None
        return Peer(addr, identity, True)

    def _unpark(self, addr: Address) -> _Session | None:
        """Resume a parked session (it leaves the parked table whatever happens: a saved
        state is restored at most once, so its replay window is never reused)."""
        entry = self._parked.pop(addr)
        try:
            stored = decode_blob(parked_blob(entry))
            buf = restore_connection(self._context, stored.connection)
            out_next, in_top = counters(stored.connection)
        except ParkingError:
            self.stats.park_failures += 1
            peer = self._parked_peer(addr, entry)
            self._log_failed("could not resume the parked DTLS session of %s", peer)
            self._ended_peer(peer, "error")
            return None
        buf.setmtu(self._config.mtu)
        buf.setcookieparam(cookie_param(addr))
        s = _Session(addr, buf, _monotonic(), self._config.handshake_timeout_min)
        s.peer = Peer(addr, stored.identity, True)
        s.max_payload = self._config.mtu - record_overhead(buf.cipher())
        s.fresh = False
        s.snap = stored.connection
        s.out_next = out_next
        s.in_top = in_top
        s.reserve = stored.out_reservation
        s.limit = parked_limit(entry)
        self._insert_established(s)
        self.stats.sessions_restored += 1
        return s

    def _mark_now(self, s: _Session) -> None:
        """Queue ``s``'s blob with its new incoming high-water mark *before* the record's
        message is handed up. The store commits its writes in queue order, so whatever the
        server writes because of this record (a registration, an Update, telemetry, an
        operation's result) commits in the same transaction as the mark or a later one: after
        a ``kill -9``, a record whose effects survived is refused when replayed, and one whose
        mark was lost left no effect. Only sessions with a blob that may be in the store
        (``limit >= 0``) need it: any other is not restored after a crash."""
        peer = s.peer
        snap = s.snap
        if peer is None or snap is None:
            self._dirty[s.address] = None
            return
        tail = s.tail
        if tail is None:
            tail = s.tail = blob_tail(peer.identity, snap)
        key = s.key
        if key is None:
            key = s.key = peer_key(s.address)
        blob = blob_header(time.time(), s.reserve, s.in_top) + tail
        try:
            self._store.save_now(key, blob)  # type: ignore[union-attr]
        except Exception:
            self.stats.session_store_errors += 1
            self._log_internal("could not queue a DTLS session mark", exc_info=True)
            self._dirty[s.address] = None
            return
        self.stats.incoming_marks += 1

    def _forget_stored(self, addr: Address) -> None:
        """A device handshook again while its old session may be stored: queue the old row's
        deletion now rather than at the next flush, so that a crash in between cannot bring
        the old session (old keys) back in front of the new one. Queued in order, it lands
        before anything the new session writes."""
        try:
            pending = self._store.delete([peer_key(addr)])  # type: ignore[union-attr]
        except Exception:
            self.stats.session_store_errors += 1
            self._log_internal("could not delete a replaced DTLS session", exc_info=True)
            return
        task = self._loop.create_task(self._settle(pending))
        self._side_writes.add(task)
        task.add_done_callback(self._side_writes.discard)

    async def _settle(self, write: Awaitable[None]) -> None:
        try:
            await write
        except Exception:
            self.stats.session_store_errors += 1
            self._log_internal("could not delete a replaced DTLS session", exc_info=True)

    def _may_send(self, s: _Session) -> bool:
        """Keep outgoing sequence numbers below every reservation that may be stored; ask
        for the next reservation once half of the current one is used."""
        if s.snap is None:
            return True  # nothing of this session is stored yet: a restore cannot happen
        if s.out_next + OUT_RESERVATION // 2 >= s.reserve:
            s.reserve = s.out_next + OUT_RESERVATION
            self._dirty[s.address] = None
        if 0 <= s.limit <= s.out_next:
            self.stats.sends_deferred += 1
            return False
        return True

    async def _load_parked(self) -> None:
        """Start-up: every stored session becomes a parked one. Each outgoing counter jumps
        to its stored reservation and each replay window to its incoming high-water mark; the
        new reservations are committed before the socket opens."""
        store = self._store
        assert store is not None
        try:
            rows = await store.load_all()
        except Exception:
            self.stats.session_store_errors += 1
            logger.exception("could not load the stored DTLS sessions; devices handshake again")
            return
        wall = time.time()
        loaded: list[tuple[float, Address, bytes]] = []
        rewrite: dict[str, bytes] = {}
        drop: list[str] = []
        for key, blob in rows:
            try:
                addr = key_address(key)
                stored = decode_blob(blob)
                conn = patch_counters(stored.connection, stored.out_reservation, stored.in_top)
            except ParkingError as exc:
                self.stats.park_failures += 1
                self._log_failed("dropping stored DTLS session %r: %s", key, exc)
                drop.append(key)
                continue
            age = max(0.0, wall - stored.last_seen)
            if age >= self._config.idle_timeout:
                drop.append(key)
                continue
            reserve = stored.out_reservation + OUT_RESERVATION
            blob = encode_blob(stored.last_seen, reserve, 0, stored.identity, conn)
            rewrite[key] = blob
            loaded.append((stored.last_seen, addr, pack_parked(reserve, blob)))
        try:
            if rewrite:
                await store.save(rewrite)
            if drop:
                await store.delete(drop)
        except Exception:
            self.stats.session_store_errors += 1
            logger.exception("could not reserve sequence numbers for the stored DTLS sessions")
            return  # without a committed reservation, restoring could repeat sequence numbers
        loaded.sort(key=lambda item: item[0])
        for _, addr, entry in loaded[-self._config.max_parked :]:
            self._parked[addr] = entry
        self.stats.sessions_loaded += len(self._parked)
        if loaded:
            logger.info("resumed %d stored DTLS session(s) as parked", len(self._parked))

    def _on_flush_timer(self) -> None:
        self._flusher = None
        if self._closed:
            return
        try:
            self._save_new()
            self._flush_dirty()
        except Exception:
            self.stats.internal_errors += 1
            self._log_internal("DTLS session persistence failed", exc_info=True)
        self._flusher = self._loop.call_later(self._config.persist_interval, self._on_flush_timer)

    def _flush_dirty(self) -> None:
        """Write every changed session to the store (queued now, so in order with the
        incoming marks; one flush in flight at a time)."""
        if not self._dirty or (self._writer is not None and not self._writer.done()):
            return
        saves, deletes, issued = self._collect()
        try:
            pending = self._submit(saves, deletes)
        except Exception:
            pending = [self._failed_submit()]
        self._writer = self._loop.create_task(self._write(pending, saves, deletes, issued))

    @staticmethod
    async def _failed_submit() -> None:
        raise TransportClosed("the session store refused the write")

    async def _final_write(
        self, previous: asyncio.Task[None] | None, final: list[Awaitable[None]]
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        for write in final:
            try:
                await write
            except Exception:
                self.stats.session_store_errors += 1
                self._log_internal("could not write DTLS sessions at stop", exc_info=True)

    def _collect(self) -> tuple[dict[str, bytes], list[str], list[_Issued]]:
        wall = time.time()
        now = _monotonic()
        saves: dict[str, bytes] = {}
        deletes: list[str] = []
        issued: list[_Issued] = []
        parked = self._parked
        for addr in self._dirty:
            key = peer_key(addr)
            s = self._established.get(addr)
            if s is not None and s.snap is not None and s.peer is not None:
                saves[key] = encode_blob(
                    wall - (now - s.last_seen), s.reserve, s.in_top, s.peer.identity, s.snap
                )
                if s.limit < 0:
                    s.limit = s.reserve  # its first blob: in the store from now on
                issued.append((s, addr, s.reserve))
                continue
            entry = parked.get(addr) if s is None else None
            if entry is not None:
                blob = parked_blob(entry)
                saves[key] = blob
                reserve = blob_reservation(blob)
                if parked_limit(entry) < 0:
                    entry = parked[addr] = pack_parked(reserve, blob)
                issued.append((entry, addr, reserve))
            else:
                deletes.append(key)
        self._dirty.clear()
        return saves, deletes, issued

    async def _write(
        self,
        pending: list[Awaitable[None]],
        saves: dict[str, bytes],
        deletes: list[str],
        issued: list[_Issued],
    ) -> None:
        try:
            for write in pending:
                await write
        except Exception:
            self.stats.session_store_errors += 1
            self._log_internal("could not write DTLS sessions to the store", exc_info=True)
            for key in (*saves, *deletes):  # try again at the next flush
                with contextlib.suppress(ParkingError):
                    self._dirty.setdefault(key_address(key), None)
            return
        # Committed: records below these reservations may now be sent.
        parked = self._parked
        for obj, addr, reserve in issued:
            if isinstance(obj, _Session):
                if reserve > obj.limit:
                    obj.limit = reserve
            elif parked.get(addr) is obj and reserve > parked_limit(obj):
                parked[addr] = pack_parked(reserve, parked_blob(obj))
        self.stats.sessions_persisted += len(saves)
