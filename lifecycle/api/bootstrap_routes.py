"""Bootstrap management: factory identities, policies, explain, status, re-bootstrap, audit.

The routes call :class:`bootstrap.BootstrapManager` (and the running
:class:`bootstrap.BootstrapServer` for re-bootstrap), which ``fleetloop serve`` puts on
``app.state.bootstrap`` as a :class:`BootstrapApi`. Without it every route answers 503
``bootstrap_unavailable``.

Changes take an ``actor`` (who is asking; the CLI sends the login name) that goes into the
hash-chained audit trail. Keys never come out: identities show whether they have a PSK, policy
documents show APN passwords as ``***`` unless ``reveal=true``.

=========================================  =====================================================
``POST /v1/identities/import``                CSV/JSON text; ``dry_run``, ``allow_partial``; 422
                                           ``import_rejected`` with the report when rows fail
``GET /v1/identities``                        filter by tenant, region, sku, policy_group, status
``GET|PATCH /v1/identities/{endpoint}``       show (with bootstrap state) / move (attributes)
``POST /v1/identities/{endpoint}/revoke``     revoke the identity and its certificates
``GET /v1/bootstrap/policies``                the policies in force
``PUT|GET|DELETE /v1/bootstrap/policies/{n}`` add a version / show (``version=``) / retire
``GET /v1/bootstrap/policies/{n}/diff``       unified diff between versions
``GET /v1/bootstrap/explain/{endpoint}``      which policy applies and why
``GET /v1/bootstrap/status/{endpoint}``       the device's bootstrap state
``POST /v1/bootstrap/rebootstrap/{endpoint}`` Execute /1/x/9 (optionally moving the device first)
``GET /v1/bootstrap/audit[/verify]``          the audit trail; verify its hash chain
``GET /v1/bootstrap/crl``                     the CA's certificate revocation list (PEM)
=========================================  =====================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from bootstrap import (
    BootstrapError,
    BootstrapManager,
    BootstrapServer,
    IdentityConflict,
    IdentityStatus,
    ImportFailed,
    InvalidIdentity,
    InvalidPolicy,
    NotProvisionable,
    Policy,
    PolicyConflict,
    RebootstrapFailed,
    UnknownIdentity,
    UnknownPolicy,
    identity_dict,
)
from bootstrap.identities import FactoryIdentity
from bootstrap.importer import ImportReport, detect_format, parse_identities
from lifecycle.api import models
from lifecycle.api.auth import Role, context_of, needs
from lifecycle.api.bounds import INT32_MAX, INT64_MAX
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError
from lifecycle.api.inventory_routes import import_extras_of, sync_imported
from lifecycle.api.models import (
    AuditPage,
    BootstrapStateOut,
    ExplanationOut,
    IdentityPage,
    IdentityRecord,
    PolicyDiff,
    PolicyList,
    PolicyOut,
    RebootstrapOut,
)
from lifecycle.api.naming import JSON_ERRORS, seq_cursor
from lifecycle.api.render import JsonObject, timestamp_fields
from lifecycle.api.scope import Scope, Scoped
from lifecycle.api.selection import filtered_page, selected

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]

TAGS = [
    {"name": "identities", "description": "Factory identities: import, list, revoke, move."},
    {
        "name": "bootstrap",
        "description": "Bootstrap policies, explain, status, re-bootstrap, audit trail, CRL.",
    },
]


@dataclass(eq=False)
class BootstrapApi:
    """What the routes need: the manager, the running server (None when its sockets are off)
    and where certificates issued at import are written."""

    manager: BootstrapManager
    server: BootstrapServer | None = None
    issued_dir: Path | None = None


def bootstrap_of(request: Request) -> BootstrapApi:
    found = getattr(request.app.state, "bootstrap", None)
    if not isinstance(found, BootstrapApi):
        raise ApiError(
            503,
            "bootstrap_unavailable",
            "the bootstrap layer is not running in this server (fleetloop serve starts it)",
        )
    return found


Bootstrap = Annotated[BootstrapApi, Depends(bootstrap_of)]


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Bootstrap errors as API errors (one place, one mapping)."""
    try:
        yield
    except ImportFailed as err:
        report = err.report.as_dict() if isinstance(err.report, ImportReport) else None
        raise ApiError(422, "import_rejected", str(err), report=report) from None
    except (UnknownIdentity, UnknownPolicy) as err:
        raise ApiError(404, "not_found", str(err)) from None
    except (InvalidIdentity, InvalidPolicy) as err:
        raise ApiError(422, "invalid_input", str(err)) from None
    except (PolicyConflict, IdentityConflict) as err:
        raise ApiError(409, "conflict", str(err)) from None
    except (RebootstrapFailed, NotProvisionable) as err:
        raise ApiError(409, "rebootstrap_failed", str(err)) from None
    except BootstrapError as err:
        raise ApiError(400, "bootstrap_error", str(err)) from None


