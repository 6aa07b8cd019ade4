"""A CI -> EUM -> eUICC chain made by the tests, shaped like the SGP.26 test chain, at a fixed
test time (certificates by :func:`simulators.esim.certs.make_cert`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgp32.certificates import POLICY_CI, POLICY_EUICC, POLICY_EUM
from simulators.esim import certs
from simulators.esim.certs import x509_name

NOW = datetime(2030, 1, 1, tzinfo=UTC)
TEST_EID = "89049032123451234512345678901235"


@dataclass
class MadePki:
    """The chain's keys and certificates."""

    ci_key: ec.EllipticCurvePrivateKey
    ci: x509.Certificate
    eum_key: ec.EllipticCurvePrivateKey
    eum: x509.Certificate
    euicc_key: ec.EllipticCurvePrivateKey
    euicc: x509.Certificate


def make_cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    policy: x509.ObjectIdentifier,
    not_after: datetime | None = None,
    permitted: x509.Name | None = None,
    now: datetime = NOW,
) -> x509.Certificate:
    """:func:`simulators.esim.certs.make_cert` at the fixed test time unless told."""
    return certs.make_cert(
        subject,
        key,
        issuer,
        issuer_key,
        ca=ca,
        policy=policy,
        not_after=not_after,
        permitted=permitted,
        now=now,
    )


def make_pki(
    curve: ec.EllipticCurve | None = None,
    eid: str = TEST_EID,
    eum_prefix: str = "89049032",
    now: datetime = NOW,
) -> MadePki:
    """The chain, valid from a day before `now` (NOW: the fixed test time; a test against a
    running server passes the real time)."""
    curve = curve or ec.SECP256R1()
    ci_key, eum_key, euicc_key = (ec.generate_private_key(curve) for _ in range(3))
    ci_name = x509_name((NameOID.COMMON_NAME, "fleetloop test CI"))
    eum_name = x509_name((NameOID.COMMON_NAME, "Test EUM"), (NameOID.ORGANIZATION_NAME, "Test EUM"))
    euicc_name = x509_name(
        (NameOID.COMMON_NAME, "Test eUICC"),
        (NameOID.SERIAL_NUMBER, eid),
        (NameOID.ORGANIZATION_NAME, "Test EUM"),
    )
    permitted = x509_name(
        (NameOID.SERIAL_NUMBER, eum_prefix), (NameOID.ORGANIZATION_NAME, "Test EUM")
    )
    ci = make_cert(ci_name, ci_key, ci_name, ci_key, ca=True, policy=POLICY_CI, now=now)
    eum = make_cert(
        eum_name,
        eum_key,
        ci_name,
        ci_key,
        ca=True,
        policy=POLICY_EUM,
        permitted=permitted,
        now=now,
    )
    euicc = make_cert(
        euicc_name, euicc_key, eum_name, eum_key, ca=False, policy=POLICY_EUICC, now=now
    )
    return MadePki(ci_key, ci, eum_key, eum, euicc_key, euicc)


def make_euicc(
    pki: MadePki, eid: str, curve: ec.EllipticCurve | None = None, now: datetime = NOW
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Another eUICC under the same EUM (the EID must start with the EUM's prefix 89049032)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    subject = x509_name(
        (NameOID.COMMON_NAME, "Test eUICC"),
        (NameOID.SERIAL_NUMBER, eid),
        (NameOID.ORGANIZATION_NAME, "Test EUM"),
    )
    cert = make_cert(
        subject, key, pki.eum.subject, pki.eum_key, ca=False, policy=POLICY_EUICC, now=now
    )
    return key, cert


def eid_with_check(first30: str) -> str:
    """A valid EID from its first 30 digits (the last two make it 1 mod 97)."""
    return f"{first30}{98 - (int(first30) * 100) % 97:02d}"
