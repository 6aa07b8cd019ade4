"""Inventory and groups: list and show devices by selector, bulk changes, stages, named groups.

=========================================  =====================================================
``GET /v1/inventory?select=&cursor=&limit=``  one page of matching devices + the total count
``GET /v1/inventory/{endpoint}``              one device record, with its groups
``POST /v1/inventory/bulk``                   relabel / move region / move policy group (operator)
``POST /v1/inventory/{endpoint}/stage``       suspend / resume / retire (operator)
``POST /v1/groups``                           create a dynamic or snapshot group (operator)
``GET /v1/groups``, ``GET /v1/groups/{name}``    list / show
``GET /v1/groups/{name}/members``             one page of members
``DELETE /v1/groups/{name}``                  delete the group, not its devices (operator)
=========================================  =====================================================

Tenant scope: a scoped token sees only its tenants' devices and groups; anything else answers
exactly like something that does not exist. A selector error is 422 ``invalid_input`` with
``field: select``, the ``position`` (0-based) and the ``fix``. Selector syntax: docs/GROUPS.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from bootstrap.importer import ImportReport
from lifecycle.api.auth import Principal, context_of, current_principal
from lifecycle.api.errors import ApiError
from lifecycle.api.render import iso8601
from lifecycle.api.scope import Scope, Scoped
from lifecycle.groups import Group, GroupExists, InvalidGroup, UnknownGroup
from lifecycle.inventory import (
    Actor,
    BulkResult,
    DeviceRecord,
    InvalidChange,
    StageError,
    UnknownDevice,
)
from lifecycle.inventory_events import InventoryService, import_extras
from lifecycle.operators import Role
from lifecycle.selector import Selector, SelectorError, parse_selector

router = APIRouter()
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

TAGS = [
    {"name": "inventory", "description": "Device records, selectors, bulk changes, stages."},
    {"name": "groups", "description": "Named device groups: dynamic (selector) or snapshot."},
]

BULK_ENDPOINTS_SHOWN = 1000


def inventory_of(request: Request) -> InventoryService:
    found = context_of(request).inventory
    if found is None:
        raise ApiError(
            503,
            "inventory_unavailable",
            "the inventory is not running in this server (fleetloop serve starts it)",
        )
    return found


Inventory = Annotated[InventoryService, Depends(inventory_of)]


def selector_of(text: str | None, *, required: bool = False) -> Selector:
    if required and not (text or "").strip():
        raise ApiError(
            422,
            "invalid_input",
            "select: a selector is required for a change; use endpoint=* to mean every device",
            field="select",
        )
    try:
        return parse_selector(text or "")
    except SelectorError as err:
        raise ApiError(
            422,
            "invalid_input",
            str(err),
            field="select",
            position=err.position,
            problem=err.problem,
            fix=err.fix,
        ) from None


def actor_of(principal: Principal) -> Actor:
    return Actor(principal.actor, principal.token_id)


def no_device(endpoint: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"no inventory record for device {endpoint!r}; list devices with GET /v1/inventory "
        "(`fleetloop inventory list`)",
        endpoint=endpoint,
    )


def no_group(name: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"no group {name!r}; list the groups with GET /v1/groups (`fleetloop groups list`)",
        group=name,
    )


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Inventory and group errors as API errors (one place, one mapping)."""
    try:
        yield
    except UnknownDevice as err:
        raise no_device(err.endpoint) from None
    except UnknownGroup as err:
        raise no_group(err.name) from None
    except StageError as err:
        raise ApiError(409, "stage_conflict", str(err)) from None
    except GroupExists as err:
        raise ApiError(409, "conflict", str(err)) from None
    except (InvalidChange, InvalidGroup) as err:
        raise ApiError(422, "invalid_input", str(err)) from None


# -- identity import hook (called by bootstrap_routes' import route) ------------------------------


def import_extras_of(request: Request, content: str, format: str) -> dict[str, Any] | None:
    """The import file's inventory columns, checked before anything is imported (422 for a
    malformed label); None when the server runs no inventory."""
    if context_of(request).inventory is None:
        return None
    try:
        return import_extras(content.removeprefix("\ufeff"), format)
    except InvalidChange as err:
        raise ApiError(422, "invalid_input", str(err), field="labels") from None
    except ValueError as err:
        raise ApiError(422, "invalid_input", f"content: {err}", field="content") from None


async def sync_imported(
    request: Request, extras: dict[str, Any] | None, report: ImportReport
) -> None:
    """After a (non-dry-run) import: ``manufactured`` inventory records for its identities."""
    inventory = context_of(request).inventory
    if inventory is not None and extras is not None and not report.dry_run and report.imported:
        await inventory.sync_import(extras, report.accepted)


# -- views ----------------------------------------------------------------------------------------


class StageMove(BaseModel):
    stage: str
    at: str
    at_epoch: float


