"""The node JSON shape: what Read renders, Write parses back; every value type round-trips."""

from __future__ import annotations

import math

import pytest

from lifecycle.api.parse import (
    InputError,
    composite_from_json,
    new_instance_from_json,
    node_from_json,
    parse_value,
)
from lifecycle.api.render import flatten, node_to_json, value_fields
from lwm2m.model import (
    DataType,
    LwM2MObject,
    MultipleResource,
    ObjectInstance,
    ObjLink,
    Path,
    ResourceInstance,
    SingleResource,
    Value,
)
from objects import BUILTIN_MODEL

DEVICE = ObjectInstance.of(
    0,
    [
        SingleResource(0, Value.string("fleetloop-sim")),
        MultipleResource(7, DataType.INTEGER, {0: Value.integer(3800), 1: Value.integer(5000)}),
        SingleResource(13, Value.time(1_700_000_000)),
    ],
)


def test_an_instance_renders_with_names_types_and_values() -> None:
    rendered = node_to_json(DEVICE, Path.of(3, 0), BUILTIN_MODEL)
    assert rendered["path"] == "/3/0"
    assert rendered["kind"] == "instance"
    assert rendered["name"] == "Device"
    first = rendered["resources"][0]
    assert first == {
        "path": "/3/0/0",
        "kind": "resource",
        "id": 0,
        "name": "Manufacturer",
        "type": "String",
        "value": "fleetloop-sim",
    }
    voltages = rendered["resources"][1]
    assert voltages["multiple"] is True
    assert voltages["instances"] == [{"id": 0, "value": 3800}, {"id": 1, "value": 5000}]
    clock = rendered["resources"][2]
    assert clock["value"] == 1_700_000_000
    assert clock["iso"] == "2023-11-14T22:13:20Z"


def test_opaque_is_base64_and_says_so_and_objlnk_is_oid_colon_iid() -> None:
    assert value_fields(Value.opaque(b"\x01\x02\x03")) == {"value": "AQID", "encoding": "base64"}
    assert value_fields(Value.objlnk(3, 0)) == {"value": "3:0"}


def test_non_finite_floats_are_strings_because_json_has_no_literal_for_them() -> None:
    assert value_fields(Value.float_(math.inf)) == {"value": "Infinity"}
    assert value_fields(Value.float_(-math.inf)) == {"value": "-Infinity"}
    assert value_fields(Value.float_(math.nan)) == {"value": "NaN"}


def test_a_rendered_node_parses_back_to_the_same_node() -> None:
    for node, path in [
        (DEVICE, Path.of(3, 0)),
        (LwM2MObject.of(3, [DEVICE]), Path.of(3)),
        (SingleResource(1, Value.unsigned(2**64 - 1)), Path.of(99, 0, 1)),
        (ResourceInstance(1, Value.integer(5000)), Path.of(3, 0, 7, 1)),
    ]:
        rendered = node_to_json(node, path, BUILTIN_MODEL)
        if path.object_id == 99:
            rendered["type"] = "Unsigned Integer"  # the model does not know object 99
        assert node_from_json(rendered, path, BUILTIN_MODEL) == node


@pytest.mark.parametrize(
    ("raw", "data_type", "expected"),
    [
        ("-5", DataType.INTEGER, -5),
        (7, DataType.INTEGER, 7),
        (7.0, DataType.INTEGER, 7),
        ("1.5", DataType.FLOAT, 1.5),
        (2, DataType.FLOAT, 2.0),
        ("true", DataType.BOOLEAN, True),
        ("0", DataType.BOOLEAN, False),
        (False, DataType.BOOLEAN, False),
        ("2023-11-14T22:13:20Z", DataType.TIME, 1_700_000_000),
        ("1700000000", DataType.TIME, 1_700_000_000),
        ("AQID", DataType.OPAQUE, b"\x01\x02\x03"),
        ("hex:010203", DataType.OPAQUE, b"\x01\x02\x03"),
        ("3:0", DataType.OBJLNK, ObjLink(3, 0)),
        ("+02:00", DataType.STRING, "+02:00"),
    ],
)
def test_operator_text_and_json_values_parse_to_typed_values(
    raw: object, data_type: DataType, expected: object
) -> None:
    assert parse_value(raw, data_type, "body.value") == Value(data_type, expected)


