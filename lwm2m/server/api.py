"""The device-management operations of :class:`~lwm2m.server.LwM2MServer`, as a mixin.

Each method checks what the caller asked (path level, content format, encodability) and
raises :class:`~lwm2m.server.errors.InvalidRequest` before anything is sent; then it builds
one :mod:`lwm2m.server.operations` object and hands it to the runtime's ``_run``, which sends
it now or queues it for a sleeping device. Everything after that comes back as a typed result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from lwm2m.codec import CodecError
from lwm2m.codec.link import AttributeUpdate, format_write_attributes
from lwm2m.codec.text import parse_text_value
from lwm2m.model import (
    DataType,
    ModelError,
    Node,
    ObjectInstance,
    ObjectModel,
    Path,
    Resource,
    ResourceInstance,
    SingleResource,
    resource_definition,
)
from lwm2m.server.errors import InvalidRequest
from lwm2m.server.formats import (
    CLIENT_CHOICE,
    FormatOperation,
    choose_format,
    composite_format,
    format_problem,
)
from lwm2m.server.operations import (
    AnyOperation,
    Create,
    Delete,
    Discover,
    Execute,
    Observe,
    ObserveComposite,
    Read,
    ReadComposite,
    Write,
    WriteAttributes,
    WriteComposite,
)
from lwm2m.server.results import (
    CompositeReadResult,
    CreateResult,
    DiscoverResult,
    ObserveResult,
    OperationResult,
    ReadResult,
)
from lwm2m.server.state import Device, as_path


def _below_root(path: Path | str, operation: str) -> Path:
    """``path`` as a Path, refusing ``/``: these operations address a node, and ``/`` is none."""
    target = as_path(path)
    if target.is_root:
        raise InvalidRequest(f"{operation} needs an object, instance or resource path, not /")
    return target


class DeviceManagementApi:
    """Read, Write, Write-Attributes, Discover, Execute, Create, Delete, the composite
    operations and Observe; the runtime provides ``model``, ``_device`` and ``_run``."""

    model: ObjectModel

    if TYPE_CHECKING:

        def _device(self, endpoint: str) -> Device: ...

        async def _run(
            self,
            endpoint: str,
            op: AnyOperation,
            timeout: float | None,
            queue_deadline: float | None,
        ) -> OperationResult: ...

    def _format(
        self,
        device: Device,
        operation: FormatOperation,
        path: Path,
        requested: int | None,
        value_type: Any = None,
    ) -> int | None:
        if requested is None:
            return choose_format(device.registration, operation, path, self.model, value_type)
        problem = format_problem(requested, operation, path)
        if problem is not None:
            raise InvalidRequest(problem)
        return None if requested == CLIENT_CHOICE else requested

    async def read(
        self,
        endpoint: str,
        path: Path | str,
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> ReadResult:
        """Read the object, instance, resource or resource instance at ``path``."""
        target = _below_root(path, "Read")
        device = self._device(endpoint)
        accept = self._format(device, FormatOperation.READ, target, format)
        op = Read(target, accept)
        return cast(ReadResult, await self._run(endpoint, op, timeout, queue_deadline))

    async def write(
        self,
        endpoint: str,
        path: Path | str,
        content: Node,
        *,
        replace: bool = True,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        """Write ``content`` at ``path``: replace (PUT) or, with ``replace=False``, partial
        update (POST) of an instance or multiple resource."""
        target = as_path(path)
        if target.level < 2:
            raise InvalidRequest(f"Write needs an instance or resource path, not {target}")
        device = self._device(endpoint)
        value_type = getattr(content, "type", None)
        if isinstance(content, ResourceInstance):
            value_type = content.value.type
        fmt = self._format(device, FormatOperation.WRITE, target, format, value_type)
        assert fmt is not None  # writes always have a format
        try:
            op = Write.of(target, content, fmt, self.model, replace=replace)
        except (CodecError, ModelError) as exc:
            raise InvalidRequest(f"cannot encode the content for {target}: {exc}") from None
        return await self._run(endpoint, op, timeout, queue_deadline)

    async def write_value(
        self,
        endpoint: str,
        path: Path | str,
        text: str,
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        """Write one value given as text (``"120"``, ``"true"``, ``"3:0"``), typed by the
        object model's definition of the resource (the CLI's ``fleetloop write EP PATH V``)."""
        target = as_path(path)
        if not (target.is_resource or target.is_resource_instance):
            raise InvalidRequest(f"write_value needs a resource path, not {target}")
        definition = resource_definition(self.model, target.object_id, target.resource_id)
        if definition is None:
            raise InvalidRequest(
                f"the object model does not know {target}; load its DDF or use write() "
                "with a typed value"
            )
        if target.is_resource and definition.multiple:
            raise InvalidRequest(
                f"{target} ({definition.name}) is a multiple resource; write an instance "
                f"path such as {target}/0"
            )
        raw = text
        if definition.type is DataType.BOOLEAN:  # the CLI takes true/false as well as 1/0
            raw = {"true": "1", "false": "0"}.get(text.strip().lower(), text)
        try:
            value = parse_text_value(definition.type, raw.encode("utf-8"))
        except CodecError as exc:
            raise InvalidRequest(
                f"{text!r} is not a {definition.type.value} for {target} ({definition.name}): {exc}"
            ) from None
        node: Node
        if target.is_resource_instance:
            node = ResourceInstance(target.ids[3], value)
        else:
            node = SingleResource(target.ids[2], value)
        return await self.write(
            endpoint,
            target,
            node,
            format=format,
            timeout=timeout,
            queue_deadline=queue_deadline,
        )

    async def write_attributes(
        self,
        endpoint: str,
        path: Path | str,
        attributes: AttributeUpdate,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        """Write-Attributes (PUT with the attributes as query; a name alone unsets it)."""
        target = _below_root(path, "Write-Attributes")
        try:
            query = tuple(format_write_attributes(attributes))
        except CodecError as exc:
            raise InvalidRequest(str(exc)) from None
        if not query:
            raise InvalidRequest("no attribute to set or unset")
        self._device(endpoint)
        return await self._run(endpoint, WriteAttributes(target, query), timeout, queue_deadline)

    async def discover(
        self,
        endpoint: str,
        path: Path | str,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> DiscoverResult:
        """Discover (GET Accept: link format): the links and attributes under ``path``."""
        target = _below_root(path, "Discover")
        self._device(endpoint)
        result = await self._run(endpoint, Discover(target), timeout, queue_deadline)
        return cast(DiscoverResult, result)

    async def execute(
        self,
        endpoint: str,
        path: Path | str,
        arguments: str | None = None,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        """Execute the resource at ``path`` with optional text arguments (``0='v',1``)."""
        target = as_path(path)
        if not target.is_resource:
            raise InvalidRequest(f"Execute needs a resource path, not {target}")
        self._device(endpoint)
        return await self._run(endpoint, Execute(target, arguments), timeout, queue_deadline)

    async def create(
        self,
        endpoint: str,
        object_path: Path | str,
        instance: ObjectInstance | Sequence[Resource],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> CreateResult:
        """Create an instance of the object at ``object_path``: an :class:`ObjectInstance`
        (its id is the one to create) or a list of resources (the device picks the id)."""
        target = as_path(object_path)
        if not target.is_object:
            raise InvalidRequest(f"Create needs an object path such as /1, not {target}")
        device = self._device(endpoint)
        fmt = self._format(device, FormatOperation.CREATE, target, format)
        assert fmt is not None
        try:
            op = Create.of(target, instance, fmt, self.model)
        except (CodecError, ModelError) as exc:
            raise InvalidRequest(f"cannot encode the new instance: {exc}") from None
        return cast(CreateResult, await self._run(endpoint, op, timeout, queue_deadline))

    async def delete(
        self,
        endpoint: str,
        path: Path | str,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        """Delete the object instance (or, LwM2M 1.2, resource instance) at ``path``."""
        target = as_path(path)
        if not (target.is_object_instance or target.is_resource_instance):
            raise InvalidRequest(f"Delete needs an object instance path, not {target}")
        self._device(endpoint)
        return await self._run(endpoint, Delete(target), timeout, queue_deadline)

    def _composite(
        self, device: Device, paths: Sequence[Path | str], format: int | None, what: str
    ) -> tuple[tuple[Path, ...], int]:
        if device.registration.lwm2m_version == "1.0":
            raise InvalidRequest(f"{what} needs LwM2M 1.1; {device.endpoint} registered as 1.0")
        targets = tuple(as_path(p) for p in paths)
        if not targets:
            raise InvalidRequest(f"{what} needs at least one path")
        if format is None:
            return targets, composite_format(device.registration)
        problem = format_problem(format, FormatOperation.READ_COMPOSITE, targets[0])
        if problem is not None:
            raise InvalidRequest(problem)
        return targets, format

    async def read_composite(
        self,
        endpoint: str,
        paths: Sequence[Path | str],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> CompositeReadResult:
        """Read-Composite (FETCH): several paths in one request (LwM2M 1.1+)."""
        device = self._device(endpoint)
        targets, fmt = self._composite(device, paths, format, "Read-Composite")
        op = ReadComposite(targets, fmt)
        return cast(CompositeReadResult, await self._run(endpoint, op, timeout, queue_deadline))

    async def write_composite(
        self,
        endpoint: str,
        content: Mapping[Path, Node],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        """Write-Composite (iPATCH): resources and resource instances of several objects."""
        device = self._device(endpoint)
        targets, fmt = self._composite(device, list(content), format, "Write-Composite")
        try:
            op = WriteComposite.of(dict(zip(targets, content.values())), fmt, self.model)
        except (CodecError, ModelError) as exc:
            raise InvalidRequest(f"cannot encode the composite content: {exc}") from None
        return await self._run(endpoint, op, timeout, queue_deadline)

    async def observe(
        self,
        endpoint: str,
        path: Path | str,
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> ObserveResult:
        """Observe ``path``: the initial content now, :class:`Notification` events after."""
        target = _below_root(path, "Observe")
        device = self._device(endpoint)
        accept = self._format(device, FormatOperation.OBSERVE, target, format)
        result = await self._run(endpoint, Observe(target, accept), timeout, queue_deadline)
        return cast(ObserveResult, result)

    async def observe_composite(
        self,
        endpoint: str,
        paths: Sequence[Path | str],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> ObserveResult:
        """Observe-Composite (FETCH Observe=0) on several paths (LwM2M 1.1+)."""
        device = self._device(endpoint)
        targets, fmt = self._composite(device, paths, format, "Observe-Composite")
        op = ObserveComposite(targets, fmt)
        return cast(ObserveResult, await self._run(endpoint, op, timeout, queue_deadline))


__all__ = ["DeviceManagementApi"]
