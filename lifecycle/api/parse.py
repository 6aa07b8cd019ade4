"""Operator input to LwM2M values and nodes: the inverse of :mod:`lifecycle.api.render`.

The API accepts the same node shape it renders (``docs/API.md``), with the conveniences an
operator typing a value needs:

* a resource's type comes from the object model; ``"type"`` is needed only for a resource the
  model does not know (and, when given for a known one, must agree with it);
* every value may be given as a string, parsed as the operator would write it on a command
  line (this is what ``fleetloop write EP PATH VALUE`` sends): Integer ``-5``, Float ``1.5`` /
  ``NaN`` / ``Infinity``, Boolean ``true``/``false``/``1``/``0``, Time as epoch seconds or ISO
  8601 (``2024-05-01T12:00:00Z``), Opaque as base64 or ``hex:0a0b``, Objlnk ``3:0``;
* or as the natural JSON type (numbers, ``true``/``false``).

Every error is an :class:`InputError` naming the field (``body.resources[2].value``), what was
wrong and what to send instead; the API turns it into a 422.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from lwm2m.model import (
    DataType,
    LwM2MObject,
    ModelError,
    MultipleResource,
    Node,
    ObjectInstance,
    ObjectModel,
    ObjLink,
    Path,
    ResourceDefinition,
    ResourceInstance,
    SingleResource,
    Value,
    resource_definition,
)


class InputError(ValueError):
    """Operator input that cannot become an LwM2M value, node or path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_TYPES_BY_NAME = {t.value.lower(): t for t in DataType}
_TYPES_BY_NAME.update({t.name.lower(): t for t in DataType})
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")  # any 64-bit value; more is no LwM2M integer
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_TYPE_NAMES = ", ".join(t.value for t in DataType if t is not DataType.NONE)


def parse_path(text: str, field: str = "path") -> Path:
    """A path from text; the error says what a path looks like."""
    try:
        return Path.parse(text)
    except ModelError as err:
        raise InputError(field, f"{err}; write a path like /3/0/1") from err


def parse_type(name: object, field: str) -> DataType:
    """A :class:`DataType` from its DDF spelling (``"Unsigned Integer"``) or enum name."""
    if isinstance(name, str):
        found = _TYPES_BY_NAME.get(name.strip().lower())
        if found is not None:
            return found
    raise InputError(field, f"unknown type {name!r}; use one of {_TYPE_NAMES}")


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut to 40 characters: a caller's 5 000-digit
    value must not come back 5 000 digits long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _parse_time_text(text: str, field: str) -> int:
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(
            field,
            f"{_shown(text)} is not a time; give epoch seconds or ISO 8601 like 2024-05-01T12:00Z",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def _parse_opaque_text(text: str, field: str) -> bytes:
    try:
        if text.lower().startswith("hex:"):
            return bytes.fromhex(text[4:])
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InputError(
            field, "Opaque values are base64 (e.g. 'AQID') or hex with a prefix ('hex:010203')"
        ) from None


def _from_text(text: str, data_type: DataType, field: str) -> Any:
    stripped = text.strip()
    if data_type in (DataType.STRING, DataType.CORELNK):
        return text
    if data_type in (DataType.INTEGER, DataType.UNSIGNED_INTEGER):
        if not _INTEGER.fullmatch(stripped):
            raise InputError(
                field, f"{_shown(text)} is not an integer ({data_type.value}); give digits like 300"
            )
        return int(stripped)
    if data_type is DataType.TIME:
        return _parse_time_text(stripped, field)
    if data_type is DataType.FLOAT:
        special = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf}
        if stripped.lower() in special:
            return special[stripped.lower()]
        try:
            return float(stripped)
        except ValueError:
            raise InputError(
                field, f"{_shown(text)} is not a number (Float); write it like 1.5"
            ) from None
    if data_type is DataType.BOOLEAN:
        lowered = stripped.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InputError(field, f"{_shown(text)} is not a Boolean; use true or false")
    if data_type is DataType.OPAQUE:
        return _parse_opaque_text(stripped, field)
    if data_type is DataType.OBJLNK:
        try:
            return ObjLink.parse(stripped)
        except ModelError:
            raise InputError(
                field, f"{_shown(text)} is not an object link; write it as 3:0"
            ) from None
    if data_type is DataType.NONE:
        raise InputError(field, "an executable resource holds no value; use execute instead")
    raise InputError(field, f"cannot write {data_type.value}")  # pragma: no cover


