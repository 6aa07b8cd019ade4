"""Work around an asn1tools (0.169) decoder hang on malformed SEQUENCE OF / SET OF contents.

asn1tools' DER `ArrayType.decode_content` loops `while offset < end` and asks the element type
to decode at `offset`; an element with the wrong tag answers TAG_MISMATCH *without advancing*,
so the loop never ends (found by tests/sgp32/test_fuzz.py: e.g. `BF53 03 81 01 04`, an
EimAcknowledgements whose element is tagged 81 instead of 80). The replacement below is the same
loop with a progress check. It is applied once, when the codec module is imported.
"""

from __future__ import annotations

from typing import Any

from asn1tools.codecs import DecodeError, der


def _decode_array_content(self: Any, data: bytes, offset: int, length: int) -> tuple[Any, int]:
    decoded = []
    start = offset
    while offset - start < length:
        element, next_offset = self.element_type.decode(data, offset)
        if next_offset <= offset:
            raise DecodeError(f"{self.name}: element at offset {offset} has an unexpected tag")
        decoded.append(element)
        offset = next_offset
    return decoded, offset


def apply() -> None:
    der.ArrayType.decode_content = _decode_array_content
