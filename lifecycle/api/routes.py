"""Routes for devices, DM operations, composite operations, observations and the queue.

URL scheme: a device is ``/devices/{endpoint}``; its data tree is ``/devices/{endpoint}/data/
{path}`` with one HTTP method per LwM2M operation on it (GET Read, PUT Write-replace, PATCH
Write-partial-update, POST Create, DELETE Delete); operations that are not about the data
itself have their own segment (``execute``, ``discover``, ``attributes``, ``observe``,
``composite/...``). The LwM2M path is written without its leading slash: ``.../data/3/0/1``.

Every operation route answers 200 (201 for Create) with ``"status": "success"`` and the
device's CoAP code, or an error shaped as :mod:`lifecycle.api.errors` describes. Query parameters
common to operations: ``format`` (content format name or number), ``timeout`` (seconds to wait
for the device once the request is sent) and ``queue_deadline`` (seconds a request may wait for
a sleeping queue-mode device).
"""

from __future__ import annotations

import os
import resource
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.audit_routes import audit_operation
from lifecycle.api.auth import context_of
from lifecycle.api.bounds import RowId
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError, result_error, unknown_endpoint
from lifecycle.api.models import (
    CancelledOut,
    DeviceDetail,
    DevicePage,
    DiscoverOut,
    ObservationOut,
    OperationOut,
    QueuedOut,
    RemovedOut,
    StatusOut,
)
from lifecycle.api.parse import (
    InputError,
    composite_from_json,
    new_instance_from_json,
    node_from_json,
    parse_path,
)
from lifecycle.api.render import JsonObject, iso8601, node_to_json, nodes_to_json
from lifecycle.api.scope import Scope, Scoped
from lifecycle.api.selection import selected
from lifecycle.api.views import (
    FORMAT_NAMES,
    format_name,
    last_values_json,
    link_json,
    objects_json,
    observation_json,
    queued_request_json,
    registration_json,
    security_json,
)
from lifecycle.jsonview import shown_address
from lwm2m.codec.link import Attributes, AttributeUpdate, LinkFormatError
from lwm2m.model import Path, resource_definition
from lwm2m.server import OperationResult, UnknownObservation

health = APIRouter()
router = APIRouter()

Context = Annotated[ApiContext, Depends(context_of)]
PathParam = Annotated[str, "LwM2M path without the leading slash, e.g. 3/0/1"]


def parse_format(text: str | None) -> int | None:
    """A content format from its name (``senml-json``) or number (``110``)."""
    if text is None or text == "":
        return None
    key = text.strip().lower()
    if key in FORMAT_NAMES:
        return FORMAT_NAMES[key]
    if key.isascii() and key.isdigit() and int(key) < 65536:
        return int(key)
    names = ", ".join(FORMAT_NAMES)
    raise InputError("query.format", f"unknown content format {text!r}; use one of {names}")


class OpOptions:
    """The query parameters every operation takes."""

    def __init__(
        self,
        format: Annotated[
            str | None,
            Query(description="content format: " + ", ".join(FORMAT_NAMES) + ", or a number"),
        ] = None,
        timeout: Annotated[
            float | None,
            Query(gt=0, le=86_400, description="seconds to wait for the device's answer"),
        ] = None,
        queue_deadline: Annotated[
            float | None,
            Query(gt=0, le=30 * 86_400, description="seconds to wait for a sleeping device"),
        ] = None,
    ) -> None:
        self.format = parse_format(format)
        self.timeout = timeout
        self.queue_deadline = queue_deadline

    def kwargs(self, *, with_format: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"timeout": self.timeout, "queue_deadline": self.queue_deadline}
        if with_format:
            out["format"] = self.format
        return out


Options = Annotated[OpOptions, Depends(OpOptions)]


