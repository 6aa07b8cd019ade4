"""Plain text (content format 0): one resource or resource-instance value as text.

Text carries no type, so the object model types it; a resource the model does not know is read
as a String, the only reading that cannot fail. Parsing is strict (no surrounding whitespace,
``1.0`` is not an Integer, Booleans are ``0``/``1`` only): wakaama and Anjay send exactly the
canonical forms (see the interop vectors), and a lenient parser would turn a client bug into a
silently wrong value. Floats are written with :func:`repr`, the shortest text that reads back
to the same binary64, so a value survives a write/read round trip bit for bit.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.codec.scalar import make_node, node_value, parse_objlnk, value_definition
from lwm2m.model import DataType, ModelError, Node, ObjectModel, ObjLink, Path, Value
from lwm2m.model.values import INT64_MAX, INT64_MIN, UINT64_MAX, trusted_value

CONTENT_FORMAT = 0

_SIGNED = re.compile(rb"-?[0-9]{1,19}")
_UNSIGNED = re.compile(rb"[0-9]{1,20}")
_DECIMAL = re.compile(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS = {
    b"nan": math.nan,
    b"inf": math.inf,
    b"-inf": -math.inf,
    b"infinity": math.inf,
    b"-infinity": -math.inf,
}
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


_INTEGER_TYPES = frozenset({DataType.INTEGER, DataType.TIME, DataType.UNSIGNED_INTEGER})


def _fail(message: str, offset: int = 0) -> DecodeError:
    return DecodeError(message, content_format=CONTENT_FORMAT, offset=offset)


def _first_outside(payload: bytes, allowed: bytes) -> int:
    """Offset of the first byte not in ``allowed`` (0 when every byte is allowed)."""
    for i, byte in enumerate(payload):
        if byte not in allowed:
            return i
    return 0


def parse_text_value(data_type: DataType, payload: bytes) -> Value:
    """The ``data_type`` value ``payload`` spells; :class:`DecodeError` if it spells none."""
    if data_type in _INTEGER_TYPES:  # first: most telemetry is numeric (issue 13)
        return _parse_integer(data_type, payload)
    if data_type in (DataType.STRING, DataType.CORELNK):
        try:
            return Value(data_type, payload.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _fail("text is not valid UTF-8", exc.start) from None
        except ModelError as exc:  # NUL (U+0000): refused for every store alike
            raise _fail(str(exc), payload.find(b"\x00")) from None
    if data_type is DataType.OPAQUE:
        try:
            return Value.opaque(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            bad = _first_outside(payload, _BASE64_ALPHABET)
            raise _fail("Opaque text is not valid base64", bad) from None
    if data_type is DataType.NONE:
        if payload:
            raise _fail("an executable resource has no value; expected an empty payload")
        return Value.none()
    if data_type is DataType.FLOAT:
        return trusted_value(DataType.FLOAT, _parse_float(payload))  # always a float
    if data_type is DataType.BOOLEAN:
        if payload not in (b"0", b"1"):
            raise _fail(f"a Boolean is '0' or '1', got {payload[:20]!r}")
        return trusted_value(DataType.BOOLEAN, payload == b"1")
    return _parse_objlnk(payload)


def _parse_integer(data_type: DataType, payload: bytes) -> Value:
    unsigned = data_type is DataType.UNSIGNED_INTEGER
    pattern = _UNSIGNED if unsigned else _SIGNED
    if pattern.fullmatch(payload) is None:
        allowed = b"0123456789" if unsigned else b"-0123456789"
        raise _fail(
            f"not a decimal {data_type.value}: {payload[:24]!r}", _first_outside(payload, allowed)
        )
    number = int(payload)
    low, high = (0, UINT64_MAX) if unsigned else (INT64_MIN, INT64_MAX)
    if not low <= number <= high:
        raise _fail(f"{data_type.value} {number} out of range {low}..{high}")
    return trusted_value(data_type, number)  # an int in range: what Value() would check


def _parse_float(payload: bytes) -> float:
    special = _SPECIAL_FLOATS.get(payload.lower())
    if special is not None:
        return special
    if _DECIMAL.fullmatch(payload) is None:
        bad = _first_outside(payload, b"-+.0123456789eE")
        raise _fail(f"not a decimal Float: {payload[:24]!r}", bad)
    number = float(payload)
    if math.isinf(number):
        raise _fail(f"Float {payload[:24]!r} overflows binary64")
    return number


def _parse_objlnk(payload: bytes) -> Value:
    link = parse_objlnk(payload.decode("ascii", "replace"))
    if link is None:
        raise _fail(f"an Objlnk is 'OID:IID' with ids 0..65535, got {payload[:24]!r}")
    return Value(DataType.OBJLNK, link)


def format_text_value(value: Value) -> bytes:
    """``value`` as text (Integer and Time, String and Corelnk share their spellings)."""
    raw = value.value
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(
                f"string holds an unencodable code point at index {exc.start}",
                content_format=CONTENT_FORMAT,
            ) from None
    if isinstance(raw, bool):
        return b"1" if raw else b"0"
    if isinstance(raw, int | ObjLink):
        return str(raw).encode("ascii")
    if isinstance(raw, float):
        return repr(raw).encode("ascii")
    if isinstance(raw, bytes):
        return base64.b64encode(raw)
    return b""


class TextCodec:
    """Content format 0: ``text/plain;charset=utf-8``, one value."""

    content_format = CONTENT_FORMAT

    def decode(self, payload: bytes, path: Path, model: ObjectModel) -> Node:
        definition = value_definition(CONTENT_FORMAT, path, model, encoding=False)
        data_type = definition.type if definition is not None else DataType.STRING
        return make_node(path, parse_text_value(data_type, bytes(payload)))

    def encode(self, node: Node, path: Path, model: ObjectModel) -> bytes:
        return format_text_value(node_value(CONTENT_FORMAT, node, path, model))


__all__ = ["TextCodec", "format_text_value", "parse_text_value"]
