"""Shared rules for the formats that carry exactly one value: text, opaque and CBOR (60).

These three formats hold one resource value and nothing else, so they must agree on which paths
they refuse (objects, instances, multiple resources), which type an unknown resource decodes to,
and whether a node handed to ``encode`` fits its path and the object model. Keeping the rules in
one place makes a refusal look the same whichever single-value format was asked for. TLV reuses
the type-compatibility rule for its leaves.
"""

from __future__ import annotations

import re

from lwm2m.codec.errors import CodecError, DecodeError, EncodeError, UnsupportedContentFormat
from lwm2m.model import (
    DataType,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    ObjectModel,
    ObjLink,
    Path,
    ResourceDefinition,
    ResourceInstance,
    SingleResource,
    Value,
    resource_definition,
)
from lwm2m.model.nodes import leaf_node

# Pairs that share one wire form in every format, so a value of one may be written where the
# model declares the other (a server writing Value.integer to a Time resource means the time).
_COMPATIBLE = {
    frozenset({DataType.INTEGER, DataType.TIME}),
    frozenset({DataType.STRING, DataType.CORELNK}),
}


def types_compatible(declared: DataType, actual: DataType) -> bool:
    """True when a value of ``actual`` type can be written to a resource declared ``declared``."""
    return declared is actual or frozenset({declared, actual}) in _COMPATIBLE


def value_definition(
    content_format: int, path: Path, model: ObjectModel, *, encoding: bool
) -> ResourceDefinition | None:
    """The definition of the single value at ``path``, or None for a resource the model lacks.

    Raises :class:`UnsupportedContentFormat` when ``path`` cannot hold a single value (object,
    instance or multiple-resource path), and a Decode/EncodeError when ``path`` addresses an
    instance of a resource the model declares single.
    """
    ids = path.ids  # the id tuple read directly: this runs once per notified value (issue 13)
    depth = len(ids)
    if depth < 3:
        raise UnsupportedContentFormat(
            content_format, f"{path} is not a resource path; this format carries one value"
        )
    definition = resource_definition(model, ids[0], ids[2])
    if definition is None:
        return None
    if depth == 3 and definition.multiple:
        raise UnsupportedContentFormat(
            content_format,
            f"{path} ({definition.name}) is a multiple resource; this format carries one value",
        )
    if depth == 4 and not definition.multiple:
        message = f"{path.parent} ({definition.name}) is a single resource; it has no instances"
        raise _error(content_format, message, encoding)
    return definition


def node_value(content_format: int, node: Node, path: Path, model: ObjectModel) -> Value:
    """The value ``node`` carries, after checking it fits ``path`` and the model.

    A node no single-value format can carry raises :class:`UnsupportedContentFormat`; a node
    that contradicts its path or the model raises :class:`EncodeError`.
    """
    if isinstance(node, LwM2MObject | ObjectInstance | MultipleResource):
        kind = type(node).__name__
        raise UnsupportedContentFormat(
            content_format, f"{kind} at {path}: this format carries one resource value only"
        )
    expected = SingleResource if path.is_resource else ResourceInstance
    if not isinstance(node, expected) or path.level < 3:
        raise EncodeError(
            f"a {type(node).__name__} cannot live at {path}", content_format=content_format
        )
    if node.id != path.ids[-1]:
        raise EncodeError(
            f"node id {node.id} does not match the last id of {path}",
            content_format=content_format,
        )
    definition = value_definition(content_format, path, model, encoding=True)
    if definition is not None:
        check_type(content_format, definition, node.value, path)
    return node.value


def check_type(
    content_format: int, definition: ResourceDefinition, value: Value, path: Path
) -> None:
    """Raise :class:`EncodeError` when ``value`` cannot be written to ``definition``."""
    if not types_compatible(definition.type, value.type):
        raise EncodeError(
            f"{path} ({definition.name}) is {definition.type.value}, "
            f"got a {value.type.value} value",
            content_format=content_format,
        )


_OBJLNK = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")


def parse_objlnk(text: str) -> ObjLink | None:
    """The Object Link ``text`` spells (``"3:0"``, ASCII digits only), or None."""
    match = _OBJLNK.fullmatch(text)
    if match is None:
        return None
    object_id, instance_id = int(match[1]), int(match[2])
    if object_id > 65535 or instance_id > 65535:
        return None
    return ObjLink(object_id, instance_id)


def make_node(path: Path, value: Value) -> SingleResource | ResourceInstance:
    """The node holding ``value`` at a resource or resource-instance ``path``."""
    return leaf_node(path, value)


def _error(content_format: int, message: str, encoding: bool) -> CodecError:
    if encoding:
        return EncodeError(message, content_format=content_format)
    return DecodeError(message, content_format=content_format, field="path")


__all__ = [
    "check_type",
    "make_node",
    "node_value",
    "parse_objlnk",
    "types_compatible",
    "value_definition",
]