class DeviceView(BaseModel):
    endpoint: str
    tenant: str | None
    region: str | None
    country: str | None
    carrier: str | None
    plmn: str | None
    sku: str | None
    policy_group: str | None
    serial: str | None
    imei: str | None
    eid: str | None
    iccids: list[str]
    labels: dict[str, str]
    stage: str
    stage_history: list[StageMove]
    model: str | None
    manufacturer: str | None
    firmware: str | None
    radio: str | None
    serving_plmn: str | None
    registered: bool
    last_seen: str | None
    last_seen_epoch: float | None
    created_at: str
    updated_at: str
    groups: list[str] | None = Field(default=None, description="only in GET /v1/inventory/{ep}")

    @classmethod
    def of(cls, record: DeviceRecord, groups: list[str] | None = None) -> DeviceView:
        doc: dict[str, Any] = record.as_dict()
        doc["stage_history"] = [
            StageMove(stage=s, at=iso8601(at), at_epoch=at) for s, at in record.stage_history
        ]
        doc["last_seen"] = None if record.last_seen is None else iso8601(record.last_seen)
        doc["last_seen_epoch"] = record.last_seen
        doc["created_at"] = iso8601(record.created_at)
        doc["updated_at"] = iso8601(record.updated_at)
        return cls(**doc, groups=groups)


class InventoryPage(BaseModel):
    select: str = Field(description="the selector, in canonical form")
    count: int = Field(description="how many devices match in total")
    items: list[DeviceView]
    next_cursor: str | None = Field(description="pass as cursor= for the next page")


class GroupView(BaseModel):
    name: str
    tenant: str | None
    kind: Literal["dynamic", "snapshot"]
    select: str
    created_by: str
    created_at: str
    created_at_epoch: float
    members: int

    @classmethod
    def of(cls, group: Group) -> GroupView:
        return cls(
            name=group.name,
            tenant=group.tenant,
            kind="dynamic" if group.kind == "dynamic" else "snapshot",
            select=group.selector,
            created_by=group.created_by,
            created_at=iso8601(group.created_at),
            created_at_epoch=group.created_at,
            members=group.members,
        )


class GroupList(BaseModel):
    items: list[GroupView]


class Member(BaseModel):
    endpoint: str
    since: str
    since_epoch: float


class MemberPage(BaseModel):
    group: str
    items: list[Member]
    next_cursor: str | None


class BulkView(BaseModel):
    action: str
    select: str
    count: int
    endpoints: list[str] = Field(description=f"the first {BULK_ENDPOINTS_SHOWN} changed devices")
    truncated: bool


# -- inventory ------------------------------------------------------------------------------------


