"""Campaigns over HTTP: ``/v1/campaigns/...`` and ``/v1/artifacts/quarantine``.

The operator's face of the campaign engine (:class:`lifecycle.campaigns.component.
CampaignComponent`, docs/CAMPAIGNS.md)::

    POST /v1/campaigns/plan               planCampaign        dry run of a spec (nothing written)
    POST /v1/campaigns                    createCampaign      the same spec; 201 + its status
    GET  /v1/campaigns                    listCampaigns       newest first, cursor + limit
    GET  /v1/campaigns/{id}               getCampaign         per-wave / per-cohort counts, verdicts
    GET  /v1/campaigns/{id}/report        getCampaignReport   what changed where, why it stopped
    GET  /v1/campaigns/{id}/events        streamCampaignEvents  progress as server-sent events
    POST /v1/campaigns/{id}/pause|resume|approve|abort|rollback
    POST /v1/artifacts/quarantine         quarantineArtifact  halts every campaign using it
    GET  /v1/artifacts/quarantine         listQuarantinedArtifacts
    DELETE /v1/artifacts/quarantine/{artifact}  liftArtifactQuarantine  campaigns may use it again

**One spec, two verbs.** ``plan`` and ``create`` take the same JSON body (the CLI converts
YAML), parsed by :func:`lifecycle.campaigns.spec.parse_spec` with the artifact resolver of
:mod:`lifecycle.artifacts.resolve` (bundle names and versions, APN profiles, firmware image
ids, credential rotations), so a spec that plans is a spec that creates. A spec mistake is
422 ``invalid_input`` whose ``field`` is the spec path (``waves[1].percent``) and whose
message says the fix.

**Roles.** Reading (GET) needs ``viewer``; plan, create and the verbs need ``operator`` (the
method default, :mod:`lifecycle.api.auth`). ``plan`` is a POST only because it carries a
body; it writes nothing but is still an operator's tool. Quarantine needs ``operator`` too --
an emergency brake must not wait for an admin, and quarantining a firmware image directly is
an operator's act already -- but an **all-tenant** token: it halts the campaigns of every
tenant that use the artifact, so a tenant-scoped operator may not pull it.

**Tenancy.** A campaign belongs to one tenant (``spec.tenant``) or to none (an all-tenant
campaign, made by an all-tenant token). A tenant-scoped token plans and creates only within
its tenants (a spec without ``tenant`` gets the token's tenant when it has exactly one) and
the engine then selects only that tenant's devices; it lists and sees only its tenants'
campaigns -- another tenant's campaign answers exactly what an unknown one does (404).

**Without the engine** (an API assembled without ``ApiContext.campaigns``) every route
answers 503 ``campaigns_unavailable``.

Errors: the engine's :class:`CampaignError` 422, :class:`CampaignConflict` 409 (a verb the
campaign's state does not allow, a quarantined artifact), :class:`UnknownCampaign` 404 --
all in the API's error envelope with ``field`` naming what to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import StreamingResponse

from lifecycle.api.auth import context_of
from lifecycle.api.campaign_models import (
    CAMPAIGN_STATES,
    AbortIn,
    CampaignList,
    CampaignOut,
    CampaignReportOut,
    PlanOut,
    QuarantineIn,
    QuarantineLifted,
    QuarantineList,
    QuarantineOut,
    RollbackIn,
    RollbackOut,
)
from lifecycle.api.errors import ApiError
from lifecycle.api.naming import JSON_ERRORS
from lifecycle.api.parse import InputError
from lifecycle.api.render import iso8601, timestamp_fields
from lifecycle.api.scope import Scope, Scoped
from lifecycle.campaigns.component import CampaignComponent, CampaignConflict, UnknownCampaign
from lifecycle.campaigns.model import CampaignError, CampaignSpec, CampaignState, Plan
from lifecycle.campaigns.spec import parse_spec, spec_to_dict

router = APIRouter()
TAGS = [
    {
        "name": "campaigns",
        "description": "Staged roll-outs of config, firmware, APN and credential changes in "
        "waves with health gates per cohort, revert at scope, and operator verbs "
        "(docs/CAMPAIGNS.md).",
    }
]
MAX_LIST = 1000
MAX_CONFLICTS = 1000
ENDED = ("completed", "aborted", "reverted")
STATUS_EVERY_S = 0.5
"""The event stream sends a fresh ``status`` snapshot at most this often while events come."""

SPEC_BODY = Body(
    description="the campaign spec (docs/CAMPAIGNS.md, 'The spec'): name, selector, change, "
    "and optionally tenant, membership, canary, waves, pacing, windows, deadlines, retry, "
    "gates, on_failure, revert_scope; or kind: esim with esim: {iccid, activation_code} for "
    "an eSIM switch in two gated phases (download, then enable; change lists what moves "
    "with it)",
    openapi_examples={
        "config": {
            "summary": "a config bundle to one region, canary then two waves",
            "value": {
                "name": "tracker config 2.0.0",
                "selector": "region=eu-west,stage=active",
                "change": [{"config": "tracker@2.0.0"}],
                "waves": [{"percent": 10, "bake": "5m"}, {"percent": 100, "bake": "5m"}],
                "on_failure": "revert",
                "revert_scope": "region",
            },
        },
        "esim": {
            "summary": "switch a region to a new carrier's eSIM profile, with its APN",
            "value": {
                "name": "north to carrier B",
                "kind": "esim",
                "selector": "region=north",
                "esim": {
                    "iccid": "8988247000000000029",
                    "activation_code": "1$smdp.example.com$ORDER-4711",
                    "plmns": ["310-260"],
                },
                "change": [{"apn": "iot.carrier-b"}],
                "deadlines": {"registered": "2m"},
                "on_failure": "halt",
            },
        },
    },
)
SpecBody = Annotated[dict[str, Any], SPEC_BODY]


# -- plumbing --------------------------------------------------------------------------------------


def _engine(request: Request) -> CampaignComponent:
    """The running engine, or 503: the API may be assembled without it (tests, tools)."""
    engine = getattr(context_of(request), "campaigns", None)
    if engine is None:
        engine = getattr(request.app.state, "campaigns", None)
    if not isinstance(engine, CampaignComponent):
        raise ApiError(
            503,
            "campaigns_unavailable",
            "this server runs without the campaign engine; campaigns need `fleetloop serve` "
            "(which starts it with the lifecycle components)",
        )
    return engine


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """The engine's errors in the API's envelope (module docstring)."""
    try:
        yield
    except UnknownCampaign as err:
        raise ApiError(404, "not_found", str(err), campaign=err.campaign) from None
    except CampaignConflict as err:
        extra: dict[str, Any] = {"holders": list(err.holders)} if err.holders else {}
        raise ApiError(409, "conflict", err.message, field=err.field, **extra) from None
    except CampaignError as err:
        raise ApiError(
            422, "invalid_input", f"{err.field}: {err.message}", field=err.field
        ) from None


def _unknown(cid: str) -> ApiError:
    return ApiError(404, "not_found", str(UnknownCampaign(cid)), campaign=cid)


async def _visible_status(engine: CampaignComponent, scope: Scope, cid: str) -> dict[str, Any]:
    """The campaign's status when this caller may see it; 404 (as for an unknown id) if not."""
    with _errors():
        found = await engine.status(cid)
    if not scope.principal.sees(found.get("tenant")):
        raise _unknown(cid)
    return found


