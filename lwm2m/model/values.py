"""Typed LwM2M values.

A :class:`Value` pairs a Python value with its LwM2M :class:`DataType`. The pairing matters
because several wire formats (TLV above all) carry no type information: a codec needs the type
to encode an Integer in the right width or to tell a Time from an Integer, and decoding needs
the object model to recover it. Values are immutable and validated on construction, so a value
that exists is always one the wire formats can carry.

Python representation per type:

======================  ==========================================================
String, Corelnk         ``str``
Integer, Time           ``int`` (signed 64-bit; Time is seconds since the Unix epoch)
Unsigned Integer        ``int`` (unsigned 64-bit)
Float                   ``float`` (IEEE 754 binary64)
Boolean                 ``bool``
Opaque                  ``bytes``
Objlnk                  :class:`ObjLink`
None (executable)       ``None``
======================  ==========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from lwm2m.model.errors import InvalidValue

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


class DataType(Enum):
    """LwM2M resource data types, valued by the spelling the OMA DDF XML uses."""

    STRING = "String"
    INTEGER = "Integer"
    UNSIGNED_INTEGER = "Unsigned Integer"
    FLOAT = "Float"
    BOOLEAN = "Boolean"
    OPAQUE = "Opaque"
    TIME = "Time"
    OBJLNK = "Objlnk"
    CORELNK = "Corelnk"
    NONE = "none"

    @classmethod
    def from_ddf(cls, text: str) -> DataType:
        """Map the DDF ``<Type>`` text (case-insensitive; empty means executable) to a type."""
        key = text.strip().lower()
        if key == "":
            return cls.NONE
        for member in cls:
            if member.value.lower() == key:
                return member
        raise InvalidValue(f"unknown LwM2M data type {text!r}")


@dataclass(frozen=True, slots=True, order=True)
class ObjLink:
    """An Object Link: ``object_id:instance_id``; 65535 in either part is the null link."""

    object_id: int
    instance_id: int

    def __post_init__(self) -> None:
        for part in (self.object_id, self.instance_id):
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= 65535:
                raise InvalidValue(f"object link part {part!r} out of range 0..65535")

    @classmethod
    def parse(cls, text: str) -> ObjLink:
        """Parse the text form ``"3:0"``."""
        left, sep, right = text.partition(":")
        if not sep or not _is_decimal(left) or not _is_decimal(right):
            raise InvalidValue(f"invalid object link {text!r}; expected 'OID:IID'")
        return cls(int(left), int(right))

    @property
    def is_null(self) -> bool:
        return self.object_id == 65535 and self.instance_id == 65535

    def __str__(self) -> str:
        return f"{self.object_id}:{self.instance_id}"


ValueType = str | int | float | bool | bytes | ObjLink | None


def _is_decimal(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '³' and Arabic-Indic digits."""
    return text.isascii() and text.isdigit()


def _int_text(value: int) -> str:
    """``value`` for an error message: Python refuses to render integers of more than 4 300
    digits (and a device or operator can send one), so large ones are described by size."""
    return str(value) if value.bit_length() <= 256 else f"an integer of {value.bit_length()} bits"


