"""CBOR single value (60): exact items per type, accepted variants, refusals, properties, fuzz."""

from __future__ import annotations

import math
import time

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.cbor_value import CborValueCodec
from lwm2m.codec.errors import CodecError, DecodeError, EncodeError, UnsupportedContentFormat
from lwm2m.model import (
    DataType,
    MultipleResource,
    ObjLink,
    Path,
    ResourceDefinition,
    ResourceInstance,
    SingleResource,
    Value,
)
from tests.codec.models import ALL_TYPES, ALL_TYPES_ID, TEST_MODEL
from tests.codec.strategies import values_of

CODEC = CborValueCodec()
SINGLE = {r.type: r.id for r in ALL_TYPES.resources.values() if not r.multiple}
UNKNOWN = Path.parse("/4242/0/1")


def single_path(data_type: DataType) -> Path:
    return Path.of(ALL_TYPES_ID, 0, SINGLE[data_type])


def decode_value(wire: bytes, path: Path) -> Value:
    node = CODEC.decode(wire, path, TEST_MODEL)
    assert isinstance(node, SingleResource | ResourceInstance)
    return node.value


EXACT = [
    (Value.string("abc"), "63616263"),
    (Value.string(""), "60"),
    (Value.integer(-1), "20"),
    (Value.integer(1000), "1903e8"),
    (Value.integer(-(2**63)), "3b7fffffffffffffff"),
    (Value.unsigned(2**64 - 1), "1bffffffffffffffff"),
    (Value.unsigned(0), "00"),
    (Value.float_(1.5), "fa3fc00000"),
    (Value.float_(0.1), "fb3fb999999999999a"),
    (Value.float_(math.inf), "fa7f800000"),
    (Value.boolean(True), "f5"),
    (Value.boolean(False), "f4"),
    (Value.opaque(b"\x01\x02\x03"), "43010203"),
    (Value.time(1795602898), "c11a6b06b9d2"),
    (Value.time(-1), "c120"),
    (Value.objlnk(3, 0), "63333a30"),
    (Value.corelnk("</1>"), "643c2f313e"),
]


@pytest.mark.parametrize(("value", "wire_hex"), EXACT, ids=lambda x: repr(x)[:30])
def test_each_type_is_one_exact_cbor_item(value: Value, wire_hex: str) -> None:
    path = single_path(value.type)
    node = SingleResource(path.ids[2], value)
    assert CODEC.encode(node, path, TEST_MODEL).hex() == wire_hex
    assert CODEC.decode(bytes.fromhex(wire_hex), path, TEST_MODEL) == node


@pytest.mark.parametrize(
    ("data_type", "wire_hex", "expected"),
    [
        (DataType.TIME, "1a6b06b9d2", Value.time(1795602898)),  # untagged time
        (DataType.TIME, "c1fb41dac1ae74800000", Value.time(1795602898)),  # tag 1 + float
        (DataType.FLOAT, "f93e00", Value.float_(1.5)),  # half precision
        (DataType.FLOAT, "fb3ff8000000000000", Value.float_(1.5)),  # double
        (DataType.FLOAT, "02", Value.float_(2.0)),  # an integer where a float is due
        (DataType.STRING, "7f61616162ff", Value.string("ab")),  # indefinite text
        (DataType.OPAQUE, "5f4101ff", Value.opaque(b"\x01")),  # indefinite bytes
        (DataType.UNSIGNED_INTEGER, "1b8000000000000000", Value.unsigned(2**63)),
        (DataType.INTEGER, "1800", Value.integer(0)),  # non-shortest head
    ],
)
def test_other_valid_encodings_are_read(
    data_type: DataType, wire_hex: str, expected: Value
) -> None:
    assert decode_value(bytes.fromhex(wire_hex), single_path(data_type)) == expected


@pytest.mark.parametrize(
    ("wire_hex", "expected"),
    [
        ("63616263", Value.string("abc")),
        ("43010203", Value.opaque(b"\x01\x02\x03")),
        ("20", Value.integer(-1)),
        ("1b8000000000000000", Value.unsigned(2**63)),
        ("fa3fc00000", Value.float_(1.5)),
        ("f5", Value.boolean(True)),
        ("c11a6b06b9d2", Value.time(1795602898)),
    ],
)
def test_a_resource_the_model_lacks_is_typed_by_its_cbor_type(
    wire_hex: str, expected: Value
) -> None:
    assert decode_value(bytes.fromhex(wire_hex), UNKNOWN) == expected


@pytest.mark.parametrize(
    ("data_type", "wire_hex", "offset"),
    [
        (DataType.STRING, "", 0),  # empty payload
        (DataType.STRING, "80", 0),  # array
        (DataType.STRING, "a0", 0),  # map
        (DataType.STRING, "c06161", 0),  # tag 0
        (DataType.STRING, "c16161", 0),  # tag 1 on a string
        (DataType.INTEGER, "0102", 1),  # trailing byte
        (DataType.INTEGER, "1903", 0),  # truncated head
        (DataType.OPAQUE, "5bffffffffffffffff", 0),  # length beyond payload
        (DataType.OPAQUE, "5f41", 1),  # indefinite string without its break
        (DataType.OPAQUE, "5f6161ff", 1),  # text chunk inside a byte string
        (DataType.INTEGER, "f5", 0),  # bool for an integer
        (DataType.INTEGER, "1b8000000000000000", 0),  # beyond int64
        (DataType.UNSIGNED_INTEGER, "20", 0),  # negative
        (DataType.STRING, "62fffe", 0),  # invalid UTF-8
        (DataType.INTEGER, "1c", 0),  # reserved additional information
        (DataType.INTEGER, "ff", 0),  # lone break
        (DataType.INTEGER, "f7", 0),  # undefined
        (DataType.INTEGER, "f0", 0),  # simple value
        (DataType.TIME, "c1fb3ff8000000000000", 0),  # 1.5 s is not a whole second
        (DataType.FLOAT, "1b0020000000000001", 0),  # 2**53 + 1 is not a binary64
        (DataType.OBJLNK, "6133", 0),  # "3" is no object link
        (DataType.BOOLEAN, "01", 0),  # 1 is not a boolean
    ],
)
def test_malformed_or_mistyped_items_are_decode_errors(
    data_type: DataType, wire_hex: str, offset: int
) -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(bytes.fromhex(wire_hex), single_path(data_type), TEST_MODEL)
    assert caught.value.offset == offset
    assert caught.value.content_format == 60