def _stamp(out: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        out.update(timestamp_fields(name, out.get(name)))
    return out


def _status_json(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's status dict in :class:`CampaignOut`'s shape (timestamps, cohort lists)."""
    out = _stamp(dict(raw), "created_at", "updated_at", "finished_at")
    waves = []
    for wave in raw.get("waves", []):
        w = _stamp(dict(wave), "started_at", "done_at")
        w["cohorts"] = [
            {"scope": scope, "key": key, "counts": counts}
            for scope, by_key in sorted(wave.get("cohorts", {}).items())
            for key, counts in sorted(by_key.items())
        ]
        waves.append(w)
    out["waves"] = waves
    return out


def _tenant_for(scope: Scope, raw: Mapping[str, Any]) -> str | None:
    """The tenant a spec runs in for this caller (module docstring, Tenancy)."""
    tenant = raw.get("tenant")
    tenants = scope.principal.tenants
    if tenant is None and tenants is not None and len(tenants) == 1:
        return next(iter(tenants))
    if tenant is not None and not isinstance(tenant, str):
        return None  # parse_spec names the mistake
    if tenants is not None:
        scope.assign(tenant, "tenant")
    return tenant


async def _spec(request: Request, scope: Scope, raw: dict[str, Any]) -> CampaignSpec:
    """``raw`` parsed and its artifacts resolved in one read of the repositories."""
    from lifecycle.artifacts.resolve import make_resolver

    tenant = _tenant_for(scope, raw)
    serving = getattr(request.app.state, "firmware", None)
    uris: Mapping[str, str] = getattr(serving, "base_uris", None) or {}
    base_uri = uris.get("coap") or uris.get("coaps")
    store = context_of(request).store

    def parse(tx: Any) -> CampaignSpec:
        return parse_spec(raw, resolve=make_resolver(tx, base_uri=base_uri))

    with _errors():
        spec = await store.read(parse)
    if tenant is not None and spec.tenant is None:
        spec = dataclasses.replace(spec, tenant=tenant)
    return spec


def _plan_json(spec: CampaignSpec, plan: Plan) -> dict[str, Any]:
    return {
        "name": spec.name,
        "tenant": spec.tenant,
        "selector": spec.selector,
        "devices": plan.devices,
        "waves": [
            {
                "index": w.index,
                "name": w.name,
                "devices": len(w.endpoints),
                "bake_s": w.bake_s,
                "approval": w.approval,
                "examples": list(w.endpoints[:10]),
            }
            for w in plan.waves
        ],
        "strata": [
            {"region": region, "carrier": carrier, "sku": sku, "devices": n}
            for (region, carrier, sku), n in sorted(plan.strata.items(), key=lambda kv: -kv[1])
        ],
        "bytes_to_move": plan.bytes_to_move,
        "estimated_s": plan.estimated_s,
        "components": [
            {"dimension": c.dimension.value, "artifact": c.artifact} for c in spec.components
        ],
        "conflicts": [
            {"endpoint": c.endpoint, "dimension": c.dimension.value, "campaign": c.campaign}
            for c in plan.conflicts[:MAX_CONFLICTS]
        ],
        "conflict_count": len(plan.conflicts),
        "spec": spec_to_dict(spec),
    }


# -- plan, create, read ----------------------------------------------------------------------------


@router.post(
    "/campaigns/plan",
    response_model=PlanOut,
    tags=["campaigns"],
    summary="Dry run of a campaign spec",
    operation_id="planCampaign",
)
async def plan_campaign(request: Request, scope: Scoped, spec: SpecBody) -> dict[str, Any]:
    """Waves, devices per region x carrier x SKU stratum, bytes to move, estimated duration
    and the devices other active campaigns hold -- what ``createCampaign`` would do with the
    same body. Nothing is written."""
    engine = _engine(request)
    parsed = await _spec(request, scope, spec)
    with _errors():
        found = await engine.plan(parsed)
    return _plan_json(parsed, found)


@router.post(
    "/campaigns",
    response_model=CampaignOut,
    status_code=201,
    tags=["campaigns"],
    summary="Create and start a campaign",
    operation_id="createCampaign",
)
async def create_campaign(request: Request, scope: Scoped, spec: SpecBody) -> dict[str, Any]:
    """Plan the spec and start it at once (the canary first). Devices another active
    campaign holds on one of its dimensions are left out (``conflicts``); a selection with no
    device left is 422."""
    engine = _engine(request)
    parsed = await _spec(request, scope, spec)
    principal = scope.principal
    with _errors():
        cid = await engine.create(parsed, actor=principal.actor, token_id=principal.token_id)
        return _status_json(await engine.status(cid))


@router.get(
    "/campaigns",
    response_model=CampaignList,
    tags=["campaigns"],
    summary="List campaigns",
    operation_id="listCampaigns",
)
async def list_campaigns(
    request: Request,
    scope: Scoped,
    state: Annotated[
        list[str] | None,
        Query(description="only campaigns in these states: " + ", ".join(CAMPAIGN_STATES)),
    ] = None,
    active: Annotated[
        bool, Query(description="only campaigns that still hold their devices")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Summaries, newest first; a tenant-scoped token sees its tenants' campaigns only."""
    engine = _engine(request)
    wanted: set[str] = set()
    for n, item in enumerate(state or []):
        for name in item.split(","):
            if name.strip() not in CAMPAIGN_STATES:
                raise InputError(
                    f"query.state[{n}]",
                    f"unknown campaign state {name[:40]!r}; use {', '.join(CAMPAIGN_STATES)}",
                )
            wanted.add(name.strip())
    if active:
        actives = {"running", "paused", "awaiting_approval", "inconclusive", "halted", "reverting"}
        wanted = (wanted & actives) if wanted else actives
    found = await engine.list(states=sorted(wanted) or None, tenants=scope.principal.tenants)
    start = 0
    if cursor is not None:
        ids = [c["id"] for c in found]
        if cursor not in ids:
            shown = cursor if len(cursor) <= 40 else cursor[:40] + "..."
            raise InputError("cursor", f"{shown!r} is not a cursor of this list (a next_cursor)")
        start = ids.index(cursor) + 1
    page = found[start : start + limit]
    more = start + limit < len(found)
    return {
        "items": [_stamp(dict(c), "created_at", "updated_at", "finished_at") for c in page],
        "next_cursor": page[-1]["id"] if more and page else None,
    }


@router.get(
    "/campaigns/{cid}",
    response_model=CampaignOut,
    tags=["campaigns"],
    summary="A campaign's status",
    operation_id="getCampaign",
)
async def get_campaign(request: Request, scope: Scoped, cid: str) -> dict[str, Any]:
    """State and why, counts per device state, per wave (with per-cohort counts and the gate
    verdicts), the cohorts reverted and the devices left out as conflicts."""
    return _status_json(await _visible_status(_engine(request), scope, cid))


@router.get(
    "/campaigns/{cid}/report",
    response_model=CampaignReportOut,
    tags=["campaigns"],
    summary="What a campaign changed where, and why it stopped",
    operation_id="getCampaignReport",
)
async def get_campaign_report(
    request: Request,
    scope: Scoped,
    cid: str,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="devices listed in device_list")
    ] = 1000,
) -> dict[str, Any]:
    """The status plus devices per region, failures grouped by reason (with examples),
    devices without a rollback target, the conflicts and the first ``limit`` devices."""
    engine = _engine(request)
    await _visible_status(engine, scope, cid)
    with _errors():
        found = await engine.report(cid, limit=limit)
    out = _status_json(found)
    out["conflict_list"] = [
        {"endpoint": c[0], "dimension": c[1], "campaign": c[2]}
        for c in found.get("conflict_list", [])
    ]
    return out