@router.get("/inventory", tags=["inventory"], summary="List devices by selector")
async def list_inventory(
    inventory: Inventory,
    principal: CurrentPrincipal,
    select: Annotated[str | None, Query(description="a selector; see docs/GROUPS.md")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> InventoryPage:
    selector = selector_of(select)
    repo = inventory.repository
    tenants = principal.tenants

    def read(tx: Any) -> tuple[Any, int]:
        page = repo.select(tx, selector, tenants, after=cursor, limit=limit)
        return page, repo.count(tx, selector, tenants)

    page, count = await inventory.store.read(read)
    return InventoryPage(
        select=str(selector),
        count=count,
        items=[DeviceView.of(r) for r in page.items],
        next_cursor=page.next_after,
    )


@router.get("/inventory/{endpoint}", tags=["inventory"], summary="Show one device record")
async def show_device(
    inventory: Inventory, principal: CurrentPrincipal, endpoint: str
) -> DeviceView:
    def read(tx: Any) -> tuple[DeviceRecord | None, list[str]]:
        record = inventory.repository.get(tx, endpoint)
        if record is None or not principal.sees(record.tenant):
            return None, []
        return record, inventory.groups.groups_of(tx, endpoint, principal.tenants)

    record, groups = await inventory.store.read(read)
    if record is None:
        raise no_device(endpoint)
    return DeviceView.of(record, groups)


class LabelChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: dict[str, str] = Field(default_factory=dict, description='{"k": "v"}; "" for a flag')
    remove: list[str] = Field(default_factory=list)


class BulkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    select: str = Field(description="which devices; endpoint=* for all", max_length=4096)
    labels: LabelChange | None = None
    region: str | None = None
    policy_group: str | None = None


@router.post("/inventory/bulk", tags=["inventory"], summary="Relabel or move devices")
async def bulk_change(inventory: Inventory, scope: Scoped, body: BulkBody) -> BulkView:
    """Exactly one of ``labels``, ``region``, ``policy_group``; one audit record per call."""
    principal = scope.principal
    principal.require(Role.OPERATOR)
    selector = selector_of(body.select, required=True)
    given = [
        name for name in ("labels", "region", "policy_group") if getattr(body, name) is not None
    ]
    if len(given) != 1:
        raise ApiError(
            422,
            "invalid_input",
            "give exactly one change: labels {add, remove}, region or policy_group "
            f"(got {', '.join(given) or 'none'})",
        )
    repo = inventory.repository
    actor = actor_of(principal)
    now = inventory.clock()
    tenants = principal.tenants
    with _errors():
        if body.labels is not None:
            labels = body.labels
            result: BulkResult = await inventory.store.write(
                lambda tx: repo.relabel(
                    tx,
                    selector,
                    add=labels.add,
                    remove=labels.remove,
                    actor=actor,
                    now=now,
                    tenants=tenants,
                )
            )
        else:
            attribute = "region" if body.region is not None else "policy_group"
            value = str(body.region if body.region is not None else body.policy_group)
            result = await inventory.store.write(
                lambda tx: repo.move(
                    tx,
                    selector,
                    attribute=attribute,
                    value=value,
                    actor=actor,
                    now=now,
                    tenants=tenants,
                )
            )
    return BulkView(
        action=result.action,
        select=result.selector,
        count=result.count,
        endpoints=list(result.endpoints[:BULK_ENDPOINTS_SHOWN]),
        truncated=result.count > BULK_ENDPOINTS_SHOWN,
    )


class StageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["suspend", "resume", "retire"]


@router.post("/inventory/{endpoint}/stage", tags=["inventory"], summary="Suspend/resume/retire")
async def change_stage(
    inventory: Inventory, scope: Scoped, endpoint: str, body: StageBody
) -> DeviceView:
    principal = scope.principal
    principal.require(Role.OPERATOR)
    actor = actor_of(principal)
    now = inventory.clock()
    with _errors():
        record = await inventory.store.write(
            lambda tx: inventory.repository.change_stage(
                tx, endpoint, body.action, actor=actor, now=now, tenants=principal.tenants
            )
        )
    return DeviceView.of(record)


# -- groups ---------------------------------------------------------------------------------------


class GroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    select: str = Field(max_length=4096, description="the selector; empty: every device")
    kind: Literal["dynamic", "snapshot"] = "dynamic"
    tenant: str | None = Field(
        default=None, description="the group's tenant (default: the token's only tenant)"
    )


def _group_tenant(scope: Scope, wanted: str | None) -> str | None:
    tenants = scope.principal.tenants
    if wanted is None and tenants is not None:
        if len(tenants) != 1:
            raise ApiError(
                422,
                "invalid_input",
                f"tenant: this token covers tenants {', '.join(sorted(tenants))}; say which "
                "one the group belongs to",
                field="tenant",
            )
        (wanted,) = tenants
    scope.assign(wanted, "tenant")
    return wanted


@router.post("/groups", tags=["groups"], summary="Create a group", status_code=201)
async def create_group(inventory: Inventory, scope: Scoped, body: GroupBody) -> GroupView:
    """Dynamic: members follow the selector as devices change. Snapshot: the members now."""
    principal = scope.principal
    principal.require(Role.OPERATOR)
    selector = selector_of(body.select)
    tenant = _group_tenant(scope, body.tenant)
    actor = actor_of(principal)
    now = inventory.clock()
    with _errors():
        group = await inventory.store.write(
            lambda tx: inventory.groups.create(
                tx, body.name, selector, kind=body.kind, tenant=tenant, actor=actor, now=now
            )
        )
    return GroupView.of(group)


@router.get("/groups", tags=["groups"], summary="List groups")
async def list_groups(inventory: Inventory, principal: CurrentPrincipal) -> GroupList:
    groups = await inventory.store.read(lambda tx: inventory.groups.groups(tx, principal.tenants))
    return GroupList(items=[GroupView.of(g) for g in groups])


TenantQuery = Annotated[
    str | None, Query(description="which tenant's group, when several have this name")
]


@router.get("/groups/{name}", tags=["groups"], summary="Show a group")
async def show_group(
    inventory: Inventory, principal: CurrentPrincipal, name: str, tenant: TenantQuery = None
) -> GroupView:
    with _errors():
        group = await inventory.store.read(
            lambda tx: inventory.groups.get(tx, name, principal.tenants, tenant=tenant)
        )
    return GroupView.of(group)


@router.get("/groups/{name}/members", tags=["groups"], summary="A page of a group's members")
async def group_members(
    inventory: Inventory,
    principal: CurrentPrincipal,
    name: str,
    tenant: TenantQuery = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MemberPage:
    groups = inventory.groups

    def read(tx: Any) -> Any:
        group = groups.get(tx, name, principal.tenants, tenant=tenant)
        return groups.members(tx, group, after=cursor, limit=limit)

    with _errors():
        page = await inventory.store.read(read)
    return MemberPage(
        group=name,
        items=[Member(endpoint=e, since=iso8601(s), since_epoch=s) for e, s in page.items],
        next_cursor=page.next_after,
    )


@router.delete("/groups/{name}", tags=["groups"], summary="Delete a group")
async def delete_group(
    inventory: Inventory, scope: Scoped, name: str, tenant: TenantQuery = None
) -> GroupView:
    principal = scope.principal
    principal.require(Role.OPERATOR)
    actor = actor_of(principal)
    now = inventory.clock()
    with _errors():
        group = await inventory.store.write(
            lambda tx: inventory.groups.delete(
                tx, name, actor=actor, now=now, tenants=principal.tenants, tenant=tenant
            )
        )
    return GroupView.of(group)


__all__ = ["TAGS", "router"]
