"""Handles the application holds, and the per-message records behind them.

The handles are plain ``__slots__`` objects compared by identity — the cheapest possible key
for the application's own maps — and double as the core's state, so that one received request
costs one object (the :class:`IncomingRequest` is its own dedup record). Attributes without a
leading underscore in the docstrings' "read-only" lists are for the application to read; the
rest belong to :mod:`lwm2m.coap.endpoint` and may change.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import TYPE_CHECKING

from aiocoap import Message

if TYPE_CHECKING:
    from lwm2m.coap.peer import PeerState


class RequestState(enum.IntEnum):
    """Life of a :class:`RequestHandle`."""

    QUEUED = 0  #: waiting for an NSTART slot towards its peer
    ACTIVE = 1  #: sent, waiting for a (complete) response
    OBSERVING = 2  #: the peer accepted the observation; notifications flow
    DONE = 3  #: terminal event delivered, or cancelled by the application


class Received:
    """A remembered (peer, Message ID) for deduplication, with what we answered to it.

    ``reply`` is the exact datagram we sent back (ACK with piggybacked response, empty ACK, or
    RST), replayed verbatim when the peer retransmits; ``None`` while we have not answered.
    """

    __slots__ = ("expires", "mid", "peer_state", "reply")

    def __init__(self, peer_state: PeerState, mid: int) -> None:
        self.peer_state = peer_state
        self.mid = mid
        self.expires = 0.0
        self.reply: bytes | None = None


class IncomingRequest(Received):
    """A request a peer sent us; pass it to ``endpoint.respond``.

    Read-only for the application: ``peer``, ``token``, ``confirmable``, ``responded``.
    """

    __slots__ = (
        "ack_deadline",
        "acked",
        "block1",
        "block2",
        "confirmable",
        "message",
        "observe",
        "peer",
        "responded",
        "token",
    )

    def __init__(self, peer_state: PeerState, mid: int, token: bytes, confirmable: bool) -> None:
        # Received's fields set here rather than through super().__init__: one request = one
        # of these, and the extra call is a measurable share of the hot path.
        self.peer_state = peer_state
        self.mid = mid
        self.expires = 0.0
        self.reply: bytes | None = None
        self.peer: Hashable = peer_state.peer
        self.token = token
        self.confirmable = confirmable
        self.responded = False
        self.acked = False
        self.ack_deadline = 0.0
        #: (num, szx) of the last Block1 block, echoed in the final response.
        self.block1: tuple[int, int] | None = None
        #: (num, szx) of the Block2 option the request carried.
        self.block2: tuple[int, int] | None = None
        #: Observe option value of a GET/FETCH (0 register, 1 deregister), else None.
        self.observe: int | None = None
        #: The request as received, kept until answered (block-wise keys are computed from it
        #: only when needed); dropped on respond so a dedup record stays small.
        self.message: Message | None = None

    def __repr__(self) -> str:
        return f"<IncomingRequest mid={self.mid} token={self.token.hex()} peer={self.peer!r}>"


class Transmission:
    """One message we sent that may need retransmitting (CON) or matching to an RST (NON).

    ``owner`` says whom an ACK, RST or timeout concerns: the request we sent, the observation a
    notification belongs to, or None for a separate response (nobody to tell).
    """

    __slots__ = (
        "confirmable",
        "data",
        "mid",
        "owner",
        "peer_state",
        "retries",
        "timeout",
        "timer_seq",
        "token",
    )

    def __init__(
        self,
        peer_state: PeerState,
        mid: int,
        data: bytes,
        owner: RequestHandle | Observation | None,
        confirmable: bool,
        token: bytes,
    ) -> None:
        self.peer_state = peer_state
        self.mid = mid
        self.data = data
        self.owner = owner
        self.confirmable = confirmable
        #: The token the message carries: a piggybacked response must match it (§5.3.2).
        self.token = token
        self.timeout = 0.0
        self.retries = 0
        self.timer_seq = 0


class RequestHandle:
    """A request we sent (or queued); events about it carry this handle.

    Read-only for the application: ``peer``, ``message`` (the request as given; None once
    done), ``state``, ``token`` (current token of the exchange).
    """

    __slots__ = (
        "b2_buffer",
        "b2_etag",
        "b2_first",
        "b2_notification_seq",
        "b2_szx",
        "b2_token",
        "body",
        "body_offset",
        "body_szx",
        "confirmable",
        "holds_slot",
        "message",
        "obs_seq",
        "obs_time",
        "observe",
        "peer",
        "peer_state",
        "state",
        "timer_seq",
        "token",
        "tx",
    )

    def __init__(
        self, peer_state: PeerState, message: Message, token: bytes, confirmable: bool
    ) -> None:
        self.peer: Hashable = peer_state.peer
        self.peer_state = peer_state
        self.message: Message | None = message
        self.token = token
        self.confirmable = confirmable
        self.state = RequestState.QUEUED
        self.tx: Transmission | None = None
        self.holds_slot = False
        self.timer_seq = 0
        #: The request registers an observation (GET/FETCH with Observe 0).
        self.observe = False
        self.obs_seq = -1
        self.obs_time = 0.0
        #: Block1 upload: the whole body, bytes acknowledged so far, current szx.
        self.body: bytes | None = None
        self.body_offset = 0
        self.body_szx = 6
        #: Block2 download: what has arrived, its szx and ETag, the token used for follow-up
        #: GETs, the first block's message (whose options the assembled response keeps), and for
        #: a notification being completed, its Observe sequence number.
        self.b2_buffer: bytearray | None = None
        self.b2_szx = 6
        self.b2_etag: bytes | None = None
        self.b2_token: bytes | None = None
        self.b2_first: Message | None = None
        self.b2_notification_seq = -1

    @property
    def done(self) -> bool:
        return self.state is RequestState.DONE

    def __repr__(self) -> str:
        return f"<RequestHandle {self.state.name} token={self.token.hex()} peer={self.peer!r}>"


class Observation:
    """An observer of one of our resources (we are the observed server, RFC 7641 §4).

    Read-only for the application: ``peer``, ``token``, ``active``, ``sequence``.
    """

    __slots__ = (
        "active",
        "key",
        "last_con",
        "non_mid",
        "peer",
        "peer_state",
        "pending",
        "sequence",
        "since_con",
        "szx",
        "token",
        "tx",
    )

    def __init__(self, peer_state: PeerState, token: bytes, key: tuple[object, ...]) -> None:
        self.peer: Hashable = peer_state.peer
        self.peer_state = peer_state
        self.token = token
        self.key = key
        self.active = True
        #: Observe value of the last notification sent (24 bit, wraps).
        self.sequence = 0
        self.since_con = 0
        self.last_con = 0.0
        #: The CON notification in flight, and a newer one waiting to replace it (RFC 7641
        #: §4.5.2): sent in its place at the next retransmission or right after the ACK.
        self.tx: Transmission | None = None
        self.pending: tuple[Message, bool | None] | None = None
        #: Message ID of the last NON notification, so an RST to it finds this observation.
        self.non_mid: int | None = None
        #: Block size the observer asked for at registration.
        self.szx: int | None = None

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"<Observation {state} token={self.token.hex()} peer={self.peer!r}>"
