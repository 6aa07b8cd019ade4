"""Factory identities: what the factory knows about a device before it ever connects.

A :class:`FactoryIdentity` is born at the factory (imported from its CSV/JSON output) and
never holds a DM-server credential: it holds the *bootstrap* credential the device was flashed
with, and the attributes policies select on (tenant, region, SKU, policy group). Everything
here is pure data and validation; persistence is :mod:`bootstrap.repository`.

Validation is strict on purpose: an identity with a mistyped IMEI or EID would bootstrap fine
and then be unfindable by the operator who searches for the number printed on the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

from bootstrap.errors import InvalidIdentity
from lwm2m.naming import endpoint_name_problem

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")

#: PSK lengths accepted at import (bytes): 128-bit keys at least, as LwM2M recommends; 64
#: bytes is the largest key Mbed TLS takes by default.
MIN_PSK_BYTES, MAX_PSK_BYTES = 16, 64
MAX_PSK_IDENTITY_BYTES = 128


class SecurityMode(StrEnum):
    """How a device authenticates to the bootstrap server (and, by default, to the DM)."""

    NOSEC = "nosec"
    PSK = "psk"
    X509 = "x509"


class IdentityStatus(StrEnum):
    """``active`` identities may bootstrap; ``revoked`` ones get 4.03 forever."""

    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class BootstrapCredential:
    """The credential the device presents to the *bootstrap* server.

    PSK: ``psk_identity`` + ``psk_key`` (never printed: ``repr=False``). X.509: the SHA-256
    fingerprint of the certificate fleetloop's CA issued (``certificate_serial`` identifies it
    in the CA's records, e.g. for revocation). NoSec: nothing.
    """

    mode: SecurityMode
    psk_identity: str | None = None
    psk_key: bytes | None = field(default=None, repr=False)
    certificate_fingerprint: str | None = None
    certificate_serial: str | None = None

    @classmethod
    def nosec(cls) -> BootstrapCredential:
        return cls(SecurityMode.NOSEC)

    @classmethod
    def psk(cls, identity: str, key: bytes) -> BootstrapCredential:
        return cls(SecurityMode.PSK, psk_identity=identity, psk_key=key)

    @classmethod
    def x509(cls, fingerprint: str, serial: str | None = None) -> BootstrapCredential:
        return cls(
            SecurityMode.X509, certificate_fingerprint=fingerprint, certificate_serial=serial
        )


@dataclass(frozen=True, slots=True)
class FactoryIdentity:
    """One device as the factory recorded it (see the module docstring)."""

    endpoint: str
    credential: BootstrapCredential
    serial: str | None = None
    hardware_id: str | None = None
    imei: str | None = None
    eid: str | None = None
    sku: str | None = None
    tenant: str | None = None
    region: str | None = None
    policy_group: str | None = None
    status: IdentityStatus = IdentityStatus.ACTIVE
    created_at: float = 0.0
    updated_at: float = 0.0
    revoked_at: float | None = None
    revoked_reason: str | None = None
    import_batch: str | None = None

    @property
    def security_mode(self) -> SecurityMode:
        return self.credential.mode

    @property
    def active(self) -> bool:
        return self.status is IdentityStatus.ACTIVE

    def with_attributes(self, **changes: str | None) -> FactoryIdentity:
        """A copy with selection attributes changed (tenant, region, sku, policy_group)."""
        allowed = {"tenant", "region", "sku", "policy_group"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidIdentity(", ".join(sorted(unknown)), "cannot be changed after import")
        checked = {k: check_label(k, v) for k, v in changes.items()}
        return replace(self, **checked)  # type: ignore[arg-type]


# -- validation ---------------------------------------------------------------------------------


def check_endpoint(name: str) -> str:
    """The LwM2M endpoint client name: 1..128 characters a Uri-Query can carry unescaped
    (letters, digits and ``. _ : @ + -``), starting with a letter or digit (``urn:imei:...``
    names are fine)."""
    problem = endpoint_name_problem(name)  # the system's one rule (lwm2m.naming)
    if problem is not None:
        raise InvalidIdentity("endpoint", problem)
    return name


def check_label(field_name: str, value: str | None) -> str | None:
    """Tenant, region, SKU and policy group: short labels, or None when unknown."""
    if value is None or value == "":
        return None
    if not _LABEL.fullmatch(value):
        raise InvalidIdentity(
            field_name, f"{value!r} is not a label (1-64 of A-Z a-z 0-9 . _ -, no spaces)"
        )
    return value


def check_text(field_name: str, value: str | None, limit: int = 128) -> str | None:
    """Serial and hardware id: printable text without control characters, or None."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if len(value) > limit or not value.isprintable():
        raise InvalidIdentity(field_name, f"must be printable text of at most {limit} characters")
    return value


