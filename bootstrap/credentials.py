"""Fresh DM credentials per bootstrap: PSKs from ``secrets``, certificates from the CA.

Separate from :mod:`bootstrap.plan` because it is the one impure ingredient of a plan
(randomness, the CA's key); tests inject ``token_bytes`` to make PSKs reproducible.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from bootstrap.ca import CertificateAuthority, IssuedCertificate
from bootstrap.errors import NotProvisionable
from bootstrap.identities import FactoryIdentity
from bootstrap.plan import CertificateSecret, DmCredentials, OscoreSecret, PskSecret
from bootstrap.policy import CredentialKind, Policy


@dataclass(slots=True)
class Issued:
    """Credentials for one plan, and the certificates the CA issued for them (to record)."""

    credentials: DmCredentials
    certificates: list[IssuedCertificate] = field(default_factory=list)


class CredentialIssuer:
    """Generates the DM credentials a policy asks for (one per kind; see ``bootstrap.plan``).

    PSK identity: the endpoint name -- unique per device, so the DM store's "one PSK identity,
    one endpoint" rule holds, and a rotation replaces the key under the same identity (the old
    key stops working at once). Key: ``psk_bytes`` random bytes (16 = 128 bits).
    """

    def __init__(
        self,
        ca: CertificateAuthority | None,
        *,
        psk_bytes: int = 16,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not 16 <= psk_bytes <= 64:
            raise ValueError("psk_bytes must be 16..64")
        self.ca = ca
        self.psk_bytes = psk_bytes
        self._token_bytes = token_bytes

    def issue(self, identity: FactoryIdentity, policy: Policy) -> Issued:
        kinds = {s.credentials_for(identity.security_mode) for s in policy.servers}
        issued = Issued(DmCredentials())
        psk = None
        certificate = None
        if CredentialKind.PSK in kinds:
            psk = PskSecret(identity.endpoint, self._token_bytes(self.psk_bytes))
        if CredentialKind.X509 in kinds:
            if self.ca is None:
                raise NotProvisionable(
                    f"policy {policy.label} provisions a certificate for {identity.endpoint}, "
                    "but no CA is configured"
                )
            cert = self.ca.issue_device(identity.endpoint, kind="device-dm")
            issued.certificates.append(cert)
            certificate = CertificateSecret(
                certificate=cert.der,
                private_key=cert.key_der(),
                trust_anchor=self.ca.der,
                subject=cert.subject,
                fingerprint=cert.fingerprint,
                serial=cert.serial,
            )
        oscore = tuple(
            OscoreSecret(self._token_bytes(16), self._token_bytes(6), self._token_bytes(6))
            for s in policy.servers
            if s.oscore
        )
        issued.credentials = DmCredentials(psk=psk, certificate=certificate, oscore=oscore)
        return issued


__all__ = ["CredentialIssuer", "Issued"]