# -- the operator's verbs --------------------------------------------------------------------------


async def _verb(request: Request, scope: Scope, cid: str, verb: str, **kwargs: Any) -> Any:
    engine = _engine(request)
    await _visible_status(engine, scope, cid)
    principal = scope.principal
    with _errors():
        done = await getattr(engine, verb)(
            cid, actor=principal.actor, token_id=principal.token_id, **kwargs
        )
    return done


async def _answer(request: Request, scope: Scope, cid: str) -> dict[str, Any]:
    return _status_json(await _visible_status(_engine(request), scope, cid))


@router.post(
    "/campaigns/{cid}/pause",
    response_model=CampaignOut,
    tags=["campaigns"],
    summary="Pause a running campaign",
    operation_id="pauseCampaign",
)
async def pause_campaign(request: Request, scope: Scoped, cid: str) -> dict[str, Any]:
    """No more devices are admitted; devices in flight finish (their gates still count).
    409 unless the campaign is running."""
    await _verb(request, scope, cid, "pause")
    return await _answer(request, scope, cid)


@router.post(
    "/campaigns/{cid}/resume",
    response_model=CampaignOut,
    tags=["campaigns"],
    summary="Resume a paused, inconclusive or halted campaign",
    operation_id="resumeCampaign",
)
async def resume_campaign(request: Request, scope: Scoped, cid: str) -> dict[str, Any]:
    """Back to running; open inconclusive verdicts are accepted. A campaign halted by a
    quarantined artifact cannot resume (409): abort it."""
    await _verb(request, scope, cid, "resume")
    return await _answer(request, scope, cid)