def _check(
    result: OperationResult, endpoint: str, operation: str, path: Path | str | None
) -> JsonObject:
    """The success body for ``result``, or raise its error response."""
    where = str(path) if path is not None else None
    if not result.ok:
        raise result_error(result, endpoint=endpoint, operation=operation, path=where)
    return {
        "status": "success",
        "endpoint": endpoint,
        "operation": operation,
        "path": where,
        "coap_code": result.code,
        "queued": result.queued,
        "queued_request_id": result.queued_request_id,
    }


_selected = selected


async def _visible_device(ctx: ApiContext, scope: Scope, endpoint: str) -> None:
    """404 ``unknown_endpoint`` unless the device is registered and in the caller's tenants.

    Checked first thing in the route (after the request's own validation), so a device of
    another tenant and a device that does not exist fail alike, whatever else is wrong with
    the request."""
    if ctx.server.registration(endpoint) is None:
        raise unknown_endpoint(endpoint)
    await scope.endpoint(endpoint)


# -- health ---------------------------------------------------------------------------------------


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    version: str
    devices: int
    coap: str | None
    coaps: str | None
    started_at: str


def _address(address: tuple[Any, ...] | None) -> str | None:
    return None if address is None else shown_address(str(address[0]), int(address[1]))


@health.get(
    "/health",
    tags=["health"],
    response_model=Health,
    response_model_exclude_unset=True,
    summary="Liveness (no token)",
)
async def get_health(ctx: Context) -> Health:
    """Whether the server runs; how many devices are registered. Needs no token."""
    server = ctx.server
    return Health(
        status="stopping" if ctx.closing else "ok",
        version=ctx.version,
        devices=len(server.registrations()),
        coap=_address(server.coap_address),
        coaps=_address(server.coaps_address),
        started_at=iso8601(ctx.started_at),
    )


# -- devices --------------------------------------------------------------------------------------


@router.get(
    "/devices",
    response_model=DevicePage,
    response_model_exclude_unset=True,
    tags=["devices"],
    summary="List registered devices",
)
async def list_devices(
    ctx: Context,
    scope: Scoped,
    prefix: Annotated[str | None, Query(description="only endpoints starting with this")] = None,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page (an endpoint name)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="devices per page")] = 100,
    select: Annotated[
        str | None, Query(description="only devices the selector names (docs/GROUPS.md)")
    ] = None,
) -> JsonObject:
    """Current registrations (of the caller's tenants), ordered by endpoint name, one page at
    a time: ``next_cursor`` is null on the last page. ``select`` filters by the inventory
    (labels, region, stage, ...), like ``GET /v1/inventory``."""
    chosen = await _selected(ctx, scope, select)
    registrations = await scope.filter(
        sorted(
            (
                r
                for r in ctx.server.registrations()
                if (prefix is None or r.endpoint.startswith(prefix))
                and (chosen is None or r.endpoint in chosen)
            ),
            key=lambda r: r.endpoint,
        ),
        lambda r: r.endpoint,
    )
    after = [r for r in registrations if cursor is None or r.endpoint > cursor]
    page = after[:limit]
    items = [registration_json(r) for r in page]
    for item, reg in zip(items, page, strict=True):
        awake = not reg.queue_mode or ctx.server.is_awake(reg.endpoint)
        item["reachability"] = "online" if awake else "sleeping"
    return {
        "items": items,
        "count": len(registrations),
        "next_cursor": page[-1].endpoint if len(after) > limit else None,
    }


@router.get(
    "/devices/{endpoint}",
    response_model=DeviceDetail,
    response_model_exclude_unset=True,
    tags=["devices"],
    summary="Show one device",
)
async def show_device(ctx: Context, scope: Scoped, endpoint: str) -> JsonObject:
    """Registration, objects (with model names), last reported values, observations and the
    security mode (never the key)."""
    await _visible_device(ctx, scope, endpoint)
    reg = ctx.server.registration(endpoint)
    if reg is None:
        raise unknown_endpoint(endpoint)
    values = await ctx.server.last_values(endpoint)
    security = await ctx.store.read(lambda tx: ctx.store.security.get(tx, endpoint))
    return {
        **registration_json(reg),
        "objects": objects_json(reg, ctx.model),
        "last_values": last_values_json(values, ctx.model),
        "observations": [observation_json(o, ctx.model) for o in ctx.server.observations(endpoint)],
        "security": security_json(security, ctx.store) if security is not None else None,
    }


