"""Desired vs reported state: one device's view, setting desired values for a selection, the
devices out of line, and the named config bundles behind ``config=NAME``.

=================================  ========  ==================================================
``GET /v1/devices/{ep}/state``        viewer    desired and reported per dimension, with status
``PUT /v1/state``                     operator  desired values for a selector or endpoint list
``GET /v1/state/drift``               viewer    devices whose status is not ``applied``
``PUT /v1/config-bundles/{name}``     operator  register a bundle (JSON map; immutable)
``GET /v1/config-bundles[/{name}]``   viewer    the registered bundles
=================================  ========  ==================================================

Every change commits with its audit record before the answer; then the reconciler is told
(a direct change goes through it; staged roll-outs are campaigns). A device outside the
caller's tenants does not exist for it (404 as for an unknown device). Config bundles are
shared by every tenant (they carry no device data); registering one needs the operator role.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.auth import Role, context_of
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError
from lifecycle.api.render import iso8601
from lifecycle.api.scope import Scope, Scoped
from lifecycle.artifacts.bundles import BundleError, BundleRepository
from lifecycle.inventory import InventoryRepository
from lifecycle.selector import SelectorError, parse_selector
from lifecycle.state.dimensions import Dimension, Policy, StateError, parse_desired
from lifecycle.state.repository import ConfigBundle, DimensionView, StateRepository
from lwm2m.store import Tx

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]
TAGS = [{"name": "state", "description": "Desired vs reported state, drift, config bundles."}]

MAX_SELECTION = 100_000
SHOWN_CHANGES = 100

_repo = StateRepository()
_inventory = InventoryRepository()


class StateSet(BaseModel):
    """Desired values for a selection of devices."""

    model_config = ConfigDict(extra="forbid")

    select: str | None = Field(
        default=None, description="inventory selector, e.g. region=eu-west,sku=T1"
    )
    endpoints: list[str] | None = Field(
        default=None, description="explicit endpoints (instead of, or besides, select)"
    )
    values: dict[str, Any] = Field(
        description="dimension -> value: firmware ('2.4.1' or {version, uri}), config "
        "(a bundle name), connectivity ('apn-a,apn-b' or {apns, active}), flags ({name: "
        "value}), credentials ({generation}), esim (ICCID)",
        min_length=1,
    )
    policy: Literal["enforce", "report-only"] = "enforce"


class ChangeOut(BaseModel):
    endpoint: str
    dimension: str
    generation: int
    changed: bool


class StateSetResult(BaseModel):
    selected: int = Field(description="devices the selection named")
    changed: int = Field(description="device-dimensions whose value changed (new generation)")
    policy: str
    changes: list[ChangeOut] = Field(description=f"the first {SHOWN_CHANGES} changes")


class DimensionOut(BaseModel):
    dimension: str
    status: str
    policy: str | None = None
    desired: dict[str, Any] | None = None
    generation: int | None = None
    set_by: str | None = None
    set_at: str | None = None
    reported: dict[str, Any] | None = None
    observed_generation: int | None = None
    reported_at: str | None = None
    source: str | None = None
    detail: str | None = None


class DeviceStateOut(BaseModel):
    endpoint: str
    registered: bool
    dimensions: list[DimensionOut]


class DriftRow(DimensionOut):
    endpoint: str


class DriftOut(BaseModel):
    items: list[DriftRow]
    truncated: bool


class BundleOut(BaseModel):
    name: str
    digest: str = Field(description="SHA-256 of the bundle's CBOR encoding (hex)")
    size: int
    created_by: str
    created_at: str
    content: Any = None


def _dimension_json(view: DimensionView) -> dict[str, Any]:
    want, have = view.desired, view.reported
    detail = have.detail if have is not None and have.detail else None
    return {
        "dimension": view.dimension.value,
        "status": view.status.value,
        "policy": want.policy.value if want else None,
        "desired": want.value if want else None,
        "generation": want.generation if want else None,
        "set_by": view.set_by,
        "set_at": iso8601(view.set_at) if view.set_at is not None else None,
        "reported": have.value if have else None,
        "observed_generation": have.observed_generation if have else None,
        "reported_at": iso8601(view.reported_at) if view.reported_at is not None else None,
        "source": view.source,
        "detail": detail,
    }


def _bundle_json(bundle: ConfigBundle, *, content: bool = False) -> BundleOut:
    return BundleOut(
        name=bundle.name,
        digest=bundle.digest,
        size=len(bundle.content),
        created_by=bundle.created_by,
        created_at=iso8601(bundle.created_at),
        content=bundle.decoded() if content else None,
    )


def _no_state(endpoint: str) -> ApiError:
    return ApiError(
        404,
        "unknown_endpoint",
        f"device {endpoint!r} is not known (not registered, no state); see `fleetloop devices "
        "list`",
        endpoint=endpoint,
    )


async def _selection(
    ctx: ApiContext, scope: Scope, select: str | None, endpoints: list[str] | None
) -> list[str]:
    """The endpoints a request names: the selector's matches (tenant-scoped in SQL) plus the
    explicit ones, each of which must exist for the caller."""
    chosen: list[str] = []
    if select is not None:
        try:
            selector = parse_selector(select)
        except SelectorError as err:
            raise ApiError(422, "invalid_input", f"select: {err}", field="select") from None
        tenants = scope.principal.tenants
        chosen = await ctx.store.read(lambda tx: _inventory.endpoints(tx, selector, tenants))
    if endpoints:
        known = await ctx.store.read(lambda tx: _known(tx, endpoints))
        for endpoint in endpoints:
            if (endpoint not in known and ctx.server.registration(endpoint) is None) or not (
                await scope.sees(endpoint)
            ):
                raise _no_state(endpoint)
        chosen = list(dict.fromkeys([*chosen, *endpoints]))
    if select is None and not endpoints:
        raise ApiError(
            422, "invalid_input", "name the devices: give select, endpoints or both", field="select"
        )
    if len(chosen) > MAX_SELECTION:
        raise ApiError(
            422,
            "invalid_input",
            f"the selection has {len(chosen)} devices; at most {MAX_SELECTION} at once -- narrow "
            "the selector, or roll out in waves with a campaign",
            field="select",
        )
    return chosen


def _known(tx: Tx, endpoints: list[str]) -> set[str]:
    return set(_repo.tenants(tx, endpoints))


def _desired_values(
    ctx: ApiContext, values: dict[str, Any], policy: Policy
) -> dict[Dimension, dict[str, Any]]:
    parsed: dict[Dimension, dict[str, Any]] = {}
    for name, raw in values.items():
        try:
            dim = Dimension.parse(name)
            if dim is Dimension.CONFIG and isinstance(raw, str):
                raw = {"bundle": raw}
            if dim is Dimension.CONFIG and isinstance(raw, dict) and set(raw) == {"bundle"}:
                parsed[dim] = raw  # resolved against the registry in the transaction
                continue
            parsed[dim] = parse_desired(dim, raw)
        except StateError as err:
            raise ApiError(422, "invalid_input", str(err), field=f"values.{name}") from None
        firmware = parsed[dim] if dim is Dimension.FIRMWARE else {}
        if firmware and policy is Policy.ENFORCE and not {"uri", "image"} & set(firmware):
            raise ApiError(
                422,
                "invalid_input",
                "values.firmware: an enforced firmware needs the image URI the device pulls "
                "(firmware=VERSION@URI); without one use --policy report-only",
                field="values.firmware",
            )
    return parsed


def _refuse_held(ctx: ApiContext, endpoints: list[str], values: dict[Dimension, Any]) -> None:
    """409 when a campaign holds a dimension of a named device: a direct change would race
    the campaign's waves and its rollback targets (pause or abort the campaign first)."""
    if ctx.campaigns is None:
        return
    for endpoint in endpoints:
        for dim in values:
            held = ctx.campaigns.holder(endpoint, dim)
            if held is not None:
                raise ApiError(
                    409,
                    "conflict",
                    f"{dim.value} of device {endpoint!r} is held by campaign {held}; change it "
                    f"through the campaign, or end it first (`fleetloop campaign abort {held}`)",
                    endpoint=endpoint,
                    campaign=held,
                    field=f"values.{dim.value}",
                )