@router.post(
    "/campaigns/{cid}/approve",
    response_model=CampaignOut,
    tags=["campaigns"],
    summary="Approve leaving the canary, or accept an inconclusive gate",
    operation_id="approveCampaign",
)
async def approve_campaign(request: Request, scope: Scoped, cid: str) -> dict[str, Any]:
    """For a campaign awaiting approval (``canary.approval``) or inconclusive; 409 otherwise."""
    await _verb(request, scope, cid, "approve")
    return await _answer(request, scope, cid)


@router.post(
    "/campaigns/{cid}/abort",
    response_model=CampaignOut,
    tags=["campaigns"],
    summary="Abort a campaign, keeping or reverting what it changed",
    operation_id="abortCampaign",
)
async def abort_campaign(
    request: Request, scope: Scoped, cid: str, body: AbortIn
) -> dict[str, Any]:
    """Queued devices are skipped; with ``revert`` every changed device goes back to its
    last-known-good value (reverting, then aborted). 409 for a campaign that has ended."""
    await _verb(request, scope, cid, "abort", revert=body.revert)
    return await _answer(request, scope, cid)


@router.post(
    "/campaigns/{cid}/rollback",
    response_model=RollbackOut,
    tags=["campaigns"],
    summary="Revert the campaign's devices in a scope or matching a selector",
    operation_id="rollbackCampaign",
)
async def rollback_campaign(
    request: Request, scope: Scoped, cid: str, body: RollbackIn
) -> dict[str, Any]:
    """The devices it changed in ``scope`` (all, wave=N, region=, carrier=, policy_group=,
    sku=) that match ``selector`` go back to the last-known-good value recorded when each
    was admitted, and its queued ones are skipped; a running campaign otherwise goes on. An
    ended campaign (completed, aborted) is rolled back as well: its devices show
    ``reverting`` then ``reverted`` in the status, and it ends ``reverted`` once nothing it
    changed is left. 409 (naming the campaign, ``holders``) when another campaign holds or
    has since changed those devices' dimension; 422 for a scope it does not have."""
    engine = _engine(request)
    await _visible_status(engine, scope, cid)
    principal = scope.principal
    with _errors():
        reverting = await engine.rollback(
            cid,
            selector=body.selector,
            scope=body.scope,
            actor=principal.actor,
            token_id=principal.token_id,
        )
    return {"reverting": int(reverting), "campaign": await _answer(request, scope, cid)}


