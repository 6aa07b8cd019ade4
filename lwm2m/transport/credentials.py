"""Credentials for the DTLS transports: PSK stores, X.509 material, and the cipher suites.

The credential store belongs to the layers above (bootstrap issues PSKs, the store persists
them); the transport only needs ``lookup(identity) -> key``. python-mbedtls asks for PSKs
through a ``Mapping[str, bytes]`` it indexes once per handshake, from inside Mbed TLS's PSK
callback; :class:`PskLookup` adapts a :class:`PskStore` to that and remembers which identity the
handshake in progress used, because python-mbedtls offers no other way to learn it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from lwm2m.transport.errors import ConfigurationError

#: LwM2M 1.x mandates TLS_PSK_WITH_AES_128_CCM_8; CBC_SHA256 is the common fallback (OpenSSL
#: builds that disable CCM_8 still negotiate it).
PSK_CIPHERS: tuple[str, ...] = (
    "TLS-PSK-WITH-AES-128-CCM-8",
    "TLS-PSK-WITH-AES-128-CBC-SHA256",
)
#: LwM2M's certificate-mode suites: ECDHE-ECDSA with CCM_8 (mandatory) or GCM.
CERTIFICATE_CIPHERS: tuple[str, ...] = (
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8",
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
)


@runtime_checkable
class PskStore(Protocol):
    """Where the DTLS server finds the key for a PSK identity.

    ``lookup`` runs synchronously inside the handshake (Mbed TLS calls back into Python and
    cannot wait), on the event loop thread: it must answer from memory. A store backed by a
    database keeps a cache and refreshes it out of band. Return ``None`` for an unknown
    identity; an exception is counted and treated as unknown.
    """

    def lookup(self, identity: bytes) -> bytes | None:
        """The pre-shared key for ``identity``, or ``None`` when the identity is unknown."""
        ...


class MappingPskStore:
    """A :class:`PskStore` over a mapping of identity to key: tests, tools, small deployments.

    The mapping is referenced, not copied, so a caller can add or revoke keys while the server
    runs.
    """

    def __init__(self, keys: Mapping[bytes, bytes]) -> None:
        self._keys = keys

    def lookup(self, identity: bytes) -> bytes | None:
        return self._keys.get(identity)


class PskLookup(Mapping[str, bytes]):
    """The ``pre_shared_key_store`` python-mbedtls wants, answering from a :class:`PskStore`.

    python-mbedtls decodes the identity as UTF-8 before indexing (a non-UTF-8 identity never
    reaches us: Mbed TLS reports it as unknown). Each successful lookup leaves the identity in
    :attr:`found`; the DTLS server clears it before stepping a handshake and reads it after,
    which is sound because the event loop steps one handshake at a time.

    The mapping cannot be enumerated (a credential store is not listed to the TLS engine): it
    iterates as empty, which python-mbedtls never needs.
    """

    def __init__(self, store: PskStore) -> None:
        self.store = store
        self.found: bytes | None = None
        self.missing: bytes | None = None
        self.errors = 0

    def __getitem__(self, identity: str) -> bytes:
        raw = identity.encode("utf-8")
        try:
            key = self.store.lookup(raw)
        except Exception as exc:
            self.errors += 1
            self.missing = raw
            raise KeyError(identity) from exc
        if key is None:
            self.missing = raw
            raise KeyError(identity)
        self.found = raw
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        # An empty-looking Mapping is falsy; a store is configured, so say so.
        return True

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def _pem_or_der(data: bytes) -> tuple[bool, bytes]:
    stripped = data.lstrip()
    return stripped.startswith(b"-----BEGIN"), stripped


@dataclass(frozen=True, slots=True)
class X509Credentials:
    """Certificate material for one side of a DTLS handshake.

    ``chain`` is the own certificate first, then intermediates; ``private_key`` the leaf's key;
    ``trust_anchors`` the CA certificates the *other* side's certificate must chain to (on a
    server: the device CAs; on a client: the server CA). Each item is PEM or DER bytes. Keys
    must be EC (P-256) for the ECDHE-ECDSA suites LwM2M uses.
    """

    chain: tuple[bytes, ...]
    private_key: bytes
    trust_anchors: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.chain:
            raise ConfigurationError("X509Credentials needs at least the own certificate")
        if not self.trust_anchors:
            raise ConfigurationError("X509Credentials needs at least one trust anchor")

    def to_mbedtls(self) -> tuple[tuple[tuple[Any, ...], Any], Any]:
        """``((certificates, key), trust_store)`` as python-mbedtls configurations take them."""
        from mbedtls import pk, tls, x509

        def crt(data: bytes) -> Any:
            is_pem, body = _pem_or_der(data)
            try:
                if is_pem:
                    return x509.CRT.from_PEM(body.decode("ascii"))
                return x509.CRT.from_DER(body)
            except Exception as exc:
                raise ConfigurationError(f"unreadable certificate: {exc}") from exc

        is_pem, body = _pem_or_der(self.private_key)
        try:
            key = pk.ECC.from_PEM(body.decode("ascii")) if is_pem else pk.ECC.from_DER(body)
        except Exception as exc:
            raise ConfigurationError(f"unreadable EC private key: {exc}") from exc
        chain = tuple(crt(c) for c in self.chain)
        trust = tls.TrustStore([crt(c) for c in self.trust_anchors])
        return (chain, key), trust
