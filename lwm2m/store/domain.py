"""The store's domain objects: plain frozen dataclasses, never ORM rows.

Repositories take and return these, so the server and the fleet logic never hold a database
row (with its lazy loads, session binding and mutability). All times are wall-clock Unix epoch
seconds as ``float`` and always come in as arguments: they outlive the process, so pass
``time.time()``, never the event loop's monotonic clock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from lwm2m.model import Path, Value

# -- registrations ------------------------------------------------------------------------------


class IdentityKind(Enum):
    """How the device authenticated the connection its registration arrived on."""

    PSK = "psk"
    X509 = "x509"
    NOSEC = "nosec"


@dataclass(frozen=True, slots=True)
class Identity:
    """The transport identity: PSK identity, certificate subject, or (NoSec) nothing.

    For NoSec the value is empty: a source address is not an identity, it is in
    :attr:`Registration.address`.
    """

    kind: IdentityKind
    value: str = ""

    @classmethod
    def psk(cls, identity: str) -> Identity:
        return cls(IdentityKind.PSK, identity)

    @classmethod
    def x509(cls, subject: str) -> Identity:
        return cls(IdentityKind.X509, subject)

    @classmethod
    def nosec(cls) -> Identity:
        """The one NoSec identity (frozen, so shared: one less object per plain request)."""
        return _NOSEC

    @property
    def secure(self) -> bool:
        return self.kind is not IdentityKind.NOSEC


_NOSEC = Identity(IdentityKind.NOSEC, "")


@dataclass(frozen=True, slots=True)
class Address:
    """The device's transport address as last seen (it changes under NAT rebinding)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NewRegistration:
    """What a Register request carries, before the store assigns an id and times."""

    endpoint: str
    lifetime: int
    address: Address
    identity: Identity
    lwm2m_version: str = "1.1"
    binding: str = "U"
    queue_mode: bool = False
    sms_number: str | None = None
    root_path: str = "/"
    object_links: str = ""
    supported_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Registration:
    """A device's current registration with this server."""

    id: str
    endpoint: str
    lwm2m_version: str
    lifetime: int
    binding: str
    queue_mode: bool
    sms_number: str | None
    address: Address
    root_path: str
    object_links: str
    supported_formats: tuple[int, ...]
    registered_at: float
    updated_at: float
    expires_at: float
    identity: Identity

    @property
    def secure(self) -> bool:
        """True when the registration arrived over DTLS (PSK or certificate)."""
        return self.identity.secure

    def is_expired(self, now: float) -> bool:
        return self.expires_at <= now


@dataclass(frozen=True, slots=True)
class RegistrationUpdate:
    """The parameters of an Update request; ``None`` means "not present, keep the old one"."""

    lifetime: int | None = None
    binding: str | None = None
    queue_mode: bool | None = None
    sms_number: str | None = None
    object_links: str | None = None
    supported_formats: tuple[int, ...] | None = None
    address: Address | None = None


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paged listing; pass ``next_after`` back to get the next page."""

    items: tuple[T, ...]
    next_after: str | None


_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l/1, o/0: ids get read aloud and typed


def new_registration_id() -> str:
    """A 12-character random registration id (60 bits from :mod:`secrets`).

    Short because it travels in every Update's Uri-Path (``/rd/<id>``) over NB-IoT; random
    because knowing one device's id must not let anyone guess another's and update or
    deregister it (the server still checks the transport identity).
    """
    bits = int.from_bytes(secrets.token_bytes(8), "big") >> 4  # 60 bits, 5 per character
    return "".join(_ID_ALPHABET[(bits >> shift) & 31] for shift in range(0, 60, 5))


# -- security -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PskCredential:
    """A pre-shared key and the identity the device presents in the DTLS handshake."""

    identity: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class X509Credential:
    """A certificate the device may present: its subject and, optionally, a pinned SHA-256."""

    subject: str
    fingerprint_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointSecurity:
    """How an endpoint may authenticate to the DM server.

    ``allow_nosec`` is an explicit, per-endpoint grant to register without DTLS (lab devices,
    migrations); without it a NoSec registration from this endpoint is refused.
    """

    endpoint: str
    psk: PskCredential | None = None
    x509: X509Credential | None = None
    allow_nosec: bool = False
    updated_at: float = 0.0


# -- observations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """An active Observe (single or composite) that the server placed on a registration.

    Kept in the store so that after a server restart a notification's token still maps to the
    endpoint and the paths it reports on.
    """

    token: bytes
    registration_id: str
    endpoint: str
    paths: tuple[Path, ...]
    composite: bool = False
    content_format: int | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    created_at: float = 0.0


# -- telemetry ----------------------------------------------------------------------------------


class Source(Enum):
    """Where a reported value came from."""

    NOTIFY = "notify"
    SEND = "send"
    READ = "read"


@dataclass(frozen=True, slots=True)
class ReportedValue:
    """One timestamped value of one path, as reported by a device."""

    endpoint: str
    path: Path
    value: Value
    at: float
    source: Source = Source.NOTIFY


# -- queued requests ----------------------------------------------------------------------------


class QueueState(Enum):
    """Life of a request queued for a queue-mode (sleeping) device.

    ``pending -> sent -> answered | timeout``; ``pending -> cancelled | expired``;
    ``sent -> cancelled`` (the answer, if any, is then ignored).
    """

    PENDING = "pending"
    SENT = "sent"
    ANSWERED = "answered"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self not in (QueueState.PENDING, QueueState.SENT)


@dataclass(frozen=True, slots=True)
class NewQueuedRequest:
    """A request to deliver when the device next wakes up (any DM operation)."""

    endpoint: str
    operation: str
    paths: tuple[Path, ...] = ()
    content_format: int | None = None
    payload: bytes | None = None
    deadline: float | None = None
    correlation: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    """A queued request and where it is in its life."""

    id: int
    endpoint: str
    operation: str
    paths: tuple[Path, ...]
    content_format: int | None
    payload: bytes | None
    deadline: float | None
    correlation: str | None
    state: QueueState
    created_at: float
    sent_at: float | None
    finished_at: float | None
    response_code: str | None
    response_payload: bytes | None
