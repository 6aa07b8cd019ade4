"""eUICC certificate chains: eUICC <- EUM <- CI, checked with `cryptography` (sans-IO).

SGP.22 certificates are not web-PKI certificates (critical certificatePolicies, a directoryName
nameConstraint on the EUM, the EID in the subject's serialNumber), so `cryptography`'s
PolicyBuilder does not apply; the checks SGP.22 4.5.2 asks for are spelled out here instead.
`now` is passed in: the caller owns the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgp32.errors import CertificateChainError, InvalidIdentifier, UnsupportedKey
from sgp32.identifiers import eid_to_bytes
from sgp32.signing import check_curve

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)

# id-rsp-cert-objects policy OIDs (SGP.22 4.5.2.1): the role each certificate must state.
POLICY_CI = x509.ObjectIdentifier("2.23.146.1.2.1.0")
POLICY_EUICC = x509.ObjectIdentifier("2.23.146.1.2.1.1")
POLICY_EUM = x509.ObjectIdentifier("2.23.146.1.2.1.2")


@dataclass(frozen=True)
class VerifiedEuicc:
    """An eUICC whose chain verified: its EID and the key its result signatures verify with."""

    eid: str
    public_key: ec.EllipticCurvePublicKey
    certificate: x509.Certificate
    eum_certificate: x509.Certificate
    ci_certificate: x509.Certificate


def load_certificate(der: bytes, what: str) -> x509.Certificate:
    """Parse a DER certificate; junk raises `CertificateChainError` naming `what`."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateChainError(f"{what}: not a DER X.509 certificate ({exc})") from exc


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _ec_key(cert: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateChainError(f"{what} {_subject(cert)}: not an EC key")
    try:
        check_curve(key, f"{what} {_subject(cert)}")
    except UnsupportedKey as exc:
        raise CertificateChainError(str(exc)) from exc
    return key


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise CertificateChainError(
            f"{what} {_subject(cert)}: not issued by {_subject(issuer)} ({exc or 'bad signature'})"
        ) from exc


def _valid_at(cert: x509.Certificate, now: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateChainError(
            f"{what} {_subject(cert)}: not valid at {now.isoformat()} "
            f"(valid {cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()})"
        )


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_role(
    cert: x509.Certificate, *, ca: bool, policy: x509.ObjectIdentifier, what: str
) -> None:
    constraints = _extension(cert, x509.BasicConstraints)
    if ca and (constraints is None or not constraints.ca):
        raise CertificateChainError(f"{what} {_subject(cert)}: lacks basicConstraints CA=true")
    if not ca and constraints is not None and constraints.ca:
        raise CertificateChainError(f"{what} {_subject(cert)}: is a CA, expected an end entity")
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or (usage.key_cert_sign if ca else usage.digital_signature) is False:
        needed = "keyCertSign" if ca else "digitalSignature"
        raise CertificateChainError(f"{what} {_subject(cert)}: keyUsage lacks {needed}")
    policies = _extension(cert, x509.CertificatePolicies)
    if policies is None or policy not in {p.policy_identifier for p in policies}:
        raise CertificateChainError(
            f"{what} {_subject(cert)}: certificatePolicies lacks {policy.dotted_string}"
        )


def _eid_of(cert: x509.Certificate) -> str:
    serials = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(serials) != 1:
        raise CertificateChainError(f"eUICC {_subject(cert)}: subject has no single serialNumber")
    eid = str(serials[0].value)
    try:
        eid_to_bytes(eid)
    except InvalidIdentifier as exc:
        raise CertificateChainError(
            f"eUICC {_subject(cert)}: serialNumber is no EID ({exc})"
        ) from exc
    return eid


def _within_name_constraints(euicc: x509.Certificate, eum: x509.Certificate, eid: str) -> None:
    """The EUM may only issue eUICC certificates inside its permitted directoryName subtrees
    (SGP.22: O = the EUM, serialNumber = the EID prefix it owns)."""
    constraints = _extension(eum, x509.NameConstraints)
    if constraints is None or not constraints.permitted_subtrees:
        return
    subtrees = constraints.permitted_subtrees
    permitted = [n.value for n in subtrees if isinstance(n, x509.DirectoryName)]
    for name in permitted:
        if all(_attribute_matches(euicc.subject, attr, eid) for attr in name):
            return
    raise CertificateChainError(
        f"eUICC {_subject(euicc)}: EID {eid} is outside the EUM's permitted names "
        f"({'; '.join(n.rfc4514_string() for n in permitted)})"
    )


def _attribute_matches(subject: x509.Name, attr: x509.NameAttribute[str | bytes], eid: str) -> bool:
    if attr.oid == NameOID.SERIAL_NUMBER:
        return eid.startswith(str(attr.value))
    return any(a.value == attr.value for a in subject.get_attributes_for_oid(attr.oid))


def verify_euicc_chain(
    euicc_der: bytes,
    eum_der: bytes,
    trusted_cis: Sequence[x509.Certificate],
    now: datetime,
    expected_eid: str | None = None,
) -> VerifiedEuicc:
    """Verify CERT.EUICC.ECDSA <- CERT.EUM.ECDSA <- one of the configured CI certificates."""
    euicc = load_certificate(euicc_der, "eUICC certificate")
    eum = load_certificate(eum_der, "EUM certificate")
    candidates = [ci for ci in trusted_cis if ci.subject == eum.issuer]
    if not candidates:
        raise CertificateChainError(
            f"EUM {_subject(eum)}: issuer {eum.issuer.rfc4514_string()} is not a configured CI"
        )
    ci = _first_issuer(eum, candidates)
    _ec_key(ci, "CI")
    _check_role(ci, ca=True, policy=POLICY_CI, what="CI")
    _ec_key(eum, "EUM")
    _check_role(eum, ca=True, policy=POLICY_EUM, what="EUM")
    _issued_by(euicc, eum, "eUICC")
    key = _ec_key(euicc, "eUICC")
    _check_role(euicc, ca=False, policy=POLICY_EUICC, what="eUICC")
    for cert, what in ((ci, "CI"), (eum, "EUM"), (euicc, "eUICC")):
        _valid_at(cert, now, what)
    eid = _eid_of(euicc)
    if expected_eid is not None and eid != expected_eid:
        raise CertificateChainError(f"eUICC certificate is for EID {eid}, expected {expected_eid}")
    _within_name_constraints(euicc, eum, eid)
    return VerifiedEuicc(eid, key, euicc, eum, ci)


def _first_issuer(
    eum: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate:
    """Several CIs may share a name across key rollovers: the one whose key signed the EUM."""
    failure: CertificateChainError | None = None
    for ci in candidates:
        try:
            _issued_by(eum, ci, "EUM")
        except CertificateChainError as exc:
            failure = exc
        else:
            return ci
    assert failure is not None
    raise failure
