"""Flat leaves ⇄ nodes for the multi-path formats.

SenML, LwM2M JSON and LwM2M CBOR carry a flat list of ``(path, value)`` leaves; the server
wants nodes. This module holds the grouping rules of :class:`~lwm2m.codec.api.MultiNodeCodec`
in one place — one node at a path, one node per requested path, one node per resource — and the
inverse walk with the checks an encoder needs (node fits its path, values fit the model).
Model errors become :class:`DecodeError`/:class:`EncodeError` here, so the format modules never
leak a :class:`~lwm2m.model.ModelError`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.codec.multi_values import types_compatible
from lwm2m.model import (
    ModelError,
    Node,
    ObjectModel,
    Path,
    PathLevel,
    ResourceInstance,
    SingleResource,
    Value,
    build_node,
    iter_leaves,
    node_level,
    resource_definition,
)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A decoded, typed leaf; ``time`` is the payload's time for it (None: none given)."""

    path: Path
    value: Value
    time: float | None = None


def _decode_error(exc: ModelError, content_format: int) -> DecodeError:
    return DecodeError(str(exc), content_format=content_format)


def check_multiplicity(leaves: Iterable[Leaf], model: ObjectModel, content_format: int) -> None:
    """Refuse a resource-instance leaf of a resource the model declares single.

    (:func:`build_node` already refuses the opposite, a plain value for a multiple resource.)
    """
    for leaf in leaves:
        if leaf.path.is_resource_instance:
            definition = resource_definition(model, leaf.path.object_id, leaf.path.resource_id)
            if definition is not None and not definition.multiple:
                raise DecodeError(
                    f"{leaf.path} addresses an instance of {definition.name!r}, "
                    "which the model declares a single resource",
                    content_format=content_format,
                )


def newest_per_path(leaves: Iterable[Leaf], content_format: int) -> list[Leaf]:
    """One leaf per path: the newest when a payload reports history (a leaf without time is
    "now", the newest); the same path twice at the same time is malformed."""
    chosen: dict[Path, Leaf] = {}

    def age(leaf: Leaf) -> float:
        return float("inf") if leaf.time is None else leaf.time

    for leaf in leaves:
        previous = chosen.get(leaf.path)
        if previous is None or age(leaf) > age(previous):
            chosen[leaf.path] = leaf
        elif age(leaf) == age(previous):
            raise DecodeError(f"two values for {leaf.path}", content_format=content_format)
    return list(chosen.values())


def node_at(path: Path, leaves: Sequence[Leaf], model: ObjectModel, content_format: int) -> Node:
    """The node at ``path`` holding every leaf (each must lie at or below ``path``)."""
    if path.is_root:
        raise DecodeError(
            "decode needs an object, instance, resource or resource-instance path, not '/'",
            content_format=content_format,
        )
    check_multiplicity(leaves, model, content_format)
    try:
        return build_node(path, ((leaf.path, leaf.value) for leaf in leaves), model)
    except ModelError as exc:
        raise _decode_error(exc, content_format) from None


def per_resource(
    leaves: Sequence[Leaf], model: ObjectModel, content_format: int
) -> dict[Path, Node]:
    """Leaves grouped per resource (``/O/I/R``), or at ``/O/I/R/RI`` for a lone instance of a
    resource the model does not know (nothing says whether that resource is multiple)."""
    check_multiplicity(leaves, model, content_format)
    groups: dict[Path, list[Leaf]] = {}
    for leaf in leaves:
        at = leaf.path if len(leaf.path.ids) == 3 else Path(leaf.path.ids[:3])
        groups.setdefault(at, []).append(leaf)
    result: dict[Path, Node] = {}
    for resource_path, group in groups.items():
        known = resource_definition(model, resource_path.object_id, resource_path.resource_id)
        lone = group[0].path
        if len(group) == 1 and len(lone.ids) == 3 and (known is None or not known.multiple):
            # One value of a single resource (every record of a Send of readings): the node
            # build_node would make, without its bookkeeping.
            result[resource_path] = SingleResource(lone.ids[2], group[0].value)
            continue
        if known is None and len(group) == 1 and lone.is_resource_instance:
            assert lone.resource_instance_id is not None
            result[lone] = ResourceInstance(lone.resource_instance_id, group[0].value)
            continue
        try:
            result[resource_path] = build_node(
                resource_path, ((leaf.path, leaf.value) for leaf in group), model
            )
        except ModelError as exc:
            raise _decode_error(exc, content_format) from None
    return result


