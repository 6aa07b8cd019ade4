"""eIM package signatures and eUICC result signatures (SGP.32 v1.2 2.11, sans-IO).

Both directions sign the DER of a data object followed by the associationToken TLV
('84' [4] INTEGER): the eIM signs EuiccPackageSigned || token, the eUICC signs
EuiccPackageResultDataSigned (or EuiccPackageErrorDataSigned) || token. (SGP.32 v1.0 had the
eUICC sign data || eimSignature instead: that is why v1.0 results do not verify here.) An eIM
without an association token signs with the value 0 (`84 01 00`), the form the reference vectors
use. Signatures are ECDSA with SHA-256 in the raw r||s form of BSI TR-03111 (64 bytes for the
256-bit curves), not the X9.62 DER SEQUENCE `cryptography` produces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from sgp32.asn1 import encode
from sgp32.errors import SignatureInvalid, UnsupportedKey
from sgp32.packages import Eco, Psmo, euicc_package_signed

NO_ASSOCIATION_TOKEN = 0
SUPPORTED_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.BrainpoolP256R1)
_COORDINATE = 32  # bytes of r and of s on a 256-bit curve


def check_curve(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey, whose: str) -> None:
    """Only NIST P-256 and brainpoolP256r1 are SGP.22/SGP.32 signature curves."""
    if not isinstance(key.curve, SUPPORTED_CURVES):
        raise UnsupportedKey(
            f"{whose}: curve {key.curve.name} is not supported (use secp256r1 or brainpoolP256r1)"
        )


def signature_input(signed_der: bytes, association_token: int) -> bytes:
    """DER(data) || DER([4] INTEGER associationToken): what both signatures cover."""
    return signed_der + encode("SignedAssociationToken", association_token)


def sign_raw(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256 over `data`, returned as raw r||s (TR-03111)."""
    check_curve(private_key, "signing key")
    r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")


def verify_raw(
    public_key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes, what: str
) -> None:
    """Check a raw r||s ECDSA-SHA256 signature; `what` names the signature in the error."""
    check_curve(public_key, what)
    if len(signature) != 2 * _COORDINATE:
        raise SignatureInvalid(f"{what}: expected a 64-byte r||s signature, got {len(signature)}")
    r = int.from_bytes(signature[:_COORDINATE], "big")
    s = int.from_bytes(signature[_COORDINATE:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureInvalid(f"{what}: signature does not verify") from exc


@dataclass(frozen=True)
class EimIdentity:
    """One eIM: its eimId, its signing key and (optionally) the certificate for that key.

    A deployment may run several; addEim/updateEim eCOs name the one they configure.
    """

    eim_id: str
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate | None = None

    def __post_init__(self) -> None:
        check_curve(self.private_key, f"eIM {self.eim_id}")
        if self.certificate is not None:
            cert_key = self.certificate.public_key()
            if cert_key != self.private_key.public_key():
                raise UnsupportedKey(
                    f"eIM {self.eim_id}: the certificate's public key does not match the "
                    "signing key; configure the pair that belongs together"
                )

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()


@dataclass(frozen=True)
class SignedPackage:
    """A signed EuiccPackageRequest: the ASN.1 value (to embed in an ESipa message) and its DER."""

    value: dict[str, Any]
    der: bytes


def sign_euicc_package(
    identity: EimIdentity,
    *,
    eid: str,
    counter_value: int,
    transaction_id: bytes | None,
    operations: Sequence[Psmo | Eco],
    association_token: int = NO_ASSOCIATION_TOKEN,
) -> SignedPackage:
    """Build EuiccPackageSigned for the operations and sign it with the eIM's key."""
    signed = euicc_package_signed(
        eim_id=identity.eim_id,
        eid=eid,
        counter_value=counter_value,
        transaction_id=transaction_id,
        operations=operations,
    )
    data = signature_input(encode("EuiccPackageSigned", signed), association_token)
    value = {"euiccPackageSigned": signed, "eimSignature": sign_raw(identity.private_key, data)}
    return SignedPackage(value, encode("EuiccPackageRequest", value))


def verify_euicc_package(
    request: dict[str, Any],
    eim_public_key: ec.EllipticCurvePublicKey,
    association_token: int = NO_ASSOCIATION_TOKEN,
) -> dict[str, Any]:
    """The eUICC's check of a received EuiccPackageRequest; returns its EuiccPackageSigned."""
    signed: dict[str, Any] = request["euiccPackageSigned"]
    data = signature_input(encode("EuiccPackageSigned", signed), association_token)
    verify_raw(eim_public_key, data, request["eimSignature"], f"eimSignature of {signed['eimId']}")
    return signed


# ---- eUICC package results ------------------------------------------------------------------

_SIGNED_KINDS = {
    # CHOICE alternative -> (data field, data type, signature field)
    "euiccPackageResultSigned": (
        "euiccPackageResultDataSigned",
        "EuiccPackageResultDataSigned",
        "euiccSignEPR",
    ),
    "euiccPackageErrorSigned": (
        "euiccPackageErrorDataSigned",
        "EuiccPackageErrorDataSigned",
        "euiccSignEPE",
    ),
}


@dataclass(frozen=True)
class PackageOutcome:
    """What an EuiccPackageResult says, once its signature (if any) has been checked.

    `authenticated` is False only for euiccPackageErrorUnsigned, which carries no signature:
    the eIM may log it but must not let it change state it trusts.
    """

    kind: str  # the EuiccPackageResult alternative
    eim_id: str
    counter_value: int | None
    transaction_id: bytes | None
    seq_number: int | None
    results: tuple[tuple[str, Any], ...]
    error_code: int | None
    authenticated: bool


def sign_euicc_package_result(
    euicc_key: ec.EllipticCurvePrivateKey,
    kind: str,
    data: dict[str, Any],
    association_token: int = NO_ASSOCIATION_TOKEN,
) -> tuple[str, dict[str, Any]]:
    """The eUICC side (simulator): sign result or error data into an EuiccPackageResult value."""
    data_field, data_type, sig_field = _SIGNED_KINDS[kind]
    signature = sign_raw(euicc_key, signature_input(encode(data_type, data), association_token))
    return (kind, {data_field: data, sig_field: signature})


def verify_euicc_package_result(
    result: tuple[str, dict[str, Any]],
    euicc_public_key: ec.EllipticCurvePublicKey,
    association_token: int = NO_ASSOCIATION_TOKEN,
) -> PackageOutcome:
    """Check the eUICC's signature on a decoded EuiccPackageResult and say what it reports."""
    kind, body = result
    if kind == "euiccPackageErrorUnsigned":
        return PackageOutcome(
            kind, body["eimId"], None, body.get("eimTransactionId"), None, (), None, False
        )
    data_field, data_type, sig_field = _SIGNED_KINDS[kind]
    data = body[data_field]
    verify_raw(
        euicc_public_key,
        signature_input(encode(data_type, data), association_token),
        body[sig_field],
        f"{sig_field} of the result for {data['eimId']} counter {data['counterValue']}",
    )
    return PackageOutcome(
        kind=kind,
        eim_id=data["eimId"],
        counter_value=data["counterValue"],
        transaction_id=data.get("eimTransactionId"),
        seq_number=data.get("seqNumber"),
        results=tuple(data.get("euiccResult", ())),
        error_code=data.get("euiccPackageErrorCode"),
        authenticated=True,
    )