@router.delete(
    "/devices/{endpoint}",
    response_model=RemovedOut,
    tags=["devices"],
    summary="Remove a stale device's registration",
)
async def remove_device(ctx: Context, scope: Scoped, endpoint: str) -> JsonObject:
    """Remove the registration of a device that will not de-register itself (a unit that was
    unplugged, a test device): its observations end and queued requests are cancelled. The
    inventory record, desired state and audit trail stay. A device that is in fact alive gets
    4.04 on its next Update and registers again."""
    await _visible_device(ctx, scope, endpoint)
    before = ctx.server.registration(endpoint)
    if before is None:
        raise unknown_endpoint(endpoint)
    removed = await ctx.server.remove(endpoint, actor=scope.principal.actor)
    if removed is None:
        raise unknown_endpoint(endpoint)
    await audit_operation(
        ctx,
        scope,
        endpoint,
        "remove",
        None,
        detail={"registration_id": removed.id},
        outcome="ok",
    )
    item = registration_json(removed)
    return {
        "status": "removed",
        "endpoint": endpoint,
        "registration_id": removed.id,
        "last_seen": item.get("last_seen"),
    }


# -- single-path operations -----------------------------------------------------------------------

NODE_EXAMPLES: dict[str, Any] = {
    "value": {"summary": "one resource", "value": {"value": "+02:00"}},
    "instance": {
        "summary": "an object instance",
        "value": {"resources": [{"id": 1, "value": 300}, {"id": 3, "value": 60}]},
    },
    "multiple": {
        "summary": "a multiple resource",
        "value": {"instances": [{"id": 0, "value": 1}, {"id": 1, "value": 5}]},
    },
}
NodeBody = Annotated[
    dict[str, Any],
    Body(
        description="the node in the shape Read returns (docs/API.md); `path` optional",
        openapi_examples=NODE_EXAMPLES,
    ),
]


@router.get(
    "/devices/{endpoint}/data/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Read",
)
async def read(
    ctx: Context, scope: Scoped, endpoint: str, path: PathParam, options: Options
) -> JsonObject:
    """Read an object, instance, resource or resource instance."""
    await _visible_device(ctx, scope, endpoint)
    target = parse_path(path)
    result = await ctx.server.read(endpoint, target, **options.kwargs())
    body = _check(result, endpoint, "read", target)
    body["content_format"] = format_name(result.content_format)
    body["content"] = (
        node_to_json(result.content, target, ctx.model) if result.content is not None else None
    )
    return body


async def _write(
    ctx: ApiContext,
    scope: Scope,
    endpoint: str,
    path: str,
    data: dict[str, Any],
    options: OpOptions,
    *,
    replace: bool,
) -> JsonObject:
    target = parse_path(path)
    operation = "write" if replace else "write-update"
    if target.is_root:
        raise InputError("path", "cannot write the root path; name an object or below")
    definition = resource_definition(ctx.model, target.object_id, target.resource_id)
    text = data.get("value")
    if (
        target.level >= 3
        and definition is None
        and data.get("type") is None
        and isinstance(text, str)
        and "instances" not in data
    ):
        # A resource the model does not know, given as text: let the server encode the text
        # as it is (text/plain), which is what a device without a DDF here expects.
        result = await ctx.server.write_value(endpoint, target, text, **options.kwargs())
    else:
        node = node_from_json(data, target, ctx.model)
        result = await ctx.server.write(endpoint, target, node, replace=replace, **options.kwargs())
    await audit_operation(ctx, scope, endpoint, operation, target, result)
    return _check(result, endpoint, operation, target)


