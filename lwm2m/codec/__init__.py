"""Every LwM2M content format, encode and decode, behind one dispatching entry point.

>>> from lwm2m.codec import decode, encode, ContentFormat
>>> node = decode(ContentFormat.TLV, payload, Path.parse("/3/0"), model)   # doctest: +SKIP

``decode``/``encode`` handle one node at one path in any node format; the ``*_nodes``,
``*_timestamped`` and ``*_paths`` functions handle the multi-path formats (SenML JSON/CBOR,
LwM2M JSON/CBOR). The CoRE link format (40) is not a node format: see :mod:`lwm2m.codec.link`.
An unknown or unsuitable format raises :class:`UnsupportedContentFormat`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lwm2m.codec.api import MultiNodeCodec, NodeCodec, TimestampedNodes
from lwm2m.codec.errors import CodecError, DecodeError, EncodeError, UnsupportedContentFormat
from lwm2m.codec.formats import ContentFormat, canonical
from lwm2m.codec.registry import MULTI_NODE_FORMATS, NODE_FORMATS, codec_for, multi_codec_for
from lwm2m.model import Node, ObjectModel, Path


def decode(content_format: int, payload: bytes, path: Path, model: ObjectModel) -> Node:
    """Decode the node at ``path`` from ``payload`` in ``content_format``."""
    return codec_for(content_format).decode(bytes(payload), path, model)


def encode(content_format: int, node: Node, path: Path, model: ObjectModel) -> bytes:
    """Encode ``node`` (living at ``path``) in ``content_format``."""
    return codec_for(content_format).encode(node, path, model)


def decode_nodes(
    content_format: int,
    payload: bytes,
    model: ObjectModel,
    paths: Sequence[Path] | None = None,
) -> dict[Path, Node]:
    return multi_codec_for(content_format).decode_nodes(bytes(payload), model, paths)


def encode_nodes(content_format: int, nodes: Mapping[Path, Node], model: ObjectModel) -> bytes:
    return multi_codec_for(content_format).encode_nodes(nodes, model)


def decode_timestamped(
    content_format: int, payload: bytes, model: ObjectModel
) -> list[TimestampedNodes]:
    return multi_codec_for(content_format).decode_timestamped(bytes(payload), model)


def encode_timestamped(
    content_format: int, data: Sequence[TimestampedNodes], model: ObjectModel
) -> bytes:
    return multi_codec_for(content_format).encode_timestamped(data, model)


def decode_paths(content_format: int, payload: bytes) -> list[Path]:
    return multi_codec_for(content_format).decode_paths(bytes(payload))


def encode_paths(content_format: int, paths: Sequence[Path]) -> bytes:
    return multi_codec_for(content_format).encode_paths(paths)


__all__ = [
    "MULTI_NODE_FORMATS",
    "NODE_FORMATS",
    "CodecError",
    "ContentFormat",
    "DecodeError",
    "EncodeError",
    "MultiNodeCodec",
    "NodeCodec",
    "TimestampedNodes",
    "UnsupportedContentFormat",
    "canonical",
    "codec_for",
    "decode",
    "decode_nodes",
    "decode_paths",
    "decode_timestamped",
    "encode",
    "encode_nodes",
    "encode_paths",
    "encode_timestamped",
    "multi_codec_for",
]
