"""The eIM's records and the typed outcomes of an ESipa exchange (frozen dataclasses).

Records are what a `Ledger` stores; outcomes are what `Eim.handle` reports besides the bytes to
answer, so a binding can log them and a test can assert on them without parsing the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class EuiccRecord:
    """One registered eUICC: its verified chain, the eIM it is bound to, that eIM's counter.

    `eim_id` is the eIM of the deployment that signs its packages now (import, or a move after
    a confirmed addEim). `counter_value` and `association_token` are that eIM's (its
    `AssociationRecord`): the next package gets `counter_value + 1`; it only ever grows, since
    the eUICC refuses a counter it has seen from that eIM.
    """

    eid: str
    eim_id: str
    euicc_certificate: bytes
    eum_certificate: bytes
    association_token: int
    counter_value: int
    registered_at: float
    tenant: str | None = None


@dataclass(frozen=True)
class AssociationRecord:
    """One eIM an eUICC is associated with, as the eUICC keeps it (SGP.32 EimConfigurationData):
    the last counterValue the eIM used for it and the associationToken both signatures cover.

    Counters are per (EID, eimId) because the eUICC checks them per eIM. `source` says how the
    eIM learnt of it ("import", "migrated", "addEim <eimTransactionId hex>"); `deleted_at` is
    set once the eUICC confirmed a deleteEim of it.
    """

    eid: str
    eim_id: str
    counter_value: int
    association_token: int
    source: str
    confirmed_at: float
    deleted_at: float | None = None

    @property
    def active(self) -> bool:
        return self.deleted_at is None


class PackageState(StrEnum):
    QUEUED = "queued"  # signed and waiting for the IPA to fetch it
    DELIVERED = "delivered"  # handed to the IPA at least once, no result yet
    DONE = "done"  # a signed result came back (per-operation results inside)
    FAILED = "failed"  # the eUICC refused the package (signed error: replay, counter, EID)


@dataclass(frozen=True)
class PackageRecord:
    """One signed eUICC package of one EID's queue. `operations` is JSON data describing the
    PSMOs/eCOs (what the result's per-operation answers are matched against)."""

    eid: str
    counter_value: int
    transaction_id: bytes
    eim_id: str
    operations: tuple[dict[str, Any], ...]
    request_der: bytes
    state: PackageState
    created_at: float
    actor: str
    delivered_at: float | None = None
    result_at: float | None = None
    result: dict[str, Any] | None = None


class Refusal(StrEnum):
    """Why the eIM did not accept something the IPA sent."""

    MISSING_EID = "missing_eid"
    INVALID_EID = "invalid_eid"
    UNKNOWN_EID = "unknown_eid"
    SIGNATURE_INVALID = "signature_invalid"
    WRONG_EIM = "wrong_eim"
    UNKNOWN_PACKAGE = "unknown_package"
    COUNTER_MISMATCH = "counter_mismatch"
    REPLAY = "replay"
    UNAUTHENTICATED = "unauthenticated"  # euiccPackageErrorUnsigned: logged, never trusted
    UNSUPPORTED = "unsupported"


class UnsignedReason(StrEnum):
    """Why a package the eUICC refused with euiccPackageErrorUnsigned failed (the error has no
    code: the eIM says what it knows of that eIM on the eUICC)."""

    EIM_DELETED = "eim_deleted_on_euicc"  # its deleteEim was confirmed by the eUICC
    EIM_NOT_ACCEPTED = "eim_not_accepted_by_euicc"  # unknown to it, or another key/token


@dataclass(frozen=True)
class ResultRecord:
    """Every result the IPA delivered, accepted or not (nothing an IPA sent is lost)."""

    eid: str
    received_at: float
    outcome: str  # "accepted", "duplicate", "ipa_error", "unsigned_error" or a Refusal value
    transaction_id: bytes | None
    counter_value: int | None
    der: bytes
    detail: dict[str, Any]


class ProfileState(StrEnum):
    DISABLED = "disabled"
    ENABLED = "enabled"
    PENDING = "enabled_pending"  # enabled with rollbackFlag, not yet confirmed over it


@dataclass(frozen=True)
class ProfileRecord:
    """The eIM's view of one profile on one eUICC. `note` says how it got there
    ("confirmed", "rolled back", "notification", "listProfileInfo", ...)."""

    eid: str
    iccid: str
    state: ProfileState
    fallback: bool
    updated_at: float
    carrier: str | None = None
    note: str = ""


# ---- outcomes of one exchange -----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    eid: str | None


@dataclass(frozen=True)
class PackageDelivered(Outcome):
    counter_value: int
    transaction_id: bytes


@dataclass(frozen=True)
class NoPackage(Outcome):
    pass


@dataclass(frozen=True)
class ResultAccepted(Outcome):
    counter_value: int
    transaction_id: bytes
    kind: str  # euiccPackageResultSigned | euiccPackageErrorSigned
    results: tuple[tuple[str, Any], ...]
    error_code: int | None
    package_state: PackageState


@dataclass(frozen=True)
class ResultDuplicate(Outcome):
    """The same result again (the IPA missed our acknowledgement): acknowledged, not reapplied."""

    transaction_id: bytes


@dataclass(frozen=True)
class ResultRefused(Outcome):
    reason: Refusal
    message: str


@dataclass(frozen=True)
class NotificationHandled(Outcome):
    iccid: str | None
    events: tuple[str, ...]
    accepted: bool
    message: str = ""
