"""Events the server publishes to subscribers (``LwM2MServer.subscribe()``).

Frozen dataclasses, one per fact: a registration began, changed or ended; a registration was
refused (with the reason and the transport identity, for audit); a notification or a Send
arrived (already decoded with the object model); a queued request changed state; an
observation ended. The fleet layer and the HTTP API's event stream consume these; they never
talk CoAP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lwm2m.codec import TimestampedNodes
from lwm2m.model import Node, Path
from lwm2m.store import QueueState, Registration


@dataclass(frozen=True, slots=True)
class Registered:
    """A device registered; ``replaced`` is its previous registration, if it had one (its
    observations and pending requests were cancelled)."""

    endpoint: str
    registration: Registration
    replaced: Registration | None = None


@dataclass(frozen=True, slots=True)
class Updated:
    """A registration Update: lifetime, binding, objects or address (NAT rebinding) may have
    changed; ``previous`` is the registration before it."""

    endpoint: str
    registration: Registration
    previous: Registration


@dataclass(frozen=True, slots=True)
class Deregistered:
    """The device de-registered (DELETE /rd/{id})."""

    endpoint: str
    registration: Registration


@dataclass(frozen=True, slots=True)
class Removed:
    """An operator removed the registration (a stale device, ``LwM2MServer.remove``); if the
    device is in fact alive, its next Update gets 4.04 and it registers again."""

    endpoint: str
    registration: Registration
    actor: str = ""


@dataclass(frozen=True, slots=True)
class Expired:
    """The registration's lifetime ran out without an Update; the server dropped it."""

    endpoint: str
    registration: Registration


@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    """A Register or Update was refused. ``code`` is the CoAP code sent (``"4.03"`` for an
    identity that does not belong to the endpoint, ``"4.00"``, ``"4.12"``, ...); ``identity``
    the transport identity (``psk:...``, ``x509:...``) or None for plain CoAP; ``address``
    where it came from. Identity refusals are also logged as structured audit lines."""

    endpoint: str | None
    reason: str
    identity: str | None
    code: str
    address: str


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification of an observation, decoded: observed path to node. ``timestamp`` is
    when the device measured it (SenML/LwM2M CBOR time) or when it arrived."""

    endpoint: str
    observation_id: str
    paths: tuple[Path, ...]
    content: Mapping[Path, Node]
    timestamp: float


@dataclass(frozen=True, slots=True)
class SendReceived:
    """A Send (``POST /dp``, LwM2M 1.1+): ``content`` holds the newest value per resource,
    ``timestamps`` every group of values with its time (None: "now")."""

    endpoint: str
    content: Mapping[Path, Node]
    timestamps: tuple[TimestampedNodes, ...]


@dataclass(frozen=True, slots=True)
class QueueStateChanged:
    """A request queued for a queue-mode device moved on: pending, sent, answered, timeout,
    cancelled or expired (``code`` is the device's answer when there is one)."""

    endpoint: str
    request_id: int
    operation: str
    state: QueueState
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ObservationEnded:
    """An observation ended: cancelled by the server, ended by the device (final
    notification, RST), or dropped with its registration. ``reason`` says which."""

    endpoint: str
    observation_id: str
    reason: str


ServerEvent = (
    Registered
    | Updated
    | Deregistered
    | Expired
    | Removed
    | RegistrationRefused
    | Notification
    | SendReceived
    | QueueStateChanged
    | ObservationEnded
)

__all__ = [
    "Deregistered",
    "Expired",
    "Notification",
    "ObservationEnded",
    "QueueStateChanged",
    "Registered",
    "RegistrationRefused",
    "Removed",
    "SendReceived",
    "ServerEvent",
    "Updated",
]
