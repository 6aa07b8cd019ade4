"""Artifacts: versioned config bundles and APN (connectivity) profiles.

======================================================  ========  ================================
``POST /v1/bundles/{name}/versions``                    operator  publish a version (immutable)
``GET /v1/bundles``                                     viewer    bundle names, latest versions
``GET /v1/bundles/{name}/versions``                     viewer    every version, semantic order
``GET /v1/bundles/{name}/versions/{version}``           viewer    one version with its content
``GET /v1/bundles/{name}/diff?from=&to=[&scope=]``      viewer    key-level diff of two versions
``PUT /v1/apn-profiles/{name}``                         operator  create or replace a profile
``GET /v1/apn-profiles[/{name}]``                       viewer    the profiles
``DELETE /v1/apn-profiles/{name}``                      operator  delete a profile
``POST /v1/credentials/rotate``                         operator  rotate a selection's DM PSKs
``POST /v1/credentials/renew``                          operator  rotate where the DM certificate
                                                                  expires within N days
======================================================  ========  ================================

Every change commits with its audit record before the answer. Artifacts are shared by every
tenant (they carry no device data). Errors name the field and the fix: 422 for bad input,
409 for a published version with other content (the message names the version to use), 404
for an unknown bundle, version or profile. See docs/ARTIFACTS.md.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.auth import Role, context_of
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError
from lifecycle.api.render import iso8601
from lifecycle.api.scope import Scoped
from lifecycle.artifacts.bundles import (
    BundleConflict,
    BundleError,
    BundleRepository,
    BundleVersion,
    UnknownBundle,
    check_scope,
)
from lifecycle.artifacts.connectivity import (
    ApnProfile,
    ConnectivityRepository,
    ProfileError,
    ProfileExists,
    UnknownProfile,
)
from lifecycle.artifacts.credentials import ExpiringCertificate, expiring_certificates
from lifecycle.artifacts.resolve import next_rotation
from lifecycle.inventory import InventoryRepository
from lifecycle.selector import SelectorError, parse_selector
from lifecycle.state.dimensions import Dimension, Policy
from lifecycle.state.repository import StateRepository
from lwm2m.store import Tx

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]
TAGS = [
    {
        "name": "artifacts",
        "description": "Versioned config bundles (publish, versions, diff, overlays), APN "
        "profiles per carrier / country, credential rotation and certificate renewal.",
    }
]

_bundles = BundleRepository()
_profiles = ConnectivityRepository()
_state = StateRepository()
_inventory = InventoryRepository()
MAX_ROTATION = 100_000
DAY = 86_400.0


def _bundle_error(err: BundleError) -> ApiError:
    if isinstance(err, UnknownBundle):
        return ApiError(404, "not_found", err.message, field=err.field)
    if isinstance(err, BundleConflict):
        return ApiError(409, "conflict", err.message, field=err.field)
    return ApiError(422, "invalid_input", f"{err.field}: {err.message}", field=err.field)


def _profile_error(err: ProfileError) -> ApiError:
    if isinstance(err, UnknownProfile):
        return ApiError(404, "not_found", err.message, field=err.field)
    if isinstance(err, ProfileExists):
        return ApiError(409, "conflict", err.message, field=err.field)
    return ApiError(422, "invalid_input", f"{err.field}: {err.message}", field=err.field)


class PublishIn(BaseModel):
    """A bundle version to publish."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(description="semantic version, e.g. 1.4.0 (what devices report)")
    content: dict[str, Any] = Field(description="the configuration: a JSON object")
    overlays: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='per-cohort key patches: {"region=eu": {"set": {...}, "remove": [...]}} '
        "(a plain object means set); scopes region=, policy_group=, carrier=, country=",
    )
    description: str = Field(default="", max_length=1000)


class OverlayOut(BaseModel):
    scope: str
    set: dict[str, Any]
    remove: list[str]
    digest: str = Field(description="SHA-256 of the merged content's CBOR encoding (hex)")
    size: int


class VersionOut(BaseModel):
    name: str
    version: str
    digest: str = Field(description="SHA-256 of the content's canonical CBOR encoding (hex)")
    size: int
    overlays: list[OverlayOut]
    description: str
    published_by: str
    published_at: str
    created: bool | None = Field(default=None, description="publish: False when it existed")
    content: dict[str, Any] | None = None


class BundleSummary(BaseModel):
    name: str
    versions: int
    latest: str
    latest_digest: str = Field(description="SHA-256 of the latest version's content (hex)")
    latest_published_by: str
    latest_published_at: str


class DiffOut(BaseModel):
    name: str
    from_version: str
    to_version: str
    scope: str | None
    added: dict[str, Any]
    removed: dict[str, Any]
    changed: dict[str, dict[str, Any]] = Field(description="key -> {old, new}")