@router.put(
    "/devices/{endpoint}/data/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Write (replace)",
)
async def write(
    ctx: Context, scope: Scoped, endpoint: str, path: PathParam, data: NodeBody, options: Options
) -> JsonObject:
    """Write (CoAP PUT): replace the node at the path with the body."""
    await _visible_device(ctx, scope, endpoint)
    return await _write(ctx, scope, endpoint, path, data, options, replace=True)


@router.patch(
    "/devices/{endpoint}/data/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Write (partial update)",
)
async def write_update(
    ctx: Context, scope: Scoped, endpoint: str, path: PathParam, data: NodeBody, options: Options
) -> JsonObject:
    """Write (CoAP POST): update the resources given, keep the others."""
    await _visible_device(ctx, scope, endpoint)
    return await _write(ctx, scope, endpoint, path, data, options, replace=False)


CreateBody = Annotated[
    dict[str, Any],
    Body(
        description='`{"id": optional instance id, "resources": [...]}`; without an id the '
        "device chooses one",
        openapi_examples={
            "apn": {
                "summary": "an APN profile",
                "value": {"resources": [{"id": 0, "value": "iot-apn"}, {"id": 1, "value": "iot"}]},
            }
        },
    ),
]


@router.post(
    "/devices/{endpoint}/data/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Create",
    status_code=201,
)
async def create(
    ctx: Context, scope: Scoped, endpoint: str, path: PathParam, data: CreateBody, options: Options
) -> JsonObject:
    """Create an object instance under an object path (``.../data/11``)."""
    await _visible_device(ctx, scope, endpoint)
    target = parse_path(path)
    parsed = new_instance_from_json(data, target, ctx.model)
    instance = parsed[1] if isinstance(parsed, tuple) else parsed
    result = await ctx.server.create(endpoint, target, instance, **options.kwargs())
    await audit_operation(ctx, scope, endpoint, "create", target, result)
    body = _check(result, endpoint, "create", target)
    body["location"] = str(result.location) if result.location is not None else None
    return body


@router.delete(
    "/devices/{endpoint}/data/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Delete",
)
async def delete(
    ctx: Context, scope: Scoped, endpoint: str, path: PathParam, options: Options
) -> JsonObject:
    """Delete an object instance."""
    await _visible_device(ctx, scope, endpoint)
    target = parse_path(path)
    result = await ctx.server.delete(endpoint, target, **options.kwargs(with_format=False))
    await audit_operation(ctx, scope, endpoint, "delete", target, result)
    return _check(result, endpoint, "delete", target)


class ExecuteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: str | None = Field(
        default=None, description="LwM2M execute arguments, e.g. 0='v1',1", examples=["0='5'"]
    )


@router.post(
    "/devices/{endpoint}/execute/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Execute",
)
async def execute(
    ctx: Context,
    scope: Scoped,
    endpoint: str,
    path: PathParam,
    options: Options,
    data: Annotated[ExecuteBody | None, Body()] = None,
) -> JsonObject:
    """Execute a resource (reboot /3/0/4, firmware update /5/0/2, ...)."""
    await _visible_device(ctx, scope, endpoint)
    target = parse_path(path)
    arguments = data.arguments if data is not None else None
    result = await ctx.server.execute(
        endpoint, target, arguments, **options.kwargs(with_format=False)
    )
    await audit_operation(ctx, scope, endpoint, "execute", target, result)
    return _check(result, endpoint, "execute", target)


@router.get(
    "/devices/{endpoint}/discover/{path:path}",
    response_model=DiscoverOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Discover",
)
async def discover(
    ctx: Context, scope: Scoped, endpoint: str, path: PathParam, options: Options
) -> JsonObject:
    """Discover: the resources under a path and their attributes."""
    await _visible_device(ctx, scope, endpoint)
    target = parse_path(path)
    result = await ctx.server.discover(endpoint, target, **options.kwargs(with_format=False))
    body = _check(result, endpoint, "discover", target)
    body["links"] = [link_json(link, ctx.model) for link in result.links]
    return body


