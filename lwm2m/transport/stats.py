"""Counters every transport keeps, so operators see drops and attacks without reading logs.

Plain integer attributes, bumped in place on the hot path (an attribute increment costs tens of
nanoseconds; a log line costs microseconds and floods under attack). ``snapshot()`` gives a
dict for metrics export. UDP uses the first block only; DTLS uses all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class TransportStats:
    """Monotonic counters of one transport (see docs/TRANSPORT.md for each one's meaning)."""

    # Every transport.
    datagrams_received: int = 0  #: datagrams read from the socket
    datagrams_sent: int = 0  #: datagrams handed to the socket
    messages_received: int = 0  #: plaintext messages delivered to the sink
    messages_sent: int = 0  #: plaintext messages accepted by ``send``
    sink_errors: int = 0  #: the sink raised while handling a message (logged, rate-limited)
    socket_errors: int = 0  #: errors the OS reported on the socket (ICMP unreachable, ...)
    internal_errors: int = 0  #: unexpected exceptions caught in the receive path (a bug)

    # DTLS: datagrams dropped before any session.
    dropped_no_session: int = 0  #: not a ClientHello, from an address with no session
    dropped_oversized: int = 0  #: larger than any DTLS datagram we accept
    bad_client_hello: int = 0  #: looked like a ClientHello, Mbed TLS rejected it
    hello_verify_sent: int = 0  #: HelloVerifyRequests (cookie challenges) sent, statelessly

    # DTLS: handshakes.
    handshakes_started: int = 0  #: ClientHellos with a valid cookie that got a session slot
    handshakes_completed: int = 0  #: sessions established
    handshakes_failed: int = 0  #: handshakes that ended in an error (all causes below too)
    handshake_timeouts: int = 0  #: gave up after the retransmission budget
    unknown_identity: int = 0  #: PSK identity not in the store
    psk_store_errors: int = 0  #: the PSK store raised during a lookup (treated as unknown)
    bad_finished: int = 0  #: Finished did not verify: wrong PSK or tampered handshake
    certificate_rejected: int = 0  #: client certificate missing or not trusted
    handshakes_refused_per_source: int = 0  #: over the per-source handshake limit (unused now)
    lost_session_alerts: int = 0  #: fatal alerts answering a session we do not have
    handshakes_evicted_per_source: int = 0  #: a source at its cap gave up its oldest stalled one
    handshakes_evicted: int = 0  #: oldest handshake dropped because the handshake table was full
    reconnects: int = 0  #: a device handshook again from the address of a live session

    # DTLS: sessions.
    sessions_evicted: int = 0  #: least recently used session dropped at the session cap
    sessions_expired: int = 0  #: idle longer than the idle timeout
    sessions_closed_by_peer: int = 0  #: close_notify received
    fatal_alerts_received: int = 0  #: the peer sent a fatal alert
    session_errors: int = 0  #: a live session failed in Mbed TLS and was dropped
    keylog_failures: int = 0  #: key-log export was requested but Mbed TLS refused it

    # DTLS: parking and the session store.
    sessions_parked: int = 0  #: idle (or least recently used) sessions saved and freed
    sessions_restored: int = 0  #: parked sessions resumed by a record (or a send), no handshake
    parked_expired: int = 0  #: parked sessions dropped after the idle timeout
    parked_evicted: int = 0  #: oldest parked sessions dropped at ``max_parked``
    park_failures: int = 0  #: Mbed TLS could not save or restore a session (or a stored blob)
    sessions_loaded: int = 0  #: stored sessions resumed as parked at start-up
    sessions_persisted: int = 0  #: session blobs written to the store
    session_store_errors: int = 0  #: the session store raised (logged, rate-limited)
    sends_deferred: int = 0  #: sends refused until a sequence-number reservation is stored
    incoming_marks: int = 0  #: blobs queued ahead of a record's message (replay after a crash)
    contexts_reused: int = 0  #: handshakes given the reset context of a session parked new

    def snapshot(self) -> dict[str, int]:
        """A copy of all counters, for metrics export and tests."""
        return asdict(self)
