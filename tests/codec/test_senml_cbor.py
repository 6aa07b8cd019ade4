"""SenML CBOR (112): integer labels, vlo text label, bytes for vd, times, composite, errors."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.api import TimestampedNodes
from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.codec.senml_cbor import SenmlCborCodec
from lwm2m.model import MultipleResource, Node, ObjectInstance, Path, SingleResource, Value
from tests.codec.models import TEST_MODEL
from tests.codec.multi_helpers import (
    assert_only_codec_errors,
    cbor_documents,
    disjoint_nodes,
    leaf_set,
    senml_cbor_pack,
    senml_packs,
    timed_leaves,
    timestamped_packs,
)
from tests.codec.strategies import nodes_with_paths

CODEC = SenmlCborCodec()
P = Path.parse
BN, BT, N, V, VS, VB, T, VD = -2, -3, 0, 2, 3, 4, 6, 8


@pytest.mark.parametrize(
    ("rid", "value", "key", "item"),
    [
        (0, Value.string("x"), VS, "x"),
        (1, Value.integer(-5), V, -5),
        (2, Value.unsigned(2**64 - 1), V, 2**64 - 1),
        (3, Value.float_(1.5), V, 1.5),
        (4, Value.boolean(True), VB, True),
        (5, Value.opaque(b"\x00\xfb\xff"), VD, b"\x00\xfb\xff"),
        (6, Value.time(1_700_000_000), V, 1_700_000_000),
        (7, Value.objlnk(3, 0), "vlo", "3:0"),
        (8, Value.corelnk("</3/0>"), VS, "</3/0>"),
    ],
)
def test_each_type_uses_its_label(rid: int, value: Value, key: int | str, item: object) -> None:
    payload = CODEC.encode(SingleResource(rid, value), Path.of(30000, 0, rid), TEST_MODEL)
    assert cbor2.loads(payload) == [{BN: f"/30000/0/{rid}", key: item}]
    assert CODEC.decode(payload, Path.of(30000, 0, rid), TEST_MODEL) == SingleResource(rid, value)


def test_exact_bytes_match_a_real_write_request() -> None:
    """The partial-update Write the interop capture sent to wakaama and Anjay."""
    wire = bytes.fromhex(
        "82a321652f332f302f0062313403662b30333a3030a200623135036d4575726f70652f4d6f73636f77"
    )
    node = ObjectInstance.of(
        0,
        [
            SingleResource(14, Value.string("+03:00")),
            SingleResource(15, Value.string("Europe/Moscow")),
        ],
    )
    assert CODEC.encode(node, P("/3/0"), TEST_MODEL) == wire
    assert CODEC.decode(wire, P("/3/0"), TEST_MODEL) == node


def test_exact_bytes_of_a_float_and_an_objlnk_instance() -> None:
    node = MultipleResource(107, Value.objlnk(0, 0).type, {2: Value.objlnk(65535, 65535)})
    wire = CODEC.encode(node, P("/30000/1/107"), TEST_MODEL)
    base, vlo, link = b"/30000/1/107/".hex(), b"vlo".hex(), b"65535:65535".hex()
    assert wire.hex() == f"81a3216d{base}00613263{vlo}6b{link}"
    single = CODEC.encode(SingleResource(3, Value.float_(-0.5)), P("/30000/1/3"), TEST_MODEL)
    assert single.endswith(bytes.fromhex("02fbbfe0000000000000"))


def test_anjay_send_with_float_base_time_decodes_to_one_instant() -> None:
    wire = bytes.fromhex("82a421642f332f3000622f3022fb41dac1ae7c39bd820363766563a200622f390200")
    [instant] = CODEC.decode_timestamped(wire, TEST_MODEL)
    assert instant.timestamp == 1795602928.9021916
    assert dict(instant.nodes) == {
        P("/3/0/0"): SingleResource(0, Value.string("vec")),
        P("/3/0/9"): SingleResource(9, Value.integer(0)),
    }


def test_read_composite_request_uses_name_label_only() -> None:
    paths = [P("/3/0/9"), P("/")]
    payload = CODEC.encode_paths(paths)
    assert cbor2.loads(payload) == [{N: "/3/0/9"}, {N: "/"}]
    assert CODEC.decode_paths(payload) == paths
    with pytest.raises(DecodeError, match="carries a value"):
        CODEC.decode_paths(cbor2.dumps([{N: "/3/0/9", V: 1}]))


def test_send_pack_carries_base_time_in_cbor() -> None:
    data = [TimestampedNodes(1_700_000_000.25, {P("/3/0/9"): SingleResource(9, Value.integer(5))})]
    payload = CODEC.encode_timestamped(data, TEST_MODEL)
    assert cbor2.loads(payload) == [{BN: "/3/0/9", BT: 1_700_000_000.25, V: 5}]
    assert CODEC.decode_timestamped(payload, TEST_MODEL) == data


def test_indefinite_lengths_and_tags_for_numbers_are_read() -> None:
    # [_ {_ -2: "/3/0/", 0: "9", 2: 4([-1, 45])}]: a decimal fraction for an Integer
    wire = bytes.fromhex("9fbf21652f332f302f00613902c482201832ffff")
    assert CODEC.decode(wire, P("/3/0/9"), TEST_MODEL) == SingleResource(9, Value.integer(5))


def test_time_relative_and_t_label() -> None:
    wire = cbor2.dumps([{BN: "/3/0/", N: "9", T: -10, V: 1}])
    [instant] = CODEC.decode_timestamped(wire, TEST_MODEL, now=2_000_000_000.0)
    assert instant.timestamp == 1_999_999_990.0


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({N: "/3/0/9", V: 1}, "array"),
        ([{N: "/3/0/9", VS: b"x"}], "string"),
        ([{N: "/3/0/9", VD: "AQ"}], "byte string"),
        ([{N: 9, V: 1}], "name"),
        ([{N: "/3/0/9", "x_": 1, V: 1}], "must-understand"),
        ([{N: "/3/0/9", V: 1, VS: "1"}], "one value"),
        ([{N: "/3/0/9", V: cbor2.CBORTag(99, 1)}], "tag"),
    ],
)
def test_malformed_packs_raise_decode_error(document: object, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        CODEC.decode_nodes(cbor2.dumps(document), TEST_MODEL)


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        ("81a2006662", "CBOR"),  # truncated
        ("8000", "trailing"),
        ("81a30066" + b"/3/0/9".hex() + "02010202", "CBOR"),  # duplicate key 2
        ("81" * 40 + "80", "CBOR"),  # nested beyond any valid pack
        ("81a20066" + b"/3/0/9".hex() + "ff", "CBOR"),  # break inside a definite map
    ],
)
def test_malformed_cbor_raises_decode_error(wire: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        CODEC.decode_nodes(bytes.fromhex(wire), TEST_MODEL)


def test_unknown_labels_are_ignored() -> None:
    wire = cbor2.dumps([{N: "/3/0/9", 1: "%", 5: 3.0, b"k": 1, "bn": "/x", V: 7}])
    assert CODEC.decode(wire, P("/3/0/9"), TEST_MODEL) == SingleResource(9, Value.integer(7))


def test_text_that_is_not_unicode_cannot_be_encoded() -> None:
    with pytest.raises(EncodeError, match="CBOR"):
        CODEC.encode(SingleResource(0, Value.string("\ud800")), P("/3/0/0"), TEST_MODEL)


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


@settings(max_examples=25, deadline=None)
@given(timestamped_packs())
def test_decode_timestamped_inverts_encode_timestamped(data: list[TimestampedNodes]) -> None:
    payload = CODEC.encode_timestamped(data, TEST_MODEL)
    assert timed_leaves(CODEC.decode_timestamped(payload, TEST_MODEL)) == timed_leaves(data)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors(payload: bytes) -> None:
    assert_only_codec_errors(CODEC, payload)


@settings(max_examples=100, deadline=None)
@given(cbor_documents | senml_packs.map(senml_cbor_pack))
def test_random_cbor_documents_raise_only_codec_errors(document: object) -> None:
    assert_only_codec_errors(CODEC, cbor2.dumps(document))
