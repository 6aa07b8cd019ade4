"""The mutable object store of one simulated device.

The store is copy-on-write over a shared :class:`~simulators.device.template.DeviceTemplate`:
``_values`` holds only values that differ from the template (``None`` until the first write),
``_instances`` only the instance lists of objects whose instances were created or deleted. An
idle device that was never written to costs the store object itself and nothing else.

Two faces:

* the local API (:meth:`get`, :meth:`set`, :meth:`create_instance`, :meth:`delete_instance`) is
  what the device's own logic, tests and (later) bootstrap use: no operation checks;
* the DM API (:meth:`read`, :meth:`write_resource`, :meth:`write_instance`,
  :meth:`write_resource_instance`, :meth:`create`, :meth:`delete`, :meth:`executable`)
  enforces the object definitions' operations and raises the LwM2M errors of
  :mod:`simulators.device.errors`. Writes validate everything before changing anything, so a
  refused Write leaves no partial update behind (wakaama does leave one).

Every change is reported to ``listener`` with the ids of the changed resource (or of the object,
when instances come and go); the client uses it to drive notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from lwm2m.model import (
    DataType,
    InvalidValue,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectDefinition,
    ObjectInstance,
    ObjectModel,
    Path,
    Resource,
    ResourceDefinition,
    ResourceInstance,
    SingleResource,
    Value,
    ValueType,
)
from simulators.device.errors import BadRequest, MethodNotAllowed, NotFound
from simulators.device.template import (
    Default,
    DeviceTemplate,
    Dynamic,
    InstanceTemplate,
    ObjectTemplate,
)

Key = tuple[int, int, int]
Stored = ValueType | dict[int, ValueType]
"""A resource's value as stored: a plain value, or riid → value for a multiple resource."""

Listener = Callable[[tuple[int, ...], float], None]

_EMPTY: Mapping[int, ValueType] = MappingProxyType({})


def _raw(definition: ResourceDefinition, value: object) -> ValueType:
    """``value`` checked against the resource type, in its canonical Python form."""
    if isinstance(value, Value):
        value = value.value
    try:
        return Value(definition.type, value).value  # type: ignore[arg-type]
    except InvalidValue as exc:
        raise BadRequest(f"{definition.name}: {exc}") from None


