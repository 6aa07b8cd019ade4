"""A minimal, internal HTTP face of the campaign engine, until the campaign API routes land.

``fleetloop serve`` mounts it under ``/v1/internal/campaigns`` (outside the OpenAPI document:
it is not the product's API, and it goes when ``lifecycle/api`` gains the real campaign
routes). It exists so end-to-end tests and the campaign benchmark can drive the engine in a
real ``fleetloop serve`` over HTTP: create from a spec (JSON, :func:`parse_spec`; a config
value may name a bundle of the state bundle registry), status, report, and the operator
verbs. Operator role for changes, any valid token for reads.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from lifecycle.api.auth import Principal, current_principal
from lifecycle.api.errors import ApiError
from lifecycle.campaigns.component import CampaignComponent, CampaignConflict, UnknownCampaign
from lifecycle.campaigns.model import CampaignError, Component
from lifecycle.campaigns.spec import parse_spec
from lifecycle.operators import Role
from lifecycle.state.dimensions import Dimension, parse_desired
from lifecycle.state.repository import ConfigBundle, StateRepository

router = APIRouter(prefix="/internal/campaigns", include_in_schema=False)
Caller = Annotated[Principal, Depends(current_principal)]


def _engine(request: Request) -> CampaignComponent:
    engine: CampaignComponent | None = getattr(request.app.state, "campaigns", None)
    if engine is None:
        raise ApiError(503, "server_stopped", "the campaign engine is not running")
    return engine


Engine = Annotated[CampaignComponent, Depends(_engine)]


def _error(err: Exception) -> ApiError:
    if isinstance(err, UnknownCampaign):
        return ApiError(404, "not_found", str(err))
    if isinstance(err, CampaignConflict):
        return ApiError(409, "conflict", str(err), field=err.field)
    if isinstance(err, CampaignError):
        return ApiError(422, "invalid_input", str(err), field=err.field)
    raise err


class Verb(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revert: bool = False
    selector: str | None = None


def _resolver(bundles: dict[str, ConfigBundle]) -> Any:
    def resolve(dimension: Dimension, raw: Any) -> Component:
        if dimension is Dimension.CONFIG and isinstance(raw, str):
            bundle = bundles.get(raw)
            if bundle is None:
                raise CampaignError("change", f"no config bundle {raw!r}; register it first")
            value = {"version": bundle.name, "digest": bundle.digest, "bundle": bundle.name}
            return Component(dimension, value, artifact=bundle.name, size=len(bundle.content))
        return Component(dimension, parse_desired(dimension, raw))

    return resolve


@router.post("")
async def create(request: Request, engine: Engine, caller: Caller, body: dict[str, Any]) -> Any:
    caller.require(Role.OPERATOR)
    repo = StateRepository()
    bundles = {b.name: b for b in await engine.store.read(repo.bundles)}
    try:
        spec = parse_spec(body, resolve=_resolver(bundles))
        cid = await engine.create(spec, actor=caller.actor, token_id=caller.token_id)
    except (CampaignError, UnknownCampaign) as err:
        raise _error(err) from None
    return {"id": cid}


@router.get("/{cid}")
async def status(engine: Engine, caller: Caller, cid: str, waves: bool = True) -> Any:
    try:
        return await engine.status(cid, waves=waves)
    except UnknownCampaign as err:
        raise _error(err) from None


@router.get("/{cid}/report")
async def report(engine: Engine, caller: Caller, cid: str) -> Any:
    try:
        return await engine.report(cid)
    except UnknownCampaign as err:
        raise _error(err) from None


@router.post("/{cid}/{verb}")
async def verb(engine: Engine, caller: Caller, cid: str, verb: str, body: Verb) -> Any:
    caller.require(Role.OPERATOR)
    actor, token = caller.actor, caller.token_id
    try:
        if verb == "pause":
            await engine.pause(cid, actor=actor, token_id=token)
        elif verb == "resume":
            await engine.resume(cid, actor=actor, token_id=token)
        elif verb == "approve":
            await engine.approve(cid, actor=actor, token_id=token)
        elif verb == "abort":
            await engine.abort(cid, revert=body.revert, actor=actor, token_id=token)
        elif verb == "rollback":
            if not body.selector:
                raise CampaignError("selector", "name the devices to roll back")
            await engine.rollback(cid, selector=body.selector, actor=actor, token_id=token)
        else:
            raise ApiError(404, "not_found", f"no campaign verb {verb!r}")
    except (CampaignError, UnknownCampaign) as err:
        raise _error(err) from None
    return await engine.status(cid)


__all__ = ["router"]