def parse_value(raw: object, data_type: DataType, field: str) -> Value:
    """A typed value from JSON (natural type or operator text)."""
    if raw is None:
        raise InputError(field, f"a value is required ({data_type.value})")
    converted: Any = raw
    if isinstance(raw, str):
        converted = _from_text(raw, data_type, field)
    elif isinstance(raw, bool):
        if data_type is not DataType.BOOLEAN:
            raise InputError(field, f"got a boolean for a {data_type.value} resource")
    elif isinstance(raw, int | float):
        if data_type is DataType.FLOAT:
            converted = float(raw)
        elif data_type in (DataType.INTEGER, DataType.UNSIGNED_INTEGER, DataType.TIME):
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise InputError(field, f"{raw!r} is not an integer ({data_type.value})")
                converted = int(raw)
        elif data_type in (DataType.STRING, DataType.CORELNK):
            raise InputError(field, f"got a number for a {data_type.value}; quote it as text")
        else:
            raise InputError(field, f"got a number for a {data_type.value} resource")
    else:
        raise InputError(field, f"expected a {data_type.value} value, got {type(raw).__name__}")
    try:
        return Value(data_type, converted)
    except ModelError as err:
        raise InputError(field, str(err)) from err


def _definition(model: ObjectModel, path: Path) -> ResourceDefinition | None:
    return resource_definition(model, path.object_id, path.resource_id)


def _resolve_type(
    data: Mapping[str, Any], definition: ResourceDefinition | None, path: Path, field: str
) -> DataType:
    given = data.get("type")
    declared = parse_type(given, f"{field}.type") if given is not None else None
    if definition is not None:
        if declared is not None and declared is not definition.type:
            raise InputError(
                f"{field}.type",
                f"{path} ({definition.name}) is {definition.type.value}, not {declared.value}; "
                "leave out 'type' to use the model's",
            )
        return definition.type
    if declared is None:
        raise InputError(
            f"{field}.type",
            f"the object model does not know {path}; say its type (one of {_TYPE_NAMES}) "
            "or load the object's DDF with --objects",
        )
    return declared


