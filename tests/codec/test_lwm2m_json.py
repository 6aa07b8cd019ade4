"""LwM2M JSON (11543/1543): the 1.0 ``{"bn","bt","e":[...]}`` document, both naming styles."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.api import TimestampedNodes
from lwm2m.codec.errors import DecodeError, UnsupportedContentFormat
from lwm2m.codec.lwm2m_json import LwM2MJsonCodec
from lwm2m.model import (
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
    disjoint_nodes,
    json_documents,
    leaf_set,
    senml_packs,
    timed_leaves,
    timestamped_packs,
)
from tests.codec.strategies import nodes_with_paths

CODEC = LwM2MJsonCodec()
P = Path.parse


@pytest.mark.parametrize(
    ("rid", "value", "wire"),
    [
        (0, Value.string("x"), '"sv":"x"'),
        (1, Value.integer(-5), '"v":-5'),
        (2, Value.unsigned(2**64 - 1), '"v":18446744073709551615'),
        (3, Value.float_(1.5), '"v":1.5'),
        (4, Value.boolean(True), '"bv":true'),
        (5, Value.opaque(b"\x00\xfb\xff"), '"sv":"APv/"'),
        (6, Value.time(1_700_000_000), '"v":1700000000'),
        (7, Value.objlnk(3, 0), '"ov":"3:0"'),
        (8, Value.corelnk("</3/0>"), '"sv":"</3/0>"'),
    ],
)
def test_each_type_has_its_exact_bytes_both_ways(rid: int, value: Value, wire: str) -> None:
    payload = f'{{"bn":"/30000/0/","e":[{{"n":"{rid}",{wire}}}]}}'.encode()
    path = Path.of(30000, 0, rid)
    assert CODEC.encode(SingleResource(rid, value), path, TEST_MODEL) == payload
    assert CODEC.decode(payload, path, TEST_MODEL) == SingleResource(rid, value)


def test_every_path_level_has_exact_bytes() -> None:
    ints = MultipleResource(101, Value.integer(0).type, {0: Value.integer(7), 5: Value.integer(-1)})
    inst1 = ObjectInstance.of(1, [SingleResource(0, Value.string("a")), ints])
    inst2 = ObjectInstance.of(2, [SingleResource(4, Value.boolean(False))])
    cases: list[tuple[str, Node, str]] = [
        (
            "/30000",
            LwM2MObject.of(30000, [inst1, inst2]),
            '{"bn":"/30000/","e":[{"n":"1/0","sv":"a"},{"n":"1/101/0","v":7},'
            '{"n":"1/101/5","v":-1},{"n":"2/4","bv":false}]}',
        ),
        (
            "/30000/1",
            inst1,
            '{"bn":"/30000/1/","e":[{"n":"0","sv":"a"},{"n":"101/0","v":7},{"n":"101/5","v":-1}]}',
        ),
        ("/30000/1/101", ints, '{"bn":"/30000/1/101/","e":[{"n":"0","v":7},{"n":"5","v":-1}]}'),
        (
            "/30000/1/101/5",
            ResourceInstance(5, Value.integer(-1)),
            '{"bn":"/30000/1/101/","e":[{"n":"5","v":-1}]}',
        ),
    ]
    for path, node, wire in cases:
        assert CODEC.encode(node, P(path), TEST_MODEL) == wire.encode(), path
        assert CODEC.decode(wire.encode(), P(path), TEST_MODEL) == node, path


def test_wakaama_and_anjay_documents_decode_alike() -> None:
    wakaama = b'{"bn":"/3/0/","e":[{"n":"0","sv":"a"},{"n":"22/0","ov":"1:2"}]}'
    anjay = b'{"bn":"/3/0","e":[{"n":"/0","sv":"a"},{"n":"/22/0","ov":"1:2"}]}'
    senml_objlnk = b'{"e":[{"n":"/3/0/0","sv":"a"},{"n":"/3/0/22/0","vlo":"1:2"}]}'
    results = [CODEC.decode(doc, P("/3/0"), TEST_MODEL) for doc in (wakaama, anjay, senml_objlnk)]
    assert results[0] == results[1] == results[2]
    assert results[0].resources[22].instances[0] == Value.objlnk(1, 2)  # type: ignore[union-attr]


def test_times_are_bt_plus_t_and_written_absolute() -> None:
    doc = b'{"bn":"/3/0/","bt":1700000000,"e":[{"n":"9","v":80},{"n":"9","t":60,"v":70}]}'
    assert [r.timestamp for r in CODEC.decode_timestamped(doc, TEST_MODEL)] == [
        1_700_000_000.0,
        1_700_000_060.0,
    ]
    data = [
        TimestampedNodes(None, {P("/3/0/10"): SingleResource(10, Value.integer(3))}),
        TimestampedNodes(1_700_000_000.5, {P("/3/0/9"): SingleResource(9, Value.integer(80))}),
    ]
    payload = CODEC.encode_timestamped(data, TEST_MODEL)
    assert payload == (b'{"bn":"/3/0/","e":[{"n":"10","v":3},{"n":"9","v":80,"t":1700000000.5}]}')
    assert CODEC.decode_timestamped(payload, TEST_MODEL) == data


def test_leaves_without_common_prefix_get_root_base_name() -> None:
    nodes = {
        P("/3/0/9"): SingleResource(9, Value.integer(1)),
        P("/1/0/1"): SingleResource(1, Value.integer(60)),
    }
    payload = CODEC.encode_nodes(nodes, TEST_MODEL)
    assert payload == b'{"bn":"/","e":[{"n":"3/0/9","v":1},{"n":"1/0/1","v":60}]}'
    assert CODEC.decode_nodes(payload, TEST_MODEL) == nodes


def test_path_only_requests_are_not_part_of_this_format() -> None:
    with pytest.raises(UnsupportedContentFormat):
        CODEC.encode_paths([P("/3/0/9")])
    with pytest.raises(UnsupportedContentFormat):
        CODEC.decode_paths(b'{"e":[{"n":"/3/0/9"}]}')


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (b'[{"n":"/3/0/9","v":1}]', "'e' array"),
        (b'{"bn":"/3/0/"}', "'e' array"),
        (b'{"e":[1]}', "record 0"),
        (b'{"e":[{"n":"/3/0/9","sv":"1"}]}', "Battery Level"),
        (b'{"e":[{"n":"/3/0/9","bv":1}]}', "boolean"),
        (b'{"e":[{"n":"/3/0/22/0","ov":"1:2","vlo":"1:2"}]}', "repeats"),
        (b'{"bn":3,"e":[]}', "name"),
        (b'{"bt":"x","e":[]}', "number"),
        (b'{"e":[{"n":"/30000/0/5","sv":"!!"}]}', "base64"),
        (b'{"e":[{"n":"/3/0/9"}]}', "no value"),
    ],
)
def test_malformed_documents_raise_decode_error(doc: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        CODEC.decode_nodes(doc, TEST_MODEL)


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


def _as_lwm2m_json(pack: list[dict[str, object]]) -> dict[str, object]:
    labels = {"vs": "sv", "vb": "bv", "vlo": "ov"}
    return {"bn": "/3/0/", "e": [{labels.get(k, k): v for k, v in r.items()} for r in pack]}


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors(payload: bytes) -> None:
    assert_only_codec_errors(CODEC, payload)


@settings(max_examples=100, deadline=None)
@given(
    json_documents.map(lambda d: {"bn": "/3/0/", "e": d})
    | json_documents
    | senml_packs.map(_as_lwm2m_json)
)
def test_random_json_documents_raise_only_codec_errors(document: object) -> None:
    assert_only_codec_errors(CODEC, json.dumps(document).encode())
