"""The engine's own JSON encoding of a :class:`~lifecycle.campaigns.model.CampaignSpec`, for
``lc_campaign.spec``.

Why not the spec file format (:mod:`lifecycle.campaigns.spec`)? The persisted spec must come
back *exactly* as it was created -- resolved component values, overlays, sizes -- without
resolving artifact names again (an artifact could have been quarantined or a bundle renamed
since), and a spec-format change must not make a running campaign unreadable after an
upgrade. So the engine stores the dataclasses field by field; this module encodes and decodes
them generically from their type hints (sans-IO).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any

from lifecycle.campaigns.model import CampaignSpec


def encode(value: Any) -> Any:
    """``value`` as JSON data (dataclasses field by field, enums by value, sets sorted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(encode(v) for v in value)
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def _decode(hint: Any, data: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or data is None:
        return data
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, data)
            except (TypeError, ValueError, KeyError):
                continue
        return data
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        kwargs = {
            f.name: _decode(hints[f.name], data[f.name])
            for f in dataclasses.fields(hint)
            if f.name in data
        }
        return hint(**kwargs)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in data)
        return tuple(_decode(a, v) for a, v in zip(args, data, strict=True))
    if origin is frozenset:
        return frozenset(_decode(args[0], v) for v in data)
    if origin in (Mapping, dict) or hint in (dict, Mapping):
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _decode(value_hint, v) for k, v in data.items()}
    if hint is float and isinstance(data, int):
        return float(data)
    if isinstance(hint, type) and not isinstance(data, hint):
        raise TypeError(f"expected {hint.__name__}, got {type(data).__name__}")
    return data


def dumps_spec(spec: CampaignSpec) -> str:
    return json.dumps(encode(spec), sort_keys=True, separators=(",", ":"))


def loads_spec(text: str) -> CampaignSpec:
    spec = _decode(CampaignSpec, json.loads(text))
    assert isinstance(spec, CampaignSpec)
    return spec


__all__ = ["dumps_spec", "encode", "loads_spec"]
