from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from lwm2m.model import (
    EMPTY_MODEL,
    DataType,
    InvalidNode,
    InvalidValue,
    LwM2MObject,
    MultipleResource,
    ObjectDefinition,
    ObjectInstance,
    ObjLink,
    Operations,
    Path,
    ResourceDefinition,
    ResourceInstance,
    SingleResource,
    StaticModel,
    Value,
    build_node,
    iter_leaves,
    node_at,
)


@pytest.mark.parametrize(
    ("dtype", "good", "bad"),
    [
        (DataType.STRING, "x", b"x"),
        (DataType.INTEGER, -(2**63), 2**63),
        (DataType.UNSIGNED_INTEGER, 2**64 - 1, -1),
        (DataType.FLOAT, 1.5, "1.5"),
        (DataType.BOOLEAN, True, 1),
        (DataType.OPAQUE, b"\x00", "00"),
        (DataType.TIME, 1_700_000_000, 1.5),
        (DataType.OBJLNK, ObjLink(3, 0), "3:0"),
        (DataType.CORELNK, "</3/0>", 3),
        (DataType.NONE, None, 0),
    ],
)
def test_values_validate_their_type(dtype: DataType, good: object, bad: object) -> None:
    assert Value(dtype, good).value == good  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        Value(dtype, bad)  # type: ignore[arg-type]


def test_integer_float_and_bool_are_distinct_values() -> None:
    assert Value.integer(1) != Value.float_(1.0)
    assert Value.integer(1) != Value.unsigned(1)
    assert Value.float_(math.nan) == Value.float_(math.nan)
    assert Value.float_(0.0) == Value.float_(-0.0)
    assert hash(Value.float_(0.0)) == hash(Value.float_(-0.0))


def test_time_accepts_datetime_and_converts_back() -> None:
    moment = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    v = Value.time(moment)
    assert v.value == int(moment.timestamp())
    assert v.as_datetime() == moment


def test_objlink_parse_and_null() -> None:
    assert ObjLink.parse("3:0") == ObjLink(3, 0)
    assert ObjLink(65535, 65535).is_null
    for text in ("3", "a:b", "3:70000", "\u0663:0", "\u00b3:0"):
        with pytest.raises(InvalidValue):
            ObjLink.parse(text)


def test_nodes_are_immutable_and_sorted() -> None:
    inst = ObjectInstance.of(
        0,
        [SingleResource(9, Value.integer(80)), SingleResource(0, Value.string("acme"))],
    )
    assert list(inst.resources) == [0, 9]
    with pytest.raises(TypeError):
        inst.resources[1] = SingleResource(1, Value.string("x"))  # type: ignore[index]
    with pytest.raises(AttributeError):
        inst.id = 3  # type: ignore[misc]


def test_nodes_reject_duplicates_and_mixed_types() -> None:
    with pytest.raises(InvalidNode):
        ObjectInstance.of(0, [SingleResource(1, Value.integer(1))] * 2)
    with pytest.raises(InvalidNode):
        MultipleResource(7, DataType.INTEGER, {0: Value.string("x")})
    with pytest.raises(InvalidNode):
        ObjectInstance(0, {1: SingleResource(2, Value.integer(1))})


def _device_model() -> StaticModel:
    return StaticModel(
        [
            ObjectDefinition(
                3,
                "Device",
                multiple=False,
                mandatory=True,
                resources={
                    0: ResourceDefinition(
                        0, "Manufacturer", Operations.R, False, False, DataType.STRING
                    ),
                    7: ResourceDefinition(
                        7, "Power Source Voltage", Operations.R, True, False, DataType.INTEGER
                    ),
                },
            )
        ]
    )


def test_build_node_assembles_tree_and_uses_model_for_multiplicity() -> None:
    leaves = [
        (Path.parse("/3/0/0"), Value.string("acme")),
        (Path.parse("/3/0/7/0"), Value.integer(3800)),
        (Path.parse("/3/0/7/1"), Value.integer(5000)),
    ]
    obj = build_node(Path.parse("/3"), leaves, _device_model())
    assert isinstance(obj, LwM2MObject)
    res7 = obj.instances[0].resources[7]
    assert isinstance(res7, MultipleResource) and dict(res7.instances) == {
        0: Value.integer(3800),
        1: Value.integer(5000),
    }
    assert list(iter_leaves(obj, Path.parse("/3"))) == leaves
    assert node_at(obj, Path.parse("/3"), Path.parse("/3/0/7/1")) == ResourceInstance(
        1, Value.integer(5000)
    )
    assert node_at(obj, Path.parse("/3"), Path.parse("/3/1")) is None


def test_build_node_refuses_a_multiple_resource_given_as_single() -> None:
    with pytest.raises(InvalidNode):
        build_node(
            Path.parse("/3/0/7"), [(Path.parse("/3/0/7"), Value.integer(1))], _device_model()
        )


def test_build_node_empty_multiple_resource_from_model() -> None:
    node = build_node(Path.parse("/3/0/7"), [], _device_model())
    assert node == MultipleResource(7, DataType.INTEGER, {})
    with pytest.raises(InvalidNode):
        build_node(Path.parse("/3/0/0"), [], EMPTY_MODEL)


def test_build_node_rejects_leaves_outside_path_and_duplicates() -> None:
    with pytest.raises(InvalidNode):
        build_node(Path.parse("/3/0"), [(Path.parse("/4/0/0"), Value.integer(1))], EMPTY_MODEL)
    dup = [(Path.parse("/3/0/1"), Value.integer(1))] * 2
    with pytest.raises(InvalidNode):
        build_node(Path.parse("/3/0"), dup, EMPTY_MODEL)
