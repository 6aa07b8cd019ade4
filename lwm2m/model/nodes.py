"""The LwM2M node tree: object → object instance → resource → resource instance.

Nodes are immutable (frozen dataclasses holding read-only mappings) so they can be shared
between the server, the store and the fleet logic without defensive copies. Children are kept
in id order, which makes equality, iteration and encoding deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from lwm2m.model.errors import InvalidNode
from lwm2m.model.path import MAX_ID, Path
from lwm2m.model.values import DataType, Value

_T = TypeVar("_T")


def _frozen_map(items: Mapping[int, _T] | Iterable[tuple[int, _T]]) -> Mapping[int, _T]:
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    data: dict[int, _T] = {}
    for key, val in sorted(pairs, key=lambda kv: kv[0]):
        if key in data:
            raise InvalidNode(f"duplicate id {key}")
        data[key] = val
    return MappingProxyType(data)


def _check_id(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise InvalidNode(f"{what} id {value!r} out of range 0..{MAX_ID}")


@dataclass(frozen=True, slots=True)
class ResourceInstance:
    """One instance of a multiple resource, e.g. ``/3/0/7/1``."""

    id: int
    value: Value

    def __post_init__(self) -> None:
        _check_id(self.id, "resource instance")


@dataclass(frozen=True, slots=True)
class SingleResource:
    """A single-instance resource, e.g. ``/3/0/0``."""

    id: int
    value: Value

    def __post_init__(self) -> None:
        _check_id(self.id, "resource")

    @property
    def type(self) -> DataType:
        return self.value.type


# Slot setters of the two frozen leaf nodes, for :func:`leaf_node`.
_new_node: Any = object.__new__
_set_single_id: Any = SingleResource.__dict__["id"].__set__
_set_single_value: Any = SingleResource.__dict__["value"].__set__
_set_instance_id: Any = ResourceInstance.__dict__["id"].__set__
_set_instance_value: Any = ResourceInstance.__dict__["value"].__set__


def leaf_node(path: Path, value: Value) -> SingleResource | ResourceInstance:
    """The leaf holding ``value`` at a resource path (``SingleResource``) or resource-instance
    path (``ResourceInstance``). The id comes from ``path``, which checked it (0..MAX_ID) when
    it was made, so it is not checked again; the same node the constructor gives, for about
    half its cost (issue 13: once per notified value)."""
    ids = path.ids
    if len(ids) == 4:
        node = _new_node(ResourceInstance)
        _set_instance_id(node, ids[3])
        _set_instance_value(node, value)
        return node  # type: ignore[no-any-return]
    node = _new_node(SingleResource)
    _set_single_id(node, ids[2])
    _set_single_value(node, value)
    return node  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class MultipleResource:
    """A multiple-instance resource, e.g. ``/3/0/7``; may be empty."""

    id: int
    type: DataType
    instances: Mapping[int, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_id(self.id, "resource")
        frozen = _frozen_map(self.instances)
        for riid, val in frozen.items():
            _check_id(riid, "resource instance")
            if not isinstance(val, Value):
                raise InvalidNode(f"resource instance {riid} holds {val!r}, not a Value")
            if val.type is not self.type:
                raise InvalidNode(
                    f"resource {self.id} is {self.type.value} but instance {riid} is "
                    f"{val.type.value}"
                )
        object.__setattr__(self, "instances", frozen)

    @classmethod
    def of(cls, id: int, data_type: DataType, values: Mapping[int, Value]) -> MultipleResource:
        return cls(id, data_type, values)

    def instance(self, riid: int) -> ResourceInstance:
        return ResourceInstance(riid, self.instances[riid])

    def __iter__(self) -> Iterator[ResourceInstance]:
        return (ResourceInstance(i, v) for i, v in self.instances.items())


Resource = SingleResource | MultipleResource


@dataclass(frozen=True, slots=True)
class ObjectInstance:
    """An object instance, e.g. ``/3/0``; may hold no resources."""

    id: int
    resources: Mapping[int, Resource] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_id(self.id, "object instance")
        if isinstance(self.resources, Mapping):
            items = list(self.resources.items())
            for rid, res in items:
                if res.id != rid:
                    raise InvalidNode(f"resource keyed {rid} has id {res.id}")
            frozen = _frozen_map(items)
        else:
            frozen = _frozen_map((r.id, r) for r in self.resources)
        object.__setattr__(self, "resources", frozen)

    @classmethod
    def of(cls, id: int, resources: Iterable[Resource]) -> ObjectInstance:
        return cls(id, {r.id: r for r in _unique(resources, "resource")})

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.resources.values())


@dataclass(frozen=True, slots=True)
class LwM2MObject:
    """An object with its instances, e.g. ``/3``; may hold no instances."""

    id: int
    instances: Mapping[int, ObjectInstance] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_id(self.id, "object")
        if isinstance(self.instances, Mapping):
            items = list(self.instances.items())
            for iid, inst in items:
                if inst.id != iid:
                    raise InvalidNode(f"instance keyed {iid} has id {inst.id}")
            frozen = _frozen_map(items)
        else:
            frozen = _frozen_map((i.id, i) for i in self.instances)
        object.__setattr__(self, "instances", frozen)

    @classmethod
    def of(cls, id: int, instances: Iterable[ObjectInstance]) -> LwM2MObject:
        return cls(id, {i.id: i for i in _unique(instances, "object instance")})

    def __iter__(self) -> Iterator[ObjectInstance]:
        return iter(self.instances.values())


Node = LwM2MObject | ObjectInstance | SingleResource | MultipleResource | ResourceInstance


def _unique(items: Iterable[_T], what: str) -> list[_T]:
    seen: set[int] = set()
    out: list[_T] = []
    for item in items:
        ident = item.id  # type: ignore[attr-defined]
        if ident in seen:
            raise InvalidNode(f"duplicate {what} id {ident}")
        seen.add(ident)
        out.append(item)
    return out


def node_level(node: Node) -> int:
    """The path level a node lives at: 1 object, 2 instance, 3 resource, 4 resource instance."""
    if isinstance(node, LwM2MObject):
        return 1
    if isinstance(node, ObjectInstance):
        return 2
    if isinstance(node, SingleResource | MultipleResource):
        return 3
    return 4


def iter_leaves(node: Node, path: Path) -> Iterator[tuple[Path, Value]]:
    """Every value below ``node`` with its full path; ``path`` is the path of ``node`` itself.

    Empty instances and empty multiple resources contribute nothing, which is why formats that
    are flat lists of leaves (SenML, LwM2M JSON/CBOR) cannot carry them.
    """
    if isinstance(node, SingleResource | ResourceInstance):
        yield path, node.value
    elif isinstance(node, MultipleResource):
        for riid, val in node.instances.items():
            yield path.child(riid), val
    elif isinstance(node, ObjectInstance):
        for res in node.resources.values():
            yield from iter_leaves(res, path.child(res.id))
    else:
        for inst in node.instances.values():
            yield from iter_leaves(inst, path.child(inst.id))


def node_at(root: Node, root_path: Path, path: Path) -> Node | None:
    """The sub-node of ``root`` (which lives at ``root_path``) at ``path``, or None if absent."""
    if not path.startswith(root_path):
        return None
    node: Node | None = root
    for ident in path.relative_to(root_path):
        if isinstance(node, LwM2MObject):
            node = node.instances.get(ident)
        elif isinstance(node, ObjectInstance):
            node = node.resources.get(ident)
        elif isinstance(node, MultipleResource):
            val = node.instances.get(ident)
            node = ResourceInstance(ident, val) if val is not None else None
        else:
            return None
        if node is None:
            return None
    return node
