"""Work around an asn1tools (0.169) decoder hang on malformed SEQUENCE OF / SET OF contents.

asn1tools' DER `ArrayType.decode_content` loops `while offset < end` and asks the element type
to decode at `offset`; an element with the wrong tag answers TAG_MISMATCH *without advancing*,
so the loop never ends (found by tests/sgp32/test_fuzz.py: e.g. `BF53 03 81 01 04`, an
EimAcknowledgements whose element is tagged 81 instead of 80). The replacement below is the same
loop with a progress check. It is applied once, when the codec module is imported.

Second: asn1tools decodes an OBJECT IDENTIFIER's first subidentifier as ``(x // 40, x % 40)``
also when it is 80 or more, where X.690 8.19.4 says the first arc is 2 and the second
``x - 80`` -- so ``2.999.10`` (the SGP.26 test SM-DP+ OIDs) came back as ``26.39.10``, and
re-encoded to the same bytes, so the strict-DER check could not see it. Found when the eIM
rebuilt a compact CancelSession's smdpOid (tests/sgp32/test_compact_download.py).
"""

from __future__ import annotations

from typing import Any

from asn1tools.codecs import DecodeError, ber, der


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


def _decode_oid_content(self: Any, data: bytes, offset: int, length: int) -> tuple[str, int]:
    end = offset + length
    if length == 0:
        raise DecodeError(f"{self.name}: empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for position in range(offset, end):
        value = (value << 7) | (data[position] & 0x7F)
        if not data[position] & 0x80:
            arcs.append(value)
            value = 0
    if data[end - 1] & 0x80:
        raise DecodeError(f"{self.name}: OBJECT IDENTIFIER ends inside a subidentifier")
    first = arcs[0]
    head = [first // 40, first % 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:]), end


def apply() -> None:
    der.ArrayType.decode_content = _decode_array_content
    ber.ObjectIdentifier.decode_content = _decode_oid_content
