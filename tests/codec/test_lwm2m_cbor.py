"""LwM2M CBOR (11544): nested id maps, array keys, indefinite maps, no timestamps or bare paths."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.api import TimestampedNodes
from lwm2m.codec.errors import DecodeError, EncodeError, UnsupportedContentFormat
from lwm2m.codec.lwm2m_cbor import LwM2MCborCodec
from lwm2m.codec.multi_codec import MAX_LEAVES
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
)
from tests.codec.models import TEST_MODEL
from tests.codec.multi_helpers import (
    assert_only_codec_errors,
    cbor_documents,
    disjoint_nodes,
    leaf_set,
    lwm2m_cbor_trees,
)
from tests.codec.strategies import nodes_with_paths

CODEC = LwM2MCborCodec()
P = Path.parse


@pytest.mark.parametrize(
    ("rid", "value", "item_hex"),
    [
        (0, Value.string("x"), "6178"),
        (1, Value.integer(-5), "24"),
        (2, Value.unsigned(2**64 - 1), "1bffffffffffffffff"),
        (3, Value.float_(1.5), "fb3ff8000000000000"),
        (4, Value.boolean(True), "f5"),
        (5, Value.opaque(b"\x00\xfb\xff"), "4300fbff"),
        (6, Value.time(1_700_000_000), "1a6553f100"),
        (7, Value.objlnk(3, 0), "63333a30"),
        (8, Value.corelnk("</3/0>"), "663c2f332f303e"),
    ],
)
def test_each_type_has_its_exact_bytes_both_ways(rid: int, value: Value, item_hex: str) -> None:
    # {[30000, 0, rid]: item}
    payload = bytes.fromhex(f"a183197530000{rid}{item_hex}")
    path = Path.of(30000, 0, rid)
    assert CODEC.encode(SingleResource(rid, value), path, TEST_MODEL) == payload
    assert CODEC.decode(payload, path, TEST_MODEL) == SingleResource(rid, value)


def test_every_path_level_folds_single_entry_chains_into_array_keys() -> None:
    ints = MultipleResource(101, DataType.INTEGER, {0: Value.integer(7), 5: Value.integer(-1)})
    inst1 = ObjectInstance.of(1, [SingleResource(0, Value.string("a")), ints])
    inst2 = ObjectInstance.of(2, [SingleResource(4, Value.boolean(False))])
    cases: list[tuple[str, Node, object]] = [
        (
            "/30000",
            LwM2MObject.of(30000, [inst1, inst2]),
            {30000: {1: {0: "a", 101: {0: 7, 5: -1}}, (2, 4): False}},
        ),
        ("/30000/1", inst1, {(30000, 1): {0: "a", 101: {0: 7, 5: -1}}}),
        ("/30000/1/101", ints, {(30000, 1, 101): {0: 7, 5: -1}}),
        ("/30000/1/101/5", ResourceInstance(5, Value.integer(-1)), {(30000, 1, 101, 5): -1}),
    ]
    for path, node, structure in cases:
        payload = CODEC.encode(node, P(path), TEST_MODEL)
        assert payload == cbor2.dumps(structure), path
        assert CODEC.decode(payload, P(path), TEST_MODEL) == node, path


def test_anjay_indefinite_length_read_of_device_instance() -> None:
    wire = bytes.fromhex(
        "bf820300bf0063766563016b64656d6f2d636c69656e740269616e6a61792d312e320366332e31342e30"
        "06bf0000ff07bf00197c44ff08bf0009ff09000a000bbf0000ff0d1a6b06b9d20e662b30313a30300f6d"
        "4575726f70652f576172736177106255511160126013601400150016bf006733333630363a30ffffff"
    )
    node = CODEC.decode(wire, P("/3/0"), TEST_MODEL)
    assert isinstance(node, ObjectInstance)
    assert node.resources[0] == SingleResource(0, Value.string("vec"))
    assert node.resources[7] == MultipleResource(7, DataType.INTEGER, {0: Value.integer(31812)})
    assert node.resources[13] == SingleResource(13, Value.time(1795602898))
    assert node.resources[22] == MultipleResource(22, DataType.OBJLNK, {0: Value.objlnk(33606, 0)})
    assert len(node.resources) == 20


@pytest.mark.parametrize(
    "document",
    [
        {13: {26: {1: 42, 2: 21}}},
        {(13, 26, 1): 42, (13, 26, 2): 21},
        {(13, 26): {1: 42}, (13, 26, 2): 21},
        {(13, 26, 1): 42, (13, 26): {(2,): 21}},
        {(13,): {(26,): {(1,): 42, 2: 21}}},
    ],
)
def test_any_split_of_the_same_paths_decodes_alike(document: object) -> None:
    nodes = CODEC.decode_nodes(cbor2.dumps(document), TEST_MODEL)
    assert nodes == {
        P("/13/26/1"): SingleResource(1, Value.integer(42)),
        P("/13/26/2"): SingleResource(2, Value.integer(21)),
    }


def test_tagged_time_and_decimal_fraction_are_read() -> None:
    # {[30000, 0]: {6: 1(1700000000), 3: 4([-1, 45])}}
    wire = bytes.fromhex("a18219753000a206c11a6553f10003c48220182d")
    node = CODEC.decode(wire, P("/30000/0"), TEST_MODEL)
    assert node == ObjectInstance.of(
        0, [SingleResource(6, Value.time(1_700_000_000)), SingleResource(3, Value.float_(4.5))]
    )


def test_timestamps_are_not_part_of_this_format() -> None:
    wire = cbor2.dumps({(3, 0, 9): 5})
    assert CODEC.decode_timestamped(wire, TEST_MODEL) == [
        TimestampedNodes(None, {P("/3/0/9"): SingleResource(9, Value.integer(5))})
    ]
    assert CODEC.decode_timestamped(cbor2.dumps({}), TEST_MODEL) == [TimestampedNodes(None, {})]
    timed = [TimestampedNodes(1_700_000_000.0, {P("/3/0/9"): SingleResource(9, Value.integer(5))})]
    with pytest.raises(EncodeError, match="timestamps"):
        CODEC.encode_timestamped(timed, TEST_MODEL)
    untimed = [
        TimestampedNodes(None, {P("/3/0/9"): SingleResource(9, Value.integer(5))}),
        TimestampedNodes(None, {P("/3/0/10"): SingleResource(10, Value.integer(6))}),
    ]
    assert CODEC.encode_timestamped(untimed, TEST_MODEL) == cbor2.dumps({(3, 0): {9: 5, 10: 6}})


def test_path_only_requests_are_not_part_of_this_format() -> None:
    with pytest.raises(UnsupportedContentFormat):
        CODEC.encode_paths([P("/3/0/9")])
    with pytest.raises(UnsupportedContentFormat):
        CODEC.decode_paths(cbor2.dumps({(3, 0, 9): None}))


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ([{(3, 0, 9): 1}], "map"),
        ({(3, 0, 9): None}, "null"),
        ({(3, 0): 1}, "resource path"),
        ({(3, 0, 7, 0, 1): 1}, "deeper"),
        ({(3, 0): {(7, 0): {1: 1}}}, "deeper"),
        ({(): 1}, "empty"),
        ({(3, 0, 65535): 1}, "ids"),
        ({"3": {0: {9: 1}}}, "ids"),
        ({True: {0: {9: 1}}}, "ids"),
        ({(3, 0, 9): [1]}, "list"),
        ({(3, 0, 9): "x"}, "Battery Level"),
        ({(3, 0, 9): 1, (3, 0): {9: 2}}, "two values"),
        ({(30000, 0, 7): b"3:0"}, "Objlnk"),
    ],
)
def test_malformed_documents_raise_decode_error(document: object, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        CODEC.decode_nodes(cbor2.dumps(document), TEST_MODEL)


def test_more_leaves_than_the_limit_are_refused() -> None:
    document = {(3, i // 50000, i % 50000): 0 for i in range(MAX_LEAVES + 1)}
    with pytest.raises(DecodeError, match="limit"):
        CODEC.decode_nodes(cbor2.dumps(document), TEST_MODEL)


def test_decimal_fraction_beyond_binary64_is_refused() -> None:
    # {[30000, 0, 3]: 4([400, 1])}: 1e400 for a Float
    with pytest.raises(DecodeError, match="decimal fraction"):
        CODEC.decode_nodes(bytes.fromhex("a1831975300003c48219019001"), TEST_MODEL)


@settings(max_examples=40, deadline=None)
@given(nodes_with_paths(allow_empty=False))
def test_decode_inverts_encode_at_every_level(case: tuple[Path, Node]) -> None:
    path, node = case
    assert CODEC.decode(CODEC.encode(node, path, TEST_MODEL), path, TEST_MODEL) == node


@settings(max_examples=25, deadline=None)
@given(disjoint_nodes())
def test_decode_nodes_inverts_encode_nodes(nodes: dict[Path, Node]) -> None:
    payload = CODEC.encode_nodes(nodes, TEST_MODEL)
    assert CODEC.decode_nodes(payload, TEST_MODEL, list(nodes)) == nodes
    assert leaf_set(CODEC.decode_nodes(payload, TEST_MODEL)) == leaf_set(nodes)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors(payload: bytes) -> None:
    assert_only_codec_errors(CODEC, payload)


@settings(max_examples=100, deadline=None)
@given(cbor_documents | lwm2m_cbor_trees)
def test_random_cbor_documents_raise_only_codec_errors(document: object) -> None:
    assert_only_codec_errors(CODEC, cbor2.dumps(document))
