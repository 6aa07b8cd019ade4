"""What a simulated device tells its driver and the tests, one frozen event at a time.

Drained with ``client.next_event()`` after every call into the client, like the CoAP core's
events. They report facts (a registration succeeded, a server wrote a value), never requests:
the driver acts through the client's methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from lwm2m.model import Path
from simulators.device.execute import Arguments


@dataclass(frozen=True, slots=True)
class Registered:
    """Register answered 2.01; ``location`` is the Location-Path the server assigned."""

    location: tuple[str, ...]
    lwm2m_version: str
    lifetime: int


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """A Register attempt failed (``code`` like ``"4.03"``, or None on timeout / no answer).

    ``retry_at`` is when the next attempt goes out; None when the retry policy is exhausted.
    """

    code: str | None
    reason: str
    retry_at: float | None


@dataclass(frozen=True, slots=True)
class VersionFallback:
    """The server answered 4.12 to Register with ``rejected``; retrying with ``retry``."""

    rejected: str
    retry: str


@dataclass(frozen=True, slots=True)
class Updated:
    """A Registration Update was answered 2.04; says what it carried."""

    lifetime: int | None
    binding: str | None
    objects: bool


@dataclass(frozen=True, slots=True)
class UpdateFailed:
    """An Update failed; ``code`` None on timeout. The client registers again."""

    code: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Deregistered:
    """De-register finished; ``acknowledged`` is false when the server never answered."""

    acknowledged: bool


@dataclass(frozen=True, slots=True)
class Rebooted:
    """The device restarted (Execute /3/0/4, or /3/0/5 with ``factory_reset``)."""

    factory_reset: bool


@dataclass(frozen=True, slots=True)
class Written:
    """A server Write (or Write-Composite) changed these resources / resource instances."""

    paths: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class AttributesWritten:
    """Write-Attributes on ``path``; ``query`` is the request's Uri-Query options."""

    path: Path
    query: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Created:
    path: Path


@dataclass(frozen=True, slots=True)
class Deleted:
    path: Path


@dataclass(frozen=True, slots=True)
class Executed:
    """An Execute ran (answered 2.04) with these arguments."""

    path: Path
    args: Arguments


@dataclass(frozen=True, slots=True)
class ObservationStarted:
    paths: tuple[Path, ...]
    composite: bool


@dataclass(frozen=True, slots=True)
class ObservationEnded:
    """An observation ended: cancelled by the server (Observe=1, RST), target gone, reboot."""

    paths: tuple[Path, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Notified:
    """A notification went out for an observation of ``paths``."""

    paths: tuple[Path, ...]
    sequence: int


@dataclass(frozen=True, slots=True)
class SendCompleted:
    """A Send (``POST /dp``) was answered; ``code`` like ``"2.04"``."""

    paths: tuple[Path, ...]
    code: str


@dataclass(frozen=True, slots=True)
class SendFailed:
    paths: tuple[Path, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Sleeping:
    """Queue mode: the awake time passed; the device ignores datagrams until it wakes."""


@dataclass(frozen=True, slots=True)
class Woke:
    """Queue mode: the device woke up (an Update, notification or Send is due)."""

    reason: str


@dataclass(frozen=True, slots=True)
class BootstrapRequested:
    """The device wants to bootstrap: ``reason`` is ``server-initiated`` (Execute /1/x/9) or
    ``registration failed`` (the retry policy is exhausted and /1/x/16 allows the fallback).
    The driver connects to the bootstrap server and calls ``DeviceCore.start_bootstrap``."""

    reason: str


@dataclass(frozen=True, slots=True)
class BootstrapStarted:
    """A Bootstrap-Request (or, with ``pack``, a Bootstrap-Pack-Request) went out."""

    pack: bool


@dataclass(frozen=True, slots=True)
class BootstrapFinished:
    """Bootstrap-Finish was answered 2.04 (or a Bootstrap-Pack applied); ``servers`` are the
    URIs of the DM accounts now configured."""

    servers: tuple[str, ...]
    pack: bool


@dataclass(frozen=True, slots=True)
class BootstrapFailed:
    """The bootstrap failed; ``retry_at`` is when the device asks again (None: gave up)."""

    code: str | None
    reason: str
    retry_at: float | None


ClientEvent = (
    Registered
    | RegistrationFailed
    | VersionFallback
    | Updated
    | UpdateFailed
    | Deregistered
    | Rebooted
    | Written
    | AttributesWritten
    | Created
    | Deleted
    | Executed
    | ObservationStarted
    | ObservationEnded
    | Notified
    | SendCompleted
    | SendFailed
    | Sleeping
    | Woke
    | BootstrapRequested
    | BootstrapStarted
    | BootstrapFinished
    | BootstrapFailed
)

__all__ = [
    "AttributesWritten",
    "BootstrapFailed",
    "BootstrapFinished",
    "BootstrapRequested",
    "BootstrapStarted",
    "ClientEvent",
    "Created",
    "Deleted",
    "Deregistered",
    "Executed",
    "Notified",
    "ObservationEnded",
    "ObservationStarted",
    "Rebooted",
    "Registered",
    "RegistrationFailed",
    "SendCompleted",
    "SendFailed",
    "Sleeping",
    "UpdateFailed",
    "Updated",
    "VersionFallback",
    "Woke",
    "Written",
]
