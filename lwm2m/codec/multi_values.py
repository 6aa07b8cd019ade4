"""Leaf values of the multi-path formats: wire value ⇄ typed :class:`Value`.

SenML JSON/CBOR, LwM2M JSON and LwM2M CBOR all carry a leaf as one of five wire shapes — a
number, a text string, a boolean, a byte string or an object link — named here after the SenML
labels ``v``, ``vs``, ``vb``, ``vd`` and ``vlo``. The shapes are coarser than the LwM2M data
types (a number may be an Integer, Unsigned Integer, Float or Time), so decoding consults the
object model, and when the model does not know the resource it falls back to the shape alone.
Keeping this one table for all four formats means a value decodes to the same :class:`Value`
whichever of them carried it.

Two format quirks are switches rather than separate tables: LwM2M JSON has no byte-string
field and carries Opaque as base64 text (``opaque_text``), and LwM2M CBOR has no object-link
field and carries Objlnk as ``"OID:IID"`` text (``objlnk_text``).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.model import DataType, ModelError, ObjLink, ResourceDefinition, Value
from lwm2m.model.values import INT64_MAX, INT64_MIN, UINT64_MAX

Kind = Literal["v", "vs", "vb", "vd", "vlo"]
Raw = int | float | str | bool | bytes

Fail = Callable[[str], DecodeError]
"""Builds the DecodeError for a message, already knowing the format and the field."""

RELATIVE_TIME_LIMIT = 2**28
"""SenML (RFC 8428 §4.5.3): a resolved time below 2**28 is relative to "now", not absolute."""

_NUMERIC = (DataType.INTEGER, DataType.UNSIGNED_INTEGER, DataType.TIME)
_COMPATIBLE = {
    # Pairs sharing one wire shape: writing Value.integer to a Time resource means the time.
    frozenset({DataType.INTEGER, DataType.TIME}),
    frozenset({DataType.STRING, DataType.CORELNK}),
}


@dataclass(frozen=True, slots=True)
class RawValue:
    """One leaf as the wire carries it: its shape and the plain Python value."""

    kind: Kind
    raw: Raw


@dataclass(frozen=True, slots=True)
class Quirks:
    """How a format deviates from SenML's five value fields."""

    opaque_text: bool = False
    objlnk_text: bool = False


SENML = Quirks()


def types_compatible(declared: DataType, actual: DataType) -> bool:
    """True when a value of type ``actual`` may stand where the model declares ``declared``."""
    return declared is actual or frozenset({declared, actual}) in _COMPATIBLE


def _describe(definition: ResourceDefinition) -> str:
    return f"{definition.name!r} ({definition.type.value})"


def typed_value(
    raw: RawValue,
    definition: ResourceDefinition | None,
    *,
    where: str,
    content_format: int,
    quirks: Quirks = SENML,
) -> Value:
    """The :class:`Value` a wire leaf stands for, typed by ``definition`` when there is one."""

    def fail(message: str) -> DecodeError:
        return DecodeError(message, content_format=content_format, field=where)

    try:
        if definition is None:
            return _untyped(raw, fail)
        return _typed(raw, definition, quirks, fail)
    except ModelError as exc:
        raise fail(str(exc)) from exc


def _untyped(raw: RawValue, fail: Fail) -> Value:
    """Typing by shape alone, for resources the object model does not define."""
    value = raw.raw
    if raw.kind == "v":
        if isinstance(value, int) and not isinstance(value, bool):
            if INT64_MIN <= value <= INT64_MAX:
                return Value.integer(value)
            if 0 <= value <= UINT64_MAX:
                return Value.unsigned(value)
            raise fail(f"number {value} does not fit in 64 bits")
        if isinstance(value, float):
            return Value.float_(value)
    elif raw.kind == "vs" and isinstance(value, str):
        return Value.string(value)
    elif raw.kind == "vb" and isinstance(value, bool):
        return Value.boolean(value)
    elif raw.kind == "vd" and isinstance(value, bytes):
        return Value.opaque(value)
    elif raw.kind == "vlo" and isinstance(value, str):
        return Value(DataType.OBJLNK, ObjLink.parse(value))
    raise fail(f"'{raw.kind}' holds a {type(value).__name__}")


