"""SenML JSON (110): exact bytes per type and level, names, times, composite, Send, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.api import TimestampedNodes
from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.codec.multi_codec import MAX_LEAVES
from lwm2m.codec.senml_json import SenmlJsonCodec
from lwm2m.model import (
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    ObjLink,
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

CODEC = SenmlJsonCodec()
P = Path.parse


def decode(text: str, path: str) -> Node:
    return CODEC.decode(text.encode(), P(path), TEST_MODEL)


@pytest.mark.parametrize(
    ("rid", "value", "wire"),
    [
        (0, Value.string("x"), '"vs":"x"'),
        (1, Value.integer(-5), '"v":-5'),
        (2, Value.unsigned(2**64 - 1), '"v":18446744073709551615'),
        (3, Value.float_(1.5), '"v":1.5'),
        (4, Value.boolean(True), '"vb":true'),
        (5, Value.opaque(b"\x00\xfb\xff"), '"vd":"APv_"'),
        (6, Value.time(1_700_000_000), '"v":1700000000'),
        (7, Value.objlnk(3, 0), '"vlo":"3:0"'),
        (8, Value.corelnk("</3/0>"), '"vs":"</3/0>"'),
    ],
)
def test_each_type_has_its_exact_bytes_both_ways(rid: int, value: Value, wire: str) -> None:
    payload = f'[{{"bn":"/30000/0/{rid}",{wire}}}]'.encode()
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
            '[{"bn":"/30000/","n":"1/0","vs":"a"},{"n":"1/101/0","v":7},{"n":"1/101/5","v":-1},'
            '{"n":"2/4","vb":false}]',
        ),
        (
            "/30000/1",
            inst1,
            '[{"bn":"/30000/1/","n":"0","vs":"a"},{"n":"101/0","v":7},{"n":"101/5","v":-1}]',
        ),
        ("/30000/1/101", ints, '[{"bn":"/30000/1/101/","n":"0","v":7},{"n":"5","v":-1}]'),
        (
            "/30000/1/101/5",
            ResourceInstance(5, Value.integer(-1)),
            '[{"bn":"/30000/1/101/5","v":-1}]',
        ),
    ]
    for path, node, wire in cases:
        assert CODEC.encode(node, P(path), TEST_MODEL) == wire.encode(), path
        assert decode(wire, path) == node, path


def test_wakaama_and_anjay_naming_styles_decode_alike() -> None:
    wakaama = '[{"bn":"/3/0/","n":"0","vs":"a"},{"n":"7/1","v":5}]'
    anjay = '[{"bn":"/3/0","n":"/0","vs":"a"},{"n":"/7/1","v":5}]'
    full_names = '[{"n":"/3/0/0","vs":"a"},{"n":"/3/0/7/1","v":5}]'
    doubled = '[{"bn":"/3/0/","n":"/0","vs":"a"},{"n":"/7/1","v":5}]'
    expected = ObjectInstance.of(
        0,
        [
            SingleResource(0, Value.string("a")),
            MultipleResource(7, Value.integer(0).type, {1: Value.integer(5)}),
        ],
    )
    for text in (wakaama, anjay, full_names, doubled):
        assert decode(text, "/3/0") == expected, text


def test_base_name_applies_until_changed() -> None:
    text = '[{"bn":"/3/0/","n":"0","vs":"a"},{"n":"1","vs":"b"},{"bn":"/1/0/","n":"1","v":60}]'
    nodes = CODEC.decode_nodes(text.encode(), TEST_MODEL)
    assert nodes == {
        P("/3/0/0"): SingleResource(0, Value.string("a")),
        P("/3/0/1"): SingleResource(1, Value.string("b")),
        P("/1/0/1"): SingleResource(1, Value.integer(60)),
    }


def test_record_without_name_uses_the_base_name_itself() -> None:
    assert decode('[{"bn":"/3/0/9","v":80}]', "/3/0/9") == SingleResource(9, Value.integer(80))


def test_base_time_applies_to_following_records_and_t_is_added() -> None:
    text = (
        '[{"bn":"/3/0/","bt":1700000000,"n":"9","v":80},{"n":"9","t":10,"v":79},'
        '{"bt":1700000100.5,"n":"9","v":78}]'
    )
    result = CODEC.decode_timestamped(text.encode(), TEST_MODEL)
    assert [(r.timestamp, r.nodes[P("/3/0/9")]) for r in result] == [
        (1_700_000_000.0, SingleResource(9, Value.integer(80))),
        (1_700_000_010.0, SingleResource(9, Value.integer(79))),
        (1_700_000_100.5, SingleResource(9, Value.integer(78))),
    ]


def test_relative_times_stay_relative_without_now_and_resolve_with_it() -> None:
    text = b'[{"bn":"/3/0/","n":"9","t":-30,"v":1},{"n":"10","v":2},{"n":"20","t":0,"v":3}]'
    relative = CODEC.decode_timestamped(text, TEST_MODEL)
    assert [(r.timestamp, sorted(r.nodes)) for r in relative] == [
        (None, [P("/3/0/10"), P("/3/0/20")]),
        (-30.0, [P("/3/0/9")]),
    ]
    resolved = CODEC.decode_timestamped(text, TEST_MODEL, now=1_800_000_000.0)
    assert [(r.timestamp, sorted(r.nodes)) for r in resolved] == [
        (None, [P("/3/0/10")]),
        (1_799_999_970.0, [P("/3/0/9")]),
        (1_800_000_000.0, [P("/3/0/20")]),
    ]


def test_decode_keeps_the_newest_value_of_a_reported_history() -> None:
    text = '[{"bn":"/3/0/","bt":1700000000,"n":"9","v":80},{"n":"9","t":5,"v":70}]'
    assert decode(text, "/3/0/9") == SingleResource(9, Value.integer(70))


def test_read_composite_request_round_trips_with_exact_bytes() -> None:
    paths = [P("/3/0/9"), P("/1/0"), P("/"), P("/3/0/7/1")]
    payload = b'[{"n":"/3/0/9"},{"n":"/1/0"},{"n":"/"},{"n":"/3/0/7/1"}]'
    assert CODEC.encode_paths(paths) == payload
    assert CODEC.decode_paths(payload) == paths
    assert CODEC.decode_paths(b'[{"bn":"/3/0/","n":"9"},{"n":"10"}]') == [P("/3/0/9"), P("/3/0/10")]


def test_read_composite_request_with_a_value_is_refused() -> None:
    with pytest.raises(DecodeError, match="record 1"):
        CODEC.decode_paths(b'[{"n":"/3/0/9"},{"n":"/1/0/1","v":3}]')


def test_write_composite_record_without_value_is_refused() -> None:
    with pytest.raises(DecodeError, match="no value"):
        CODEC.decode_nodes(b'[{"n":"/3/0/14","vs":"+02"},{"n":"/3/0/15"}]', TEST_MODEL)


def test_read_composite_response_groups_under_requested_paths() -> None:
    text = b'[{"bn":"/3/0/","n":"0","vs":"a"},{"n":"7/0","v":1},{"bn":"/1/0/","n":"1","v":60}]'
    nodes = CODEC.decode_nodes(text, TEST_MODEL, [P("/3/0"), P("/1/0/1"), P("/5")])
    assert set(nodes) == {P("/3/0"), P("/1/0/1")}
    assert nodes[P("/1/0/1")] == SingleResource(1, Value.integer(60))
    assert set(nodes[P("/3/0")].resources) == {0, 7}  # type: ignore[union-attr]
    with pytest.raises(DecodeError, match="outside every requested path"):
        CODEC.decode_nodes(text, TEST_MODEL, [P("/3/0")])


def test_overlapping_and_root_requests_each_get_their_leaves() -> None:
    text = b'[{"bn":"/3/0/","n":"0","vs":"a"},{"n":"9","v":1},{"bn":"/1/0/","n":"1","v":60}]'
    nodes = CODEC.decode_nodes(text, TEST_MODEL, [P("/3/0"), P("/3/0/9"), P("/")])
    assert set(nodes) == {P("/3/0"), P("/3/0/9"), P("/1")}
    assert set(nodes[P("/3/0")].resources) == {0, 9}  # type: ignore[union-attr]


def test_per_resource_grouping_and_lone_instance_of_unknown_resource() -> None:
    text = b'[{"n":"/3/0/7/0","v":1},{"n":"/3/0/7/1","v":2},{"n":"/9/0/4/2","vs":"x"}]'
    nodes = CODEC.decode_nodes(text, TEST_MODEL)
    assert nodes == {
        P("/3/0/7"): MultipleResource(
            7, Value.integer(0).type, {0: Value.integer(1), 1: Value.integer(2)}
        ),
        P("/9/0/4/2"): ResourceInstance(2, Value.string("x")),
    }


def test_unknown_resources_are_typed_by_shape() -> None:
    text = b'[{"bn":"/31024/7/","n":"1","v":42},{"n":"3","v":0.0},{"n":"5","vs":""},'
    text += b'{"n":"6","vb":true},{"n":"8","vd":"AQI"},{"n":"9","vlo":"1:2"},'
    text += b'{"n":"10","v":18446744073709551615}]'
    node = CODEC.decode(text, P("/31024/7"), TEST_MODEL)
    values = {r.id: r.value for r in node.resources.values()}  # type: ignore[union-attr]
    assert values == {
        1: Value.integer(42),
        3: Value.float_(0.0),
        5: Value.string(""),
        6: Value.boolean(True),
        8: Value.opaque(b"\x01\x02"),
        9: Value(Value.objlnk(1, 2).type, ObjLink(1, 2)),
        10: Value.unsigned(2**64 - 1),
    }


def test_model_types_numbers_and_accepts_integral_floats() -> None:
    text = b'[{"bn":"/30000/0/","n":"1","v":3.0},{"n":"3","v":2},{"n":"6","v":1700000000.75}]'
    node = CODEC.decode(text, P("/30000/0"), TEST_MODEL)
    values = {r.id: r.value for r in node.resources.values()}  # type: ignore[union-attr]
    assert values == {1: Value.integer(3), 3: Value.float_(2.0), 6: Value.time(1_700_000_000)}


@pytest.mark.parametrize("vd", ['"APv_"', '"APv/"', '"APv/"', '"APv_="'])
def test_vd_reads_either_base64_alphabet_with_or_without_padding(vd: str) -> None:
    text = f'[{{"n":"/30000/0/5","vd":{vd}}}]'
    assert decode(text, "/30000/0/5") == SingleResource(5, Value.opaque(b"\x00\xfb\xff"))


def test_send_pack_encodes_times_as_base_time_per_instant() -> None:
    data = [
        TimestampedNodes(None, {P("/3/0/9"): SingleResource(9, Value.integer(90))}),
        TimestampedNodes(1_700_000_000.0, {P("/3/0/9"): SingleResource(9, Value.integer(80))}),
        TimestampedNodes(
            1_700_000_010.5,
            {
                P("/3/0/9"): SingleResource(9, Value.integer(79)),
                P("/1/0/1"): SingleResource(1, Value.integer(60)),
            },
        ),
    ]
    payload = CODEC.encode_timestamped(data, TEST_MODEL)
    assert payload == (
        b'[{"bn":"/3/0/","n":"9","v":90},{"bt":1700000000,"n":"9","v":80},'
        b'{"bt":1700000010.5,"n":"9","v":79},{"bn":"/1/0/","n":"1","v":60}]'
    )
    assert CODEC.decode_timestamped(payload, TEST_MODEL) == data


def test_timeless_instant_after_a_timed_one_resets_base_time_to_now() -> None:
    data = [
        TimestampedNodes(1_700_000_000.0, {P("/3/0/9"): SingleResource(9, Value.integer(80))}),
        TimestampedNodes(None, {P("/3/0/10"): SingleResource(10, Value.integer(5))}),
    ]
    payload = CODEC.encode_timestamped(data, TEST_MODEL)
    assert b'"bt":0' in payload
    assert timed_leaves(CODEC.decode_timestamped(payload, TEST_MODEL)) == timed_leaves(data)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b'{"n":"/3/0/9","v":1}', "array"),
        (b"[1]", "record 0"),
        (b'[{"n":"/3/0/9","vs":"x"}]', "Battery Level"),
        (b'[{"n":"/3/0/9","v":1,"vs":"x"}]', "one value"),
        (b'[{"n":"/3/0/9","v":true}]', "number"),
        (b'[{"n":"/3/0/9","v":1,"v":2}]', "duplicate"),
        (b'[{"n":"/3/0/9","v":NaN}]', "JSON"),
        (b'[{"n":"/3/0/9","v":1,"unknown_":1}]', "must-understand"),
        (b'[{"n":"/3/0","v":1}]', "resource"),
        (b'[{"n":"/3/0/9/0","v":1}]', "single resource"),
        (b'[{"n":"/3/0/7","v":1}]', "multiple"),
        (b'[{"n":"/3/0/4","v":1}]', "executable"),
        (b'[{"n":"/3/0/9","v":1},{"n":"/3/0/9","v":2}]', "two values"),
        (b'[{"n":"/3/x/9","v":1}]', "record 0 name"),
        (b'[{"n":"/30000/0/5","vd":"@@"}]', "base64"),
        (b'[{"n":"/30000/0/7","vlo":"3-0"}]', "object link"),
        (b'[{"n":"/30000/0/1","v":1.5}]', "integer"),
        (b'[{"n":"/30000/0/2","v":-1}]', "Unsigned"),
        (b'[{"n":"/3/0/9","v":1}] x', "JSON"),
        (b"\xff[]", "UTF-8"),
        (b'[{"bn":"/3/0/","bt":1e308,"n":"9","t":1e308,"v":1}]', "time"),
    ],
)
def test_malformed_payloads_raise_decode_error_saying_where(text: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        CODEC.decode_nodes(text, TEST_MODEL)


def test_encoding_refuses_what_senml_cannot_carry() -> None:
    with pytest.raises(EncodeError):
        CODEC.encode(SingleResource(4, Value.none()), P("/3/0/4"), TEST_MODEL)
    with pytest.raises(EncodeError):
        CODEC.encode(SingleResource(3, Value.float_(float("nan"))), P("/30000/0/3"), TEST_MODEL)
    with pytest.raises(EncodeError, match="Integer"):
        CODEC.encode(SingleResource(9, Value.string("x")), P("/3/0/9"), TEST_MODEL)
    with pytest.raises(EncodeError, match="cannot live at"):
        CODEC.encode(SingleResource(9, Value.integer(1)), P("/3/0/10"), TEST_MODEL)
    with pytest.raises(EncodeError, match="twice"):
        inst = ObjectInstance.of(0, [SingleResource(9, Value.integer(1))])
        CODEC.encode_nodes({P("/3/0"): inst, P("/3/0/9"): inst.resources[9]}, TEST_MODEL)


def test_base_value_is_added_to_numbers() -> None:
    text = b'[{"bn":"/3/0/","bv":100,"n":"9","v":-5},{"n":"10","v":2},{"n":"0","vs":"x"}]'
    nodes = CODEC.decode_nodes(text, TEST_MODEL)
    assert nodes[P("/3/0/9")] == SingleResource(9, Value.integer(95))
    assert nodes[P("/3/0/10")] == SingleResource(10, Value.integer(102))
    assert nodes[P("/3/0/0")] == SingleResource(0, Value.string("x"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b'[{"n":"/9/0/1","v":18446744073709551616}]', "64 bits"),
        (b'[{"n":"/30000/0/3","v":1' + b"0" * 400 + b"}]", "too large"),
        (b'[{"n":"/3/0/9","v":1e999}]', "finite"),
        (b'[{"bn":"/3/0/","bv":1e308,"n":"9","v":1' + b"0" * 400 + b"}]", "overflows"),
        (b'[{"n":"/9/0/4/0","v":1},{"n":"/9/0/4/1","vs":"x"}]', "mixed types"),
    ],
)
def test_numbers_and_types_out_of_reach_raise_decode_error(text: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        CODEC.decode_nodes(text, TEST_MODEL)


def test_more_records_than_the_limit_are_refused() -> None:
    with pytest.raises(DecodeError, match="limit"):
        CODEC.decode_nodes(b"[" + b"{}," * MAX_LEAVES + b"{}]", TEST_MODEL)


def test_decode_at_the_root_path_is_refused() -> None:
    with pytest.raises(DecodeError, match="not '/'"):
        CODEC.decode(b'[{"n":"/3/0/9","v":1}]', P("/"), TEST_MODEL)


def test_encoding_checks_multiplicity_and_unicode() -> None:
    multi = MultipleResource(9, Value.integer(0).type, {0: Value.integer(1)})
    with pytest.raises(EncodeError, match="single resource"):
        CODEC.encode(multi, P("/3/0/9"), TEST_MODEL)
    with pytest.raises(EncodeError, match="JSON"):
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


@settings(max_examples=20, deadline=None)
@given(st.lists(nodes_with_paths(allow_empty=False).map(lambda c: c[0]), max_size=4))
def test_decode_paths_inverts_encode_paths(paths: list[Path]) -> None:
    assert CODEC.decode_paths(CODEC.encode_paths(paths)) == paths


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors(payload: bytes) -> None:
    assert_only_codec_errors(CODEC, payload)


@settings(max_examples=100, deadline=None)
@given(json_documents | senml_packs)
def test_random_json_documents_raise_only_codec_errors(document: object) -> None:
    assert_only_codec_errors(CODEC, json.dumps(document).encode())