def _versioned_bundle(tx: Tx, ref: str) -> dict[str, Any] | None:
    """The desired config value of published bundle ``ref`` (None: no such version)."""
    try:
        return BundleRepository(_repo).resolve(tx, ref).desired()
    except BundleError:
        return None


class _UnknownBundle(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


@router.put(
    "/state",
    tags=["state"],
    summary="Set desired state for a selection",
    response_model=StateSetResult,
)
async def set_state(ctx: Context, scope: Scoped, body: StateSet) -> StateSetResult:
    """Set the desired values; each changed value gets the next generation. Committed with its
    audit record before the answer; the reconciler then applies enforced values."""
    scope.principal.require(Role.OPERATOR)
    policy = Policy(body.policy)
    values = _desired_values(ctx, body.values, policy)
    endpoints = await _selection(ctx, scope, body.select, body.endpoints)
    _refuse_held(ctx, endpoints, values)
    now = time.time()
    principal = scope.principal
    store = ctx.store

    def write(tx: Tx) -> list[Any]:
        resolved = dict(values)
        config = resolved.get(Dimension.CONFIG)
        if config is not None and set(config) == {"bundle"}:
            name = str(config["bundle"])
            bundle = _repo.bundle(tx, name) if "@" not in name else None
            if bundle is None:
                # a versioned bundle (docs/ARTIFACTS.md): NAME@VERSION, or NAME's latest version;
                # its base content for every device (per-cohort overlays are a campaign's)
                versioned = _versioned_bundle(tx, name)
                if versioned is None:
                    raise _UnknownBundle(name)
                resolved[Dimension.CONFIG] = versioned
            else:
                resolved[Dimension.CONFIG] = parse_desired(
                    Dimension.CONFIG,
                    {"version": bundle.name, "digest": bundle.digest, "bundle": bundle.name},
                )
        changes = _repo.set_desired(
            tx, endpoints, resolved, policy=policy, actor=principal.actor, now=now
        )
        changed = [c for c in changes if c.changed]
        store.audit.append(
            tx,
            actor=principal.actor,
            action="state.set",
            subject=f"selection:{body.select}" if body.select else "endpoints",
            now=now,
            token_id=principal.token_id,
            endpoints=sorted({c.endpoint for c in changed})[:1000],
            detail={
                "select": body.select,
                "values": {d.value: v for d, v in resolved.items()},
                "policy": policy.value,
                "selected": len(endpoints),
                "changed": len(changed),
            },
        )
        return changes

    try:
        changes = await store.write(write)
    except _UnknownBundle as err:
        raise ApiError(
            422,
            "invalid_input",
            f"values.config: no config bundle {err.name!r}; register it first with "
            f"`fleetloop state bundle put {err.name} FILE.json` "
            f"(PUT /v1/config-bundles/{err.name}), or publish a version with "
            "`fleetloop bundle publish NAME VERSION FILE.json` and set config=NAME@VERSION",
            field="values.config",
        ) from None
    if ctx.state is not None:
        ctx.state.reconciler.desired_changed(sorted({c.endpoint for c in changes}))
    return StateSetResult(
        selected=len(endpoints),
        changed=sum(1 for c in changes if c.changed),
        policy=policy.value,
        changes=[
            ChangeOut(
                endpoint=c.endpoint,
                dimension=c.dimension.value,
                generation=c.generation,
                changed=c.changed,
            )
            for c in changes[:SHOWN_CHANGES]
        ],
    )


@router.get(
    "/devices/{endpoint}/state",
    tags=["state"],
    summary="Desired and reported state of one device",
    response_model=DeviceStateOut,
)
async def device_state(ctx: Context, scope: Scoped, endpoint: str) -> DeviceStateOut:
    """Every dimension with a desired or a reported value, side by side, with its status."""
    await scope.endpoint(endpoint, missing=_no_state)
    views = await ctx.store.read(lambda tx: _repo.view(tx, endpoint))
    registered = ctx.server.registration(endpoint) is not None
    if not views and not registered:
        known = await ctx.store.read(lambda tx: _known(tx, [endpoint]))
        if not known:
            raise _no_state(endpoint)
    return DeviceStateOut(
        endpoint=endpoint,
        registered=registered,
        dimensions=[DimensionOut(**_dimension_json(v)) for v in views],
    )


@router.get(
    "/state/drift",
    tags=["state"],
    summary="Devices out of line (pending, drifted, failed, unknown)",
    response_model=DriftOut,
)
async def drift(
    ctx: Context,
    scope: Scoped,
    select: Annotated[str | None, Query(description="inventory selector (default: all)")] = None,
    endpoint: Annotated[list[str] | None, Query(description="explicit endpoints")] = None,
    status: Annotated[
        list[Literal["pending", "drifted", "failed", "unknown"]] | None,
        Query(description="only these statuses"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> DriftOut:
    """One row per device and dimension whose status is not applied, endpoint order."""
    endpoints: list[str] | None = None
    if select is not None or endpoint:
        endpoints = await _selection(ctx, scope, select, endpoint)
    wanted = set(status or ())
    rows = await ctx.store.read(lambda tx: _repo.out_of_line(tx, endpoints, limit=limit * 4))
    if wanted:
        rows = [r for r in rows if r.status.value in wanted]
    shown = await scope.visible({r.endpoint for r in rows})
    items = [
        DriftRow(endpoint=r.endpoint, **_dimension_json(r)) for r in rows if r.endpoint in shown
    ]
    return DriftOut(items=items[:limit], truncated=len(items) > limit)


@router.put(
    "/config-bundles/{name}",
    tags=["state"],
    summary="Register a config bundle",
    response_model=BundleOut,
)
async def put_bundle(ctx: Context, scope: Scoped, name: str, content: dict[str, Any]) -> BundleOut:
    """Register ``name`` with ``content`` (a JSON object, delivered as a CBOR map). Bundles are
    immutable: the same content again answers the existing bundle; other content is 409."""
    scope.principal.require(Role.OPERATOR)
    try:
        parse_desired(Dimension.CONFIG, {"version": name, "digest": "0" * 64})
    except StateError as err:
        raise ApiError(422, "invalid_input", f"name: {err.message}", field="name") from None
    now = time.time()
    principal = scope.principal
    store = ctx.store

    def write(tx: Tx) -> ConfigBundle:
        bundle, created = _repo.put_bundle(tx, name, content, actor=principal.actor, now=now)
        if created:
            store.audit.append(
                tx,
                actor=principal.actor,
                action="config-bundle.register",
                subject=f"config-bundle:{name}",
                now=now,
                token_id=principal.token_id,
                detail={"digest": bundle.digest, "size": len(bundle.content)},
            )
        return bundle

    return _bundle_json(await store.write(write), content=True)


@router.get(
    "/config-bundles", tags=["state"], summary="List config bundles", response_model=list[BundleOut]
)
async def list_bundles(ctx: Context, scope: Scoped) -> list[BundleOut]:
    return [_bundle_json(b) for b in await ctx.store.read(_repo.bundles)]


@router.get(
    "/config-bundles/{name}",
    tags=["state"],
    summary="Show a config bundle",
    response_model=BundleOut,
)
async def get_bundle(ctx: Context, scope: Scoped, name: str) -> BundleOut:
    found = await ctx.store.read(lambda tx: _repo.bundle(tx, name))
    if found is None:
        raise ApiError(
            404,
            "not_found",
            f"no config bundle {name!r}; list them with `fleetloop state bundle list`",
        )
    return _bundle_json(found, content=True)


__all__ = ["TAGS", "router"]