class ObjectStore:
    """Objects, instances and resource values of one device (see the module docstring)."""

    __slots__ = ("_instances", "_values", "clock_offset", "endpoint", "listener", "template")

    def __init__(
        self, template: DeviceTemplate, endpoint: str, *, clock_offset: float = 0.0
    ) -> None:
        self.template = template
        #: The endpoint client name; dynamic defaults (serial number) read it.
        self.endpoint = endpoint
        #: Wall-clock seconds (Unix time) at ``now == 0``: ``wall_time(now)`` is the device clock.
        self.clock_offset = clock_offset
        self.listener: Listener | None = None
        self._values: dict[Key, Stored] | None = None
        self._instances: dict[int, dict[int, InstanceTemplate]] | None = None

    # -- schema -------------------------------------------------------------------------------
    @property
    def model(self) -> ObjectModel:
        return self.template.model

    def wall_time(self, now: float) -> float:
        return now + self.clock_offset

    def object_ids(self) -> tuple[int, ...]:
        return tuple(self.template.objects)

    def object_template(self, oid: int) -> ObjectTemplate:
        template = self.template.objects.get(oid)
        if template is None:
            raise NotFound(f"object {oid} is not implemented")
        return template

    def definition(self, oid: int) -> ObjectDefinition:
        return self.object_template(oid).definition

    def resource_definition(self, oid: int, rid: int) -> ResourceDefinition:
        definition = self.object_template(oid).definition.resource(rid)
        if definition is None:
            raise NotFound(f"resource /{oid}/*/{rid} is not defined")
        return definition

    # -- structure ----------------------------------------------------------------------------
    def _instance_map(self, oid: int) -> Mapping[int, InstanceTemplate]:
        if self._instances is not None and oid in self._instances:
            return self._instances[oid]
        return self.object_template(oid).instances

    def structure_is_template(self) -> bool:
        """Whether every object has exactly the template's instances (none created or
        deleted): then what depends on the structure only is the template's."""
        return self._instances is None

    def object_is_template(self, oid: int) -> bool:
        """Whether object ``oid`` has the template's instances and values (nothing written
        or created in it). Dynamic defaults may still differ per device."""
        if self._instances is not None and oid in self._instances:
            return False
        return self._values is None or all(key[0] != oid for key in self._values)

    def instance_ids(self, oid: int) -> tuple[int, ...]:
        return tuple(sorted(self._instance_map(oid)))

    def has_instance(self, oid: int, iid: int) -> bool:
        return oid in self.template.objects and iid in self._instance_map(oid)

    def _instance_template(self, oid: int, iid: int) -> InstanceTemplate:
        template = self._instance_map(oid).get(iid)
        if template is None:
            raise NotFound(f"/{oid}/{iid} does not exist")
        return template

    def resource_ids(self, oid: int, iid: int) -> tuple[int, ...]:
        """The resources instance ``/oid/iid`` implements (template ones plus created ones)."""
        ids = set(self._instance_template(oid, iid).resources)
        if self._values:
            ids.update(k[2] for k in self._values if k[0] == oid and k[1] == iid)
        return tuple(sorted(ids))

    def has_resource(self, oid: int, iid: int, rid: int) -> bool:
        if not self.has_instance(oid, iid):
            return False
        if rid in self._instance_template(oid, iid).resources:
            return True
        return self._values is not None and (oid, iid, rid) in self._values

    # -- values -------------------------------------------------------------------------------
    def _default(self, key: Key) -> Default:
        return self._instance_template(key[0], key[1]).resources.get(key[2])

    def override(self, key: Key) -> Stored | None:
        """The value stored for ``key`` when it differs from the template (for Dynamic hooks)."""
        return None if self._values is None else self._values.get(key)

    def set_override(self, key: Key, value: Stored | None) -> None:
        """Store (or, with None, drop) a raw override; no checks, no notification."""
        if value is None:
            if self._values is not None:
                self._values.pop(key, None)
                if not self._values:
                    self._values = None
            return
        if self._values is None:
            self._values = {}
        self._values[key] = value

    def stored(self, key: Key, now: float) -> Stored:
        """The current value of resource ``key`` (a copy-free view; do not mutate)."""
        default = self._default(key)
        if isinstance(default, Dynamic) and default.write is not None:
            return default.read(self, now)
        if self._values is not None:
            value = self._values.get(key)
            if value is not None:
                return value
        if isinstance(default, Dynamic):
            return default.read(self, now)
        if isinstance(default, Mapping):
            return default  # type: ignore[return-value]  # read-only view of the template
        return default

    def _store(self, key: Key, definition: ResourceDefinition, value: Stored, now: float) -> None:
        default = self._default(key)
        if isinstance(default, Dynamic) and default.write is not None:
            assert not isinstance(value, dict)
            default.write(self, value, now)
        elif isinstance(default, Mapping) and isinstance(value, dict):
            self.set_override(key, None if dict(default) == value else value)
        elif (
            default is not None
            and not isinstance(default, Dynamic | Mapping)
            and type(default) is type(value)
            and default == value
        ):
            self.set_override(key, None)
        else:
            self.set_override(key, value)

    def _changed(self, ids: tuple[int, ...], now: float) -> None:
        if self.listener is not None:
            self.listener(ids, now)

    # -- nodes --------------------------------------------------------------------------------
    def resource_node(self, oid: int, iid: int, rid: int, now: float) -> Resource:
        definition = self.resource_definition(oid, rid)
        value = self.stored((oid, iid, rid), now)
        if definition.multiple:
            instances = value if isinstance(value, Mapping) else _EMPTY
            return MultipleResource(
                rid,
                definition.type,
                {riid: Value(definition.type, v) for riid, v in instances.items()},
            )
        if isinstance(value, Mapping):
            raise NotFound(f"/{oid}/{iid}/{rid} holds no single value")
        return SingleResource(rid, Value(definition.type, value))

    def instance_node(
        self, oid: int, iid: int, now: float, *, readable_only: bool = True
    ) -> ObjectInstance:
        definition = self.definition(oid)
        resources = []
        for rid in self.resource_ids(oid, iid):
            res_def = definition.resource(rid)
            if res_def is None or res_def.type is DataType.NONE:
                continue
            if readable_only and not res_def.operations.readable:
                continue
            resources.append(self.resource_node(oid, iid, rid, now))
        return ObjectInstance.of(iid, resources)

    def node(self, path: Path, now: float, *, readable_only: bool = True) -> Node:
        """The node at ``path`` (object, instance, resource or resource instance)."""
        ids = path.ids
        if not ids:
            raise MethodNotAllowed("the root path holds no single node")
        oid = ids[0]
        self.object_template(oid)
        if len(ids) == 1:
            return LwM2MObject.of(
                oid,
                (
                    self.instance_node(oid, i, now, readable_only=readable_only)
                    for i in self.instance_ids(oid)
                ),
            )
        iid = ids[1]
        if not self.has_instance(oid, iid):
            raise NotFound(f"{path.parent if len(ids) > 2 else path} does not exist")
        if len(ids) == 2:
            return self.instance_node(oid, iid, now, readable_only=readable_only)
        rid = ids[2]
        if not self.has_resource(oid, iid, rid):
            raise NotFound(f"/{oid}/{iid}/{rid} does not exist")
        resource = self.resource_node(oid, iid, rid, now)
        if len(ids) == 3:
            return resource
        if not isinstance(resource, MultipleResource) or ids[3] not in resource.instances:
            raise NotFound(f"{path} does not exist")
        return resource.instance(ids[3])

    # -- local API (no operation checks) ------------------------------------------------------
    def get(self, path: Path | str, now: float = 0.0) -> ValueType | dict[int, ValueType]:
        """The raw value at a resource or resource-instance path (a dict for multiple ones)."""
        path = Path.parse(path) if isinstance(path, str) else path
        node = self.node(path, now, readable_only=False)
        if isinstance(node, SingleResource | ResourceInstance):
            return node.value.value
        if isinstance(node, MultipleResource):
            return {riid: v.value for riid, v in node.instances.items()}
        raise ValueError(f"{path} is not a resource path")

    def set(self, path: Path | str, value: object, now: float = 0.0) -> None:
        """Set a resource (plain value or ``{riid: value}``) or resource instance, as the
        device itself would: any resource, whatever its operations. Notifies observers."""
        path = Path.parse(path) if isinstance(path, str) else path
        if path.level < 3:
            raise ValueError(f"set needs a resource or resource-instance path, not {path}")
        oid, iid, rid = path.ids[:3]
        definition = self.resource_definition(oid, rid)
        if not self.has_resource(oid, iid, rid):
            raise NotFound(f"/{oid}/{iid}/{rid} does not exist")
        key = (oid, iid, rid)
        if path.is_resource_instance:
            if not definition.multiple:
                raise NotFound(f"{path.parent} is a single resource")
            current = self.stored(key, now)
            merged = dict(current) if isinstance(current, Mapping) else {}
            merged[path.ids[3]] = _raw(definition, value)
            self._store(key, definition, merged, now)
        elif definition.multiple:
            if not isinstance(value, Mapping):
                raise ValueError(f"{path} is a multiple resource; give {{riid: value}}")
            content = {int(k): _raw(definition, v) for k, v in value.items()}
            self._store(key, definition, content, now)
        else:
            self._store(key, definition, _raw(definition, value), now)
        self._changed(key, now)

    def create_instance(
        self,
        oid: int,
        iid: int | None = None,
        values: Mapping[int, object] | None = None,
        *,
        template: InstanceTemplate | None = None,
        now: float = 0.0,
    ) -> int:
        """Add instance ``/oid/iid`` (lowest free id when None) with ``values`` over the
        object's ``new_instance`` defaults (or ``template``). Returns the id."""
        obj = self.object_template(oid)
        base = template or obj.new_instance or InstanceTemplate()
        current = self._instance_map(oid)
        if iid is None:
            iid = next(i for i in range(len(current) + 1) if i not in current)
        if iid in current:
            raise BadRequest(f"/{oid}/{iid} already exists")
        if not obj.definition.multiple and current:
            raise BadRequest(f"object {oid} is single-instance and has an instance")
        updated = dict(current)
        updated[iid] = base
        self._set_instances(oid, updated)
        self._purge(oid, iid)
        for rid, value in (values or {}).items():
            definition = self.resource_definition(oid, rid)
            key = (oid, iid, rid)
            if definition.multiple:
                assert isinstance(value, Mapping)
                content = {k: _raw(definition, v) for k, v in value.items()}
                self._store(key, definition, content, now)
            else:
                self._store(key, definition, _raw(definition, value), now)
        self._changed((oid,), now)
        return iid

    def delete_instance(self, oid: int, iid: int, now: float = 0.0) -> None:
        current = self._instance_map(oid)
        if iid not in current:
            raise NotFound(f"/{oid}/{iid} does not exist")
        updated = dict(current)
        del updated[iid]
        self._set_instances(oid, updated)
        self._purge(oid, iid)
        self._changed((oid,), now)

    def reset(self) -> None:
        """Factory reset: back to the template (every override and instance change dropped)."""
        self._values = None
        self._instances = None

    def _set_instances(self, oid: int, instances: dict[int, InstanceTemplate]) -> None:
        if dict(self.object_template(oid).instances) == instances:
            if self._instances is not None:
                self._instances.pop(oid, None)
                if not self._instances:
                    self._instances = None
            return
        if self._instances is None:
            self._instances = {}
        self._instances[oid] = instances

    def _purge(self, oid: int, iid: int) -> None:
        if self._values is not None:
            for key in [k for k in self._values if k[0] == oid and k[1] == iid]:
                del self._values[key]
            if not self._values:
                self._values = None

    # -- DM API (operation checks) ------------------------------------------------------------
    def read(self, path: Path, now: float) -> Node:
        """Read as a server sees it: 4.04 for absent targets, 4.05 for unreadable resources;
        instances and objects carry their readable resources only."""
        if path.level >= 3:
            definition = self.resource_definition(path.ids[0], path.ids[2])
            if not definition.operations.readable or definition.type is DataType.NONE:
                self.node(path, now, readable_only=False)  # 4.04 first if it is absent
                raise MethodNotAllowed(f"{path} ({definition.name}) is not readable")
        return self.node(path, now)

    def check_writable(self, oid: int, iid: int, rid: int) -> ResourceDefinition:
        """The definition of a resource a server may write; 4.04 if absent, 4.05 if not W."""
        definition = self.resource_definition(oid, rid)
        if not self.has_resource(oid, iid, rid):
            raise NotFound(f"/{oid}/{iid}/{rid} does not exist")
        if not definition.operations.writable or definition.type is DataType.NONE:
            raise MethodNotAllowed(f"/{oid}/{iid}/{rid} ({definition.name}) is not writable")
        return definition

    def _resource_content(self, definition: ResourceDefinition, resource: Resource) -> Stored:
        if isinstance(resource, MultipleResource):
            if not definition.multiple:
                raise BadRequest(f"{definition.name} is a single resource")
            return {riid: _raw(definition, v) for riid, v in resource.instances.items()}
        if definition.multiple:
            raise BadRequest(f"{definition.name} is a multiple resource")
        return _raw(definition, resource.value)

    def write_resource(self, oid: int, iid: int, resource: Resource, now: float) -> None:
        """Write (replace) ``/oid/iid/rid``: a multiple resource gets exactly the instances
        given."""
        definition = self.check_writable(oid, iid, resource.id)
        content = self._resource_content(definition, resource)
        self._store((oid, iid, resource.id), definition, content, now)
        self._changed((oid, iid, resource.id), now)

    def write_resource_instance(
        self, oid: int, iid: int, rid: int, instance: ResourceInstance, now: float
    ) -> None:
        """Write ``/oid/iid/rid/riid`` (LwM2M 1.1): adds or replaces that one instance."""
        definition = self.check_writable(oid, iid, rid)
        if not definition.multiple:
            raise NotFound(f"/{oid}/{iid}/{rid} is a single resource")
        current = self.stored((oid, iid, rid), now)
        merged = dict(current) if isinstance(current, Mapping) else {}
        merged[instance.id] = _raw(definition, instance.value)
        self._store((oid, iid, rid), definition, merged, now)
        self._changed((oid, iid, rid), now)

    def write_instance(
        self, oid: int, iid: int, resources: Iterable[Resource], now: float, *, replace: bool
    ) -> list[int]:
        """Write an object instance; returns the written resource ids.

        Partial update (``replace=False``, POST) sets the resources given and merges the
        instances of multiple resources. Replace (PUT) also returns every other writable
        resource to its default (created ones disappear). All-or-nothing.
        """
        if not self.has_instance(oid, iid):
            raise NotFound(f"/{oid}/{iid} does not exist")
        plan: list[tuple[ResourceDefinition, Resource, Stored]] = []
        for resource in resources:
            definition = self.check_writable(oid, iid, resource.id)
            content = self._resource_content(definition, resource)
            if not replace and isinstance(content, dict):
                current = self.stored((oid, iid, resource.id), now)
                content = {**(current if isinstance(current, Mapping) else {}), **content}
            plan.append((definition, resource, content))
        written = {resource.id for _, resource, _ in plan}
        if replace:
            template_ids = set(self._instance_template(oid, iid).resources)
            for rid in self.resource_ids(oid, iid):
                definition = self.resource_definition(oid, rid)
                if rid in written or not definition.operations.writable:
                    continue
                default = self._default((oid, iid, rid))
                if rid not in template_ids or not isinstance(default, Dynamic):
                    self.set_override((oid, iid, rid), None)
        for definition, resource, content in plan:
            self._store((oid, iid, resource.id), definition, content, now)
        for rid in sorted(written):
            self._changed((oid, iid, rid), now)
        return sorted(written)

    def write_composite(self, items: Mapping[Path, Node], now: float) -> list[Path]:
        """Write-Composite: each resource is replaced, each resource instance added or
        replaced. All-or-nothing; returns the paths written."""
        plan: dict[Key, tuple[ResourceDefinition, Stored]] = {}
        for path, node in items.items():
            if path.level < 3:
                raise BadRequest(f"Write-Composite addresses resources, not {path}")
            oid, iid, rid = path.ids[:3]
            key = (oid, iid, rid)
            definition = self.check_writable(oid, iid, rid)
            if path.is_resource and isinstance(node, SingleResource | MultipleResource):
                plan[key] = (definition, self._resource_content(definition, node))
            elif path.is_resource_instance and isinstance(node, ResourceInstance):
                if not definition.multiple:
                    raise NotFound(f"{path.parent} is a single resource")
                pending = plan.get(key)
                base = pending[1] if pending is not None else self.stored(key, now)
                merged = dict(base) if isinstance(base, Mapping) else {}
                merged[node.id] = _raw(definition, node.value)
                plan[key] = (definition, merged)
            else:
                raise BadRequest(f"the value at {path} does not fit the path")
        for key, (definition, content) in plan.items():
            self._store(key, definition, content, now)
        for key in plan:
            self._changed(key, now)
        return list(items)

    def create(self, oid: int, iid: int | None, resources: Iterable[Resource], now: float) -> int:
        """Create as a DM server: 4.05 if the object refuses Create, 4.00 for an existing id or
        a missing mandatory resource, 4.04/4.05 for resources that are undefined/unwritable."""
        obj = self.object_template(oid)
        if obj.new_instance is None:
            raise MethodNotAllowed(f"object {oid} does not allow Create")
        values: dict[int, object] = {}
        for resource in resources:
            definition = self.resource_definition(oid, resource.id)
            if not definition.operations.writable:
                raise MethodNotAllowed(f"{definition.name} is not writable")
            values[resource.id] = (
                dict(resource.instances)
                if isinstance(resource, MultipleResource)
                else resource.value
            )
        for rid, definition in obj.definition.resources.items():
            if (
                definition.mandatory
                and definition.type is not DataType.NONE
                and rid not in values
                and rid not in obj.new_instance.resources
            ):
                raise BadRequest(f"mandatory resource {definition.name} ({rid}) missing")
        if iid is not None and iid in self._instance_map(oid):
            raise BadRequest(f"/{oid}/{iid} already exists")
        return self.create_instance(oid, iid, values, now=now)

    def delete(self, oid: int, iid: int, now: float) -> None:
        obj = self.object_template(oid)
        if not self.has_instance(oid, iid):
            raise NotFound(f"/{oid}/{iid} does not exist")
        if not obj.deletable:
            raise MethodNotAllowed(f"instances of object {oid} cannot be deleted")
        self.delete_instance(oid, iid, now)

    def executable(self, oid: int, iid: int, rid: int) -> ResourceDefinition:
        """The definition of an executable resource; 4.04 if absent, 4.05 if not E."""
        definition = self.resource_definition(oid, rid)
        if not self.has_resource(oid, iid, rid):
            raise NotFound(f"/{oid}/{iid}/{rid} does not exist")
        if not definition.operations.executable:
            raise MethodNotAllowed(f"/{oid}/{iid}/{rid} ({definition.name}) is not executable")
        return definition


__all__ = ["Key", "Listener", "ObjectStore", "Stored"]