def test_executable_resource_is_null_or_empty() -> None:
    path = Path.of(ALL_TYPES_ID, 0, 200)
    assert CODEC.encode(SingleResource(200, Value.none()), path, TEST_MODEL) == b"\xf6"
    assert decode_value(b"\xf6", path) == Value.none()
    assert decode_value(b"", path) == Value.none()


def test_integer_written_to_a_time_resource_gets_the_time_tag() -> None:
    wire = CODEC.encode(SingleResource(13, Value.integer(7)), Path.parse("/3/0/13"), TEST_MODEL)
    assert wire == b"\xc1\x07"


@pytest.mark.parametrize("path", ["/3", "/3/0", "/3/0/7"])
def test_containers_are_not_a_single_value(path: str) -> None:
    with pytest.raises(UnsupportedContentFormat):
        CODEC.decode(b"\x01", Path.parse(path), TEST_MODEL)


def test_encoding_a_multiple_resource_or_a_wrong_type_is_refused() -> None:
    multi = MultipleResource(7, DataType.INTEGER, {0: Value.integer(1)})
    with pytest.raises(UnsupportedContentFormat):
        CODEC.encode(multi, Path.parse("/3/0/7"), TEST_MODEL)
    with pytest.raises(EncodeError):
        CODEC.encode(SingleResource(0, Value.integer(1)), Path.parse("/3/0/0"), TEST_MODEL)


def test_a_string_with_a_lone_surrogate_is_an_encode_error() -> None:
    with pytest.raises(EncodeError):
        CODEC.encode(SingleResource(0, Value.string("\ud800")), Path.parse("/3/0/0"), TEST_MODEL)


_TYPED = [r for r in ALL_TYPES.resources.values() if r.type is not DataType.NONE]


@st.composite
def cbor_nodes(draw: st.DrawFn) -> tuple[Path, SingleResource | ResourceInstance]:
    definition: ResourceDefinition = draw(st.sampled_from(_TYPED))
    value = draw(values_of(definition.type))
    if definition.multiple:
        riid = draw(st.integers(0, 65534))
        return Path.of(ALL_TYPES_ID, 2, definition.id, riid), ResourceInstance(riid, value)
    return Path.of(ALL_TYPES_ID, 2, definition.id), SingleResource(definition.id, value)


@given(cbor_nodes())
@settings(max_examples=200, deadline=None)
def test_every_value_round_trips(case: tuple[Path, SingleResource | ResourceInstance]) -> None:
    path, node = case
    wire = CODEC.encode(node, path, TEST_MODEL)
    assert CODEC.decode(wire, path, TEST_MODEL) == node
    if isinstance(node.value.value, int) and node.value.type is DataType.TIME:
        assert wire[0] == 0xC1  # tag 1; cbor2 would turn it into a (range-limited) datetime
        wire = wire[1:]
    raw = node.value.value
    assert cbor2.loads(wire) == (str(raw) if isinstance(raw, ObjLink) else raw)  # cbor2 agrees


@given(st.floats())
@settings(max_examples=150, deadline=None)
def test_every_float_round_trips_in_the_shortest_lossless_width(number: float) -> None:
    path = single_path(DataType.FLOAT)
    wire = CODEC.encode(SingleResource(path.ids[2], Value.float_(number)), path, TEST_MODEL)
    assert decode_value(wire, path) == Value.float_(number)
    assert len(wire) in (5, 9)


_FUZZ_PATHS = [single_path(t) for t in SINGLE] + [UNKNOWN, Path.of(ALL_TYPES_ID, 0, 200)]
_SEEDS = [bytes.fromhex(h) for _, h in EXACT] + [bytes.fromhex("7f61616162ff")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(data)))
        if choice == 0 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif choice == 1:
            data.insert(pos, draw(st.integers(0, 255)))
        else:
            del data[pos:]
    return bytes(data)


@given(st.sampled_from(_FUZZ_PATHS), st.binary(max_size=40) | mutated())
@settings(max_examples=200, deadline=None)
def test_any_bytes_decode_or_raise_a_codec_error(path: Path, wire: bytes) -> None:
    try:
        node = CODEC.decode(wire, path, TEST_MODEL)
    except CodecError:
        return
    assert CODEC.decode(CODEC.encode(node, path, TEST_MODEL), path, TEST_MODEL) == node


@pytest.mark.parametrize(
    "wire", [b"\x81" * 100_000, b"\x9f" * 100_000, b"\xc1" * 100_000, b"\x7f" + b"\x60" * 20_000]
)
def test_hostile_nesting_is_refused_fast(wire: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(DecodeError):
        CODEC.decode(wire, UNKNOWN, TEST_MODEL)
    assert time.perf_counter() - start < 1.0