# -- tenant scope ---------------------------------------------------------------------------------


def _unknown_identity(ref: str) -> ApiError:
    """What :meth:`BootstrapManager.identity` answers for a name it does not know -- and so
    what a tenant-scoped token gets for another tenant's identity."""
    return ApiError(
        404,
        "not_found",
        f"no factory identity {ref!r} (searched endpoint, serial, IMEI, EID and PSK identity)",
    )


async def _visible_identity(bs: BootstrapApi, scope: Scope, ref: str) -> FactoryIdentity | None:
    """The identity ``ref`` names when the caller may see it; 404 as for an unknown one when
    it is another tenant's. None for an all-tenant caller (the route looks it up as before)."""
    if scope.principal.all_tenants:
        return None
    with _errors():
        identity = await bs.manager.identity(ref)
    await scope.endpoint(identity.endpoint, missing=lambda _: _unknown_identity(ref))
    return identity


def _actor(scope: Scope, claimed: str) -> str:
    """The audit actor: the authenticated operator, plus the name the client claims (the CLI
    sends the login name) when it gives one."""
    if claimed and claimed != "api":
        return f"{scope.actor} ({claimed})"
    return scope.actor


def _policy_tenant(policy: Policy) -> str | None:
    return policy.match.tenant


def _policy_visible(scope: Scope, policy: Policy) -> bool:
    """Policies of the caller's tenants, and the shared ones (no tenant criterion) that apply
    to its devices too; another tenant's policies do not exist for it."""
    tenant = _policy_tenant(policy)
    return tenant is None or scope.principal.sees(tenant)


