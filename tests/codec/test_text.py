"""Plain text (0): exact spellings per type, strict parsing, level refusals, properties, fuzz."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.errors import CodecError, DecodeError, EncodeError, UnsupportedContentFormat
from lwm2m.codec.text import TextCodec
from lwm2m.model import (
    DataType,
    MultipleResource,
    ObjectInstance,
    Path,
    ResourceDefinition,
    ResourceInstance,
    SingleResource,
    Value,
)
from tests.codec.models import ALL_TYPES, ALL_TYPES_ID, TEST_MODEL
from tests.codec.strategies import values_of

CODEC = TextCodec()
SINGLE = {r.type: r.id for r in ALL_TYPES.resources.values() if not r.multiple}
MULTI = {r.type: r.id for r in ALL_TYPES.resources.values() if r.multiple}
FUZZ = settings(max_examples=150, deadline=None)


def single_path(data_type: DataType) -> Path:
    return Path.of(ALL_TYPES_ID, 0, SINGLE[data_type])


EXACT = [
    (Value.string("Open Mobile Alliance"), b"Open Mobile Alliance"),
    (Value.string("Zürich ✓"), "Zürich ✓".encode()),
    (Value.string(""), b""),
    (Value.integer(-42), b"-42"),
    (Value.integer(-(2**63)), b"-9223372036854775808"),
    (Value.unsigned(2**64 - 1), b"18446744073709551615"),
    (Value.float_(0.1), b"0.1"),
    (Value.float_(-1.5e300), b"-1.5e+300"),
    (Value.float_(2.0), b"2.0"),
    (Value.boolean(True), b"1"),
    (Value.boolean(False), b"0"),
    (Value.opaque(b"\x00\xff\x10"), b"AP8Q"),
    (Value.opaque(b""), b""),
    (Value.time(1795602898), b"1795602898"),
    (Value.objlnk(3, 0), b"3:0"),
    (Value.objlnk(65535, 65535), b"65535:65535"),
    (Value.corelnk("</3/0>;ver=1.1"), b"</3/0>;ver=1.1"),
]


@pytest.mark.parametrize(("value", "wire"), EXACT, ids=lambda x: repr(x)[:30])
def test_each_type_has_one_exact_spelling(value: Value, wire: bytes) -> None:
    path = single_path(value.type)
    node = SingleResource(path.ids[2], value)
    assert CODEC.encode(node, path, TEST_MODEL) == wire
    assert CODEC.decode(wire, path, TEST_MODEL) == node


def test_a_resource_instance_reads_and_writes_as_text() -> None:
    path = Path.of(ALL_TYPES_ID, 1, MULTI[DataType.INTEGER], 7)
    node = ResourceInstance(7, Value.integer(31812))
    assert CODEC.encode(node, path, TEST_MODEL) == b"31812"
    assert CODEC.decode(b"31812", path, TEST_MODEL) == node


def test_a_resource_the_model_lacks_reads_as_string() -> None:
    assert CODEC.decode(b"120", Path.parse("/1/0/1"), TEST_MODEL) == SingleResource(
        1, Value.string("120")
    )


def test_integer_value_may_be_written_to_a_time_resource() -> None:
    path = Path.parse("/3/0/13")
    assert CODEC.encode(SingleResource(13, Value.integer(5)), path, TEST_MODEL) == b"5"


def test_executable_resource_is_empty_text() -> None:
    path = Path.of(ALL_TYPES_ID, 0, 200)
    assert CODEC.decode(b"", path, TEST_MODEL) == SingleResource(200, Value.none())
    assert CODEC.encode(SingleResource(200, Value.none()), path, TEST_MODEL) == b""
    with pytest.raises(DecodeError):
        CODEC.decode(b"x", path, TEST_MODEL)


@pytest.mark.parametrize(
    ("data_type", "wire", "offset"),
    [
        (DataType.INTEGER, b"1.0", 1),
        (DataType.INTEGER, b" 1", 0),
        (DataType.INTEGER, b"1\n", 1),
        (DataType.INTEGER, b"+1", 0),
        (DataType.INTEGER, b"", 0),
        (DataType.INTEGER, b"1_000", 1),
        (DataType.INTEGER, "٣".encode(), 0),
        (DataType.INTEGER, b"9223372036854775808", 0),
        (DataType.TIME, b"1e9", 1),
        (DataType.UNSIGNED_INTEGER, b"-1", 0),
        (DataType.UNSIGNED_INTEGER, b"18446744073709551616", 0),
        (DataType.FLOAT, b"1.0.0", 0),
        (DataType.FLOAT, b"", 0),
        (DataType.FLOAT, b"1e999", 0),
        (DataType.FLOAT, b" 1.5", 0),
        (DataType.FLOAT, b"0x10", 1),
        (DataType.BOOLEAN, b"true", 0),
        (DataType.BOOLEAN, b"2", 0),
        (DataType.BOOLEAN, b"", 0),
        (DataType.OBJLNK, b"3", 0),
        (DataType.OBJLNK, b"3:0:1", 0),
        (DataType.OBJLNK, b"70000:0", 0),
        (DataType.OBJLNK, "³:0".encode(), 0),
        (DataType.OPAQUE, b"AP8", 0),
        (DataType.OPAQUE, b"AP!Q", 2),
        (DataType.STRING, b"ab\xff", 2),
        (DataType.CORELNK, b"\xc3", 0),
    ],
)
def test_malformed_text_is_a_decode_error_with_offset(
    data_type: DataType, wire: bytes, offset: int
) -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(wire, single_path(data_type), TEST_MODEL)
    assert caught.value.offset == offset
    assert caught.value.content_format == 0


@pytest.mark.parametrize(
    ("wire", "expected"),
    [(b"nan", math.nan), (b"inf", math.inf), (b"-inf", -math.inf), (b"-Infinity", -math.inf)],
)
def test_non_finite_floats_read_in_their_usual_spellings(wire: bytes, expected: float) -> None:
    node = CODEC.decode(wire, single_path(DataType.FLOAT), TEST_MODEL)
    assert node == SingleResource(SINGLE[DataType.FLOAT], Value.float_(expected))


@pytest.mark.parametrize("path", ["/3", "/3/0", "/3/0/7"])
def test_objects_instances_and_multiple_resources_are_not_text(path: str) -> None:
    with pytest.raises(UnsupportedContentFormat) as caught:
        CODEC.decode(b"1", Path.parse(path), TEST_MODEL)
    assert caught.value.content_format == 0


def test_encoding_a_container_node_is_an_unsupported_format() -> None:
    multi = MultipleResource(7, DataType.INTEGER, {0: Value.integer(1)})
    with pytest.raises(UnsupportedContentFormat):
        CODEC.encode(multi, Path.parse("/3/0/7"), TEST_MODEL)
    with pytest.raises(UnsupportedContentFormat):
        CODEC.encode(ObjectInstance(0), Path.parse("/3/0"), TEST_MODEL)


@pytest.mark.parametrize(
    ("node", "path"),
    [
        (SingleResource(1, Value.string("x")), "/3/0/0"),  # id does not match the path
        (SingleResource(9, Value.string("x")), "/3/0/9"),  # String value for an Integer
        (ResourceInstance(0, Value.string("x")), "/3/0/0"),  # instance at a resource path
        (ResourceInstance(0, Value.string("x")), "/3/0/0/0"),  # /3/0/0 is single
    ],
)
def test_a_node_that_contradicts_path_or_model_is_an_encode_error(
    node: SingleResource | ResourceInstance, path: str
) -> None:
    with pytest.raises(EncodeError):
        CODEC.encode(node, Path.parse(path), TEST_MODEL)


def test_a_resource_instance_of_a_single_resource_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(b"x", Path.parse("/3/0/0/0"), TEST_MODEL)


_TYPED = [r for r in ALL_TYPES.resources.values() if r.type is not DataType.NONE]


@st.composite
def text_nodes(draw: st.DrawFn) -> tuple[Path, SingleResource | ResourceInstance]:
    definition: ResourceDefinition = draw(st.sampled_from(_TYPED))
    value = draw(values_of(definition.type))
    if definition.multiple:
        riid = draw(st.integers(0, 65534))
        return Path.of(ALL_TYPES_ID, 0, definition.id, riid), ResourceInstance(riid, value)
    return Path.of(ALL_TYPES_ID, 0, definition.id), SingleResource(definition.id, value)


@given(text_nodes())
@settings(max_examples=200, deadline=None)
def test_every_value_round_trips(case: tuple[Path, SingleResource | ResourceInstance]) -> None:
    path, node = case
    assert CODEC.decode(CODEC.encode(node, path, TEST_MODEL), path, TEST_MODEL) == node


@given(st.floats())
@settings(max_examples=200, deadline=None)
def test_every_float_round_trips_exactly_with_the_sign_of_zero(number: float) -> None:
    path = single_path(DataType.FLOAT)
    wire = CODEC.encode(SingleResource(path.ids[2], Value.float_(number)), path, TEST_MODEL)
    back = CODEC.decode(wire, path, TEST_MODEL)
    assert isinstance(back, SingleResource) and isinstance(back.value.value, float)
    assert back.value == Value.float_(number)  # NaN equals NaN here; its sign is not kept
    if not math.isnan(number):
        assert math.copysign(1, back.value.value) == math.copysign(1, number)


_ALL_PATHS = [single_path(t) for t in SINGLE] + [Path.of(ALL_TYPES_ID, 0, 200)]


@given(st.sampled_from(_ALL_PATHS), st.binary(max_size=40) | st.text(max_size=30).map(str.encode))
@FUZZ
def test_any_bytes_decode_or_raise_a_codec_error(path: Path, wire: bytes) -> None:
    try:
        node = CODEC.decode(wire, path, TEST_MODEL)
    except CodecError:
        return
    assert CODEC.decode(CODEC.encode(node, path, TEST_MODEL), path, TEST_MODEL) == node