# -- quarantine ------------------------------------------------------------------------------------


def _quarantine_json(artifact: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    at = entry.get("at")
    return {
        "artifact": artifact,
        "reason": str(entry.get("reason", "")),
        "actor": str(entry.get("actor", "")),
        "at": iso8601(at) if isinstance(at, int | float) else None,
        "at_epoch": float(at) if isinstance(at, int | float) else None,
        "halted": list(entry.get("halted", [])),
    }


@router.post(
    "/artifacts/quarantine",
    response_model=QuarantineOut,
    tags=["campaigns"],
    summary="Quarantine an artifact: every campaign using it halts",
    operation_id="quarantineArtifact",
)
async def quarantine_artifact(request: Request, scope: Scoped, body: QuarantineIn) -> Any:
    """No campaign delivers the artifact again and every active campaign using it halts
    (they can only be aborted). Needs an all-tenant token: it stops every tenant's campaigns.
    A firmware image is quarantined in the firmware repository as well (no new download)."""
    scope.require_all_tenants("quarantining an artifact halts campaigns of every tenant; it")
    engine = _engine(request)
    actor, token = scope.principal.actor, scope.principal.token_id
    reason = body.reason.strip() or f"quarantined by {actor}"
    with _errors():
        halted = await engine.quarantine(body.artifact, actor=actor, reason=reason, token_id=token)
    await _quarantine_firmware(request, body.artifact, reason, actor)
    entry = engine.quarantined().get(body.artifact, {})
    return _quarantine_json(body.artifact, {**entry, "halted": halted})


async def _quarantine_firmware(request: Request, artifact: str, reason: str, actor: str) -> None:
    """A campaign names a firmware image by its id: the engine quarantined it in the
    repository too (one quarantine); the download cache learns it now, not at its next
    metadata check (nothing to do for other artifacts)."""
    from lifecycle.api.firmware_routes import _repo, _serving

    del reason, actor  # recorded by the engine, in the same transaction
    repo, store = _repo(request), context_of(request).store
    marked = await store.read(lambda tx: repo.image(tx, artifact))
    serving = _serving(request)
    if marked is not None and serving is not None:
        serving.refresh(marked)


@router.get(
    "/artifacts/quarantine",
    response_model=QuarantineList,
    tags=["campaigns"],
    summary="Artifacts quarantined for campaigns",
    operation_id="listQuarantinedArtifacts",
)
async def list_quarantined_artifacts(request: Request, scope: Scoped) -> Any:
    """Every quarantined artifact with who, why and when (no campaign may use them)."""
    engine = _engine(request)
    items = [_quarantine_json(a, e) for a, e in sorted(engine.quarantined().items())]
    return {"items": items}


@router.delete(
    "/artifacts/quarantine/{artifact}",
    response_model=QuarantineLifted,
    tags=["campaigns"],
    summary="Lift an artifact's quarantine: campaigns may use it again",
    operation_id="liftArtifactQuarantine",
)
async def lift_artifact_quarantine(request: Request, scope: Scoped, artifact: str) -> Any:
    """Any quarantined artifact -- a config bundle version (``bundle:NAME@VERSION``), an APN
    profile revision (``apn-profile:NAME@rN``), a firmware image (in the firmware repository
    too) -- may be used by new campaigns again; the campaigns it halted stay halted until an
    operator resumes them (``resumable``). Audited (``campaign.unquarantine``). 404 when the
    artifact is not quarantined. Needs an all-tenant token, as quarantining does."""
    scope.require_all_tenants("lifting a quarantine concerns campaigns of every tenant; it")
    engine = _engine(request)
    if artifact not in engine.quarantined():
        raise ApiError(
            404,
            "not_found",
            f"artifact {artifact!r} is not quarantined; GET /v1/artifacts/quarantine lists "
            "the quarantined ones",
            field="artifact",
        )
    actor, token = scope.principal.actor, scope.principal.token_id
    with _errors():
        lifted = await engine.unquarantine(artifact, actor=actor, token_id=token)
    await _quarantine_firmware(request, artifact, "", actor)
    resumable = sorted(
        run.id
        for run in engine.runs.values()
        if run.state is CampaignState.HALTED and artifact in run.artifacts
    )
    return {"artifact": artifact, "lifted": lifted, "resumable": resumable}


# -- the event stream ------------------------------------------------------------------------------


def _sse(event: str, data: Any) -> bytes:
    from lifecycle.api.stream import sse

    return sse(event, data)


def _concerns(event: Mapping[str, Any], cid: str) -> bool:
    if event.get("campaign") == cid:
        return True
    return event.get("type") == "quarantine" and cid in (event.get("halted") or [])


async def _campaign_messages(
    request: Request, engine: CampaignComponent, scope: Scope, cid: str
) -> AsyncIterator[bytes]:
    ctx = context_of(request)
    events = engine.subscribe()
    # Start the subscription before `ready`, so nothing published after it is missed.
    pending: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    keepalive = max(0.05, float(getattr(ctx, "keepalive_interval", 15.0)))
    try:
        yield _sse("ready", {"type": "ready", "campaign": cid})
        first = _status_json(await engine.status(cid))
        yield _sse("status", first)
        if first["state"] in ENDED and not first.get("rolling_back"):
            yield _sse("end", {"type": "end", "campaign": cid, "state": first["state"]})
            return
        last_status = time.monotonic()
        last_sent = time.monotonic()
        stale = False
        while not ctx.closing:
            slice_s = min(keepalive, STATUS_EVERY_S)
            done, _ = await asyncio.wait({pending}, timeout=slice_s)
            now = time.monotonic()
            if pending in done:
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return  # the engine stopped
                pending = asyncio.ensure_future(anext(events))
                if _concerns(event, cid):
                    yield _sse(str(event.get("type", "event")), event)
                    last_sent = now
                    stale = True
            if stale and now - last_status >= STATUS_EVERY_S:
                found = _status_json(await engine.status(cid))
                yield _sse("status", found)
                last_status = last_sent = now
                stale = False
                if found["state"] in ENDED and not found.get("rolling_back"):
                    yield _sse("end", {"type": "end", "campaign": cid, "state": found["state"]})
                    return
            if now - last_sent >= keepalive:
                yield b": keepalive\n\n"
                last_sent = now
    finally:
        pending.cancel()
        closing = getattr(events, "aclose", None)
        if closing is not None:
            with contextlib.suppress(BaseException):
                await closing()


@router.get(
    "/campaigns/{cid}/events",
    tags=["campaigns"],
    summary="A campaign's progress (server-sent events)",
    operation_id="streamCampaignEvents",
    response_class=StreamingResponse,
    responses={
        **JSON_ERRORS,
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "`ready`, then `status` (a getCampaign answer), then "
                        "the engine's events (`progress`, `wave`, `state`, `revert`, "
                        "`quarantine`) each followed within 0.5 s by a fresh `status`; `end` "
                        "once the campaign has ended",
                    }
                }
            },
            "description": "SSE stream of one campaign (docs/API.md, Campaigns)",
        },
    },
)
async def stream_campaign_events(request: Request, scope: Scoped, cid: str) -> StreamingResponse:
    """Live progress of one campaign: counts as devices move, waves starting and ending,
    state changes with their reason (a failed gate, a revert), quarantines that halt it."""
    engine = _engine(request)
    await _visible_status(engine, scope, cid)
    return StreamingResponse(
        _campaign_messages(request, engine, scope, cid),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["TAGS", "router"]