def _unknown_policy(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no policy {name!r} in force")


async def _check_policy_readable(bs: BootstrapApi, scope: Scope, name: str) -> None:
    if scope.principal.all_tenants:
        return
    latest = await bs.manager.store.read(
        lambda tx: bs.manager.policies.latest(tx, name, include_retired=True)
    )
    if latest is not None and not _policy_visible(scope, latest):
        raise _unknown_policy(name)


async def _check_policy_changeable(bs: BootstrapApi, scope: Scope, name: str) -> None:
    """A scoped admin changes only policies of its own tenants: never a shared one (it would
    change every tenant's bootstrap) and never another tenant's."""
    if scope.principal.all_tenants:
        return
    latest = await bs.manager.store.read(
        lambda tx: bs.manager.policies.latest(tx, name, include_retired=True)
    )
    if latest is None:
        return
    if not _policy_visible(scope, latest):
        raise ApiError(
            409,
            "conflict",
            f"the policy name {name!r} is taken; choose another name",
        )
    scope.assign(_policy_tenant(latest), f"policy {name!r} (match.tenant)")


# -- views ----------------------------------------------------------------------------------------


def identity_json(identity: Any) -> JsonObject:
    doc = identity_dict(identity)
    for name in ("created_at", "updated_at", "revoked_at"):
        doc.update(timestamp_fields(name, doc.pop(name)))
    return doc


def policy_json(policy: Policy, *, reveal: bool = False) -> JsonObject:
    return {
        "name": policy.name,
        "version": policy.version,
        "builtin": policy.builtin,
        "author": policy.author,
        "comment": policy.comment,
        **timestamp_fields("created_at", policy.created_at or None),
        "document": policy.document(redact=not reveal),
    }


# -- identities -----------------------------------------------------------------------------------


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(
        description="the CSV (header row first) or JSON text", max_length=64_000_000
    )
    source: str = Field(default="import", description="file name, for the report and the audit")
    format: str | None = Field(default=None, pattern="^(csv|json)$")
    dry_run: bool = False
    allow_partial: bool = False
    actor: str = "api"


@router.post(
    "/identities/import",
    response_model=models.ImportReport,
    response_model_exclude_unset=True,
    tags=["identities"],
    summary="Import factory identities",
    openapi_extra=needs(Role.ADMIN),
)
async def import_identities(
    bs: Bootstrap, scope: Scoped, body: ImportBody, request: Request
) -> JsonObject:
    """All or nothing: with any row rejected nothing is imported (422 ``import_rejected`` with
    the report) unless ``allow_partial``. ``dry_run`` checks everything, writes nothing. A
    tenant-scoped token imports only rows of its own tenants."""
    if not scope.principal.all_tenants:
        text = body.content.removeprefix("\ufeff")
        parsed = parse_identities(text, format=body.format or detect_format(body.source, text))
        for item in parsed.accepted:
            scope.assign(item.identity.tenant, f"row {item.row}: tenant")
    extras = import_extras_of(
        request, body.content, body.format or detect_format(body.source, body.content)
    )
    with _errors():
        report = await bs.manager.import_identities(
            body.content,
            source=body.source,
            format=body.format,
            dry_run=body.dry_run,
            allow_partial=body.allow_partial,
            key_dir=bs.issued_dir,
            actor=_actor(scope, body.actor),
        )
    await sync_imported(request, extras, report)  # manufactured inventory records
    return report.as_dict()


@router.get(
    "/identities",
    response_model=IdentityPage,
    response_model_exclude_unset=True,
    tags=["identities"],
    summary="List factory identities",
)
async def list_identities(
    ctx: Context,
    bs: Bootstrap,
    scope: Scoped,
    after: Annotated[str | None, Query(description="older name of cursor")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    tenant: str | None = None,
    region: str | None = None,
    sku: str | None = None,
    policy_group: str | None = None,
    status: Annotated[str | None, Query(pattern="^(active|revoked)$")] = None,
    batch: Annotated[str | None, Query(description="import batch id")] = None,
    select: Annotated[
        str | None, Query(description="only devices the selector names (docs/GROUPS.md)")
    ] = None,
) -> JsonObject:
    mine = scope.principal.tenants
    if mine is not None and tenant is not None and tenant not in mine:
        # another tenant's: nothing to see
        return {"items": [], "next_after": None, "next_cursor": None}
    if mine is not None and len(mine) == 1:
        tenant = next(iter(mine))  # one tenant: filter in SQL, pages stay full
    chosen = await selected(ctx, scope, select)

    async def fetch(start: str | None, size: int) -> Any:
        return await bs.manager.list_identities(
            after=start,
            limit=size,
            tenant=tenant,
            region=region,
            sku=sku,
            policy_group=policy_group,
            status=None if status is None else IdentityStatus(status),
            import_batch=batch,
        )

    page = await filtered_page(
        fetch,
        lambda i: chosen is None or i.endpoint in chosen,
        lambda i: i.endpoint,
        after=after,
        limit=limit,
    )
    items = [i for i in page.items if scope.principal.sees(i.tenant)]
    return {
        "items": [identity_json(i) for i in items],
        "next_after": page.next_after,
        "next_cursor": page.next_after,
    }


@router.get(
    "/identities/{endpoint}",
    response_model=IdentityRecord,
    response_model_exclude_unset=True,
    tags=["identities"],
    summary="Show a factory identity",
)
async def show_identity(bs: Bootstrap, scope: Scoped, endpoint: str) -> JsonObject:
    """By endpoint, serial, IMEI, EID or PSK identity; with its bootstrap state."""
    await _visible_identity(bs, scope, endpoint)
    with _errors():
        identity = await bs.manager.identity(endpoint)
        state = await bs.manager.status(identity.endpoint)
    return {**identity_json(identity), "bootstrap": state.as_dict()}


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)
    actor: str = "api"


@router.post(
    "/identities/{endpoint}/revoke",
    response_model=IdentityRecord,
    response_model_exclude_unset=True,
    tags=["identities"],
    summary="Revoke a factory identity",
    openapi_extra=needs(Role.ADMIN),
)
async def revoke_identity(
    bs: Bootstrap, scope: Scoped, endpoint: str, body: RevokeBody
) -> JsonObject:
    await _visible_identity(bs, scope, endpoint)
    with _errors():
        identity = await bs.manager.revoke_identity(
            endpoint, reason=body.reason, actor=_actor(scope, body.actor)
        )
    return identity_json(identity)


class MoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str | None = None
    region: str | None = None
    sku: str | None = None
    policy_group: str | None = None
    actor: str = "api"

    def changes(self) -> dict[str, str | None]:
        given = self.model_dump(exclude_unset=True, exclude={"actor"})
        return {k: (v or None) for k, v in given.items()}


@router.patch(
    "/identities/{endpoint}",
    response_model=IdentityRecord,
    response_model_exclude_unset=True,
    tags=["identities"],
    summary="Move an identity",
    openapi_extra=needs(Role.ADMIN),
)
async def move_identity(bs: Bootstrap, scope: Scoped, endpoint: str, body: MoveBody) -> JsonObject:
    """Change tenant / region / SKU / policy group; the next bootstrap follows the new policy."""
    changes = body.changes()
    if not changes:
        raise ApiError(
            422, "invalid_input", "give at least one of tenant, region, sku, policy_group"
        )
    await _visible_identity(bs, scope, endpoint)
    if "tenant" in changes:
        scope.assign(changes["tenant"], "body.tenant")
    with _errors():
        identity = await bs.manager.update_identity(
            endpoint, changes, actor=_actor(scope, body.actor)
        )
    scope.directory.forget(identity.endpoint)
    return identity_json(identity)


# -- policies -------------------------------------------------------------------------------------


@router.get(
    "/bootstrap/policies",
    response_model=PolicyList,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="List the policies in force",
)
async def list_policies(bs: Bootstrap, scope: Scoped) -> JsonObject:
    policies = [p for p in await bs.manager.list_policies() if _policy_visible(scope, p)]
    default = bs.manager.default_policy
    return {
        "items": [policy_json(p) for p in policies],
        "default": None if default is None else policy_json(default),
    }


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: dict[str, Any] = Field(description="the policy document (docs/BOOTSTRAP.md)")
    comment: str = ""
    actor: str = "api"


@router.put(
    "/bootstrap/policies/{name}",
    response_model=PolicyOut,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Add a policy version",
    openapi_extra=needs(Role.ADMIN),
)
async def put_policy(bs: Bootstrap, scope: Scoped, name: str, body: PolicyBody) -> JsonObject:
    """Store the document as the next version of ``name`` (an identical document adds none)."""
    given = body.policy.get("name")
    if given is not None and given != name:
        raise ApiError(422, "invalid_input", f"the document is named {given!r}, the URL {name!r}")
    with _errors():
        policy = Policy.from_document({**body.policy, "name": name})
    if not scope.principal.all_tenants:
        scope.assign(_policy_tenant(policy), "policy.match.tenant")
    await _check_policy_changeable(bs, scope, name)
    with _errors():
        stored, changed = await bs.manager.add_policy(
            policy, actor=_actor(scope, body.actor), comment=body.comment
        )
    return {**policy_json(stored), "changed": changed}


@router.get(
    "/bootstrap/policies/{name}",
    response_model=PolicyOut,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Show a policy",
)
async def show_policy(
    bs: Bootstrap,
    scope: Scoped,
    name: str,
    version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    reveal: Annotated[bool, Query(description="show APN passwords (admin)")] = False,
) -> JsonObject:
    if reveal:
        scope.principal.require(Role.ADMIN)
    await _check_policy_readable(bs, scope, name)
    with _errors():
        policy = await bs.manager.policy(name, version)
    if not _policy_visible(scope, policy):
        raise _unknown_policy(name)
    with _errors():
        versions = await bs.manager.policy_versions(name)
    return {
        **policy_json(policy, reveal=reveal),
        "versions": [
            {
                "version": v["version"],
                "retired": bool(v["retired"]),
                "author": v["author"],
                "comment": v["comment"],
                "sha256": v["digest"],
                **timestamp_fields("created_at", v["created_at"]),
            }
            for v in versions
        ],
    }


@router.get(
    "/bootstrap/policies/{name}/diff",
    response_model=PolicyDiff,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Diff policy versions",
)
async def diff_policy(
    bs: Bootstrap,
    scope: Scoped,
    name: str,
    old: Annotated[int | None, Query(alias="from", ge=0, le=INT32_MAX)] = None,
    new: Annotated[int | None, Query(alias="to", ge=1, le=INT32_MAX)] = None,
) -> JsonObject:
    await _check_policy_readable(bs, scope, name)
    if not await bs.manager.policy_versions(name):
        raise ApiError(404, "not_found", f"no policy {name!r} in force")
    with _errors():
        text = await bs.manager.diff_policy(name, old, new)
    return {"name": name, "from": old, "to": new, "diff": text}


@router.delete(
    "/bootstrap/policies/{name}",
    response_model=PolicyOut,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Retire a policy",
    openapi_extra=needs(Role.ADMIN),
)
async def retire_policy(
    bs: Bootstrap, scope: Scoped, name: str, actor: str = "api", comment: str = ""
) -> JsonObject:
    await _check_policy_readable(bs, scope, name)
    await _check_policy_changeable(bs, scope, name)
    with _errors():
        retired = await bs.manager.retire_policy(name, actor=_actor(scope, actor), comment=comment)
    return {**policy_json(retired), "retired": True}


# -- explain, status, re-bootstrap ----------------------------------------------------------------


@router.get(
    "/bootstrap/explain/{endpoint}",
    response_model=ExplanationOut,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Which policy applies",
)
async def explain(bs: Bootstrap, scope: Scoped, endpoint: str) -> JsonObject:
    await _visible_identity(bs, scope, endpoint)
    with _errors():
        explanation = await bs.manager.explain(endpoint)
    return explanation.as_dict()


@router.get(
    "/bootstrap/status/{endpoint}",
    response_model=BootstrapStateOut,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Bootstrap state",
)
async def status(bs: Bootstrap, scope: Scoped, endpoint: str) -> JsonObject:
    await _visible_identity(bs, scope, endpoint)
    with _errors():
        state = await bs.manager.status(endpoint)
    doc = state.as_dict()
    for name in ("started_at", "updated_at", "finished_at", "rebootstrap_requested_at"):
        doc.update(timestamp_fields(name, doc.pop(name) or None))
    return doc


class RebootstrapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    move: MoveBody | None = None
    actor: str = "api"


@router.post(
    "/bootstrap/rebootstrap/{endpoint}",
    response_model=RebootstrapOut,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Server-initiated bootstrap",
)
async def rebootstrap(
    ctx: Context,
    bs: Bootstrap,
    scope: Scoped,
    endpoint: str,
    body: RebootstrapBody | None = None,
) -> JsonObject:
    """Execute /1/x/9 on the registered device; ``move`` changes its attributes first (a
    move needs an admin)."""
    request = body or RebootstrapBody()
    move = request.move.changes() if request.move is not None else None
    await _visible_identity(bs, scope, endpoint)
    if move:
        scope.principal.require(Role.ADMIN)
        if "tenant" in move:
            scope.assign(move["tenant"], "body.move.tenant")
    with _errors():
        result = await bs.manager.rebootstrap(
            endpoint, dm_server=ctx.server, actor=_actor(scope, request.actor), move=move or None
        )
    scope.directory.forget(result.endpoint)
    return result.as_dict()


# -- audit and CRL --------------------------------------------------------------------------------


@router.get(
    "/bootstrap/audit",
    response_model=AuditPage,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="The bootstrap audit trail",
)
async def audit(
    bs: Bootstrap,
    scope: Scoped,
    subject: str | None = None,
    action: Annotated[str | None, Query(description="action prefix, e.g. policy.")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="older name of cursor")
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JsonObject:
    after = after if after is not None else seq_cursor(cursor)
    records = await bs.manager.audit(
        subject=subject, action_prefix=action, after=after, limit=limit
    )
    shown = records
    if not scope.principal.all_tenants:
        # a scoped operator sees the records about its own devices only (imports and
        # policies span tenants: their records are for all-tenant operators)
        visible = await scope.visible(r.subject for r in records)
        shown = [r for r in records if r.subject in visible]
    items = []
    for record in shown:
        doc = record.as_dict()
        doc.update(timestamp_fields("at", doc.pop("at")))
        items.append(doc)
    last = records[-1].seq if len(records) == limit else None
    return {
        "items": items,
        "next_after": last,
        "next_cursor": None if last is None else str(last),
    }


@router.get(
    "/bootstrap/audit/verify",
    response_model=models.AuditVerdict,
    response_model_exclude_unset=True,
    tags=["bootstrap"],
    summary="Verify the audit chain",
)
async def verify_audit(bs: Bootstrap, scope: Scoped) -> JsonObject:
    scope.require_all_tenants("verifying the audit chain")
    verdict = await bs.manager.verify_audit()
    return {
        "ok": verdict.ok,
        "records": verdict.records,
        "head": verdict.head,
        "broken_at": verdict.broken_at,
        "reason": verdict.reason,
    }


@router.get(
    "/bootstrap/crl",
    tags=["bootstrap"],
    summary="Certificate revocation list (PEM)",
    response_class=PlainTextResponse,
    responses={
        **JSON_ERRORS,
        200: {
            "content": {"text/plain": {"schema": {"type": "string", "description": "PEM"}}},
            "description": "the CRL, PEM",
        },
    },
)
async def crl(bs: Bootstrap) -> PlainTextResponse:
    if bs.manager.ca is None:
        raise ApiError(404, "not_found", "no CA is configured")
    return PlainTextResponse((await bs.manager.crl()).decode("ascii"))


__all__ = ["TAGS", "BootstrapApi", "bootstrap_of", "router"]