def _check(data_type: DataType, value: Any) -> Any:
    """Validate ``value`` for ``data_type`` and return its canonical Python form."""
    if data_type in (DataType.STRING, DataType.CORELNK):
        if not isinstance(value, str):
            raise InvalidValue(f"{data_type.value} needs str, got {type(value).__name__}")
        if "\x00" in value:
            # One rule for every store (issue 14 item 6): PostgreSQL text cannot hold NUL, so a
            # device's or operator's string with one is refused here, where it enters.
            raise InvalidValue(f"{data_type.value} holds a NUL character (U+0000)")
        return value
    if data_type in (DataType.INTEGER, DataType.TIME):
        if isinstance(value, datetime) and data_type is DataType.TIME:
            value = int(value.timestamp())
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"{data_type.value} needs int, got {type(value).__name__}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidValue(
                f"{data_type.value} {_int_text(value)} does not fit in 64 signed bits"
            )
        return value
    if data_type is DataType.UNSIGNED_INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"Unsigned Integer needs int, got {type(value).__name__}")
        if not 0 <= value <= UINT64_MAX:
            raise InvalidValue(f"Unsigned Integer {_int_text(value)} out of range 0..2**64-1")
        return value
    if data_type is DataType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidValue(f"Float needs float, got {type(value).__name__}")
        return float(value)
    if data_type is DataType.BOOLEAN:
        if not isinstance(value, bool):
            raise InvalidValue(f"Boolean needs bool, got {type(value).__name__}")
        return value
    if data_type is DataType.OPAQUE:
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        if not isinstance(value, bytes):
            raise InvalidValue(f"Opaque needs bytes, got {type(value).__name__}")
        return value
    if data_type is DataType.OBJLNK:
        if not isinstance(value, ObjLink):
            raise InvalidValue(f"Objlnk needs ObjLink, got {type(value).__name__}")
        return value
    if data_type is DataType.NONE:
        if value is not None:
            raise InvalidValue(f"an executable resource holds no value, got {value!r}")
        return None
    raise InvalidValue(f"unknown data type {data_type!r}")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Value:
    """An immutable, validated LwM2M value of a given :class:`DataType`."""

    type: DataType
    value: ValueType

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _check(self.type, self.value))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value):
            return NotImplemented
        if self.type is not other.type:
            return False
        a, b = self.value, other.value
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True  # NaN round-trips; equal for the purpose of comparing content
        return type(a) is type(b) and a == b

    def __hash__(self) -> int:
        v = self.value
        if isinstance(v, float) and math.isnan(v):
            return hash((self.type, "nan"))
        return hash((self.type, v))

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def string(cls, v: str) -> Value:
        return cls(DataType.STRING, v)

    @classmethod
    def integer(cls, v: int) -> Value:
        return cls(DataType.INTEGER, v)

    @classmethod
    def unsigned(cls, v: int) -> Value:
        return cls(DataType.UNSIGNED_INTEGER, v)

    @classmethod
    def float_(cls, v: float) -> Value:
        return cls(DataType.FLOAT, v)

    @classmethod
    def boolean(cls, v: bool) -> Value:
        return cls(DataType.BOOLEAN, v)

    @classmethod
    def opaque(cls, v: bytes) -> Value:
        return cls(DataType.OPAQUE, v)

    @classmethod
    def time(cls, v: int | datetime) -> Value:
        return cls(DataType.TIME, int(v.timestamp()) if isinstance(v, datetime) else v)

    @classmethod
    def objlnk(cls, object_id: int, instance_id: int) -> Value:
        return cls(DataType.OBJLNK, ObjLink(object_id, instance_id))

    @classmethod
    def corelnk(cls, v: str) -> Value:
        return cls(DataType.CORELNK, v)

    @classmethod
    def none(cls) -> Value:
        return cls(DataType.NONE, None)

    # -- views ------------------------------------------------------------------------------
    def as_datetime(self) -> datetime:
        """A Time value as an aware UTC datetime."""
        if self.type is not DataType.TIME:
            raise InvalidValue(f"{self.type.value} is not a Time")
        assert isinstance(self.value, int)
        return datetime.fromtimestamp(self.value, tz=UTC)

    def __repr__(self) -> str:
        return f"Value({self.type.name}, {self.value!r})"


# Slot setters of the frozen ``Value``: what its generated ``__init__`` does through
# ``object.__setattr__``, without the frame, the keyword handling and ``__post_init__``.
_new_value: Any = object.__new__
_set_type: Any = Value.__dict__["type"].__set__
_set_raw: Any = Value.__dict__["value"].__set__


def trusted_value(data_type: DataType, value: ValueType) -> Value:
    """A :class:`Value` built without ``_check``: only for a ``value`` that is already the
    canonical Python form ``_check`` would return for ``data_type`` (an ``int`` in range for the
    integer types, a ``float`` for Float, a ``bool`` for Boolean, ...), as a codec that parsed
    and range-checked it has. Equal, hashing and printing alike to ``Value(data_type, value)``;
    about a quarter of its cost (issue 13: once per notified value)."""
    v = _new_value(Value)
    _set_type(v, data_type)
    _set_raw(v, value)
    return v  # type: ignore[no-any-return]
