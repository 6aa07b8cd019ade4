"""Typed outcomes of device-management operations.

Every operation returns one of these, whatever happened after the request was built: the
device answered 2.xx (``SUCCESS``), answered an error code (``DEVICE_ERROR`` with ``code``
such as ``"4.04"``), never answered (``TIMEOUT``), answered something the server cannot
interpret (``BAD_RESPONSE``), ... Callers branch on :attr:`OperationResult.status` (or
:attr:`~OperationResult.ok`) instead of catching exceptions, which keeps a fleet-wide loop
simple and makes partial failure visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from lwm2m.codec.link import Link
from lwm2m.model import Node, Path


class OperationStatus(Enum):
    """How an operation ended."""

    #: The device answered with a success code (2.xx) and the answer was understood.
    SUCCESS = "success"
    #: The device answered with an error code (4.xx, 5.xx); ``code`` holds it.
    DEVICE_ERROR = "device-error"
    #: No (complete) answer within the timeout, or CoAP retransmission gave up.
    TIMEOUT = "timeout"
    #: The caller cancelled it (or cancelled the queued request) before an answer came.
    CANCELLED = "cancelled"
    #: Queued for a sleeping device that did not wake up before the request's deadline.
    QUEUED_EXPIRED = "queued-expired"
    #: The device answered, but with a payload or code the server cannot interpret.
    BAD_RESPONSE = "bad-response"
    #: The device refused the message (CoAP RST) or its DTLS session is gone.
    UNREACHABLE = "unreachable"
    #: The registration ended (De-register, expiry, a new Register) while the request waited.
    DEREGISTERED = "deregistered"
    #: The server stopped while the request waited.
    SERVER_STOPPED = "server-stopped"


@dataclass(frozen=True, slots=True)
class OperationResult:
    """The outcome of an operation with no content (Write, Execute, Delete, ...).

    ``code`` is the device's CoAP response code as text (``"2.04"``) when it answered;
    ``reason`` a human-readable explanation (the device's diagnostic payload for errors);
    ``queued`` whether the request waited in the queue of a sleeping device;
    ``queued_request_id`` the store id of that queue entry.
    """

    status: OperationStatus
    code: str | None = None
    reason: str = ""
    queued: bool = False
    queued_request_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is OperationStatus.SUCCESS


_EMPTY: Mapping[Path, Node] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ReadResult(OperationResult):
    """A Read: the node at the requested path, decoded with the object model."""

    content: Node | None = None
    content_format: int | None = None


@dataclass(frozen=True, slots=True)
class DiscoverResult(OperationResult):
    """A Discover: the links (with their attributes) the device reported."""

    links: tuple[Link, ...] = ()


@dataclass(frozen=True, slots=True)
class CreateResult(OperationResult):
    """A Create: ``location`` is the new instance's path (from Location-Path, or the id the
    request carried)."""

    location: Path | None = None


@dataclass(frozen=True, slots=True)
class CompositeReadResult(OperationResult):
    """A Read-Composite: requested path to node; a path the device did not report is absent
    (partial presence, ETS int-236). The root path ``/`` is not a node: what it returned is
    keyed per object (``/1``, ``/3``, ...)."""

    content: Mapping[Path, Node] = field(default_factory=lambda: _EMPTY)
    content_format: int | None = None


@dataclass(frozen=True, slots=True)
class ObserveResult(OperationResult):
    """An Observe / Observe-Composite: the observation's id (None unless the device accepted
    it) and the initial content, keyed by the observed paths."""

    observation_id: str | None = None
    paths: tuple[Path, ...] = ()
    content: Mapping[Path, Node] = field(default_factory=lambda: _EMPTY)
    content_format: int | None = None


@dataclass(frozen=True, slots=True)
class ObservationInfo:
    """An active observation the server holds on a device."""

    observation_id: str
    endpoint: str
    paths: tuple[Path, ...]
    composite: bool
    content_format: int | None
    created_at: float
    notifications: int = 0


__all__ = [
    "CompositeReadResult",
    "CreateResult",
    "DiscoverResult",
    "ObservationInfo",
    "ObserveResult",
    "OperationResult",
    "OperationStatus",
    "ReadResult",
]
