"""Assemble a node tree from flat ``(path, value)`` leaves.

SenML, LwM2M JSON and LwM2M CBOR are flat lists of leaves; the server wants a node at the
requested path. Whether ``/O/I/R`` is a single or multiple resource comes from the object model
when it knows the resource, else from the leaves themselves (a leaf at ``/O/I/R/RI`` means
multiple).
"""

from __future__ import annotations

from collections.abc import Iterable

from lwm2m.model.definitions import ObjectModel, resource_definition
from lwm2m.model.errors import InvalidNode
from lwm2m.model.nodes import (
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    Resource,
    ResourceInstance,
    SingleResource,
)
from lwm2m.model.path import Path, PathLevel
from lwm2m.model.values import Value


def build_node(path: Path, leaves: Iterable[tuple[Path, Value]], model: ObjectModel) -> Node:
    """The node at ``path`` holding every leaf (each leaf path must lie at or below ``path``).

    Raises :class:`InvalidNode` for leaves outside ``path``, duplicated leaves, a value given
    both to a resource and its instances, or (for a single-resource or instance path) no leaf.
    """
    if path.is_root:
        raise InvalidNode("build_node needs an object, instance or resource path, not '/'")
    objects: dict[int, dict[int, dict[int, Value | dict[int, Value]]]] = {}
    for leaf_path, value in leaves:
        if not leaf_path.startswith(path):
            raise InvalidNode(f"value at {leaf_path} lies outside the target path {path}")
        if leaf_path.level < PathLevel.RESOURCE:
            raise InvalidNode(f"a value needs a resource path, got {leaf_path}")
        oid, iid, rid = leaf_path.ids[0], leaf_path.ids[1], leaf_path.ids[2]
        resources = objects.setdefault(oid, {}).setdefault(iid, {})
        if leaf_path.is_resource_instance:
            slot = resources.setdefault(rid, {})
            if not isinstance(slot, dict):
                raise InvalidNode(f"{leaf_path.parent} has a value and resource instances")
            riid = leaf_path.ids[3]
            if riid in slot:
                raise InvalidNode(f"duplicate value for {leaf_path}")
            slot[riid] = value
        else:
            if rid in resources:
                raise InvalidNode(f"duplicate value for {leaf_path}")
            resources[rid] = value

    def make_resource(oid: int, rid: int, content: Value | dict[int, Value]) -> Resource:
        definition = resource_definition(model, oid, rid)
        if isinstance(content, dict):
            types = {v.type for v in content.values()}
            dtype = definition.type if definition is not None else next(iter(types))
            if len(types) > 1:
                raise InvalidNode(f"/{oid}/*/{rid} instances have mixed types {types}")
            return MultipleResource(rid, dtype, content)
        if definition is not None and definition.multiple:
            raise InvalidNode(
                f"/{oid}/*/{rid} ({definition.name}) is a multiple resource; "
                "its values need resource-instance paths"
            )
        return SingleResource(rid, content)

    def make_instance(oid: int, iid: int) -> ObjectInstance:
        resources = objects.get(oid, {}).get(iid, {})
        return ObjectInstance.of(iid, (make_resource(oid, r, c) for r, c in resources.items()))

    level = path.level
    oid = path.ids[0]
    if level == PathLevel.OBJECT:
        return LwM2MObject.of(oid, (make_instance(oid, i) for i in objects.get(oid, {})))
    iid = path.ids[1]
    if level == PathLevel.OBJECT_INSTANCE:
        return make_instance(oid, iid)
    rid = path.ids[2]
    content = objects.get(oid, {}).get(iid, {}).get(rid)
    if level == PathLevel.RESOURCE:
        if content is None:
            definition = resource_definition(model, oid, rid)
            if definition is not None and definition.multiple:
                return MultipleResource(rid, definition.type, {})
            raise InvalidNode(f"no value for {path}")
        return make_resource(oid, rid, content)
    riid = path.ids[3]
    if not isinstance(content, dict) or riid not in content:
        raise InvalidNode(f"no value for {path}")
    return ResourceInstance(riid, content[riid])


def empty_multiple(path: Path, model: ObjectModel) -> MultipleResource | None:
    """An empty multiple resource for ``path`` when the model says it is multiple."""
    definition = resource_definition(model, path.object_id, path.resource_id)
    if definition is None or not definition.multiple or path.resource_id is None:
        return None
    return MultipleResource(path.resource_id, definition.type, {})


__all__ = ["build_node", "empty_multiple"]
