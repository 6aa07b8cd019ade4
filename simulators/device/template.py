"""Device templates: the immutable part of a simulated device, shared by every device built
from it.

A fleet of ten thousand devices of one model differs in a handful of values (none at all when
serial numbers and clocks are computed), so everything else — which objects and instances
exist, their default values, their execute behaviours — lives once in a :class:`DeviceTemplate`
and each device's :class:`~simulators.device.objects.ObjectStore` keeps only what differs.

A default is one of:

* a plain value (``str``, ``int``, ``float``, ``bool``, ``bytes``, ``ObjLink``) of the
  resource's type;
* a ``Mapping[int, value]`` for a multiple resource (resource-instance id → value);
* a :class:`Dynamic`, computed on every read from the device (serial number from the endpoint
  name, current time from the clock);
* ``None`` for an executable resource.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from lwm2m.model import ObjectDefinition, ObjectModel, Path, ValueType

if TYPE_CHECKING:
    from simulators.device.execute import Arguments
    from simulators.device.objects import ObjectStore


class DeviceActions(Protocol):
    """What an execute handler may ask of the device beyond its object store.

    The LwM2M client implements it; handlers stay ignorant of CoAP and registration.
    """

    @property
    def store(self) -> ObjectStore: ...

    def reboot(self, now: float, *, factory_reset: bool = False) -> None:
        """Restart after the current response went out (Execute /3/0/4, /3/0/5)."""

    def trigger_update(self, now: float) -> None:
        """Send a Registration Update now (Execute /1/x/8)."""

    def request_bootstrap(self, now: float, reason: str) -> None:
        """Bootstrap again once the current response went out (Execute /1/x/9)."""

    def schedule(self, when: float, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` at ``when`` (a download finishing, a health window ending)."""


ExecuteHandler = Callable[[DeviceActions, Path, "Arguments", float], None]
"""Runs an Execute: ``(device, path, args, now)``. Raise a DeviceError to refuse it."""

WriteHook = Callable[[DeviceActions, Path, float], None]
"""Reacts to a server's Write of one resource: ``(device, resource path, now)``. As a guard
(before the write) it refuses by raising a DeviceError; after the write it applies effects."""

DynamicRead = Callable[["ObjectStore", float], ValueType]
DynamicWrite = Callable[["ObjectStore", ValueType, float], None]


@dataclass(frozen=True, slots=True)
class Dynamic:
    """A single resource computed on read, and optionally accepting writes.

    ``read(store, now)`` returns the value; ``write(store, value, now)`` stores what it needs
    (usually one override, e.g. a clock offset). Without ``write`` the resource keeps the write
    as a plain override, which then shadows the computed value.
    """

    read: DynamicRead
    write: DynamicWrite | None = None


Default = ValueType | Mapping[int, ValueType] | Dynamic
"""A resource's default: value, multiple-resource instances, computed, or None (executable)."""


def _frozen(resources: Mapping[int, Default]) -> Mapping[int, Default]:
    out: dict[int, Default] = {}
    for rid, default in sorted(resources.items()):
        if isinstance(default, Mapping) and not isinstance(default, MappingProxyType):
            default = MappingProxyType(dict(sorted(default.items())))
        out[rid] = default
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class InstanceTemplate:
    """The resources an object instance implements, with their defaults."""

    resources: Mapping[int, Default] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resources", _frozen(self.resources))


@dataclass(frozen=True, slots=True)
class ObjectTemplate:
    """One object as a device model implements it.

    ``new_instance`` holds the defaults of an instance a server creates (None: the object
    refuses Create with 4.05, as Anjay does for the Server object); ``deletable`` says whether a
    DM server may delete instances; ``handlers`` run Executes by resource id; ``version`` is the
    ``ver`` the device registers with (default: the definition's version). ``write_guard``
    runs for every resource a DM Write targets before anything changes (raise to refuse it);
    ``on_write`` hooks run per written resource id afterwards.
    """

    definition: ObjectDefinition
    instances: Mapping[int, InstanceTemplate] = field(default_factory=dict)
    new_instance: InstanceTemplate | None = None
    deletable: bool = False
    handlers: Mapping[int, ExecuteHandler] = field(default_factory=dict)
    version: str = ""
    on_write: Mapping[int, WriteHook] = field(default_factory=dict)
    write_guard: WriteHook | None = None

    def __post_init__(self) -> None:
        instances = MappingProxyType(dict(sorted(self.instances.items())))
        object.__setattr__(self, "instances", instances)
        object.__setattr__(self, "handlers", MappingProxyType(dict(self.handlers)))
        object.__setattr__(self, "on_write", MappingProxyType(dict(self.on_write)))
        if not self.version:
            object.__setattr__(self, "version", self.definition.version)

    @property
    def id(self) -> int:
        return self.definition.id


class DeviceTemplate:
    """Every object a device model implements, plus the schema codecs decode with.

    ``model`` must define every object of the template (and may define more: a server can
    still address them and get 4.04).
    """

    __slots__ = ("memo", "model", "objects")

    def __init__(self, objects: Iterable[ObjectTemplate], model: ObjectModel) -> None:
        self.objects: Mapping[int, ObjectTemplate] = MappingProxyType(
            {o.id: o for o in sorted(objects, key=lambda o: o.id)}
        )
        self.model = model
        #: What is derived from the template alone (the Register payload, the server account),
        #: computed once and shared by every device still as the template made it: building
        #: them per device was half of a simulated device's start-up CPU (issue 13).
        self.memo: dict[Hashable, object] = {}
        for oid in self.objects:
            if model.get(oid) is None:
                raise ValueError(f"object {oid} of the template is not in the model")

    def replace(self, *objects: ObjectTemplate) -> DeviceTemplate:
        """A new template with ``objects`` added or replacing same-id ones."""
        merged = dict(self.objects)
        merged.update({o.id: o for o in objects})
        return DeviceTemplate(merged.values(), self.model)


__all__ = [
    "Default",
    "DeviceActions",
    "DeviceTemplate",
    "Dynamic",
    "DynamicRead",
    "DynamicWrite",
    "ExecuteHandler",
    "InstanceTemplate",
    "ObjectTemplate",
    "WriteHook",
]
