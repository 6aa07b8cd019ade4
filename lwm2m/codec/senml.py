"""The SenML core (RFC 8428 as LwM2M 1.1/1.2 TS Core §7.4.4/§7.4.5 profile it), sans-IO.

A SenML pack is a list of records. Base fields (``bn`` base name, ``bt`` base time, ``bv`` base
value) apply to their own record and every following one until a later record changes them;
a record's full name is ``bn + n`` and its time ``bt + t``. This module holds the record model
shared by the JSON (110) and CBOR (112) representations — and reused by LwM2M JSON (11543),
which is an older SenML dialect — plus the resolution of names, times and base values, and the
factoring of base names and times when encoding. The representations only translate between
bytes and :class:`Record` lists.

Real clients differ in naming: wakaama writes ``{"bn":"/3/0/","n":"0"}``, Anjay
``{"bn":"/3/0","n":"/0"}``. Both concatenate to ``/3/0/0``; a name joining ``"/"`` to ``"/"``
(``{"bn":"/3/0/","n":"/0"}``) is read with one slash. Times are left as resolved: a time below
2**28 is relative to the receiver's "now" (RFC 8428 §4.5.3), which
:meth:`~lwm2m.codec.multi_codec.LeafCodec.decode_timestamped` applies when given ``now``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lwm2m.codec.errors import DecodeError
from lwm2m.codec.multi_codec import (
    MAX_LEAVES,
    LeafCodec,
    TimedLeaves,
    WireLeaf,
    cached_path,
    parse_path,
)
from lwm2m.codec.multi_values import Fail, Kind, RawValue, b64decode
from lwm2m.model import Path

Number = int | float
VALUE_LABELS: tuple[Kind, ...] = ("v", "vs", "vb", "vd", "vlo")


@dataclass(frozen=True, slots=True)
class Record:
    """One SenML record; None means the field is absent."""

    bn: str | None = None
    bt: Number | None = None
    bv: Number | None = None
    n: str | None = None
    t: Number | None = None
    value: RawValue | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A record with base fields applied: full path, time (None: no bt/t given), value."""

    index: int
    path: Path
    time: float | None
    value: RawValue | None


def check_count(count: int, content_format: int) -> None:
    if count > MAX_LEAVES:
        raise DecodeError(
            f"{count} records exceed the limit of {MAX_LEAVES}", content_format=content_format
        )


def record_from_fields(
    where: str, fields: Mapping[str, object], content_format: int, *, vd_text: bool
) -> Record:
    """A :class:`Record` from label → item pairs, checking every known label's type.

    ``where`` names the record in errors (``"record 3"``); ``vd_text``: the JSON
    representation carries ``vd`` as base64 text, CBOR as bytes.
    """

    def fail(label: str, message: str) -> DecodeError:
        return DecodeError(message, content_format=content_format, field=f"{where} '{label}'")

    def failing(label: str) -> Fail:
        return lambda message: fail(label, message)

    text: dict[str, str] = {}
    numbers: dict[str, Number] = {}
    value: RawValue | None = None
    for label, item in fields.items():
        if label in ("bn", "n"):
            if not isinstance(item, str):
                raise fail(label, f"a name must be a string, got {type(item).__name__}")
            text[label] = item
        elif label in ("bt", "t", "bv"):
            # A plain int (or finite float) needs no checking: skip building the error closure.
            if type(item) is int or (type(item) is float and math.isfinite(item)):
                numbers[label] = item
            else:
                numbers[label] = _number(item, failing(label))
        elif label in VALUE_LABELS:
            if value is not None:
                raise fail(label, f"a record holds one value, but has '{value.kind}' too")
            if label == "v" and (
                type(item) is int or (type(item) is float and math.isfinite(item))
            ):
                value = RawValue("v", item)
            else:
                value = _value(label, item, vd_text, failing(label))
        elif label.endswith("_"):
            raise fail(label, "unknown must-understand label (RFC 8428 §4.4)")
        # other labels (units, sums, extensions) carry nothing LwM2M reads
    return Record(
        bn=text.get("bn"),
        bt=numbers.get("bt"),
        bv=numbers.get("bv"),
        n=text.get("n"),
        t=numbers.get("t"),
        value=value,
    )


def _number(item: object, fail: Fail) -> Number:
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise fail(f"expected a number, got {type(item).__name__}")
    if isinstance(item, float) and not math.isfinite(item):
        raise fail(f"expected a finite number, got {item}")
    return item


def _value(label: Kind, item: object, vd_text: bool, fail: Fail) -> RawValue:
    if label == "v":
        return RawValue("v", _number(item, fail))
    if label == "vb":
        if not isinstance(item, bool):
            raise fail(f"'vb' must be a boolean, got {type(item).__name__}")
        return RawValue("vb", item)
    if label == "vd":
        if vd_text and isinstance(item, str):
            return RawValue("vd", b64decode(item, fail))
        if not vd_text and isinstance(item, bytes):
            return RawValue("vd", item)
        expected = "base64 text" if vd_text else "a byte string"
        raise fail(f"'vd' must be {expected}, got {type(item).__name__}")
    if not isinstance(item, str):
        raise fail(f"'{label}' must be a string, got {type(item).__name__}")
    return RawValue(label, item)