def _mapping(data: object, field: str, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError(field, f"expected a JSON object for {what}, got {type(data).__name__}")
    return data


def _sequence(data: object, field: str) -> Sequence[Any]:
    if not isinstance(data, list):
        raise InputError(field, f"expected a JSON list, got {type(data).__name__}")
    return data


def _id(data: Mapping[str, Any], field: str, expected: int | None = None) -> int:
    raw = data.get("id", expected)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 65534:
        raise InputError(f"{field}.id", f"an id 0..65534 is required, got {raw!r}")
    if expected is not None and raw != expected:
        raise InputError(f"{field}.id", f"id {raw} does not match the path's id {expected}")
    return raw


def _check_path(data: Mapping[str, Any], path: Path, field: str) -> None:
    given = data.get("path")
    if given is not None and parse_path(str(given), f"{field}.path") != path:
        raise InputError(f"{field}.path", f"{given!r} does not match the target path {path}")


def _resource(data: Mapping[str, Any], path: Path, model: ObjectModel, field: str) -> Node:
    definition = _definition(model, path)
    data_type = _resolve_type(data, definition, path, field)
    if path.is_resource_instance:
        if definition is not None and not definition.multiple:
            raise InputError(
                "path",
                f"{path.parent} ({definition.name}) is a single resource; write {path.parent}",
            )
        if "value" not in data:
            raise InputError(f"{field}.value", f'a value is required for {path}: {{"value": ...}}')
        return ResourceInstance(
            path.ids[3], parse_value(data["value"], data_type, f"{field}.value")
        )
    multiple = "instances" in data or bool(data.get("multiple"))
    if definition is not None and definition.multiple != multiple:
        if definition.multiple:
            raise InputError(
                field,
                f"{path} ({definition.name}) is a multiple resource; give "
                '"instances": [{"id": 0, "value": ...}] instead of "value"',
            )
        raise InputError(
            field, f'{path} ({definition.name}) is a single resource; give "value", not instances'
        )
    if multiple:
        values: dict[int, Value] = {}
        for n, item in enumerate(_sequence(data.get("instances", []), f"{field}.instances")):
            item_field = f"{field}.instances[{n}]"
            entry = _mapping(item, item_field, "a resource instance")
            riid = _id(entry, item_field)
            if riid in values:
                raise InputError(f"{item_field}.id", f"resource instance {riid} given twice")
            values[riid] = parse_value(entry.get("value"), data_type, f"{item_field}.value")
        return MultipleResource(path.ids[2], data_type, values)
    if "value" not in data:
        raise InputError(f"{field}.value", f'a value is required for {path}: {{"value": ...}}')
    return SingleResource(path.ids[2], parse_value(data["value"], data_type, f"{field}.value"))


def _instance(data: Mapping[str, Any], path: Path, model: ObjectModel, field: str) -> Node:
    resources: list[SingleResource | MultipleResource] = []
    seen: set[int] = set()
    for n, item in enumerate(_sequence(data.get("resources", []), f"{field}.resources")):
        item_field = f"{field}.resources[{n}]"
        entry = _mapping(item, item_field, "a resource")
        rid = _id(entry, item_field)
        if rid in seen:
            raise InputError(f"{item_field}.id", f"resource {rid} given twice")
        seen.add(rid)
        child = path.child(rid)
        _check_path(entry, child, item_field)
        node = _resource(entry, child, model, item_field)
        assert isinstance(node, SingleResource | MultipleResource)
        resources.append(node)
    return ObjectInstance.of(path.ids[1], resources)


def node_from_json(data: object, path: Path, model: ObjectModel, field: str = "body") -> Node:
    """The node at ``path`` described by ``data`` (the rendered shape; ``path`` optional)."""
    body = _mapping(data, field, "a node")
    _check_path(body, path, field)
    if path.is_root:
        raise InputError("path", "cannot write the root path '/'; name an object or below")
    if path.is_object:
        instances: list[ObjectInstance] = []
        seen: set[int] = set()
        for n, item in enumerate(_sequence(body.get("instances", []), f"{field}.instances")):
            item_field = f"{field}.instances[{n}]"
            entry = _mapping(item, item_field, "an object instance")
            iid = _id(entry, item_field)
            if iid in seen:
                raise InputError(f"{item_field}.id", f"instance {iid} given twice")
            seen.add(iid)
            node = _instance(entry, path.child(iid), model, item_field)
            assert isinstance(node, ObjectInstance)
            instances.append(node)
        return LwM2MObject.of(path.ids[0], instances)
    if path.is_object_instance:
        return _instance(body, path, model, field)
    return _resource(body, path, model, field)


def new_instance_from_json(
    data: object, object_path: Path, model: ObjectModel, field: str = "body"
) -> ObjectInstance | tuple[None, list[SingleResource | MultipleResource]]:
    """A Create body: ``{"id": optional, "resources": [...]}`` at an object path.

    Returns the instance, or ``(None, resources)`` when the operator left the id to the device.
    """
    body = _mapping(data, field, "a new instance")
    if not object_path.is_object:
        raise InputError("path", f"create needs an object path like /3303, got {object_path}")
    iid = body.get("id")
    probe = _instance(
        {**body, "id": iid if iid is not None else 0}, object_path.child(0), model, field
    )
    assert isinstance(probe, ObjectInstance)
    resources = list(probe)
    if iid is None:
        return (None, resources)
    _id(body, field)
    return ObjectInstance.of(iid, resources)


def composite_from_json(
    items: object, model: ObjectModel, field: str = "body.content"
) -> dict[Path, Node]:
    """``[{"path": "/3/0/14", "value": "+02"}, {"path": "/1/0", "resources": [...]}]``."""
    out: dict[Path, Node] = {}
    for n, item in enumerate(_sequence(items, field)):
        item_field = f"{field}[{n}]"
        entry = _mapping(item, item_field, "a path and its content")
        if "path" not in entry:
            raise InputError(f"{item_field}.path", "each entry needs a path, e.g. /3/0/14")
        path = parse_path(str(entry["path"]), f"{item_field}.path")
        if path in out:
            raise InputError(f"{item_field}.path", f"{path} given twice")
        out[path] = node_from_json(entry, path, model, item_field)
    if not out:
        raise InputError(field, "give at least one path and its content")
    return out