class ProfileOut(BaseModel):
    name: str
    apns: list[str]
    active: str
    variants: dict[str, dict[str, Any]]
    description: str
    revision: int
    updated_by: str
    updated_at: str
    changed: bool | None = None


def _version_out(
    found: BundleVersion, *, content: dict[str, Any] | None = None, created: bool | None = None
) -> VersionOut:
    return VersionOut(
        name=found.name,
        version=found.version,
        digest=found.digest,
        size=found.size,
        overlays=[
            OverlayOut(
                scope=o.scope,
                set=dict(o.patch.set),
                remove=list(o.patch.remove),
                digest=o.digest,
                size=o.size,
            )
            for o in found.overlays
        ],
        description=found.description,
        published_by=found.published_by,
        published_at=iso8601(found.published_at),
        created=created,
        content=content,
    )


def _profile_out(found: ApnProfile, changed: bool | None = None) -> ProfileOut:
    return ProfileOut(
        name=found.name,
        apns=list(found.apns),
        active=found.active,
        variants={k: dict(v) for k, v in found.variants.items()},
        description=found.description,
        revision=found.revision,
        updated_by=found.updated_by,
        updated_at=iso8601(found.updated_at),
        changed=changed,
    )


# -- config bundles ----------------------------------------------------------------------------


@router.post(
    "/bundles/{name}/versions",
    tags=["artifacts"],
    summary="Publish a config bundle version",
    response_model=VersionOut,
    response_model_exclude_unset=True,
)
async def publish_bundle_version(
    ctx: Context, scope: Scoped, name: str, body: PublishIn
) -> VersionOut:
    """Publish ``name@version`` (content-addressed, immutable). The same content and overlays
    again answer the existing version (``created`` false); other content is 409."""
    scope.principal.require(Role.OPERATOR)
    principal, store, now = scope.principal, ctx.store, time.time()

    def write(tx: Tx) -> tuple[BundleVersion, bool, dict[str, Any]]:
        found, created = _bundles.publish(
            tx,
            name,
            body.version,
            body.content,
            overlays=body.overlays,
            description=body.description,
            actor=principal.actor,
            now=now,
        )
        if created:
            store.audit.append(
                tx,
                actor=principal.actor,
                action="bundle.publish",
                subject=f"bundle:{found.ref}",
                now=now,
                token_id=principal.token_id,
                detail={
                    "digest": found.digest,
                    "size": found.size,
                    "overlays": {o.scope: o.digest for o in found.overlays},
                },
            )
        return found, created, _bundles.content(tx, found)

    try:
        found, created, content = await store.write(write)
    except BundleError as err:
        raise _bundle_error(err) from None
    return _version_out(found, content=content, created=created)


@router.get(
    "/bundles",
    tags=["artifacts"],
    summary="List config bundles",
    response_model=list[BundleSummary],
)
async def list_bundle_names(ctx: Context, scope: Scoped) -> list[BundleSummary]:
    def read(tx: Tx) -> list[tuple[str, int, BundleVersion]]:
        out = []
        for name, count, latest in _bundles.names(tx):
            found = _bundles.get(tx, name, latest)
            assert found is not None  # listed in the same transaction
            out.append((name, count, found))
        return out

    rows = await ctx.store.read(read)
    return [
        BundleSummary(
            name=n,
            versions=c,
            latest=v.version,
            latest_digest=v.digest,
            latest_published_by=v.published_by,
            latest_published_at=iso8601(v.published_at),
        )
        for n, c, v in rows
    ]


@router.get(
    "/bundles/{name}/versions",
    tags=["artifacts"],
    summary="List a config bundle's versions",
    response_model=list[VersionOut],
    response_model_exclude_unset=True,
)
async def list_bundle_versions(ctx: Context, scope: Scoped, name: str) -> list[VersionOut]:
    found = await ctx.store.read(lambda tx: _bundles.versions(tx, name))
    if not found:
        raise ApiError(
            404,
            "not_found",
            f"no published config bundle {name!r}; list them with `fleetloop bundle list`",
        )
    return [_version_out(v) for v in found]


@router.get(
    "/bundles/{name}/versions/{version}",
    tags=["artifacts"],
    summary="Show a config bundle version",
    response_model=VersionOut,
    response_model_exclude_unset=True,
)
async def show_bundle_version(
    ctx: Context,
    scope: Scoped,
    name: str,
    version: str,
    overlay: Annotated[
        str | None, Query(description="show this overlay's merged content (region=eu ...)")
    ] = None,
) -> VersionOut:
    def read(tx: Tx) -> tuple[BundleVersion, dict[str, Any]]:
        found = _bundles.resolve(tx, f"{name}@{version}")
        where = check_scope(overlay) if overlay is not None else None
        return found, _bundles.content(tx, found, where)

    try:
        found, content = await ctx.store.read(read)
    except BundleError as err:
        raise _bundle_error(err) from None
    return _version_out(found, content=content)


