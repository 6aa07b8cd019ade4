"""JSON rendering of LwM2M values and nodes for the management API (and the CLI that reads it).

One shape, documented in ``docs/API.md`` and used in both directions: what a Read returns is
what a Write accepts (:mod:`lifecycle.api.parse` reads it back), so an operator can read
``/1/0``, edit a value and write the same document back.

Values, per LwM2M data type::

    String, Corelnk     "text"
    Integer, Unsigned   123 (JSON integer, exact at 64 bits; JavaScript clients beware)
    Float               1.5; non-finite values as the strings "NaN", "Infinity", "-Infinity"
                        (JSON has no literal for them)
    Boolean             true / false
    Opaque              standard base64 with padding; the leaf says so: "encoding": "base64"
    Time                epoch seconds (integer), plus "iso": "2024-05-01T12:00:00Z"
    Objlnk              "3:0"
    none (executable)   null

Nodes, per level (every node carries its ``path``; names come from the object model and are
``null`` for objects and resources the model does not know)::

    object              {"path": "/3", "kind": "object", "id": 3, "name": "Device",
                         "instances": [<instance>, ...]}
    object instance     {"path": "/3/0", "kind": "instance", "id": 0, "name": "Device",
                         "resources": [<resource>, ...]}
    single resource     {"path": "/3/0/0", "kind": "resource", "id": 0, "name": "Manufacturer",
                         "type": "String", "value": "fleetloop"}
    multiple resource   {"path": "/3/0/7", "kind": "resource", "id": 7, "name": "...",
                         "type": "Integer", "multiple": true,
                         "instances": [{"id": 0, "value": 3800}, ...]}
    resource instance   {"path": "/3/0/7/0", "kind": "resource_instance", "id": 0,
                         "name": "...", "type": "Integer", "value": 3800}

Pure functions: no I/O, no FastAPI. :func:`flatten` and :func:`iso8601` live in
:mod:`lifecycle.jsonview` so the CLI can use them without importing the API.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from lifecycle.jsonview import flatten as flatten  # re-exported
from lifecycle.jsonview import iso8601 as iso8601  # re-exported
from lwm2m.model import (
    DataType,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    ObjectModel,
    ObjLink,
    Path,
    ResourceInstance,
    SingleResource,
    Value,
)

JsonObject = dict[str, Any]


def timestamp_fields(name: str, epoch: float | None) -> JsonObject:
    """``{name: iso, name_epoch: epoch}``: people read the first, scripts use the second."""
    if epoch is None:
        return {name: None, f"{name}_epoch": None}
    return {name: iso8601(epoch), f"{name}_epoch": epoch}


def scalar_to_json(value: Value) -> Any:
    """The JSON form of a value's payload (see the module table)."""
    raw = value.value
    if value.type is DataType.OPAQUE:
        assert isinstance(raw, bytes)
        return base64.b64encode(raw).decode("ascii")
    if value.type is DataType.OBJLNK:
        assert isinstance(raw, ObjLink)
        return str(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return "NaN" if math.isnan(raw) else ("Infinity" if raw > 0 else "-Infinity")
    return raw


def value_fields(value: Value) -> JsonObject:
    """``value`` plus the hints a reader needs: ``iso`` for Time, ``encoding`` for Opaque."""
    out: JsonObject = {"value": scalar_to_json(value)}
    if value.type is DataType.TIME:
        assert isinstance(value.value, int)
        try:
            out["iso"] = iso8601(value.value)
        except (OverflowError, OSError, ValueError):
            out["iso"] = None  # outside what a calendar date can show; the epoch stays exact
    elif value.type is DataType.OPAQUE:
        out["encoding"] = "base64"
    return out


def _object_name(model: ObjectModel, object_id: int) -> str | None:
    definition = model.get(object_id)
    return definition.name if definition is not None else None


def resource_name(model: ObjectModel, path: Path) -> str | None:
    """The model's name of the resource ``path`` points into (``/3/0/0`` → ``Manufacturer``)."""
    if path.object_id is None or path.resource_id is None:
        return None
    definition = model.get(path.object_id)
    if definition is None:
        return None
    resource = definition.resource(path.resource_id)
    return resource.name if resource is not None else None


def path_name(model: ObjectModel, path: Path) -> str | None:
    """A human name for any path: the resource name, else the object name."""
    if path.resource_id is not None:
        return resource_name(model, path)
    if path.object_id is not None:
        return _object_name(model, path.object_id)
    return None


def node_to_json(node: Node, path: Path, model: ObjectModel) -> JsonObject:
    """The documented JSON shape of ``node``, which lives at ``path``."""
    if isinstance(node, LwM2MObject):
        return {
            "path": str(path),
            "kind": "object",
            "id": node.id,
            "name": _object_name(model, node.id),
            "instances": [node_to_json(i, path.child(i.id), model) for i in node],
        }
    if isinstance(node, ObjectInstance):
        return {
            "path": str(path),
            "kind": "instance",
            "id": node.id,
            "name": path_name(model, path),
            "resources": [node_to_json(r, path.child(r.id), model) for r in node],
        }
    if isinstance(node, MultipleResource):
        return {
            "path": str(path),
            "kind": "resource",
            "id": node.id,
            "name": resource_name(model, path),
            "type": node.type.value,
            "multiple": True,
            "instances": [{"id": ri.id, **value_fields(ri.value)} for ri in node],
        }
    kind = "resource" if isinstance(node, SingleResource) else "resource_instance"
    assert isinstance(node, SingleResource | ResourceInstance)
    out = {
        "path": str(path),
        "kind": kind,
        "id": node.id,
        "name": resource_name(model, path),
        "type": node.value.type.value,
        **value_fields(node.value),
    }
    label = enum_label(path, out.get("value"))
    if label is not None:
        out["label"] = label
    return out


_ENUMS: dict[str, Any] | None = None


def enum_label(path: Path, value: Any) -> str | None:
    """``"normal"`` for Battery Status 0: the name of an enumerated resource's value (from
    :mod:`objects.enums`), next to the number, which stays the ``value``."""
    global _ENUMS
    if not isinstance(value, int) or isinstance(value, bool) or path.resource_id is None:
        return None
    if _ENUMS is None:
        from lifecycle.console.enums import enum_table

        _ENUMS = enum_table()
    entry = _ENUMS.get(f"{path.object_id}/{path.resource_id}")
    if entry is None:
        return None
    found = entry["values"].get(str(value))
    return str(found) if found is not None else None


def nodes_to_json(nodes: Mapping[Path, Node], model: ObjectModel) -> list[JsonObject]:
    """Several nodes (a composite result), in path order."""
    return [node_to_json(nodes[p], p, model) for p in sorted(nodes)]