def _typed(raw: RawValue, definition: ResourceDefinition, quirks: Quirks, fail: Fail) -> Value:
    dtype, value, kind = definition.type, raw.raw, raw.kind
    if dtype is DataType.NONE:
        raise fail(f"{_describe(definition)} is executable and holds no value")
    if dtype in (DataType.STRING, DataType.CORELNK) and kind == "vs":
        return Value(dtype, value)
    if dtype in _NUMERIC and kind == "v":
        return Value(dtype, _integral(value, dtype, definition, fail))
    if dtype is DataType.FLOAT and kind == "v" and isinstance(value, int | float):
        try:
            return Value.float_(float(value))
        except OverflowError:
            raise fail(f"{value} is too large for a Float") from None
    if dtype is DataType.BOOLEAN and kind == "vb":
        return Value(dtype, value)
    if dtype is DataType.OPAQUE and kind == "vd":
        return Value(dtype, value)
    if dtype is DataType.OPAQUE and kind == "vs" and quirks.opaque_text and isinstance(value, str):
        return Value.opaque(b64decode(value, fail))
    objlnk_kinds = ("vlo", "vs") if quirks.objlnk_text else ("vlo",)
    if dtype is DataType.OBJLNK and kind in objlnk_kinds and isinstance(value, str):
        return Value(dtype, ObjLink.parse(value))
    raise fail(f"{_describe(definition)} cannot be carried in '{kind}'")


def _integral(value: Raw, dtype: DataType, definition: ResourceDefinition, fail: Fail) -> int:
    """An integer from a wire number; integral floats are accepted (Anjay's decoder does too).

    A Time may also arrive fractional (seconds with a fraction): LwM2M Time has whole seconds,
    so the fraction is dropped, as Leshan does.
    """
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        if value.is_integer():
            return int(value)
        if dtype is DataType.TIME:
            return math.floor(value)
    raise fail(f"{_describe(definition)} needs an integer, got {value!r}")


def raw_value(value: Value, *, where: str, content_format: int, quirks: Quirks = SENML) -> RawValue:
    """The wire shape of ``value``; raises :class:`EncodeError` for an executable's no-value."""
    v, dtype = value.value, value.type
    if dtype in (DataType.STRING, DataType.CORELNK) and isinstance(v, str):
        return RawValue("vs", v)
    if dtype in (*_NUMERIC, DataType.FLOAT) and isinstance(v, int | float):
        return RawValue("v", v)
    if dtype is DataType.BOOLEAN and isinstance(v, bool):
        return RawValue("vb", v)
    if dtype is DataType.OPAQUE and isinstance(v, bytes):
        if quirks.opaque_text:
            return RawValue("vs", base64.b64encode(v).decode("ascii"))
        return RawValue("vd", v)
    if dtype is DataType.OBJLNK and isinstance(v, ObjLink):
        return RawValue("vs" if quirks.objlnk_text else "vlo", str(v))
    raise EncodeError(
        f"{where}: a {dtype.value} value has no representation in this format",
        content_format=content_format,
    )


def b64decode(text: str, fail: Fail) -> bytes:
    """Decode base64 leniently: standard or URL-safe alphabet, padding optional.

    RFC 8428 prescribes URL-safe base64 without padding for SenML JSON ``vd`` (Anjay writes
    that), while LwM2M JSON implementations write the standard alphabet with padding; a server
    has to read both.
    """
    body = text.strip().rstrip("=").replace("-", "+").replace("_", "/")
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise fail(f"invalid base64 {text[:40]!r}: {exc}") from None


def b64encode_url(data: bytes) -> str:
    """RFC 8428 §4.3 ``vd``: URL-safe alphabet, no padding."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
