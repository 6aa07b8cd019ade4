"""Opaque (content format 42, ``application/octet-stream``): the raw bytes of one value.

It is how firmware images travel (Package, /5/0/0) and how a server reads a certificate or key
without base64 overhead. Only an Opaque resource (or one the model does not know, read as Opaque)
fits: writing a String as octets would lose its type on the way back, so every other type is
refused with :class:`UnsupportedContentFormat` (4.06/4.15), which is also what Anjay answers.
"""

from __future__ import annotations

from lwm2m.codec.errors import UnsupportedContentFormat
from lwm2m.codec.scalar import make_node, node_value, value_definition
from lwm2m.model import DataType, Node, ObjectModel, Path, Value

CONTENT_FORMAT = 42


def _refuse(path: Path, data_type: DataType) -> UnsupportedContentFormat:
    return UnsupportedContentFormat(
        CONTENT_FORMAT, f"{path} is {data_type.value}; octet-stream carries Opaque values only"
    )


class OpaqueCodec:
    """Content format 42: one Opaque value as its bytes."""

    content_format = CONTENT_FORMAT

    def decode(self, payload: bytes, path: Path, model: ObjectModel) -> Node:
        definition = value_definition(CONTENT_FORMAT, path, model, encoding=False)
        if definition is not None and definition.type is not DataType.OPAQUE:
            raise _refuse(path, definition.type)
        return make_node(path, Value.opaque(bytes(payload)))

    def encode(self, node: Node, path: Path, model: ObjectModel) -> bytes:
        value = node_value(CONTENT_FORMAT, node, path, model)
        if not isinstance(value.value, bytes):
            raise _refuse(path, value.type)
        return value.value


__all__ = ["OpaqueCodec"]