def join_name(base: str, name: str) -> str:
    """``bn + n`` (RFC 8428 §4.5.1), reading ``"/3/0/" + "/1"`` with a single slash."""
    if base.endswith("/") and name.startswith("/"):
        return base + name[1:]
    return base + name


def resolve(records: Sequence[Record], content_format: int) -> list[Resolved]:
    """Apply base name, base time and base value to every record."""
    check_count(len(records), content_format)
    base_name, base_time, base_value = "", None, None
    resolved: list[Resolved] = []
    for index, record in enumerate(records):
        if record.bn is not None:
            base_name = record.bn
        if record.bt is not None:
            base_time = record.bt
        if record.bv is not None:
            base_value = record.bv
        name = join_name(base_name, record.n or "")
        path = cached_path(name) or parse_path(
            name, where=f"record {index} name {name[:60]!r}", content_format=content_format
        )
        time: float | None = None
        value = record.value
        try:
            if base_time is not None or record.t is not None:
                time = float((base_time or 0) + (record.t or 0))
            if value is not None and value.kind == "v" and base_value is not None:
                assert isinstance(value.raw, int | float)
                value = RawValue("v", base_value + value.raw)
        except OverflowError:
            raise DecodeError(
                "base time or base value overflows",
                content_format=content_format,
                field=f"record {index}",
            ) from None
        if time is not None and not math.isfinite(time):
            raise DecodeError(
                "time out of range", content_format=content_format, field=f"record {index}"
            )
        resolved.append(Resolved(index, path, time, value))
    return resolved


def compact(number: float) -> Number:
    """Integral times as integers: shorter on the wire, equal when read back as floats."""
    return int(number) if float(number).is_integer() else number


def records_for(groups: Sequence[TimedLeaves]) -> list[Record]:
    """Records for timed leaves, with base names as Leshan and wakaama write them.

    A leaf of an object, instance or multiple resource is named relative to that node
    (``{"bn":"/3/0/","n":"0"}, {"n":"7/1"}``); a lone single-resource or resource-instance
    node carries its full path as base name (``{"bn":"/3/0/0","v":..}``, Anjay writes that
    too); leaves of several single-resource nodes share their parent
    (``{"bn":"/3/0/","n":"0"}, {"n":"9"}`` in a Send). ``bn`` is repeated only when it
    changes. Each instant's first record carries its time as ``bt``; a
    timeless instant after a timed one resets ``bt`` to 0 (SenML's "now").
    """
    lone = sum(len(leaves) for _, leaves in groups) == 1
    records: list[Record] = []
    current_bn: str | None = None
    current_bt: float | None = None
    for time, leaves in groups:
        first = True
        for leaf in leaves:
            if lone and leaf.node == leaf.path:
                base, name = str(leaf.path), None
            else:
                parent = leaf.node if leaf.node != leaf.path else leaf.path.parent
                base = "/" + "".join(f"{i}/" for i in parent.ids)
                name = "/".join(str(i) for i in leaf.path.relative_to(parent))
            bt: Number | None = None
            if first and time is not None and time != current_bt:
                bt = compact(time)
            elif first and time is None and current_bt not in (None, 0.0):
                bt = 0
            if bt is not None:
                current_bt = float(bt)
            first = False
            records.append(
                Record(bn=base if base != current_bn else None, bt=bt, n=name, value=leaf.raw)
            )
            current_bn = base
    return records


class SenmlCodec(LeafCodec):
    """SenML packs whatever the representation: a subclass maps bytes ⇄ :class:`Record`s."""

    @abstractmethod
    def _parse(self, payload: bytes) -> list[Record]: ...

    @abstractmethod
    def _serialize(self, records: Sequence[Record]) -> bytes: ...

    def _read(self, payload: bytes) -> list[WireLeaf]:
        leaves = []
        for item in resolve(self._parse(payload), self.content_format):
            where = f"record {item.index}"
            if item.value is None:
                raise DecodeError(
                    f"{item.path} has no value (only a Read-Composite request lists bare names)",
                    content_format=self.content_format,
                    field=where,
                )
            if item.path.level < 3:
                raise DecodeError(
                    f"a value needs a resource or resource-instance name, got {item.path}",
                    content_format=self.content_format,
                    field=where,
                )
            leaves.append(WireLeaf(item.path, item.value, item.time, where))
        return leaves

    def _write(self, groups: Sequence[TimedLeaves]) -> bytes:
        return self._serialize(records_for(groups))

    def _read_paths(self, payload: bytes) -> list[Path]:
        """Read-/Observe-Composite request bodies: records naming paths, without values."""
        paths = []
        for item in resolve(self._parse(payload), self.content_format):
            if item.value is not None:
                raise DecodeError(
                    "a Read-Composite request names paths; this record carries a value",
                    content_format=self.content_format,
                    field=f"record {item.index}",
                )
            paths.append(item.path)
        return paths

    def _write_paths(self, paths: Sequence[Path]) -> bytes:
        """One record per path holding its full name, as Leshan writes them."""
        return self._serialize([Record(n=str(p)) for p in paths])
