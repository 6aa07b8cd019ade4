"""Compile the project's SGP.32 module once; encode, decode and dispatch ESipa messages.

Decoding is strict DER: asn1tools' decoder also accepts BER forms (long-form lengths, trailing
bytes), so every decode re-encodes the value and refuses input that differs. That keeps the
bytes a signature covers identical to the bytes the codec would produce, and it turns every
oddity into a typed `CodecError` instead of an exception from inside asn1tools.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asn1tools

from sgp32.asn1 import _asn1tools_fix
from sgp32.errors import EncodingError, MalformedMessage, NonCanonicalEncoding, UnknownMessageTag

_asn1tools_fix.apply()

MODULE_FILES = ("fleetloop_pkix.asn", "fleetloop_sgp32.asn")

# Outer tag of each ESipa message -> its alternative in EsipaMessageFromIpaToEim / ...FromEimToIpa.
IPA_TO_EIM: dict[bytes, str] = {
    b"\xbf\x39": "initiateAuthenticationRequestEsipa",
    b"\xbf\x3b": "authenticateClientRequestEsipa",
    b"\xbf\x3a": "getBoundProfilePackageRequestEsipa",
    b"\xbf\x41": "cancelSessionRequestEsipa",
    b"\xbf\x3d": "handleNotificationEsipa",
    b"\xbf\x4e": "transferEimPackageResponse",
    b"\xbf\x4f": "getEimPackageRequest",
    b"\xbf\x50": "provideEimPackageResult",
}
EIM_TO_IPA: dict[bytes, str] = {
    b"\xbf\x39": "initiateAuthenticationResponseEsipa",
    b"\xbf\x3b": "authenticateClientResponseEsipa",
    b"\xbf\x3a": "getBoundProfilePackageResponseEsipa",
    b"\xbf\x41": "cancelSessionResponseEsipa",
    b"\xbf\x4e": "transferEimPackageRequest",
    b"\xbf\x4f": "getEimPackageResponse",
    b"\xbf\x50": "provideEimPackageResultResponse",
}
_IPA_TO_EIM_TYPE = "EsipaMessageFromIpaToEim"
_EIM_TO_IPA_TYPE = "EsipaMessageFromEimToIpa"


@dataclass(frozen=True)
class EsipaMessage:
    """One decoded ESipa message: the CHOICE alternative's name and its value."""

    name: str
    body: Any


@functools.cache
def _spec() -> Any:
    """The compiled module; compiling takes ~0.5 s, so it happens once per process."""
    folder = resources.files("sgp32.asn1")
    texts = [folder.joinpath(name).read_text(encoding="utf-8") for name in MODULE_FILES]
    return asn1tools.compile_string("\n".join(texts), "der")


def type_names() -> frozenset[str]:
    """Every type the project's module defines (tests use it to cross-check the subset)."""
    return frozenset(_spec().types)


def encode(type_name: str, value: Any) -> bytes:
    """DER-encode `value` as `type_name`; a value that does not fit raises `EncodingError`."""
    try:
        return bytes(_spec().encode(type_name, value, check_constraints=True))
    except Exception as exc:  # asn1tools raises many types (KeyError, TypeError, its own)
        raise EncodingError(f"cannot encode {type_name}: {exc}") from exc


def decode(type_name: str, data: bytes) -> Any:
    """Decode DER `data` as `type_name`; anything but the canonical DER form is refused."""
    try:
        value = _spec().decode(type_name, bytes(data), check_constraints=True)
    except Exception as exc:  # random bytes reach IndexError, ValueError, ... inside asn1tools
        raise MalformedMessage(f"not a valid {type_name}: {exc}") from exc
    try:
        canonical = encode(type_name, value)
    except EncodingError as exc:
        raise MalformedMessage(f"not a valid {type_name}: {exc}") from exc
    if canonical != data:
        raise NonCanonicalEncoding(
            f"{type_name} is not in DER form (length or trailing bytes differ from the "
            "canonical encoding); SGP.32 requires DER"
        )
    return value


def outer_tag(data: bytes) -> bytes:
    """The identifier octets of the first TLV (one byte, or 0x1F-form multi-byte)."""
    if not data:
        raise MalformedMessage("empty message: no tag")
    if data[0] & 0x1F != 0x1F:
        return data[:1]
    for end in range(1, min(len(data), 5)):
        if not data[end] & 0x80:
            return data[: end + 1]
    raise MalformedMessage(f"truncated or oversized tag {data[:5].hex()}")


def _decode_direction(data: bytes, type_name: str, names: dict[bytes, str]) -> EsipaMessage:
    tag = outer_tag(data)
    expected = names.get(tag)
    if expected is None:
        known = ", ".join(t.hex().upper() for t in names)
        raise UnknownMessageTag(f"tag {tag.hex().upper()} is no {type_name} (known: {known})")
    name, body = decode(type_name, data)
    if name != expected:  # cannot happen with a consistent module; guards the table above
        raise MalformedMessage(f"tag {tag.hex().upper()} decoded as {name}, not {expected}")
    return EsipaMessage(name, body)


def decode_from_ipa(data: bytes) -> EsipaMessage:
    """Decode a message the IPA sent to the eIM, dispatched by its outer tag."""
    return _decode_direction(data, _IPA_TO_EIM_TYPE, IPA_TO_EIM)


def decode_from_eim(data: bytes) -> EsipaMessage:
    """Decode a message the eIM sent to the IPA (the simulated IPA's side)."""
    return _decode_direction(data, _EIM_TO_IPA_TYPE, EIM_TO_IPA)


def encode_to_ipa(name: str, body: Any) -> bytes:
    """Encode an eIM -> IPA message, e.g. ("getEimPackageResponse", ("eimPackageError", 1))."""
    return encode(_EIM_TO_IPA_TYPE, (name, body))


def encode_to_eim(name: str, body: Any) -> bytes:
    """Encode an IPA -> eIM message (the simulated IPA's side)."""
    return encode(_IPA_TO_EIM_TYPE, (name, body))
