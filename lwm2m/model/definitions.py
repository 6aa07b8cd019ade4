"""Object definitions: the schema the codecs and the server consult.

TLV carries no types and SenML only coarse ones, so decoding a payload into typed values needs
to know, for each ``(object, resource)``, its data type and whether it is a multiple resource.
This module holds that schema as plain immutable data plus the small :class:`ObjectModel`
protocol the codecs depend on. The built-in definitions and the OMA DDF XML loader live in the
top-level ``objects`` package; the codecs never import it, they take an ``ObjectModel``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Flag
from types import MappingProxyType
from typing import Protocol

from lwm2m.model.errors import InvalidNode
from lwm2m.model.values import DataType


class Operations(Flag):
    """Operations a resource allows, as the DDF ``<Operations>`` element spells them."""

    NONE = 0
    R = 1
    W = 2
    E = 4
    RW = R | W

    @classmethod
    def from_ddf(cls, text: str) -> Operations:
        ops = cls.NONE
        for char in text.strip().upper():
            if char not in "RWE":
                raise InvalidNode(f"unknown operation letter {char!r} in {text!r}")
            ops |= cls[char]
        return ops

    @property
    def readable(self) -> bool:
        return bool(self & Operations.R)

    @property
    def writable(self) -> bool:
        return bool(self & Operations.W)

    @property
    def executable(self) -> bool:
        return bool(self & Operations.E)

    def to_ddf(self) -> str:
        return "".join(c for c in "RWE" if self & Operations[c])


@dataclass(frozen=True, slots=True)
class ResourceDefinition:
    """One ``<Item>`` of a DDF: a resource's id, name, type and rules."""

    id: int
    name: str
    operations: Operations
    multiple: bool
    mandatory: bool
    type: DataType
    range_enumeration: str = ""
    units: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class ObjectDefinition:
    """One ``<Object>`` of a DDF."""

    id: int
    name: str
    multiple: bool
    mandatory: bool
    resources: Mapping[int, ResourceDefinition] = field(default_factory=dict)
    version: str = "1.0"
    lwm2m_version: str = "1.0"
    urn: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        res = self.resources
        if not isinstance(res, Mapping):
            res = {r.id: r for r in res}
        object.__setattr__(self, "resources", MappingProxyType(dict(sorted(res.items()))))

    def resource(self, resource_id: int) -> ResourceDefinition | None:
        return self.resources.get(resource_id)

    def resource_by_name(self, name: str) -> ResourceDefinition | None:
        for res in self.resources.values():
            if res.name == name:
                return res
        return None


class ObjectModel(Protocol):
    """What codecs and the server need from a schema: a definition by object id."""

    def get(self, object_id: int) -> ObjectDefinition | None: ...


class StaticModel:
    """An :class:`ObjectModel` over a fixed set of definitions (later ones win on id clash)."""

    def __init__(self, definitions: Iterable[ObjectDefinition] = ()) -> None:
        self._defs: dict[int, ObjectDefinition] = {}
        for d in definitions:
            self._defs[d.id] = d

    def get(self, object_id: int) -> ObjectDefinition | None:
        return self._defs.get(object_id)

    def with_definitions(self, definitions: Iterable[ObjectDefinition]) -> StaticModel:
        """A new model with ``definitions`` added, replacing same-id ones."""
        return StaticModel([*self._defs.values(), *definitions])

    def __iter__(self) -> Iterator[ObjectDefinition]:
        return iter(sorted(self._defs.values(), key=lambda d: d.id))

    def __len__(self) -> int:
        return len(self._defs)

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._defs


EMPTY_MODEL = StaticModel()


def resource_definition(
    model: ObjectModel, object_id: int | None, resource_id: int | None
) -> ResourceDefinition | None:
    """Shortcut used by the codecs: the definition of ``/object_id/*/resource_id`` or None."""
    if object_id is None or resource_id is None:
        return None
    obj = model.get(object_id)
    return obj.resource(resource_id) if obj is not None else None
