"""Who sent a datagram: the address, and for DTLS the identity the handshake authenticated.

The identity travels with every message up to the server, because LwM2M authorisation is by
identity (the PSK identity or the certificate's name must match the endpoint the device claims
when it registers), never by address: NAT rebinding moves devices between addresses, and an
address is trivially spoofed on plain UDP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TypeAlias

#: A socket address as asyncio reports it: ``(host, port)`` for IPv4, ``(host, port, flowinfo,
#: scope_id)`` for IPv6. On a dual-stack socket IPv4 peers appear as ``::ffff:a.b.c.d``.
Address: TypeAlias = tuple[str, int] | tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class PskIdentity:
    """A device authenticated by a pre-shared key; ``identity`` is the raw PSK identity."""

    identity: bytes

    def __str__(self) -> str:
        return "psk:" + self.identity.decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """A device authenticated by an X.509 certificate that chains to the trust store.

    ``common_name`` is the subject CN (LwM2M's usual carrier of the endpoint name),
    ``dns_names`` and ``uris`` the subjectAltName entries of those kinds, ``fingerprint`` the
    SHA-256 of the DER certificate (stable key for pinning and audit), ``subject`` the RFC 4514
    rendering of the subject for logs.
    """

    subject: str
    common_name: str | None
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    fingerprint: bytes

    def __str__(self) -> str:
        return f"x509:{self.common_name or self.subject}"

    @classmethod
    def from_der(cls, der: bytes) -> CertificateIdentity:
        """Read the names out of a DER certificate the DTLS engine has already verified."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_der_x509_certificate(der)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(cns[0].value) if cns else None
        dns_names: tuple[str, ...] = ()
        uris: tuple[str, ...] = ()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            pass
        else:
            dns_names = tuple(san.get_values_for_type(x509.DNSName))
            uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        return cls(
            subject=cert.subject.rfc4514_string(),
            common_name=common_name,
            dns_names=dns_names,
            uris=uris,
            fingerprint=hashlib.sha256(der).digest(),
        )


Identity: TypeAlias = PskIdentity | CertificateIdentity


@dataclass(frozen=True, slots=True)
class Peer:
    """The far end of a datagram, as the layers above see it.

    Frozen and hashable so the CoAP layer can key exchanges and deduplication on it. The hash
    is computed once: the same ``Peer`` object is reused for every datagram of a DTLS session
    (and cached per address on UDP), so upper layers hash it per message cheaply.

    ``secure`` is true exactly when the datagram came through DTLS; ``identity`` is ``None``
    on plain UDP.
    """

    address: Address
    identity: Identity | None = None
    secure: bool = False
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.address, self.identity, self.secure)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        host, port = self.address[0], self.address[1]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.identity is None:
            return where
        return f"{where} ({self.identity})"