def luhn_ok(digits: str) -> bool:
    """The Luhn check the 15th digit of an IMEI carries."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def check_imei(value: str | None) -> str | None:
    """15 digits with a valid Luhn check digit (the number on the label, no IMEISV)."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if len(value) != 15 or not value.isdigit():
        raise InvalidIdentity("imei", f"{value!r} is not 15 digits")
    if not luhn_ok(value):
        raise InvalidIdentity("imei", f"{value!r} fails the Luhn check digit (mistyped?)")
    return value


def eid_check_ok(eid: str) -> bool:
    """GSMA SGP.29: the 32-digit EID read as a number is 1 modulo 97 (ISO 7064 MOD 97-10)."""
    return len(eid) == 32 and eid.isdigit() and int(eid) % 97 == 1


def eid_with_check_digits(first30: str) -> str:
    """Complete 30 EID digits with the two check digits (for tests and tools)."""
    if len(first30) != 30 or not first30.isdigit():
        raise ValueError("need the first 30 digits of an EID")
    check = 98 - (int(first30) * 100) % 97
    return f"{first30}{check:02d}"


def check_eid(value: str | None) -> str | None:
    """32 digits, check digits valid (SGP.29)."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if len(value) != 32 or not value.isdigit():
        raise InvalidIdentity("eid", f"{value!r} is not 32 digits")
    if not eid_check_ok(value):
        raise InvalidIdentity("eid", f"{value!r} fails the EID check digits (mistyped?)")
    return value


def parse_psk_key(text: str) -> bytes:
    """A PSK given as hex (``0x`` prefix and ``:`` separators tolerated)."""
    cleaned = text.strip().removeprefix("0x").removeprefix("0X").replace(":", "")
    if not _HEX.fullmatch(cleaned):
        raise InvalidIdentity("psk_key", "is not an even number of hex digits")
    key = bytes.fromhex(cleaned)
    return check_psk_key(key)


def check_psk_key(key: bytes) -> bytes:
    if not MIN_PSK_BYTES <= len(key) <= MAX_PSK_BYTES:
        raise InvalidIdentity(
            "psk_key",
            f"is {len(key)} bytes; use {MIN_PSK_BYTES}..{MAX_PSK_BYTES} bytes "
            f"({MIN_PSK_BYTES * 2}..{MAX_PSK_BYTES * 2} hex digits)",
        )
    return key


def check_psk_identity(identity: str) -> str:
    """A PSK identity: 1..128 bytes of UTF-8 without control characters (python-mbedtls
    passes identities as text, so non-UTF-8 identities could never authenticate)."""
    encoded = identity.encode("utf-8")
    if not 1 <= len(encoded) <= MAX_PSK_IDENTITY_BYTES or not identity.isprintable():
        raise InvalidIdentity(
            "psk_identity", f"must be 1..{MAX_PSK_IDENTITY_BYTES} bytes of printable UTF-8"
        )
    return identity


def check_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (``:`` separators tolerated)."""
    text = value.replace(":", "").strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidIdentity("certificate", "fingerprint must be 64 hex digits (SHA-256)")
    return text


def check_identity(identity: FactoryIdentity) -> FactoryIdentity:
    """Validate every field; return the identity with fields normalised."""
    cred = identity.credential
    if cred.mode is SecurityMode.PSK:
        if cred.psk_identity is None or cred.psk_key is None:
            raise InvalidIdentity("psk_key", "a psk identity needs a PSK identity and key")
        cred = replace(
            cred,
            psk_identity=check_psk_identity(cred.psk_identity),
            psk_key=check_psk_key(cred.psk_key),
            certificate_fingerprint=None,
            certificate_serial=None,
        )
    elif cred.mode is SecurityMode.X509:
        if cred.certificate_fingerprint is None:
            raise InvalidIdentity("certificate", "an x509 identity needs its certificate")
        cred = replace(
            cred,
            certificate_fingerprint=check_fingerprint(cred.certificate_fingerprint),
            psk_identity=None,
            psk_key=None,
        )
    else:
        cred = BootstrapCredential.nosec()
    return replace(
        identity,
        endpoint=check_endpoint(identity.endpoint),
        credential=cred,
        serial=check_text("serial", identity.serial),
        hardware_id=check_text("hardware_id", identity.hardware_id),
        imei=check_imei(identity.imei),
        eid=check_eid(identity.eid),
        sku=check_label("sku", identity.sku),
        tenant=check_label("tenant", identity.tenant),
        region=check_label("region", identity.region),
        policy_group=check_label("policy_group", identity.policy_group),
    )


__all__ = [
    "MAX_PSK_BYTES",
    "MIN_PSK_BYTES",
    "BootstrapCredential",
    "FactoryIdentity",
    "IdentityStatus",
    "SecurityMode",
    "check_eid",
    "check_endpoint",
    "check_fingerprint",
    "check_identity",
    "check_imei",
    "check_label",
    "check_psk_identity",
    "check_psk_key",
    "check_text",
    "eid_check_ok",
    "eid_with_check_digits",
    "luhn_ok",
    "parse_psk_key",
]