@router.get(
    "/bundles/{name}/diff",
    tags=["artifacts"],
    summary="Diff two versions of a config bundle",
    response_model=DiffOut,
)
async def diff_bundle_versions(
    ctx: Context,
    scope: Scoped,
    name: str,
    from_version: Annotated[str, Query(alias="from", description="the older version")],
    to_version: Annotated[str, Query(alias="to", description="the newer version")],
    overlay: Annotated[
        str | None, Query(description="diff this overlay's merged content (region=eu ...)")
    ] = None,
) -> DiffOut:
    """Added, removed and changed top-level keys of ``name@from`` -> ``name@to``."""

    def read(tx: Tx) -> DiffOut:
        where = check_scope(overlay) if overlay is not None else None
        diff = _bundles.diff(tx, name, from_version, to_version, scope=where).as_json()
        return DiffOut(
            name=name, from_version=from_version, to_version=to_version, scope=where, **diff
        )

    try:
        return await ctx.store.read(read)
    except BundleError as err:
        raise _bundle_error(err) from None


# -- APN profiles ------------------------------------------------------------------------------


@router.put(
    "/apn-profiles/{name}",
    tags=["artifacts"],
    summary="Create or replace an APN profile",
    response_model=ProfileOut,
)
async def put_apn_profile(
    ctx: Context,
    scope: Scoped,
    name: str,
    body: dict[str, Any],
    create: Annotated[
        bool | None,
        Query(description="true: refuse an existing name; false: refuse a missing one"),
    ] = None,
) -> ProfileOut:
    """``{"apns": [...], "active": ..., "variants": {"carrier=acme": {"apns": [...]}},
    "description": ...}``; the revision grows when the content changes."""
    scope.principal.require(Role.OPERATOR)
    principal, store, now = scope.principal, ctx.store, time.time()

    def write(tx: Tx) -> tuple[ApnProfile, bool]:
        found, changed = _profiles.put(
            tx, name, body, actor=principal.actor, now=now, create=create
        )
        if changed:
            store.audit.append(
                tx,
                actor=principal.actor,
                action="apn-profile.put",
                subject=f"apn-profile:{name}",
                now=now,
                token_id=principal.token_id,
                detail=found.as_json(),
            )
        return found, changed

    try:
        found, changed = await store.write(write)
    except ProfileError as err:
        raise _profile_error(err) from None
    return _profile_out(found, changed)


@router.get(
    "/apn-profiles",
    tags=["artifacts"],
    summary="List APN profiles",
    response_model=list[ProfileOut],
    response_model_exclude_unset=True,
)
async def list_apn_profiles(ctx: Context, scope: Scoped) -> list[ProfileOut]:
    return [_profile_out(p) for p in await ctx.store.read(_profiles.list)]


@router.get(
    "/apn-profiles/{name}",
    tags=["artifacts"],
    summary="Show an APN profile",
    response_model=ProfileOut,
    response_model_exclude_unset=True,
)
async def get_apn_profile(ctx: Context, scope: Scoped, name: str) -> ProfileOut:
    try:
        return _profile_out(await ctx.store.read(lambda tx: _profiles.require(tx, name)))
    except ProfileError as err:
        raise _profile_error(err) from None


@router.delete(
    "/apn-profiles/{name}",
    tags=["artifacts"],
    summary="Delete an APN profile",
    response_model=ProfileOut,
    response_model_exclude_unset=True,
)
async def delete_apn_profile(ctx: Context, scope: Scoped, name: str) -> ProfileOut:
    """Campaigns keep what they resolved: deleting a profile changes no running campaign."""
    scope.principal.require(Role.OPERATOR)
    principal, store, now = scope.principal, ctx.store, time.time()

    def write(tx: Tx) -> ApnProfile:
        found = _profiles.delete(tx, name)
        store.audit.append(
            tx,
            actor=principal.actor,
            action="apn-profile.delete",
            subject=f"apn-profile:{name}",
            now=now,
            token_id=principal.token_id,
            detail={"revision": found.revision},
        )
        return found

    try:
        return _profile_out(await store.write(write))
    except ProfileError as err:
        raise _profile_error(err) from None


# -- credentials -------------------------------------------------------------------------------


class RotateIn(BaseModel):
    """Devices whose DM credentials rotate (by re-bootstrap)."""

    model_config = ConfigDict(extra="forbid")

    select: str = Field(description="inventory selector, e.g. region=eu-west,sku=T1")
    dry_run: bool = Field(default=False, description="list the devices, change nothing")


