"""Tunable numbers of the exchange layer.

:class:`TransmissionParameters` are the RFC 7252 §4.8 transmission parameters and the derived
times of §4.8.2; both peers of a deployment are assumed to use the same values (as the RFC
does), so the derived lifetimes are also what we assume of the peer. :class:`EndpointConfig`
holds this implementation's own knobs: delays, memory caps and size limits. Both are frozen so
that one instance can be shared by every endpoint of a process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Largest block-size exponent usable over UDP (2**(6+4) = 1024 bytes); 7 is BERT (TCP only).
MAX_SZX = 6


@dataclass(frozen=True, slots=True)
class TransmissionParameters:
    """RFC 7252 §4.8 transmission parameters (defaults are the RFC's).

    ``ack_random_factor`` of 1.0 makes retransmission timing deterministic, which the timing
    tests use; production keeps 1.5 so that a fleet that lost its network at the same moment
    does not retransmit in lockstep.
    """

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4
    nstart: int = 1
    max_latency: float = 100.0

    def __post_init__(self) -> None:
        if self.ack_timeout <= 0:
            raise ValueError("ack_timeout must be positive")
        if self.ack_random_factor < 1.0:
            raise ValueError("ack_random_factor must be >= 1.0 (RFC 7252 §4.8)")
        if self.max_retransmit < 0:
            raise ValueError("max_retransmit must be >= 0")
        if self.nstart < 1:
            raise ValueError("nstart must be >= 1")

    @property
    def max_transmit_span(self) -> float:
        """Time from first transmission of a CON to its last retransmission (45 s)."""
        return self.ack_timeout * ((1 << self.max_retransmit) - 1) * self.ack_random_factor

    @property
    def max_transmit_wait(self) -> float:
        """Time from first transmission of a CON until the sender gives up (93 s)."""
        return self.ack_timeout * ((2 << self.max_retransmit) - 1) * self.ack_random_factor

    @property
    def processing_delay(self) -> float:
        """Time a node takes to turn a CON around into an ACK (RFC: ACK_TIMEOUT)."""
        return self.ack_timeout

    @property
    def exchange_lifetime(self) -> float:
        """How long a CON's Message ID must be remembered (247 s)."""
        return self.max_transmit_span + 2 * self.max_latency + self.processing_delay

    @property
    def non_lifetime(self) -> float:
        """How long a NON's Message ID must be remembered (145 s)."""
        return self.max_transmit_span + self.max_latency


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """This implementation's own limits and delays (not in any RFC).

    Every cap bounds memory that a peer — or a spoofed flood of peers — could otherwise grow
    without limit; when a cap is hit the oldest state is evicted (dedup, block-wise caches) or
    the new datagram is dropped and counted (peers), never an exception.
    """

    transmission: TransmissionParameters = field(default_factory=TransmissionParameters)
    #: Send an empty ACK for a CON request the application has not answered after this many
    #: seconds; the response then goes separately. Below the client's ACK_TIMEOUT (2 s) so that
    #: the client does not retransmit a request we are still working on.
    empty_ack_delay: float = 1.0
    #: Global cap on remembered (peer, Message ID) pairs, across all peers; oldest evicted.
    max_dedup_entries: int = 100_000
    #: Cap on per-peer state objects; a datagram from a new peer beyond it is dropped unless
    #: the least recently active peer holds nothing but expiring dedup entries.
    max_peers: int = 100_000
    #: Token length in bytes for requests we originate (RFC 7252 §5.3.1: at least 32 random
    #: bits when not protected by DTLS; 8 is the maximum).
    token_length: int = 8
    #: Largest block-size exponent we send or accept (6 -> 1024 bytes).
    max_block_szx: int = MAX_SZX
    #: Largest body we reassemble, in either direction (Block1 requests we receive, Block2
    #: responses to our requests). 4.13 / RequestFailed(TOO_LARGE) beyond it.
    max_body_size: int = 16 * 1024 * 1024
    #: How long a partial Block1 upload or a Block2 response cache stays without progress.
    blockwise_lifetime: float = 247.0
    #: Global cap on Block1 reassemblies plus Block2 caches; oldest evicted.
    max_blockwise_states: int = 10_000
    #: Fail a request with TIMEOUT when its (separate or NON) response has not arrived this long
    #: after the request was acknowledged (CON) or sent (NON). None: the exchange lifetime.
    response_timeout: float | None = None
    #: Send a notification as CON at least this often per observation (RFC 7641 §4.5: 24 h) ...
    notification_con_interval: float = 86_400.0
    #: ... and at least every Nth notification, so a vanished observer is detected.
    notification_con_every: int = 20
    #: Housekeeping (dedup expiry, idle peers, block-wise expiry) runs at most this often.
    housekeeping_interval: float = 1.0
    #: Hold the empty ACK of a fresh CON notification until the application calls
    #: ``acknowledge(event.ack)`` -- once what it carried is durable. A device discards a
    #: notification it stored while offline once it is acknowledged (LwM2M 1.1 "Notification
    #: Storing"), so the LwM2M server acknowledges only after the commit holding its values.
    defer_notification_acks: bool = False

    def __post_init__(self) -> None:
        if not self.empty_ack_delay >= 0:
            raise ValueError("empty_ack_delay must be >= 0")
        if not 1 <= self.token_length <= 8:
            raise ValueError("token_length must be 1..8")
        if not 0 <= self.max_block_szx <= MAX_SZX:
            raise ValueError("max_block_szx must be 0..6 over UDP")
        if self.max_dedup_entries < 1 or self.max_peers < 1 or self.max_blockwise_states < 1:
            raise ValueError("caps must be >= 1")
        if self.notification_con_every < 1:
            raise ValueError("notification_con_every must be >= 1")

    @property
    def max_block_size(self) -> int:
        return 1 << (self.max_block_szx + 4)

    @property
    def effective_response_timeout(self) -> float:
        if self.response_timeout is not None:
            return self.response_timeout
        return self.transmission.exchange_lifetime