class AttributesBody(BaseModel):
    """Notification attributes to set; names in ``unset`` are removed."""

    model_config = ConfigDict(extra="forbid")
    pmin: int | None = Field(default=None, ge=0, description="minimum period, seconds")
    pmax: int | None = Field(default=None, ge=0, description="maximum period, seconds")
    gt: float | None = Field(default=None, description="notify when rising above")
    lt: float | None = Field(default=None, description="notify when falling below")
    st: float | None = Field(default=None, ge=0, description="notify on a change of at least")
    epmin: int | None = Field(default=None, ge=0, description="minimum evaluation period")
    epmax: int | None = Field(default=None, ge=0, description="maximum evaluation period")
    unset: list[str] = Field(default_factory=list, description="attribute names to remove")


_WRITABLE_ATTRIBUTES = ("pmin", "pmax", "gt", "lt", "st", "epmin", "epmax")


@router.put(
    "/devices/{endpoint}/attributes/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Write-Attributes",
)
async def write_attributes(
    ctx: Context,
    scope: Scoped,
    endpoint: str,
    path: PathParam,
    data: AttributesBody,
    options: Options,
) -> JsonObject:
    """Write-Attributes: set or unset the notification attributes of a path."""
    await _visible_device(ctx, scope, endpoint)
    target = parse_path(path)
    for n, name in enumerate(data.unset):
        if name not in _WRITABLE_ATTRIBUTES:
            raise InputError(
                f"body.unset[{n}]", f"{name!r} is not one of {', '.join(_WRITABLE_ATTRIBUTES)}"
            )
    given = {k: v for k, v in data.model_dump(exclude={"unset"}).items() if v is not None}
    clash = sorted(set(given) & set(data.unset))
    if clash:
        raise InputError("body.unset", f"{', '.join(clash)} both set and unset; choose one")
    if not given and not data.unset:
        raise InputError("body", "give at least one attribute to set (pmin, pmax, ...) or unset")
    try:
        update = AttributeUpdate(Attributes(**given), frozenset(data.unset))
    except (LinkFormatError, TypeError) as err:
        raise InputError("body", str(err)) from err
    result = await ctx.server.write_attributes(
        endpoint, target, update, **options.kwargs(with_format=False)
    )
    attributes = {**given, "unset": sorted(data.unset)}
    await audit_operation(
        ctx, scope, endpoint, "write-attributes", target, result, detail={"attributes": attributes}
    )
    body = _check(result, endpoint, "write-attributes", target)
    body["attributes"] = {**given, "unset": sorted(data.unset)}
    return body


@router.post(
    "/devices/{endpoint}/observe/{path:path}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["operations"],
    summary="Observe",
)
async def observe(
    ctx: Context, scope: Scoped, endpoint: str, path: PathParam, options: Options
) -> JsonObject:
    """Observe a path: the current content now, notifications on ``GET /v1/events``."""
    await _visible_device(ctx, scope, endpoint)
    target = parse_path(path)
    result = await ctx.server.observe(endpoint, target, **options.kwargs())
    await audit_operation(ctx, scope, endpoint, "observe", target, result)
    body = _check(result, endpoint, "observe", target)
    body.update(
        observation_id=result.observation_id,
        paths=[str(p) for p in result.paths],
        content_format=format_name(result.content_format),
        content=nodes_to_json(result.content, ctx.model),
    )
    return body


# -- composite ------------------------------------------------------------------------------------


class PathsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, examples=[["/3/0/0", "/3/0/9", "/1/0/1"]])


class CompositeWriteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: list[dict[str, Any]] = Field(
        min_length=1,
        description="nodes, each with its `path`, in the shape Read returns",
        examples=[[{"path": "/1/0/1", "value": 300}, {"path": "/3/0/14", "value": "+01"}]],
    )


def _paths(raw: list[str]) -> list[Path]:
    return [parse_path(p, f"body.paths[{n}]") for n, p in enumerate(raw)]


