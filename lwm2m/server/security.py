"""Does the transport identity belong to the endpoint that registers? (pure)

LwM2M authorises by identity, never by address: whoever completed the DTLS handshake with
PSK identity X (or a certificate naming Y) may register or update only as the endpoint the
operator bound that credential to. Otherwise a device holding valid credentials could
register as -- and so take over the queue, observations and telemetry of -- any other
device. Plain CoAP carries no identity at all, so it is only accepted where the operator
allowed it: per endpoint (``EndpointSecurity.allow_nosec``), or globally for endpoints that
have no security record (``ServerConfig.allow_nosec_globally`` without ``secure_only``). An
endpoint that *has* credentials never registers without them, even when NoSec is allowed
globally: that is exactly what an impostor would try.

Certificates: with an X.509 record for the endpoint, the certificate must match its subject
(RFC 4514 string or CN) and, when pinned, its SHA-256 fingerprint. Without one, the
certificate (which chains to the server's trust anchors) must name the endpoint in its CN or
in a DNS / URI subjectAltName -- the usual LwM2M convention, and what lets a factory CA vouch
for a fleet without a record per device.

Refusals are 4.03 and audited (:func:`audit_line`: one JSON log line per refusal, plus a
``RegistrationRefused`` event from the runtime).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lwm2m.store import EndpointSecurity
from lwm2m.store import Identity as StoredIdentity
from lwm2m.transport import CertificateIdentity, Peer, PskIdentity


@dataclass(frozen=True, slots=True)
class IdentityRefused:
    """The identity may not act as the endpoint; ``reason`` is for the log and the device."""

    reason: str


def stored_identity(peer: Peer) -> StoredIdentity:
    """The identity recorded with a registration made from ``peer``."""
    identity = peer.identity
    if isinstance(identity, PskIdentity):
        return StoredIdentity.psk(psk_text(identity))
    if isinstance(identity, CertificateIdentity):
        return StoredIdentity.x509(identity.subject)
    return StoredIdentity.nosec()


def psk_text(identity: PskIdentity) -> str:
    """The PSK identity as the store keys it (UTF-8; python-mbedtls only passes UTF-8 ones)."""
    return identity.identity.decode("utf-8", "backslashreplace")


def describe(peer: Peer) -> str | None:
    """``psk:...`` / ``x509:...`` for logs and events; None for plain CoAP."""
    return str(peer.identity) if peer.identity is not None else None


def check_psk(
    endpoint: str, identity: str, owner: EndpointSecurity | None
) -> IdentityRefused | None:
    """``owner`` is the security record holding PSK ``identity`` (the handshake found one)."""
    if owner is None or owner.psk is None or owner.psk.identity != identity:
        return IdentityRefused(f"PSK identity {identity!r} belongs to no endpoint")
    if owner.endpoint != endpoint:
        return IdentityRefused(
            f"PSK identity {identity!r} belongs to endpoint {owner.endpoint!r}, not {endpoint!r}"
        )
    return None


def check_certificate(
    endpoint: str, certificate: CertificateIdentity, record: EndpointSecurity | None
) -> IdentityRefused | None:
    """``record`` is the claimed endpoint's security record, if any."""
    shown = certificate.common_name or certificate.subject
    if record is not None and record.x509 is not None:
        wanted = record.x509
        if wanted.subject not in (certificate.subject, certificate.common_name):
            return IdentityRefused(
                f"certificate {shown!r} is not the one registered for endpoint {endpoint!r} "
                f"(expected subject {wanted.subject!r})"
            )
        pinned = wanted.fingerprint_sha256
        if pinned is not None and pinned.replace(":", "").lower() != certificate.fingerprint.hex():
            return IdentityRefused(
                f"certificate {shown!r} does not match the fingerprint pinned for {endpoint!r}"
            )
        return None
    names = {certificate.common_name, *certificate.dns_names, *certificate.uris}
    if endpoint not in names:
        return IdentityRefused(
            f"certificate {shown!r} does not name endpoint {endpoint!r} (CN or subjectAltName)"
        )
    return None


def check_nosec(
    endpoint: str, record: EndpointSecurity | None, *, nosec_by_default: bool
) -> IdentityRefused | None:
    """Plain CoAP: an explicit grant, or the global default for endpoints without a record."""
    if record is not None:
        if record.allow_nosec:
            return None
        if record.psk is not None or record.x509 is not None:
            return IdentityRefused(
                f"endpoint {endpoint!r} has credentials and no NoSec grant; connect with DTLS"
            )
    if nosec_by_default:
        return None
    return IdentityRefused(
        f"plain CoAP is not allowed for endpoint {endpoint!r}; use DTLS or grant NoSec "
        f"(`fleetloop security set {endpoint} --allow-nosec`)"
    )


def audit_line(event: str, endpoint: str | None, peer: Peer, reason: str, code: str) -> str:
    """A one-line JSON record for log-based audit until the audit trail lands."""
    return json.dumps(
        {
            "audit": event,
            "endpoint": endpoint,
            "identity": describe(peer),
            "address": f"{peer.address[0]}:{peer.address[1]}",
            "code": code,
            "reason": reason,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


__all__ = [
    "IdentityRefused",
    "audit_line",
    "check_certificate",
    "check_nosec",
    "check_psk",
    "describe",
    "psk_text",
    "stored_identity",
]
