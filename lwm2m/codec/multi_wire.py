"""Bounded, exception-tight JSON and CBOR parsing for the multi-path formats.

The codecs promise to raise only :class:`CodecError` subclasses whatever bytes a device sends.
The standard ``json`` module and ``cbor2`` raise a zoo of exceptions (ValueError, RecursionError,
UnicodeDecodeError, OverflowError, cbor2's own errors, and on crafted tags almost anything), let
a JSON document repeat a key silently, and ``cbor2.loads`` ignores bytes after the first item.
These wrappers turn every failure into a :class:`DecodeError` naming the offset where known,
reject duplicate keys and trailing data, and reduce cbor2's decoded items to plain Python types
(datetimes from tag 0/1 become epoch seconds, decimal fractions become floats, anything else
exotic is refused) so the format modules only ever see ``None``, bool, int, float, str, bytes,
list, tuple (array map keys) and dict.
"""

from __future__ import annotations

import inspect
import io
import json
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

import cbor2

from lwm2m.codec.errors import DecodeError, EncodeError

MAX_DEPTH = 16
"""Deeper than any valid SenML pack (2) or LwM2M CBOR document (5 maps plus key arrays)."""


def _cbor_options() -> dict[str, Any]:
    """Hardening options this cbor2 supports (max_depth since 5.9, duplicates since 6.1)."""
    try:
        params = inspect.signature(cbor2.CBORDecoder).parameters
    except (TypeError, ValueError):  # pragma: no cover - signature-less C builds
        return {}
    wanted: dict[str, Any] = {"max_depth": MAX_DEPTH, "allow_duplicate_keys": False}
    return {k: v for k, v in wanted.items() if k in params}


_CBOR_OPTIONS = _cbor_options()


def load_cbor(payload: bytes, content_format: int) -> object:
    """Exactly one CBOR item from ``payload``, reduced to plain Python types."""
    stream = io.BytesIO(payload)
    try:
        item = cbor2.CBORDecoder(stream, **_CBOR_OPTIONS).decode()
    except Exception as exc:  # cbor2 raises anything from crafted tags; all are malformed input
        raise DecodeError(
            f"malformed CBOR: {type(exc).__name__}: {str(exc)[:120]}",
            content_format=content_format,
        ) from None
    if stream.tell() != len(payload):
        raise DecodeError(
            "trailing bytes after the CBOR item",
            content_format=content_format,
            offset=stream.tell(),
        )
    return _plain(item, content_format, 0)


_SCALARS = frozenset({type(None), bool, int, str, bytes, float})
"""Types cbor2 returns that are plain already (exact types: a subclass takes the long way)."""


def _plain(item: object, content_format: int, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise DecodeError("CBOR nesting too deep", content_format=content_format)
    kind = type(item)
    if kind in _SCALARS:
        return item
    if kind is dict:  # the common container first: a SenML record
        assert isinstance(item, dict)
        deeper = depth + 1
        if (
            deeper <= MAX_DEPTH
            and all(type(k) in _SCALARS for k in item)
            and all(type(v) in _SCALARS for v in item.values())
        ):
            return item
        return {
            _plain(k, content_format, deeper): _plain(v, content_format, deeper)
            for k, v in item.items()
        }
    if item is None or isinstance(item, bool | int | str | bytes):
        return item
    if isinstance(item, float):
        return item
    if isinstance(item, datetime):  # tag 0 / tag 1: a Time
        stamp = item.timestamp()
        return int(stamp) if stamp.is_integer() else stamp
    if isinstance(item, Decimal):  # tag 4 decimal fraction, which Anjay accepts for Floats
        number = float(item)
        if not math.isfinite(number) and item.is_finite():
            raise DecodeError("decimal fraction out of range", content_format=content_format)
        return number
    if isinstance(item, list | tuple):
        items = [_plain(x, content_format, depth + 1) for x in item]
        return tuple(items) if isinstance(item, tuple) else items
    if isinstance(item, dict):
        return {
            _plain(k, content_format, depth + 1): _plain(v, content_format, depth + 1)
            for k, v in item.items()
        }
    raise DecodeError(
        f"unsupported CBOR item {type(item).__name__} (tag or simple value)",
        content_format=content_format,
    )


def dump_cbor(item: object, content_format: int) -> bytes:
    try:
        return bytes(cbor2.dumps(item))
    except Exception as exc:  # e.g. a str with lone surrogates cannot be UTF-8
        raise EncodeError(f"cannot encode CBOR: {exc}", content_format=content_format) from None


def _pairs_without_duplicates(content_format: int) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise DecodeError(f"duplicate key {key!r}", content_format=content_format)
            result[key] = value
        return result

    return hook


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(payload: bytes, content_format: int) -> object:
    """The JSON document in ``payload`` (strict UTF-8, no NaN/Infinity, no duplicate keys)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"invalid UTF-8: {exc.reason}", content_format=content_format, offset=exc.start
        ) from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_pairs_without_duplicates(content_format),
            parse_constant=_no_constants,
        )
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"malformed JSON: {exc.msg}", content_format=content_format, offset=exc.pos
        ) from None
    except (ValueError, RecursionError, OverflowError) as exc:  # huge ints, deep nesting
        raise DecodeError(
            f"malformed JSON: {type(exc).__name__}: {str(exc)[:120]}",
            content_format=content_format,
        ) from None


def dump_json(item: object, content_format: int) -> bytes:
    try:
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise EncodeError(f"cannot encode JSON: {exc}", content_format=content_format) from None
