"""Opaque (42): raw bytes of Opaque resources only; everything else is an unsupported format."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.codec.errors import EncodeError, UnsupportedContentFormat
from lwm2m.codec.opaque import OpaqueCodec
from lwm2m.model import (
    DataType,
    MultipleResource,
    Path,
    ResourceInstance,
    SingleResource,
    Value,
)
from tests.codec.models import ALL_TYPES, ALL_TYPES_ID, TEST_MODEL

CODEC = OpaqueCodec()
OPAQUE_SINGLE_ID, OPAQUE_MULTI_ID = (
    r.id for r in ALL_TYPES.resources.values() if r.type is DataType.OPAQUE
)
OPAQUE_SINGLE = Path.of(ALL_TYPES_ID, 0, OPAQUE_SINGLE_ID)


def test_an_opaque_resource_is_its_bytes() -> None:
    node = SingleResource(OPAQUE_SINGLE.ids[2], Value.opaque(b"\x00\x01\xfe\xff"))
    assert CODEC.encode(node, OPAQUE_SINGLE, TEST_MODEL) == b"\x00\x01\xfe\xff"
    assert CODEC.decode(b"\x00\x01\xfe\xff", OPAQUE_SINGLE, TEST_MODEL) == node


def test_an_empty_payload_is_an_empty_value() -> None:
    empty = SingleResource(OPAQUE_SINGLE.ids[2], Value.opaque(b""))
    assert CODEC.decode(b"", OPAQUE_SINGLE, TEST_MODEL) == empty


def test_a_resource_instance_of_an_opaque_multiple_resource_is_its_bytes() -> None:
    path = Path.of(ALL_TYPES_ID, 3, OPAQUE_MULTI_ID, 9)
    node = ResourceInstance(9, Value.opaque(b"cert"))
    assert CODEC.encode(node, path, TEST_MODEL) == b"cert"
    assert CODEC.decode(b"cert", path, TEST_MODEL) == node


def test_a_resource_the_model_lacks_reads_as_opaque() -> None:
    path = Path.parse("/5/0/0")  # Firmware Package: not in the test model
    assert CODEC.decode(b"\x7fELF", path, TEST_MODEL) == SingleResource(0, Value.opaque(b"\x7fELF"))


@pytest.mark.parametrize("path", ["/3/0/0", "/3/0/9", "/3/0/13"])
def test_a_typed_non_opaque_resource_is_refused_on_decode(path: str) -> None:
    with pytest.raises(UnsupportedContentFormat) as caught:
        CODEC.decode(b"x", Path.parse(path), TEST_MODEL)
    assert caught.value.content_format == 42


def test_a_non_opaque_value_is_refused_on_encode() -> None:
    path = Path.parse("/9/0/0")  # unknown to the model, so only the value's type decides
    with pytest.raises(UnsupportedContentFormat):
        CODEC.encode(SingleResource(0, Value.string("x")), path, TEST_MODEL)
    with pytest.raises(EncodeError):  # the model says String: the node contradicts it
        CODEC.encode(SingleResource(0, Value.opaque(b"x")), Path.parse("/3/0/0"), TEST_MODEL)


@pytest.mark.parametrize("path", ["/5", "/5/0", f"/{ALL_TYPES_ID}/0/{OPAQUE_MULTI_ID}"])
def test_containers_are_refused(path: str) -> None:
    with pytest.raises(UnsupportedContentFormat):
        CODEC.decode(b"x", Path.parse(path), TEST_MODEL)


def test_a_multiple_resource_is_refused_on_encode() -> None:
    multi = MultipleResource(OPAQUE_MULTI_ID, DataType.OPAQUE, {0: Value.opaque(b"a")})
    with pytest.raises(UnsupportedContentFormat):
        CODEC.encode(multi, Path.of(ALL_TYPES_ID, 0, OPAQUE_MULTI_ID), TEST_MODEL)


@given(st.binary(max_size=300))
@settings(max_examples=100, deadline=None)
def test_any_bytes_round_trip_unchanged(data: bytes) -> None:
    node = CODEC.decode(data, OPAQUE_SINGLE, TEST_MODEL)
    assert node == SingleResource(OPAQUE_SINGLE.ids[2], Value.opaque(data))
    assert CODEC.encode(node, OPAQUE_SINGLE, TEST_MODEL) == data