class RenewIn(BaseModel):
    """Rotate where the device's DM certificate expires soon."""

    model_config = ConfigDict(extra="forbid")

    within_days: float = Field(gt=0, le=3650, description="expiring within this many days")
    select: str | None = Field(default=None, description="only devices this selector names")
    dry_run: bool = Field(default=False, description="list the devices, change nothing")


class ExpiringOut(BaseModel):
    endpoint: str
    serial: str
    not_after: str


class RotationOut(BaseModel):
    generation: int = Field(description="the credentials generation set (next rotation number)")
    selected: int
    changed: int
    dry_run: bool
    endpoints: list[str] = Field(description="the first 1000 devices")
    expiring: list[ExpiringOut] | None = None


async def _rotate(
    ctx: ApiContext,
    scope: Scoped,
    select: str | None,
    *,
    within_days: float | None,
    dry_run: bool,
) -> RotationOut:
    principal, store, now = scope.principal, ctx.store, time.time()
    selector = None
    if select is not None:
        try:
            selector = parse_selector(select)
        except SelectorError as err:
            raise ApiError(422, "invalid_input", f"select: {err}", field="select") from None

    def choose(tx: Tx) -> tuple[list[str], list[ExpiringCertificate]]:
        chosen = (
            _inventory.endpoints(tx, selector, principal.tenants) if selector is not None else None
        )
        if within_days is None:
            return chosen or [], []
        expiring = expiring_certificates(tx, within_s=within_days * DAY, now=now)
        if chosen is not None:
            wanted = set(chosen)
            expiring = [e for e in expiring if e.endpoint in wanted]
        return [e.endpoint for e in expiring], expiring

    endpoints, expiring = await store.read(choose)
    visible = await scope.visible(endpoints)
    endpoints = [e for e in endpoints if e in visible]
    expiring = [e for e in expiring if e.endpoint in visible]
    if len(endpoints) > MAX_ROTATION:
        raise ApiError(
            422,
            "invalid_input",
            f"the selection has {len(endpoints)} devices; at most {MAX_ROTATION} at once -- "
            "narrow the selector, or rotate in waves with a campaign",
            field="select",
        )

    def write(tx: Tx) -> tuple[int, int]:
        generation = next_rotation(tx)
        if dry_run or not endpoints:
            return generation, 0
        changes = _state.set_desired(
            tx,
            endpoints,
            {Dimension.CREDENTIALS: {"generation": generation}},
            policy=Policy.ENFORCE,
            actor=principal.actor,
            now=now,
        )
        store.audit.append(
            tx,
            actor=principal.actor,
            action="credentials.renew" if within_days is not None else "credentials.rotate",
            subject=f"credentials:generation-{generation}",
            now=now,
            token_id=principal.token_id,
            endpoints=endpoints[:1000],
            detail={"select": select, "within_days": within_days, "selected": len(endpoints)},
        )
        return generation, sum(1 for c in changes if c.changed)

    generation, changed = await (store.read(write) if dry_run else store.write(write))
    if changed and ctx.state is not None:
        ctx.state.reconciler.desired_changed(endpoints)
    return RotationOut(
        generation=generation,
        selected=len(endpoints),
        changed=changed,
        dry_run=dry_run,
        endpoints=endpoints[:1000],
        expiring=[
            ExpiringOut(endpoint=e.endpoint, serial=e.serial, not_after=iso8601(e.not_after))
            for e in expiring[:1000]
        ]
        if within_days is not None
        else None,
    )


@router.post(
    "/credentials/rotate",
    tags=["artifacts"],
    summary="Rotate the DM credentials of a selection",
    response_model=RotationOut,
    response_model_exclude_unset=True,
)
async def rotate_credentials(ctx: Context, scope: Scoped, body: RotateIn) -> RotationOut:
    """Set the next credentials generation on the selected devices: the reconciler makes each
    re-bootstrap (fresh PSK or certificate) and verifies its registration with it; the old
    credential is refused from then on (docs/ARTIFACTS.md)."""
    scope.principal.require(Role.OPERATOR)
    return await _rotate(ctx, scope, body.select, within_days=None, dry_run=body.dry_run)


@router.post(
    "/credentials/renew",
    tags=["artifacts"],
    summary="Renew DM certificates that expire soon",
    response_model=RotationOut,
    response_model_exclude_unset=True,
)
async def renew_credentials(ctx: Context, scope: Scoped, body: RenewIn) -> RotationOut:
    """Rotate the credentials of every device (of ``select``) whose current DM certificate
    expires within ``within_days`` days (already expired included)."""
    scope.principal.require(Role.OPERATOR)
    return await _rotate(
        ctx, scope, body.select, within_days=body.within_days, dry_run=body.dry_run
    )


__all__ = ["TAGS", "router"]
