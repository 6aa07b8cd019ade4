"""Integers far beyond 64 bits, from a device or an operator, are refused as typed errors.

Python refuses to render an ``int`` of more than 4 300 decimal digits as text; an error
message that formatted such a value raised ``ValueError`` from inside the error path, which
escaped the codecs untyped (HTTP 500 on a read, an unanswered Send, a dropped notification).
"""

from __future__ import annotations

import cbor2
import pytest

from lwm2m.codec import CodecError, decode, decode_nodes
from lwm2m.model import InvalidValue, Path, Value
from objects import BUILTIN_MODEL

HUGE = 10**5000
DIGITS = "1" * 5000
LIFETIME = Path.parse("/1/0/1")  # Integer resource

PAYLOADS = {
    "cbor": (60, cbor2.dumps(HUGE)),
    "senml-cbor": (112, cbor2.dumps([{0: "/1/0/1", 2: HUGE}])),
    "lwm2m-cbor": (11544, cbor2.dumps({1: {0: {1: HUGE}}})),
    "senml-json": (110, f'[{{"n":"/1/0/1","v":{DIGITS}}}]'.encode()),
    "lwm2m-json": (11543, f'{{"bn":"/1/0/","e":[{{"n":"1","v":{DIGITS}}}]}}'.encode()),
    "text": (0, DIGITS.encode()),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_huge_integer_from_a_device_is_a_codec_error(name: str) -> None:
    content_format, payload = PAYLOADS[name]
    with pytest.raises(CodecError):
        decode(content_format, payload, LIFETIME, BUILTIN_MODEL)


@pytest.mark.parametrize("name", ["senml-cbor", "lwm2m-cbor", "senml-json", "lwm2m-json"])
def test_a_huge_integer_in_a_send_or_notification_is_a_codec_error(name: str) -> None:
    content_format, payload = PAYLOADS[name]
    with pytest.raises(CodecError):
        decode_nodes(content_format, payload, BUILTIN_MODEL)


@pytest.mark.parametrize(
    "value", [HUGE, -HUGE, 2**64, -(2**63) - 1], ids=["huge", "-huge", "2^64", "-2^63-1"]
)
def test_integer_values_beyond_64_bits_are_refused_with_a_readable_message(value: int) -> None:
    with pytest.raises(InvalidValue) as refused:
        Value.integer(value)
    assert "64 signed bits" in str(refused.value)
    assert len(str(refused.value)) < 200


def test_unsigned_values_beyond_64_bits_are_refused_with_a_readable_message() -> None:
    with pytest.raises(InvalidValue) as refused:
        Value.unsigned(HUGE)
    assert "out of range" in str(refused.value)
    assert len(str(refused.value)) < 200
