"""CBOR single value (content format 60, ``application/cbor``, LwM2M 1.1): one CBOR item.

Unlike text, CBOR types its items, so a resource the model does not know still decodes to a
sensible type (text → String, bytes → Opaque, integer → Integer or Unsigned, float → Float,
tag 1 → Time). Time is written as tag 1 + integer, as Leshan does, and read with or without the
tag. An Objlnk is the text ``"3:0"``. Floats are written as binary32 when that is lossless, else
binary64 (never half precision, which some constrained decoders lack), and read in any width.

The item's structure (head, lengths, indefinite chunks, trailing bytes) is walked here before
cbor2 converts it: a single value is never an array or map, so nesting bombs and huge declared
lengths are refused up front, and any exception cbor2 still raises becomes a
:class:`DecodeError`, so arbitrary bytes only ever produce codec errors.
"""

from __future__ import annotations

import math
import struct

import cbor2

from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.codec.scalar import make_node, node_value, parse_objlnk, value_definition
from lwm2m.model import DataType, Node, ObjectModel, ObjLink, Path, Value
from lwm2m.model.values import INT64_MAX, INT64_MIN, UINT64_MAX

CONTENT_FORMAT = 60

_TAG_EPOCH_TIME = 1
_MAX_CHUNKS = 10_000
_SIMPLE_NAMES = {4: "array", 5: "map", 6: "tag"}


def _fail(message: str, offset: int | None = None) -> DecodeError:
    return DecodeError(message, content_format=CONTENT_FORMAT, offset=offset)


def _head(data: bytes, pos: int) -> tuple[int, int, int | None, int]:
    """``(major, info, argument, next)`` of the item head at ``pos``; argument None: indefinite."""
    if pos >= len(data):
        raise _fail("truncated CBOR item", pos)
    first = data[pos]
    major, info = first >> 5, first & 0x1F
    if info < 24:
        return major, info, info, pos + 1
    if info == 31:
        return major, info, None, pos + 1
    if info > 27:
        raise _fail(f"reserved additional information {info}", pos)
    size = 1 << (info - 24)
    if pos + 1 + size > len(data):
        raise _fail("truncated CBOR item head", pos)
    return major, info, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def _item_end(data: bytes, pos: int) -> int:
    """The offset just past the scalar item at ``pos``; raises for containers and bad lengths."""
    major, _info, argument, nxt = _head(data, pos)
    if major in _SIMPLE_NAMES:
        raise _fail(f"a single value cannot be a CBOR {_SIMPLE_NAMES[major]}", pos)
    if major in (0, 1):
        if argument is None:
            raise _fail("an integer cannot have indefinite length", pos)
        return nxt
    if major == 7:
        if argument is None:
            raise _fail("unexpected CBOR break", pos)
        return nxt
    if argument is not None:  # definite byte or text string
        if argument > len(data) - nxt:
            raise _fail(f"string length {argument} exceeds the payload", pos)
        return nxt + argument
    for _ in range(_MAX_CHUNKS):  # indefinite string: definite chunks of the same major type
        if nxt < len(data) and data[nxt] == 0xFF:
            return nxt + 1
        chunk_major, _info, chunk_len, chunk_nxt = _head(data, nxt)
        if chunk_major != major or chunk_len is None:
            raise _fail("an indefinite string chunk must be a definite string of its type", nxt)
        if chunk_len > len(data) - chunk_nxt:
            raise _fail(f"chunk length {chunk_len} exceeds the payload", nxt)
        nxt = chunk_nxt + chunk_len
    raise _fail("too many chunks in an indefinite string", pos)


def _read_item(payload: bytes) -> tuple[object, bool]:
    """The one CBOR item of ``payload`` (tag 1 unwrapped) and whether tag 1 wrapped it."""
    if not payload:
        raise _fail("empty payload; a CBOR value needs at least one byte", 0)
    start, tagged = 0, False
    if payload[0] >> 5 == 6:
        _major, _info, tag, start = _head(payload, 0)
        if tag != _TAG_EPOCH_TIME:
            raise _fail(f"unexpected CBOR tag {tag}; only tag 1 (epoch time) is allowed", 0)
        tagged = True
    end = _item_end(payload, start)
    if end != len(payload):
        raise _fail(f"{len(payload) - end} trailing bytes after the CBOR value", end)
    try:
        item: object = cbor2.loads(payload[start:end])
    except Exception as exc:  # cbor2 raises many types (ValueError, CBORDecodeError, ...)
        raise _fail(f"malformed CBOR value: {exc}", start) from None
    return item, tagged


def _guess_type(item: object, tagged: bool) -> DataType:
    if tagged:
        return DataType.TIME
    if isinstance(item, bool):
        return DataType.BOOLEAN
    if isinstance(item, int):
        return DataType.INTEGER if item <= INT64_MAX else DataType.UNSIGNED_INTEGER
    if isinstance(item, float):
        return DataType.FLOAT
    if isinstance(item, str):
        return DataType.STRING
    if isinstance(item, bytes):
        return DataType.OPAQUE
    raise _fail(f"cannot type a CBOR {type(item).__name__} for a resource the model lacks", 0)


