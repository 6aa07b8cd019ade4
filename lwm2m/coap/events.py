"""Events the core hands to the application, one at a time through ``next_event()``.

Frozen dataclasses in the h11/wsproto style: an event is a fact that happened on the wire (or
on the clock) and is never mutated; the application acts through the endpoint's methods, and
actions it takes itself produce no events. Every request the application sends ends in exactly
one terminal event — :class:`ResponseReceived` with ``observing=False``,
:class:`RequestFailed`, or :class:`ObservationCancelled` — unless the application cancelled it.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiocoap import Message

if TYPE_CHECKING:
    from lwm2m.coap.exchange import IncomingRequest, Observation, RequestHandle


class CloseReason(enum.Enum):
    """Why a request failed or an observation ended."""

    #: MAX_RETRANSMIT exhausted for a CON, or no response within the response timeout.
    TIMEOUT = "timeout"
    #: The peer answered our CON (request or notification) with RST.
    RESET = "reset"
    #: A block-wise body exceeded ``EndpointConfig.max_body_size`` (or the peer's Size2 did).
    TOO_LARGE = "too-large"
    #: The peer broke a block-wise transfer (out-of-order block, changed ETag, bad Block option).
    BLOCKWISE = "blockwise"
    #: The observed server sent a final notification (no Observe option, or not 2.xx).
    ENDED_BY_PEER = "ended-by-peer"
    #: The observer deregistered with GET Observe=1 (RFC 7641 §3.6).
    DEREGISTERED = "deregistered"
    #: The observer registered again with the same token; the new registration replaces this.
    REPLACED = "replaced"
    #: The transport told the core to forget the peer (session closed, device deregistered).
    PEER_FORGOTTEN = "peer-forgotten"


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request from ``peer`` (reassembled if it came block-wise); answer it with
    ``endpoint.respond(request, response, now)``. Duplicates never produce a second event."""

    peer: Hashable
    request: IncomingRequest
    message: Message


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response to a request we sent (reassembled if it came block-wise).

    ``observing`` is true when the request registered an observation and the peer accepted it:
    the handle then stays open and :class:`NotificationReceived` events follow.
    """

    request: RequestHandle
    message: Message
    observing: bool


@dataclass(frozen=True, slots=True)
class NotificationReceived:
    """A fresh notification for an observation we hold (stale, reordered ones are dropped).

    ``sequence`` is its Observe value; None for a final notification (no Observe option or an
    error code), which is followed by :class:`ObservationCancelled`.
    """

    request: RequestHandle
    message: Message
    sequence: int | None
    ack: object | None = None
    """With ``EndpointConfig.defer_notification_acks``, a CON notification's receipt: pass it to
    ``acknowledge()`` when its content is safe (the ACK goes out then; a retransmission before
    that gets nothing). None: nothing to acknowledge (NON, or already acknowledged)."""


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request we sent ended without a (complete) response."""

    request: RequestHandle
    reason: CloseReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ObservationCancelled:
    """An observation we held ended from the peer's side (``ENDED_BY_PEER``) or locally
    (``PEER_FORGOTTEN``); no further notifications follow."""

    request: RequestHandle
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class ObserverRemoved:
    """An observer of ours is gone: it sent RST, a CON notification timed out, it deregistered
    or re-registered. ``send_notification`` on it is an error from now on."""

    observation: Observation
    reason: CloseReason


Event = (
    RequestReceived
    | ResponseReceived
    | NotificationReceived
    | RequestFailed
    | ObservationCancelled
    | ObserverRemoved
)
