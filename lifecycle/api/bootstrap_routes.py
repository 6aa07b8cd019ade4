"""Bootstrap management: factory identities, policies, explain, status, re-bootstrap, audit.

The routes call :class:`bootstrap.BootstrapManager` (and the running
:class:`bootstrap.BootstrapServer` for re-bootstrap), which ``fleetloop serve`` puts on
``app.state.bootstrap`` as a :class:`BootstrapApi`. Without it every route answers 503
``bootstrap_unavailable``.

Changes take an ``actor`` (who is asking; the CLI sends the login name) that goes into the
hash-chained audit trail. Keys never come out: identities show whether they have a PSK, policy
documents show APN passwords as ``***`` unless ``reveal=true``.

=========================================  =====================================================
``POST /identities/import``                CSV/JSON text; ``dry_run``, ``allow_partial``; 422
                                           ``import_rejected`` with the report when rows fail
``GET /identities``                        filter by tenant, region, sku, policy_group, status
``GET|PATCH /identities/{endpoint}``       show (with bootstrap state) / move (attributes)
``POST /identities/{endpoint}/revoke``     revoke the identity and its certificates
``GET /bootstrap/policies``                the policies in force
``PUT|GET|DELETE /bootstrap/policies/{n}`` add a version / show (``version=``) / retire
``GET /bootstrap/policies/{n}/diff``       unified diff between versions
``GET /bootstrap/explain/{endpoint}``      which policy applies and why
``GET /bootstrap/status/{endpoint}``       the device's bootstrap state
``POST /bootstrap/rebootstrap/{endpoint}`` Execute /1/x/9 (optionally moving the device first)
``GET /bootstrap/audit[/verify]``          the audit trail; verify its hash chain
``GET /bootstrap/crl``                     the CA's certificate revocation list (PEM)
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
from bootstrap.importer import ImportReport
from lifecycle.api.auth import context_of
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError
from lifecycle.api.render import JsonObject, timestamp_fields

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


@router.post("/identities/import", tags=["identities"], summary="Import factory identities")
async def import_identities(bs: Bootstrap, body: ImportBody) -> JsonObject:
    """All or nothing: with any row rejected nothing is imported (422 ``import_rejected`` with
    the report) unless ``allow_partial``. ``dry_run`` checks everything, writes nothing."""
    with _errors():
        report = await bs.manager.import_identities(
            body.content,
            source=body.source,
            format=body.format,
            dry_run=body.dry_run,
            allow_partial=body.allow_partial,
            key_dir=bs.issued_dir,
            actor=body.actor,
        )
    return report.as_dict()


@router.get("/identities", tags=["identities"], summary="List factory identities")
async def list_identities(
    bs: Bootstrap,
    after: Annotated[str | None, Query(description="page after this endpoint name")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    tenant: str | None = None,
    region: str | None = None,
    sku: str | None = None,
    policy_group: str | None = None,
    status: Annotated[str | None, Query(pattern="^(active|revoked)$")] = None,
    batch: Annotated[str | None, Query(description="import batch id")] = None,
) -> JsonObject:
    page = await bs.manager.list_identities(
        after=after,
        limit=limit,
        tenant=tenant,
        region=region,
        sku=sku,
        policy_group=policy_group,
        status=None if status is None else IdentityStatus(status),
        import_batch=batch,
    )
    return {"items": [identity_json(i) for i in page.items], "next_after": page.next_after}


@router.get("/identities/{endpoint}", tags=["identities"], summary="Show a factory identity")
async def show_identity(bs: Bootstrap, endpoint: str) -> JsonObject:
    """By endpoint, serial, IMEI, EID or PSK identity; with its bootstrap state."""
    with _errors():
        identity = await bs.manager.identity(endpoint)
        state = await bs.manager.status(identity.endpoint)
    return {**identity_json(identity), "bootstrap": state.as_dict()}


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)
    actor: str = "api"


@router.post(
    "/identities/{endpoint}/revoke", tags=["identities"], summary="Revoke a factory identity"
)
async def revoke_identity(bs: Bootstrap, endpoint: str, body: RevokeBody) -> JsonObject:
    with _errors():
        identity = await bs.manager.revoke_identity(endpoint, reason=body.reason, actor=body.actor)
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


@router.patch("/identities/{endpoint}", tags=["identities"], summary="Move an identity")
async def move_identity(bs: Bootstrap, endpoint: str, body: MoveBody) -> JsonObject:
    """Change tenant / region / SKU / policy group; the next bootstrap follows the new policy."""
    changes = body.changes()
    if not changes:
        raise ApiError(
            422, "invalid_input", "give at least one of tenant, region, sku, policy_group"
        )
    with _errors():
        identity = await bs.manager.update_identity(endpoint, changes, actor=body.actor)
    return identity_json(identity)


# -- policies -------------------------------------------------------------------------------------


@router.get("/bootstrap/policies", tags=["bootstrap"], summary="List the policies in force")
async def list_policies(bs: Bootstrap) -> JsonObject:
    policies = await bs.manager.list_policies()
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


@router.put("/bootstrap/policies/{name}", tags=["bootstrap"], summary="Add a policy version")
async def put_policy(bs: Bootstrap, name: str, body: PolicyBody) -> JsonObject:
    """Store the document as the next version of ``name`` (an identical document adds none)."""
    given = body.policy.get("name")
    if given is not None and given != name:
        raise ApiError(422, "invalid_input", f"the document is named {given!r}, the URL {name!r}")
    with _errors():
        policy = Policy.from_document({**body.policy, "name": name})
        stored, changed = await bs.manager.add_policy(
            policy, actor=body.actor, comment=body.comment
        )
    return {**policy_json(stored), "changed": changed}


@router.get("/bootstrap/policies/{name}", tags=["bootstrap"], summary="Show a policy")
async def show_policy(
    bs: Bootstrap,
    name: str,
    version: Annotated[int | None, Query(ge=1)] = None,
    reveal: Annotated[bool, Query(description="show APN passwords")] = False,
) -> JsonObject:
    with _errors():
        policy = await bs.manager.policy(name, version)
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


@router.get("/bootstrap/policies/{name}/diff", tags=["bootstrap"], summary="Diff policy versions")
async def diff_policy(
    bs: Bootstrap,
    name: str,
    old: Annotated[int | None, Query(alias="from", ge=0)] = None,
    new: Annotated[int | None, Query(alias="to", ge=1)] = None,
) -> JsonObject:
    if not await bs.manager.policy_versions(name):
        raise ApiError(404, "not_found", f"no policy {name!r}")
    with _errors():
        text = await bs.manager.diff_policy(name, old, new)
    return {"name": name, "from": old, "to": new, "diff": text}


@router.delete("/bootstrap/policies/{name}", tags=["bootstrap"], summary="Retire a policy")
async def retire_policy(
    bs: Bootstrap, name: str, actor: str = "api", comment: str = ""
) -> JsonObject:
    with _errors():
        retired = await bs.manager.retire_policy(name, actor=actor, comment=comment)
    return {**policy_json(retired), "retired": True}


# -- explain, status, re-bootstrap ----------------------------------------------------------------


@router.get("/bootstrap/explain/{endpoint}", tags=["bootstrap"], summary="Which policy applies")
async def explain(bs: Bootstrap, endpoint: str) -> JsonObject:
    with _errors():
        explanation = await bs.manager.explain(endpoint)
    return explanation.as_dict()


@router.get("/bootstrap/status/{endpoint}", tags=["bootstrap"], summary="Bootstrap state")
async def status(bs: Bootstrap, endpoint: str) -> JsonObject:
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
    "/bootstrap/rebootstrap/{endpoint}", tags=["bootstrap"], summary="Server-initiated bootstrap"
)
async def rebootstrap(
    ctx: Context, bs: Bootstrap, endpoint: str, body: RebootstrapBody | None = None
) -> JsonObject:
    """Execute /1/x/9 on the registered device; ``move`` changes its attributes first."""
    request = body or RebootstrapBody()
    move = request.move.changes() if request.move is not None else None
    with _errors():
        result = await bs.manager.rebootstrap(
            endpoint, dm_server=ctx.server, actor=request.actor, move=move or None
        )
    return result.as_dict()


# -- audit and CRL --------------------------------------------------------------------------------


@router.get("/bootstrap/audit", tags=["bootstrap"], summary="The bootstrap audit trail")
async def audit(
    bs: Bootstrap,
    subject: str | None = None,
    action: Annotated[str | None, Query(description="action prefix, e.g. policy.")] = None,
    after: Annotated[int | None, Query(ge=0, description="records after this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JsonObject:
    records = await bs.manager.audit(
        subject=subject, action_prefix=action, after=after, limit=limit
    )
    items = []
    for record in records:
        doc = record.as_dict()
        doc.update(timestamp_fields("at", doc.pop("at")))
        items.append(doc)
    return {"items": items, "next_after": items[-1]["seq"] if len(items) == limit else None}


@router.get("/bootstrap/audit/verify", tags=["bootstrap"], summary="Verify the audit chain")
async def verify_audit(bs: Bootstrap) -> JsonObject:
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
)
async def crl(bs: Bootstrap) -> PlainTextResponse:
    if bs.manager.ca is None:
        raise ApiError(404, "not_found", "no CA is configured")
    return PlainTextResponse((await bs.manager.crl()).decode("ascii"))


__all__ = ["TAGS", "BootstrapApi", "bootstrap_of", "router"]