@pytest.mark.parametrize(
    ("raw", "data_type", "fragment"),
    [
        ("abc", DataType.INTEGER, "not an integer"),
        (1.5, DataType.INTEGER, "not an integer"),
        ("maybe", DataType.BOOLEAN, "use true or false"),
        (5, DataType.STRING, "quote it as text"),
        ("yesterday", DataType.TIME, "ISO 8601"),
        ("!!", DataType.OPAQUE, "base64"),
        ("3-0", DataType.OBJLNK, "3:0"),
        (None, DataType.INTEGER, "required"),
        (2**64, DataType.UNSIGNED_INTEGER, "out of range"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(
    raw: object, data_type: DataType, fragment: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_value(raw, data_type, "body.value")
    assert caught.value.field == "body.value"
    assert fragment in caught.value.message


def test_a_write_body_may_omit_types_the_model_knows_but_must_agree_with_it() -> None:
    node = node_from_json({"value": "60"}, Path.of(1, 0, 1), BUILTIN_MODEL)
    assert node == SingleResource(1, Value.integer(60))
    with pytest.raises(InputError) as caught:
        node_from_json({"value": "60", "type": "String"}, Path.of(1, 0, 1), BUILTIN_MODEL)
    assert caught.value.field == "body.type"
    assert "leave out 'type'" in caught.value.message


def test_an_unknown_resource_needs_a_type() -> None:
    with pytest.raises(InputError) as caught:
        node_from_json({"value": "1"}, Path.of(30000, 0, 1), BUILTIN_MODEL)
    assert caught.value.field == "body.type"
    assert "--objects" in caught.value.message


def test_single_versus_multiple_resources_are_checked_against_the_model() -> None:
    with pytest.raises(InputError, match="multiple resource"):
        node_from_json({"value": 1}, Path.of(3, 0, 7), BUILTIN_MODEL)
    with pytest.raises(InputError, match="single resource"):
        node_from_json({"instances": [{"id": 0, "value": "x"}]}, Path.of(3, 0, 0), BUILTIN_MODEL)


def test_errors_in_nested_resources_name_the_list_index() -> None:
    body = {"resources": [{"id": 1, "value": 300}, {"id": 3, "value": "soon"}]}
    with pytest.raises(InputError) as caught:
        node_from_json(body, Path.of(1, 0), BUILTIN_MODEL)
    assert caught.value.field == "body.resources[1].value"


def test_a_path_in_the_body_must_match_the_target() -> None:
    with pytest.raises(InputError, match="does not match"):
        node_from_json({"path": "/1/0/2", "value": 5}, Path.of(1, 0, 1), BUILTIN_MODEL)


def test_create_bodies_with_and_without_an_instance_id() -> None:
    body = {"resources": [{"id": 0, "value": "apn"}]}
    without = new_instance_from_json(body, Path.of(11), BUILTIN_MODEL)
    assert isinstance(without, tuple)
    assert without[0] is None
    assert without[1] == [SingleResource(0, Value.string("apn"))]
    with_id = new_instance_from_json({**body, "id": 4}, Path.of(11), BUILTIN_MODEL)
    assert with_id == ObjectInstance.of(4, [SingleResource(0, Value.string("apn"))])
    with pytest.raises(InputError, match="object path"):
        new_instance_from_json(body, Path.of(11, 0), BUILTIN_MODEL)


def test_composite_content_is_keyed_by_path_and_refuses_duplicates() -> None:
    content = composite_from_json(
        [{"path": "/1/0/1", "value": 300}, {"path": "/3/0/14", "value": "+01"}], BUILTIN_MODEL
    )
    assert content == {
        Path.of(1, 0, 1): SingleResource(1, Value.integer(300)),
        Path.of(3, 0, 14): SingleResource(14, Value.string("+01")),
    }
    with pytest.raises(InputError) as caught:
        composite_from_json(
            [{"path": "/1/0/1", "value": 1}, {"path": "/1/0/1", "value": 2}], BUILTIN_MODEL
        )
    assert caught.value.field == "body.content[1].path"


def test_flatten_lists_every_value_with_its_name() -> None:
    rendered = node_to_json(DEVICE, Path.of(3, 0), BUILTIN_MODEL)
    leaves = list(flatten(rendered))
    assert [(leaf["path"], leaf["name"], leaf["value"]) for leaf in leaves] == [
        ("/3/0/0", "Manufacturer", "fleetloop-sim"),
        ("/3/0/7/0", "Power Source Voltage", 3800),
        ("/3/0/7/1", "Power Source Voltage", 5000),
        ("/3/0/13", "Current Time", 1_700_000_000),
    ]
