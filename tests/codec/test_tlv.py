"""OMA TLV (11542): exact bytes per type and level, client quirks, malformed input, properties."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.errors import CodecError, DecodeError, EncodeError, UnsupportedContentFormat
from lwm2m.codec.tlv import NewInstance, TlvCodec, encode_tlv_value
from lwm2m.model import (
    DataType,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    Path,
    ResourceInstance,
    SingleResource,
    Value,
    iter_leaves,
)
from tests.codec.models import ALL_TYPES, ALL_TYPES_ID, TEST_MODEL
from tests.codec.strategies import nodes_with_paths

CODEC = TlvCodec()
SINGLE = {r.type: r.id for r in ALL_TYPES.resources.values() if not r.multiple}
MULTI = {r.type: r.id for r in ALL_TYPES.resources.values() if r.multiple}


def at(path: str) -> Path:
    return Path.parse(path)


def res(data_type: DataType) -> Path:
    return Path.of(ALL_TYPES_ID, 0, SINGLE[data_type])


# -- exact bytes --------------------------------------------------------------------------------
VALUES = [
    (Value.string("vec"), "c300766563"),  # 3-bit length in the type byte
    (Value.string(""), "c000"),
    (Value.integer(0), "c10100"),
    (Value.integer(127), "c1017f"),
    (Value.integer(128), "c2010080"),
    (Value.integer(-129), "c201ff7f"),
    (Value.integer(2**31), "c801080000000080000000"),  # 8 bytes: 4 would read negative
    (Value.integer(-(2**63)), "c801088000000000000000"),
    (Value.unsigned(255), "c102ff"),  # unsigned: one byte suffices
    (Value.unsigned(256), "c2020100"),
    (Value.unsigned(2**63), "c802088000000000000000"),
    (Value.unsigned(2**64 - 1), "c80208ffffffffffffffff"),
    (Value.float_(1.5), "c4033fc00000"),  # binary32 is lossless
    (Value.float_(0.1), "c803083fb999999999999a"),  # binary32 would lose bits
    (Value.boolean(True), "c10401"),
    (Value.boolean(False), "c10400"),
    (Value.opaque(b"\x01\x02"), "c2050102"),
    (Value.time(1795602898), "c4066b06b9d2"),
    (Value.time(3163094021), "c8060800000000bc88fc05"),  # wakaama's offset clock: 8 bytes
    (Value.objlnk(33606, 0), "c40783460000"),
    (Value.corelnk("</1>"), "c4083c2f313e"),
]


@pytest.mark.parametrize(("value", "wire_hex"), VALUES, ids=lambda x: repr(x)[:34])
def test_each_type_encodes_to_exact_bytes(value: Value, wire_hex: str) -> None:
    path = res(value.type)
    node = SingleResource(path.ids[2], value)
    assert CODEC.encode(node, path, TEST_MODEL).hex() == wire_hex
    assert CODEC.decode(bytes.fromhex(wire_hex), path, TEST_MODEL) == node


@pytest.mark.parametrize(
    ("data_type", "value_hex", "expected"),
    [
        (DataType.INTEGER, "0000002a", 42),  # 4 bytes where 1 would do
        (DataType.INTEGER, "ffffffffffffffff", -1),
        (DataType.UNSIGNED_INTEGER, "ffffffff", 2**32 - 1),
        (DataType.UNSIGNED_INTEGER, "ffffffffffffffff", 2**64 - 1),
        (DataType.FLOAT, "3ff8000000000000", 1.5),  # 8 bytes where 4 would do
        (DataType.TIME, "0000000000000001", 1),
    ],
)
def test_wider_than_needed_values_decode(
    data_type: DataType, value_hex: str, expected: object
) -> None:
    raw = bytes.fromhex(value_hex)
    rid = SINGLE[data_type]
    header = [0xC0 | len(raw), rid] if len(raw) < 8 else [0xC8, rid, len(raw)]
    wire = bytes(header) + raw
    node = CODEC.decode(wire, res(data_type), TEST_MODEL)
    assert node == SingleResource(SINGLE[data_type], Value(data_type, expected))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "header_hex"),
    [(7, "c7"), (8, "c8{id}08"), (255, "c8{id}ff"), (256, "d0{id}0100"), (70000, "d8{id}011170")],
)
def test_length_uses_the_shortest_of_type_bits_and_one_two_three_bytes(
    size: int, header_hex: str
) -> None:
    path = res(DataType.OPAQUE)
    node = SingleResource(path.ids[2], Value.opaque(bytes(size)))
    wire = CODEC.encode(node, path, TEST_MODEL)
    rid = f"{path.ids[2]:02x}"
    header = header_hex.format(id=rid) if "{id}" in header_hex else header_hex + rid
    assert wire.hex().startswith(header)
    assert len(wire) == len(header) // 2 + size
    assert CODEC.decode(wire, path, TEST_MODEL) == node


def test_ids_above_255_use_the_16_bit_form() -> None:
    path = at("/4242/0/300")  # unknown object: Opaque
    node = SingleResource(300, Value.opaque(b"\xaa"))
    assert CODEC.encode(node, path, TEST_MODEL).hex() == "e1012caa"
    assert CODEC.decode(bytes.fromhex("e1012caa"), path, TEST_MODEL) == node
    assert CODEC.decode(bytes.fromhex("e1012caa"), at("/4242/0"), TEST_MODEL) == ObjectInstance.of(
        0, [node]
    )


def test_a_value_over_16_mib_cannot_be_encoded() -> None:
    path = res(DataType.OPAQUE)
    with pytest.raises(EncodeError):
        CODEC.encode(SingleResource(path.ids[2], Value.opaque(bytes(1 << 24))), path, TEST_MODEL)


# -- levels -------------------------------------------------------------------------------------
VOLTAGES = MultipleResource(7, DataType.INTEGER, {0: Value.integer(3800), 1: Value.integer(5000)})
VOLTAGES_HEX = "88070842000ed842011388"


def test_multiple_resource_is_nested_resource_instances() -> None:
    assert CODEC.encode(VOLTAGES, at("/3/0/7"), TEST_MODEL).hex() == VOLTAGES_HEX
    assert CODEC.decode(bytes.fromhex(VOLTAGES_HEX), at("/3/0/7"), TEST_MODEL) == VOLTAGES


def test_resource_instance_is_one_resource_instance_tlv() -> None:
    node = ResourceInstance(1, Value.integer(5000))
    assert CODEC.encode(node, at("/3/0/7/1"), TEST_MODEL).hex() == "42011388"
    assert CODEC.decode(bytes.fromhex("42011388"), at("/3/0/7/1"), TEST_MODEL) == node


def test_resource_instance_inside_its_multiple_resource_tlv_decodes() -> None:
    wire = bytes.fromhex("880704" + "42011388")
    assert CODEC.decode(wire, at("/3/0/7/1"), TEST_MODEL) == ResourceInstance(
        1, Value.integer(5000)
    )


def test_bare_resource_instances_at_a_resource_path_decode() -> None:
    wire = bytes.fromhex("42000ed842011388")
    assert CODEC.decode(wire, at("/3/0/7"), TEST_MODEL) == VOLTAGES


INSTANCE = ObjectInstance.of(0, [SingleResource(0, Value.string("vec")), VOLTAGES])
INSTANCE_HEX = "c300766563" + VOLTAGES_HEX


def test_instance_is_its_resources_and_object_wraps_instances() -> None:
    assert CODEC.encode(INSTANCE, at("/3/0"), TEST_MODEL).hex() == INSTANCE_HEX
    obj = LwM2MObject.of(3, [INSTANCE])
    obj_hex = "0800" + format(len(INSTANCE_HEX) // 2, "02x") + INSTANCE_HEX
    assert CODEC.encode(obj, at("/3"), TEST_MODEL).hex() == obj_hex
    assert CODEC.decode(bytes.fromhex(obj_hex), at("/3"), TEST_MODEL) == obj


def test_instance_wrapped_in_its_instance_tlv_decodes_the_same() -> None:
    wrapped = bytes.fromhex("0800" + format(len(INSTANCE_HEX) // 2, "02x") + INSTANCE_HEX)
    assert CODEC.decode(wrapped, at("/3/0"), TEST_MODEL) == INSTANCE


def test_single_instance_object_may_omit_its_instance_tlv() -> None:
    assert CODEC.decode(bytes.fromhex(INSTANCE_HEX), at("/3"), TEST_MODEL) == LwM2MObject.of(
        3, [INSTANCE]
    )


def test_multi_instance_object_needs_instance_tlvs() -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(bytes.fromhex("c10100"), at(f"/{ALL_TYPES_ID}"), TEST_MODEL)


def test_empty_payloads() -> None:
    assert CODEC.decode(b"", at("/1"), TEST_MODEL) == LwM2MObject(1)  # Anjay's Bootstrap-Read
    assert CODEC.decode(b"", at("/3/0"), TEST_MODEL) == ObjectInstance(0)
    assert CODEC.decode(b"", at("/3/0/7"), TEST_MODEL) == MultipleResource(7, DataType.INTEGER)
    empty = MultipleResource(7, DataType.INTEGER)
    assert CODEC.encode(empty, at("/3/0/7"), TEST_MODEL) == b"\x80\x07"
    with pytest.raises(DecodeError):
        CODEC.decode(b"", at("/3/0/0"), TEST_MODEL)


def test_resources_the_model_lacks_decode_as_opaque() -> None:
    wire = bytes.fromhex("c10178" + "8302410101")
    node = CODEC.decode(wire, at("/1/0"), TEST_MODEL)
    assert node == ObjectInstance.of(
        0,
        [
            SingleResource(1, Value.opaque(b"\x78")),
            MultipleResource(2, DataType.OPAQUE, {1: Value.opaque(b"\x01")}),
        ],
    )


def test_executable_resource_is_an_empty_tlv() -> None:
    path = Path.of(ALL_TYPES_ID, 0, 200)
    assert CODEC.encode(SingleResource(200, Value.none()), path, TEST_MODEL) == b"\xc0\xc8"
    assert CODEC.decode(b"\xc0\xc8", path, TEST_MODEL) == SingleResource(200, Value.none())


def test_the_root_path_is_not_a_tlv_node() -> None:
    with pytest.raises(UnsupportedContentFormat):
        CODEC.decode(b"", Path(()), TEST_MODEL)


# -- Create -------------------------------------------------------------------------------------
def test_create_without_instance_id_is_bare_resources() -> None:
    wire = bytes.fromhex("c10066c201012c")  # the Create POST /1 both clients received
    created = CODEC.decode_create(wire, at("/1"), TEST_MODEL)
    assert created == [
        NewInstance(
            None, (SingleResource(0, Value.opaque(b"f")), SingleResource(1, Value.opaque(b"\x01,")))
        )
    ]
    assert CODEC.encode_create(created, at("/1"), TEST_MODEL) == wire


def test_create_with_instance_ids_is_instance_tlvs() -> None:
    wire = bytes.fromhex("0307c1012a")  # wakaama test object, instance 7
    created = CODEC.decode_create(wire, at("/31024"), TEST_MODEL)
    assert created == [NewInstance(7, (SingleResource(1, Value.opaque(b"*")),))]
    assert CODEC.encode_create(created, at("/31024"), TEST_MODEL) == wire
    with pytest.raises(DecodeError):
        CODEC.decode(bytes.fromhex("c10066"), at("/1"), TEST_MODEL)  # not a Read answer


def test_create_refuses_non_object_paths_and_mixed_ids() -> None:
    with pytest.raises(DecodeError):
        CODEC.decode_create(b"", at("/1/0"), TEST_MODEL)
    with pytest.raises(EncodeError):
        CODEC.encode_create([NewInstance(None, ()), NewInstance(1, ())], at("/1"), TEST_MODEL)


# -- malformed input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "wire_hex", "offset"),
    [
        ("/3/0", "c1", 0),  # truncated header
        ("/3/0", "e100", 0),  # 16-bit id cut short
        ("/3/0", "c800", 0),  # 8-bit length missing
        ("/3/0", "c100", 0),  # length 1, no value
        ("/3/0", "c30061", 0),  # length 3, one byte
        ("/3/0", "c10901c10902", 3),  # duplicate resource id
        ("/3/0", "c309000000", 2),  # 3-byte integer
        ("/3/0", "c200fffe", 2),  # invalid UTF-8 at its byte
        ("/3/0", "c300e282ac" + "c20161ff", 8),  # second string invalid, first fine
        ("/3/0", "4100ff", 0),  # resource instance where a resource is due
        ("/3/0", "e1ffff00", 0),  # id 65535 is reserved
        ("/3/0/7", "8307c10001", 2),  # resource inside a multiple resource
        ("/3/0/7", "c10701", 0),  # /3/0/7 is multiple, sent as single
        ("/3/0/0", "830041007f", 0),  # /3/0/0 is single, sent as multiple
        ("/3/0/0", "c10161", 0),  # id does not match the path
        ("/3/0/0", "c300766563" + "c10161", 5),  # two TLVs for one resource
        ("/3", "0800" + "03" + "c30061", 3),  # inner TLV runs past its instance
        ("/3", "0100", 0),  # instance with length 1 but nothing
        ("/3", "0000c10001", 2),  # instance followed by a resource
        ("/3/1", "0000", 0),  # wrapping instance id does not match
        ("/3/0/7/1", "42001388", 0),  # resource instance id does not match
        ("/3/0/7/1", "", 0),  # nothing at all
        (f"/{ALL_TYPES_ID}/0", "c10402", 2),  # Boolean 2
        (f"/{ALL_TYPES_ID}/0", "c3070000ff", 2),  # Objlnk in 3 bytes
        (f"/{ALL_TYPES_ID}/0", "c2030000", 2),  # Float in 2 bytes
        (f"/{ALL_TYPES_ID}/0", "c001", 2),  # Integer with no bytes
        (f"/{ALL_TYPES_ID}/0", "c1c801", 2),  # executable with a value
    ],
)
def test_malformed_tlv_is_a_decode_error_at_its_offset(
    path: str, wire_hex: str, offset: int
) -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(bytes.fromhex(wire_hex), at(path), TEST_MODEL)
    assert caught.value.offset == offset
    assert caught.value.content_format == 11542


@pytest.mark.parametrize(
    ("node", "path"),
    [
        (SingleResource(0, Value.integer(1)), "/3/0/0"),  # Integer for a String resource
        (SingleResource(7, Value.integer(1)), "/3/0/7"),  # single where the model says multiple
        (MultipleResource(0, DataType.STRING), "/3/0/0"),  # multiple where it says single
        (SingleResource(0, Value.string("x")), "/3/0/1"),  # id does not match
        (ObjectInstance(0), "/3"),  # level does not match
        (SingleResource(0, Value.string("\udc80")), "/3/0/0"),  # unencodable string
    ],
)
def test_nodes_that_contradict_path_or_model_are_encode_errors(node: Node, path: str) -> None:
    with pytest.raises(EncodeError):
        CODEC.encode(node, at(path), TEST_MODEL)


def test_integer_value_may_be_written_to_a_time_resource() -> None:
    assert CODEC.encode(SingleResource(13, Value.integer(1)), at("/3/0/13"), TEST_MODEL) == (
        b"\xc1\x0d\x01"
    )


# -- properties ---------------------------------------------------------------------------------
@given(nodes_with_paths())
@settings(max_examples=150, deadline=None)
def test_every_node_round_trips(case: tuple[Path, Node]) -> None:
    path, node = case
    assert CODEC.decode(CODEC.encode(node, path, TEST_MODEL), path, TEST_MODEL) == node


@given(nodes_with_paths(allow_empty=False))
@settings(max_examples=100, deadline=None)
def test_unknown_objects_keep_every_value_as_its_bytes(case: tuple[Path, Node]) -> None:
    path, node = case
    unknown = Path((4242, *path.ids[1:]))
    if isinstance(node, LwM2MObject):
        node = LwM2MObject(4242, node.instances)
    decoded = CODEC.decode(CODEC.encode(node, unknown, TEST_MODEL), unknown, TEST_MODEL)
    expected = [(p.ids[1:], Value.opaque(encode_tlv_value(v))) for p, v in iter_leaves(node, path)]
    assert [(p.ids[1:], v) for p, v in iter_leaves(decoded, unknown)] == expected


_FUZZ_PATHS = [
    at("/3"),
    at("/3/0"),
    at("/3/0/7"),
    at("/3/0/7/0"),
    at("/3/0/13"),
    at("/1"),
    at("/1/0/1"),
    Path.of(ALL_TYPES_ID),
    Path.of(ALL_TYPES_ID, 1),
    *(Path.of(ALL_TYPES_ID, 0, rid) for rid in SINGLE.values()),
    *(Path.of(ALL_TYPES_ID, 0, rid) for rid in MULTI.values()),
]
_SEEDS = [bytes.fromhex(h) for h in (INSTANCE_HEX, VOLTAGES_HEX, "0307c1012a", "c10066c201012c")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 2))
        if action == 0 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif action == 1:
            data.insert(pos, draw(st.integers(0, 255)))
        else:
            del data[pos : pos + draw(st.integers(1, 4))]
    return bytes(data)


@given(st.sampled_from(_FUZZ_PATHS), st.binary(max_size=60) | mutated())
@settings(max_examples=250, deadline=None)
def test_any_bytes_decode_or_raise_a_codec_error(path: Path, wire: bytes) -> None:
    try:
        node = CODEC.decode(wire, path, TEST_MODEL)
    except CodecError:
        return
    assert CODEC.decode(CODEC.encode(node, path, TEST_MODEL), path, TEST_MODEL) == node


@given(st.binary(max_size=60) | mutated())
@settings(max_examples=150, deadline=None)
def test_any_bytes_decode_as_a_create_or_raise_a_codec_error(wire: bytes) -> None:
    try:
        created = CODEC.decode_create(wire, at("/1"), TEST_MODEL)
    except CodecError:
        return
    assert (
        CODEC.decode_create(
            CODEC.encode_create(created, at("/1"), TEST_MODEL), at("/1"), TEST_MODEL
        )
        == created
    )


def test_a_large_payload_of_tiny_tlvs_decodes_in_linear_time() -> None:
    wire = b"".join(bytes([0xE1]) + i.to_bytes(2, "big") + b"\x01" for i in range(30000))
    start = time.perf_counter()
    node = CODEC.decode(wire, at("/4242/0"), TEST_MODEL)
    assert isinstance(node, ObjectInstance) and len(node.resources) == 30000
    assert time.perf_counter() - start < 2.0
