"""Exact JSON form of :class:`lwm2m.model.Value` for storage.

Values are stored as JSON text (not a native JSON column) so that the store, not the database,
decides the encoding: PostgreSQL's ``jsonb`` would turn numbers into ``numeric``, which has no
negative zero and no NaN, and SQLite has no JSON type at all. The text form is compact, readable
in a SQL shell, and round-trips every value bit for bit:

==================  ===================================================================
type                JSON
==================  ===================================================================
String, Corelnk     ``{"t":"String","v":"text"}``
Integer, Time,      ``{"t":"Integer","v":-5}`` (JSON integers are exact at any width in
Unsigned Integer    Python's ``json``; 64-bit values survive)
Float, finite       ``{"t":"Float","v":1.5}`` (``repr`` is the shortest exact form; ``-0.0``
                    keeps its sign)
Float, non-finite   ``"Infinity"``, ``"-Infinity"``, ``"NaN"``; a NaN with other bits than
                    the canonical quiet NaN is ``"NaN:<16 hex digits of its IEEE bits>"``
Boolean             ``true`` / ``false``
Opaque              standard base64 with padding
Objlnk              ``"3:0"``
none (executable)   ``{"t":"none"}``
==================  ===================================================================

The type name is :class:`DataType`'s value (the OMA DDF spelling), so the stored text is the
same vocabulary the object definitions use.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Any

from lwm2m.model import DataType, ModelError, ObjLink, Value
from lwm2m.store.errors import CorruptRecord

_CANONICAL_NAN_BITS = 0x7FF8000000000000
_TYPES = {t.value: t for t in DataType}


def _float_bits(x: float) -> int:
    return int(struct.unpack(">Q", struct.pack(">d", x))[0])


def _float_from_bits(bits: int) -> float:
    return float(struct.unpack(">d", struct.pack(">Q", bits))[0])


def _encode_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    bits = _float_bits(x)
    return "NaN" if bits == _CANONICAL_NAN_BITS else f"NaN:{bits:016x}"


def _decode_float(raw: object) -> float:
    if isinstance(raw, bool):
        raise CorruptRecord(f"Float value {raw!r} is a boolean")
    if isinstance(raw, int | float):
        return float(raw)
    if raw == "Infinity":
        return math.inf
    if raw == "-Infinity":
        return -math.inf
    if raw == "NaN":
        return _float_from_bits(_CANONICAL_NAN_BITS)
    if isinstance(raw, str) and raw.startswith("NaN:") and len(raw) == 20:
        try:
            bits = int(raw[4:], 16)
        except ValueError:
            pass
        else:
            x = _float_from_bits(bits)
            if math.isnan(x):
                return x
    raise CorruptRecord(f"invalid stored Float {raw!r}")


def value_to_obj(value: Value) -> dict[str, Any]:
    """The JSON-ready dict for ``value`` (see the module docstring for the mapping)."""
    t = value.type
    v = value.value
    if t is DataType.NONE:
        return {"t": t.value}
    if t is DataType.FLOAT:
        assert isinstance(v, float)
        return {"t": t.value, "v": _encode_float(v)}
    if t is DataType.OPAQUE:
        assert isinstance(v, bytes)
        return {"t": t.value, "v": base64.b64encode(v).decode("ascii")}
    if t is DataType.OBJLNK:
        return {"t": t.value, "v": str(v)}
    return {"t": t.value, "v": v}


def value_from_obj(obj: object) -> Value:
    """Inverse of :func:`value_to_obj`; raises :class:`CorruptRecord` for anything else."""
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise CorruptRecord(f"stored value {obj!r} is not an object with a type name 't'")
    t = _TYPES.get(obj["t"])
    if t is None:
        raise CorruptRecord(f"stored value has unknown type {obj['t']!r}")
    try:
        if t is DataType.NONE:
            return Value.none()
        if "v" not in obj:
            raise CorruptRecord(f"stored {t.value} value has no 'v'")
        raw = obj["v"]
        if t is DataType.FLOAT:
            return Value(t, _decode_float(raw))
        if t is DataType.OPAQUE:
            if not isinstance(raw, str):
                raise CorruptRecord(f"stored Opaque {raw!r} is not base64 text")
            return Value(t, base64.b64decode(raw.encode("ascii"), validate=True))
        if t is DataType.OBJLNK:
            if not isinstance(raw, str):
                raise CorruptRecord(f"stored Objlnk {raw!r} is not 'OID:IID' text")
            return Value(t, ObjLink.parse(raw))
        return Value(t, raw)
    except (ModelError, binascii.Error, UnicodeEncodeError) as err:
        raise CorruptRecord(f"stored {t.value} value {obj.get('v')!r} is invalid: {err}") from err


_NUMBER_PREFIX = {
    t: f'{{"t":"{t.value}","v":'
    for t in (DataType.INTEGER, DataType.UNSIGNED_INTEGER, DataType.TIME, DataType.FLOAT)
}


def value_to_json(value: Value) -> str:
    """Compact JSON text for ``value``; strict JSON (no bare NaN/Infinity tokens).

    Numbers take a fast path (telemetry is mostly numbers, and ``json.dumps`` is a third of the
    cost of storing one); it writes exactly what ``json.dumps`` would: ``int.__repr__`` and
    ``float.__repr__`` are the forms the ``json`` module itself emits.
    """
    v = value.value
    prefix = _NUMBER_PREFIX.get(value.type)
    if prefix is not None:
        if isinstance(v, int):
            return f"{prefix}{int.__repr__(v)}}}"
        if isinstance(v, float) and math.isfinite(v):
            return f"{prefix}{float.__repr__(v)}}}"
    elif value.type is DataType.BOOLEAN:
        return '{"t":"Boolean","v":true}' if v else '{"t":"Boolean","v":false}'
    return json.dumps(
        value_to_obj(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def value_from_json(text: str) -> Value:
    """Parse text written by :func:`value_to_json`; :class:`CorruptRecord` if it is not."""
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, TypeError) as err:
        raise CorruptRecord(f"stored value {text!r} is not valid JSON: {err}") from err
    return value_from_obj(obj)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")
