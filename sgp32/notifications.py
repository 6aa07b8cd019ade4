"""eUICC notifications (OtherSignedNotification) signed and checked, both sides (sans-IO).

SGP.22 5.6: the eUICC signs the DER of `tbsOtherNotification` (a NotificationMetadata) with its
ECDSA key, raw r||s like every other eUICC signature. The eIM learns profile state changes it
did not order itself (a local enable, a rollback) from these, so it only trusts a notification
whose signature verifies with the registered eUICC's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.asn1 import decode, encode
from sgp32.identifiers import iccid_from_bytes, iccid_to_bytes
from sgp32.packages import bit_string
from sgp32.signing import sign_raw, verify_raw

# NotificationEvent bit numbers (SGP.22)
INSTALL, ENABLE, DISABLE, DELETE = 0, 1, 2, 3
EVENT_NAMES = {INSTALL: "install", ENABLE: "enable", DISABLE: "disable", DELETE: "delete"}


@dataclass(frozen=True)
class ProfileNotification:
    """What a verified notification says: which profile, which event, its sequence number."""

    seq_number: int
    events: tuple[str, ...]
    iccid: str | None
    address: str


def sign_other_notification(
    euicc_key: ec.EllipticCurvePrivateKey,
    *,
    seq_number: int,
    event: int,
    iccid: str | None,
    address: str,
    euicc_certificate_der: bytes,
    eum_certificate_der: bytes,
) -> tuple[str, dict[str, Any]]:
    """The eUICC side (simulator): a PendingNotification otherSignedNotification value."""
    tbs: dict[str, Any] = {
        "seqNumber": seq_number,
        "profileManagementOperation": bit_string([event]),
        "notificationAddress": address,
    }
    if iccid is not None:
        tbs["iccid"] = iccid_to_bytes(iccid)
    signature = sign_raw(euicc_key, encode("NotificationMetadata", tbs))
    return (
        "otherSignedNotification",
        {
            "tbsOtherNotification": tbs,
            "euiccNotificationSignature": signature,
            "euiccCertificate": decode("Certificate", euicc_certificate_der),
            "eumCertificate": decode("Certificate", eum_certificate_der),
        },
    )


def _events(bits: tuple[bytes, int]) -> tuple[str, ...]:
    data, count = bits
    value = int.from_bytes(data, "big") if data else 0
    width = 8 * len(data)
    return tuple(
        name for bit, name in EVENT_NAMES.items() if bit < count and value >> (width - 1 - bit) & 1
    )


def verify_other_notification(
    body: dict[str, Any], euicc_public_key: ec.EllipticCurvePublicKey
) -> ProfileNotification:
    """Check an otherSignedNotification's signature and say what it reports."""
    tbs = body["tbsOtherNotification"]
    verify_raw(
        euicc_public_key,
        encode("NotificationMetadata", tbs),
        body["euiccNotificationSignature"],
        f"euiccNotificationSignature of notification {tbs['seqNumber']}",
    )
    iccid = tbs.get("iccid")
    return ProfileNotification(
        seq_number=tbs["seqNumber"],
        events=_events(tbs["profileManagementOperation"]),
        iccid=iccid_from_bytes(iccid) if iccid is not None else None,
        address=tbs["notificationAddress"],
    )