def by_requested(
    leaves: Sequence[Leaf], paths: Sequence[Path], model: ObjectModel, content_format: int
) -> dict[Path, Node]:
    """One node per requested path that received leaves (a Read-Composite response).

    A leaf goes to every requested path containing it, so overlapping requests (``/3/0`` and
    ``/3/0/1``) each get their complete node. The root path ``/`` cannot be a node: leaves
    only it contains are returned per object (``/O`` keys). A leaf no requested path contains
    is an error — the peer answered something that was not asked.
    """
    check_multiplicity(leaves, model, content_format)
    requested = list(dict.fromkeys(paths))
    buckets: dict[Path, list[Leaf]] = {}
    for leaf in leaves:
        homes = [p for p in requested if leaf.path.startswith(p) and not p.is_root]
        if not homes and any(p.is_root for p in requested):
            homes = [Path(leaf.path.ids[:1])]
        if not homes:
            raise DecodeError(
                f"{leaf.path} lies outside every requested path", content_format=content_format
            )
        for home in homes:
            buckets.setdefault(home, []).append(leaf)
    result: dict[Path, Node] = {}
    for home, group in buckets.items():
        try:
            result[home] = build_node(home, ((leaf.path, leaf.value) for leaf in group), model)
        except ModelError as exc:
            raise _decode_error(exc, content_format) from None
    return result


def group_by_time(leaves: Sequence[Leaf]) -> list[tuple[float | None, list[Leaf]]]:
    """Leaves split by their time, None first then ascending (the ``decode_timestamped`` order)."""
    groups: dict[float | None, list[Leaf]] = {}
    for leaf in leaves:
        groups.setdefault(leaf.time, []).append(leaf)
    return sorted(groups.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0.0))


def leaves_of(
    path: Path, node: Node, model: ObjectModel, content_format: int
) -> list[tuple[Path, Value]]:
    """Every leaf of ``node`` (which lives at ``path``), checked against path and model."""
    if path.is_root or node_level(node) != path.level or node.id != path.ids[-1]:
        raise EncodeError(
            f"a {type(node).__name__} with id {node.id} cannot live at {path}",
            content_format=content_format,
        )
    leaves = list(iter_leaves(node, path))
    for leaf_path, value in leaves:
        definition = resource_definition(model, leaf_path.object_id, leaf_path.resource_id)
        if definition is None:
            continue
        if not types_compatible(definition.type, value.type):
            raise EncodeError(
                f"{leaf_path} ({definition.name}) is {definition.type.value}, "
                f"not {value.type.value}",
                content_format=content_format,
            )
        if definition.multiple != (leaf_path.level == PathLevel.RESOURCE_INSTANCE):
            kind = "multiple" if definition.multiple else "single"
            raise EncodeError(
                f"{leaf_path}: the model declares {definition.name!r} a {kind} resource",
                content_format=content_format,
            )
    return leaves


def leaves_of_all(
    nodes: Mapping[Path, Node], model: ObjectModel, content_format: int
) -> list[tuple[Path, Path, Value]]:
    """``(node path, leaf path, value)`` for every leaf of several nodes; overlapping nodes
    would repeat a leaf, so they are refused."""
    leaves = [
        (path, leaf_path, value)
        for path, node in nodes.items()
        for leaf_path, value in leaves_of(path, node, model, content_format)
    ]
    refuse_overlaps([leaf_path for _, leaf_path, _ in leaves], content_format)
    return leaves


def refuse_overlaps(paths: Sequence[Path], content_format: int) -> None:
    """Two leaves at one path, or a value both at a resource and at its instance, are refused."""
    ordered = sorted(paths)
    for a, b in itertools.pairwise(ordered):
        if b.startswith(a):
            raise EncodeError(f"{b} is given twice (or below {a})", content_format=content_format)