@router.post(
    "/devices/{endpoint}/composite/read",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["composite"],
    summary="Read-Composite",
)
async def read_composite(
    ctx: Context, scope: Scoped, endpoint: str, data: PathsBody, options: Options
) -> JsonObject:
    """Read several paths in one request; paths the device lacks are left out."""
    await _visible_device(ctx, scope, endpoint)
    paths = _paths(data.paths)
    result = await ctx.server.read_composite(endpoint, paths, **options.kwargs())
    body = _check(result, endpoint, "read-composite", None)
    body.update(
        paths=[str(p) for p in paths],
        content_format=format_name(result.content_format),
        content=nodes_to_json(result.content, ctx.model),
    )
    return body


@router.post(
    "/devices/{endpoint}/composite/write",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["composite"],
    summary="Write-Composite",
)
async def write_composite(
    ctx: Context, scope: Scoped, endpoint: str, data: CompositeWriteBody, options: Options
) -> JsonObject:
    """Write several paths atomically."""
    await _visible_device(ctx, scope, endpoint)
    content = composite_from_json(data.content, ctx.model)
    result = await ctx.server.write_composite(endpoint, content, **options.kwargs())
    written = [str(p) for p in sorted(content)]
    await audit_operation(
        ctx, scope, endpoint, "write-composite", None, result, detail={"paths": written}
    )
    body = _check(result, endpoint, "write-composite", None)
    body["paths"] = [str(p) for p in sorted(content)]
    return body


@router.post(
    "/devices/{endpoint}/composite/observe",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["composite"],
    summary="Observe-Composite",
)
async def observe_composite(
    ctx: Context, scope: Scoped, endpoint: str, data: PathsBody, options: Options
) -> JsonObject:
    """Observe several paths as one observation."""
    await _visible_device(ctx, scope, endpoint)
    paths = _paths(data.paths)
    result = await ctx.server.observe_composite(endpoint, paths, **options.kwargs())
    observed = [str(p) for p in paths]
    await audit_operation(
        ctx, scope, endpoint, "observe-composite", None, result, detail={"paths": observed}
    )
    body = _check(result, endpoint, "observe-composite", None)
    body.update(
        observation_id=result.observation_id,
        paths=[str(p) for p in result.paths],
        content_format=format_name(result.content_format),
        content=nodes_to_json(result.content, ctx.model),
    )
    return body


# -- observations and queue -----------------------------------------------------------------------


@router.get(
    "/observations",
    response_model=list[ObservationOut],
    response_model_exclude_unset=True,
    tags=["observations"],
    summary="List active observations",
)
async def list_observations(
    ctx: Context,
    scope: Scoped,
    endpoint: Annotated[str | None, Query(description="only this device's")] = None,
    select: Annotated[
        str | None, Query(description="only the devices the selector names (docs/GROUPS.md)")
    ] = None,
) -> list[JsonObject]:
    chosen = await _selected(ctx, scope, select)
    found = await scope.filter(
        [o for o in ctx.server.observations(endpoint) if chosen is None or o.endpoint in chosen],
        lambda o: o.endpoint,
    )
    return [observation_json(o, ctx.model) for o in found]


@router.get(
    "/devices/{endpoint}/observations",
    response_model=list[ObservationOut],
    response_model_exclude_unset=True,
    tags=["observations"],
    summary="A device's observations",
)
async def device_observations(ctx: Context, scope: Scoped, endpoint: str) -> list[JsonObject]:
    await _visible_device(ctx, scope, endpoint)
    if ctx.server.registration(endpoint) is None:
        raise unknown_endpoint(endpoint)
    return [observation_json(o, ctx.model) for o in ctx.server.observations(endpoint)]


