"""The unchecked constructors the codecs use for values they parsed (issue 13) give exactly
what the checked constructors give."""

from __future__ import annotations

import math

import pytest

from lwm2m.codec.text import parse_text_value
from lwm2m.model import DataType, Path, ResourceInstance, SingleResource, Value
from lwm2m.model.nodes import leaf_node
from lwm2m.model.values import trusted_value


@pytest.mark.parametrize(
    ("data_type", "raw"),
    [
        (DataType.INTEGER, -(2**63)),
        (DataType.TIME, 1_700_000_000),
        (DataType.UNSIGNED_INTEGER, 2**64 - 1),
        (DataType.FLOAT, 2.5),
        (DataType.BOOLEAN, True),
        (DataType.STRING, "x"),
    ],
)
def test_trusted_value_is_the_checked_value(data_type: DataType, raw: object) -> None:
    checked = Value(data_type, raw)  # type: ignore[arg-type]
    trusted = trusted_value(data_type, raw)  # type: ignore[arg-type]
    assert type(trusted) is Value
    assert trusted == checked and hash(trusted) == hash(checked)
    assert repr(trusted) == repr(checked)
    assert type(trusted.value) is type(checked.value)
    with pytest.raises(AttributeError):
        trusted.value = 1  # type: ignore[misc]  # still frozen


@pytest.mark.parametrize(
    ("data_type", "text"),
    [
        (DataType.INTEGER, b"-42"),
        (DataType.UNSIGNED_INTEGER, b"18446744073709551615"),
        (DataType.TIME, b"0"),
        (DataType.FLOAT, b"1e3"),
        (DataType.FLOAT, b"NaN"),
        (DataType.BOOLEAN, b"0"),
    ],
)
def test_text_parser_values_equal_checked_ones(data_type: DataType, text: bytes) -> None:
    parsed = parse_text_value(data_type, text)
    checked = Value(data_type, parsed.value)
    assert parsed == checked and type(parsed.value) is type(checked.value)
    if data_type is DataType.FLOAT:
        assert isinstance(parsed.value, float)
        assert math.isnan(parsed.value) == (text == b"NaN")


def test_leaf_node_is_the_constructed_node() -> None:
    value = Value.integer(42)
    single = leaf_node(Path.parse("/3/0/9"), value)
    assert type(single) is SingleResource and single == SingleResource(9, value)
    instance = leaf_node(Path.parse("/3/0/7/65534"), value)
    assert type(instance) is ResourceInstance and instance == ResourceInstance(65534, value)
    assert hash(instance) == hash(ResourceInstance(65534, value))
    with pytest.raises(AttributeError):
        single.id = 1  # type: ignore[misc]