_DIRECT: dict[DataType, type] = {
    DataType.STRING: str,
    DataType.CORELNK: str,
    DataType.OPAQUE: bytes,
    DataType.BOOLEAN: bool,
}


def _convert(data_type: DataType, item: object, tagged: bool) -> Value:
    """``item`` as a ``data_type`` value; :class:`DecodeError` when the CBOR type does not fit."""
    if tagged and data_type is not DataType.TIME:
        raise _fail(f"tag 1 (epoch time) on a {data_type.value} value", 0)
    direct = _DIRECT.get(data_type)
    if direct is not None and isinstance(item, direct):
        if isinstance(item, str) and "\x00" in item:  # refused for every store alike
            raise _fail(f"{data_type.value} holds a NUL character (U+0000)", 0)
        return Value(data_type, item)  # type: ignore[arg-type]
    if data_type is DataType.NONE and item is None:
        return Value.none()
    if data_type is DataType.OBJLNK and isinstance(item, str):
        link = parse_objlnk(item)
        if link is None:
            raise _fail(f"an Objlnk is the text 'OID:IID', got {item[:24]!r}", 0)
        return Value(data_type, link)
    if isinstance(item, int) and not isinstance(item, bool):
        return _from_int(data_type, item)
    if isinstance(item, float) and data_type is DataType.FLOAT:
        return Value.float_(item)
    if isinstance(item, float) and data_type is DataType.TIME and tagged:
        if not math.isfinite(item) or not item.is_integer() or abs(item) > 2**63:
            raise _fail(f"epoch time {item!r} is not a whole number of seconds", 0)
        return Value.time(int(item))
    raise _fail(f"a CBOR {type(item).__name__} cannot be a {data_type.value} value", 0)


def _from_int(data_type: DataType, item: int) -> Value:
    if data_type in (DataType.INTEGER, DataType.TIME):
        if not INT64_MIN <= item <= INT64_MAX:
            raise _fail(f"{data_type.value} {item} does not fit in 64 signed bits", 0)
        return Value(data_type, item)
    if data_type is DataType.UNSIGNED_INTEGER:
        if not 0 <= item <= UINT64_MAX:
            raise _fail(f"Unsigned Integer {item} out of range 0..2**64-1", 0)
        return Value.unsigned(item)
    if data_type is DataType.FLOAT:
        if abs(item) > 2**53:  # beyond 2**53 not every integer is a binary64: refuse, not round
            raise _fail(f"integer {item} for a Float is not exactly representable", 0)
        return Value.float_(float(item))
    raise _fail(f"a CBOR integer cannot be a {data_type.value} value", 0)


def decode_cbor_value(payload: bytes, data_type: DataType | None) -> Value:
    """The value one CBOR item spells; ``data_type`` None means "guess from the CBOR type"."""
    if data_type is DataType.NONE and not payload:
        return Value.none()
    item, tagged = _read_item(payload)
    return _convert(data_type or _guess_type(item, tagged), item, tagged)


def _float_bytes(number: float) -> bytes:
    try:
        single = struct.pack(">f", number)
    except OverflowError:
        return b"\xfb" + struct.pack(">d", number)
    back: float = struct.unpack(">f", single)[0]
    if back == number or (math.isnan(back) and math.isnan(number)):
        return b"\xfa" + single
    return b"\xfb" + struct.pack(">d", number)


def encode_cbor_value(value: Value, data_type: DataType | None = None) -> bytes:
    """``value`` as one CBOR item; ``data_type`` (the model's type) makes an Integer a Time."""
    raw = value.value
    dtype = data_type or value.type
    if raw is None:
        return b"\xf6"
    if isinstance(raw, bool):
        return b"\xf5" if raw else b"\xf4"
    if isinstance(raw, float):
        return _float_bytes(raw)
    if isinstance(raw, ObjLink):
        raw = str(raw)
    prefix = b"\xc1" if dtype is DataType.TIME else b""
    try:
        return prefix + bytes(cbor2.dumps(raw))
    except (UnicodeEncodeError, ValueError, cbor2.CBOREncodeError) as exc:
        raise EncodeError(
            f"cannot encode {value!r} as CBOR: {exc}", content_format=CONTENT_FORMAT
        ) from None


class CborValueCodec:
    """Content format 60: one resource or resource-instance value as a CBOR item."""

    content_format = CONTENT_FORMAT

    def decode(self, payload: bytes, path: Path, model: ObjectModel) -> Node:
        definition = value_definition(CONTENT_FORMAT, path, model, encoding=False)
        value = decode_cbor_value(bytes(payload), definition.type if definition else None)
        return make_node(path, value)

    def encode(self, node: Node, path: Path, model: ObjectModel) -> bytes:
        value = node_value(CONTENT_FORMAT, node, path, model)
        definition = value_definition(CONTENT_FORMAT, path, model, encoding=True)
        return encode_cbor_value(value, definition.type if definition else None)


__all__ = ["CborValueCodec", "decode_cbor_value", "encode_cbor_value"]