@router.delete(
    "/observations/{observation_id}",
    response_model=OperationOut,
    response_model_exclude_unset=True,
    tags=["observations"],
    summary="Cancel an observation",
)
async def cancel_observation(
    ctx: Context,
    scope: Scoped,
    observation_id: str,
    active: Annotated[
        bool,
        Query(description="tell the device (GET Observe=1); false: forget it, RST the next"),
    ] = True,
    timeout: Annotated[float | None, Query(gt=0, le=86_400)] = None,
) -> JsonObject:
    known = {o.observation_id: o for o in ctx.server.observations()}
    info = known.get(observation_id)
    endpoint = info.endpoint if info is not None else ""
    if info is not None and not await scope.sees(endpoint):
        raise UnknownObservation(observation_id)
    result = await ctx.server.cancel_observation(observation_id, active=active, timeout=timeout)
    await audit_operation(
        ctx,
        scope,
        endpoint,
        "cancel-observation",
        None,
        result,
        detail={"observation_id": observation_id, "active": active},
    )
    body = _check(result, endpoint, "cancel-observation", None)
    body["observation_id"] = observation_id
    return body


@router.get(
    "/devices/{endpoint}/queue",
    response_model=list[QueuedOut],
    response_model_exclude_unset=True,
    tags=["queue"],
    summary="Queued requests of a device",
)
async def queued_requests(ctx: Context, scope: Scoped, endpoint: str) -> list[JsonObject]:
    """Requests waiting for (or recently delivered to) a sleeping queue-mode device.

    404 ``unknown_endpoint`` for a device that is neither registered nor has requests left
    in its queue (issue 14 item 9: it was 200 ``[]``, as if the device existed), and for one
    outside the caller's tenants."""
    if not await scope.sees(endpoint):
        raise unknown_endpoint(endpoint)
    queued = await ctx.server.queued_requests(endpoint)
    if not queued and ctx.server.registration(endpoint) is None:
        raise unknown_endpoint(endpoint)
    return [queued_request_json(r) for r in queued]


@router.delete(
    "/queue/{request_id}",
    response_model=CancelledOut,
    response_model_exclude_unset=True,
    tags=["queue"],
    summary="Cancel a queued request",
)
async def cancel_queued(ctx: Context, scope: Scoped, request_id: RowId) -> JsonObject:
    queued = await ctx.store.read(lambda tx: ctx.store.queue.get(tx, request_id))
    hidden = queued is not None and not await scope.sees(queued.endpoint)
    if hidden or not await ctx.server.cancel_queued(request_id):
        raise ApiError(
            404,
            "not_found",
            f"no pending queued request {request_id}; it was delivered, expired or cancelled "
            "already (see GET /v1/devices/{endpoint}/queue)",
            request_id=request_id,
        )
    endpoint = queued.endpoint if queued is not None else ""
    detail = {"request_id": request_id, "operation": queued.operation if queued else None}
    await audit_operation(ctx, scope, endpoint, "queue-cancel", None, detail=detail, outcome="ok")
    return {"status": "success", "request_id": request_id}


# -- status ---------------------------------------------------------------------------------------


@router.get(
    "/status",
    response_model=StatusOut,
    response_model_exclude_unset=True,
    tags=["health"],
    summary="Server status",
)
async def get_status(ctx: Context, request: Request) -> StatusOut:
    """Version, uptime, bound ports, devices, store and load: what `fleetloop status` shows."""
    registrations = ctx.server.registrations()
    bootstrap = getattr(request.app.state, "bootstrap", None)
    bs_server = getattr(bootstrap, "server", None)
    api = request.url.netloc
    load1, load5, load15 = os.getloadavg()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return StatusOut(
        version=ctx.version,
        started_at=iso8601(ctx.started_at),
        uptime_s=round(time.time() - ctx.started_at, 1),
        ports={
            "api": api,
            "coap": _address(ctx.server.coap_address),
            "coaps": _address(ctx.server.coaps_address),
            "bs_coap": _address(getattr(bs_server, "coap_address", None)),
            "bs_coaps": _address(getattr(bs_server, "coaps_address", None)),
            "esipa_https": _address(getattr(request.app.state, "esipa_address", None)),
        },
        devices_registered=len(registrations),
        devices_sleeping=sum(1 for r in registrations if r.queue_mode),
        observations=len(ctx.server.observations()),
        store=ctx.store.url,  # the password hidden
        load={
            "load1": load1,
            "load5": load5,
            "load15": load15,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        },
    )
