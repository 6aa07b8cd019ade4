"""Certificates shaped like the GSMA eSIM PKI (SGP.26's test chain): CI -> EUM -> eUICC, and
SM-DP+ certificates under the CI. One builder for the ``fleetloop sim`` lab and the tests'
chains, so both carry the same key usage, certificate policy and name constraints that
:mod:`sgp32.certificates` checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def x509_name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    """An X.509 name from (OID, value) pairs, in order."""
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


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
    now: datetime | None = None,
) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer_key``: a CA (keyCertSign, basic
    constraints) or an end entity (digitalSignature), with the critical certificate policy
    ``policy`` and, where given, the EUM's permitted-subtree name constraint. Valid from a
    day before ``now`` (the current time if not given) for ten years unless ``not_after``."""
    now = now or datetime.now(UTC)
    usage = dict.fromkeys(_USAGES, False)
    usage["key_cert_sign" if ca else "digital_signature"] = True
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=3650))
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(policy, None)]), critical=True
        )
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if permitted is not None:
        builder = builder.add_extension(
            x509.NameConstraints([x509.DirectoryName(permitted)], None), critical=True
        )
    return builder.sign(issuer_key, hashes.SHA256())
