"""The stored JSON form of values round-trips every LwM2M value exactly (property tests)."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lwm2m.model import DataType, Value
from lwm2m.store import CorruptRecord, value_from_json, value_to_json
from lwm2m.store.jsonvalue import value_to_obj


def _bits(x: float) -> int:
    return int(struct.unpack(">Q", struct.pack(">d", x))[0])


def _from_bits(bits: int) -> float:
    return float(struct.unpack(">d", struct.pack(">Q", bits))[0])


# Every IEEE binary64 bit pattern: NaNs with any payload and sign, infinities, -0.0, subnormals.
any_float = st.one_of(st.floats(), st.integers(0, 2**64 - 1).map(_from_bits))

values = st.one_of(
    st.text().filter(lambda t: "\x00" not in t).map(Value.string),  # NUL: no LwM2M string
    st.text().filter(lambda t: "\x00" not in t).map(Value.corelnk),
    st.integers(-(2**63), 2**63 - 1).map(Value.integer),
    st.integers(-(2**63), 2**63 - 1).map(Value.time),
    st.integers(0, 2**64 - 1).map(Value.unsigned),
    any_float.map(Value.float_),
    st.booleans().map(Value.boolean),
    st.binary().map(Value.opaque),
    st.builds(Value.objlnk, st.integers(0, 65535), st.integers(0, 65535)),
    st.just(Value.none()),
)


def _identical(a: Value, b: Value) -> bool:
    """Equal, and for floats equal bit for bit (Value.__eq__ treats all NaNs as equal)."""
    if a.type is not b.type or type(a.value) is not type(b.value):
        return False
    if isinstance(a.value, float) and isinstance(b.value, float):
        return _bits(a.value) == _bits(b.value)
    return a == b


@given(values)
def test_every_value_round_trips_exactly(value: Value) -> None:
    text = value_to_json(value)
    assert _identical(value_from_json(text), value)


@given(values)
def test_stored_text_is_strict_json_and_stable(value: Value) -> None:
    text = value_to_json(value)

    def no_constants(name: str) -> object:
        raise AssertionError(f"non-standard JSON constant {name} in {text}")

    obj = json.loads(text, parse_constant=no_constants)
    assert obj["t"] == value.type.value
    assert value_to_json(value_from_json(text)) == text


DOCUMENTED = [
    (Value.string("ä"), '{"t":"String","v":"ä"}'),
    (Value.corelnk("</3/0>"), '{"t":"Corelnk","v":"</3/0>"}'),
    (Value.integer(-(2**63)), '{"t":"Integer","v":-9223372036854775808}'),
    (Value.unsigned(2**64 - 1), '{"t":"Unsigned Integer","v":18446744073709551615}'),
    (Value.time(1700000000), '{"t":"Time","v":1700000000}'),
    (Value.float_(0.1), '{"t":"Float","v":0.1}'),
    (Value.float_(-0.0), '{"t":"Float","v":-0.0}'),
    (Value.float_(math.inf), '{"t":"Float","v":"Infinity"}'),
    (Value.float_(-math.inf), '{"t":"Float","v":"-Infinity"}'),
    (Value.float_(math.nan), '{"t":"Float","v":"NaN"}'),
    (Value.float_(_from_bits(0xFFF0000000000001)), '{"t":"Float","v":"NaN:fff0000000000001"}'),
    (Value.boolean(False), '{"t":"Boolean","v":false}'),
    (Value.opaque(b"\x00\xff"), '{"t":"Opaque","v":"AP8="}'),
    (Value.objlnk(3, 0), '{"t":"Objlnk","v":"3:0"}'),
    (Value.none(), '{"t":"none"}'),
]


@pytest.mark.parametrize(("value", "text"), DOCUMENTED)
def test_documented_encodings(value: Value, text: str) -> None:
    assert value_to_json(value) == text
    assert _identical(value_from_json(text), value)


def test_an_integer_stays_an_integer_and_a_float_stays_a_float() -> None:
    assert value_from_json('{"t":"Float","v":1}').value.__class__ is float
    with pytest.raises(CorruptRecord):
        value_from_json('{"t":"Integer","v":1.0}')


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"v":1}',
        '{"t":"Nope","v":1}',
        '{"t":"Integer"}',
        '{"t":"Integer","v":"1"}',
        '{"t":"Integer","v":9223372036854775808}',
        '{"t":"Unsigned Integer","v":-1}',
        '{"t":"Boolean","v":1}',
        '{"t":"Float","v":true}',
        '{"t":"Float","v":"nan"}',
        '{"t":"Float","v":"NaN:0000000000000001"}',
        '{"t":"Float","v":NaN}',
        '{"t":"Opaque","v":"***"}',
        '{"t":"Opaque","v":7}',
        '{"t":"Objlnk","v":"3"}',
        '{"t":"Objlnk","v":"3:70000"}',
        '{"t":"String","v":5}',
    ],
)
def test_anything_else_is_reported_as_a_corrupt_record(text: str) -> None:
    with pytest.raises(CorruptRecord):
        value_from_json(text)


def test_the_documented_encodings_cover_every_data_type() -> None:
    """If the model grows a data type, the encoding (and this table) must grow with it."""
    assert {value.type for value, _ in DOCUMENTED} == set(DataType)


@given(values)
def test_the_fast_path_writes_what_json_dumps_writes(value: Value) -> None:
    reference = json.dumps(
        value_to_obj(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    assert value_to_json(value) == reference
