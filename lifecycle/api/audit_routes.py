"""The one audit log over HTTP: list, verify, prove, checkpoints; and the DM routes' helper.

======================================  ===============================================
``GET /v1/audit``                          records, filtered (since, until, action, actor,
                                        endpoint..., after, limit), tenant-scoped
``GET /v1/audit/verify``                   recompute leaves and roots against the checkpoints
``GET /v1/audit/records/{seq}/proof``      a self-contained inclusion proof (offline check)
``GET /v1/audit/checkpoints``              the signed checkpoints, newest last
``POST /v1/audit/checkpoints``             sign one now (admin)
======================================  ===============================================

A tenant-scoped operator sees only records whose tenant is in its scope; a record it cannot
see does not exist for it (404 like an unknown one). :func:`audit_operation` is what the DM
operation routes call after the device answered: one record with the operator, its token,
the endpoint, the path and the device's code.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from sqlalchemy import Select

from lifecycle.api import models
from lifecycle.api.auth import Principal, Role, context_of, current_principal, needs
from lifecycle.api.bounds import INT64_MAX, RowId
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError
from lifecycle.api.inventory_routes import selector_of
from lifecycle.api.models import AuditPage, CheckpointList, CheckpointMade, ProofOut
from lifecycle.api.naming import seq_cursor
from lifecycle.api.parse import InputError
from lifecycle.api.render import JsonObject, timestamp_fields
from lifecycle.api.scope import Scope
from lifecycle.inventory import scoped
from lifecycle.selector import Selector
from lifecycle.tables import DEVICE
from lwm2m.server import OperationResult
from lwm2m.store import (
    AuditRecord,
    AuditVerdict,
    Checkpoint,
    CheckpointVerifier,
    NotFound,
    ProofError,
    StoreError,
    Tx,
)
from lwm2m.store.checkpoint import proof_document

log = logging.getLogger("lifecycle.api.audit")
router = APIRouter()
TAGS = [
    {
        "name": "audit",
        "description": "The one audit log: every change, who made it, on which devices; "
        "Merkle-tree verification, inclusion proofs, signed checkpoints.",
    }
]

Context = Annotated[ApiContext, Depends(context_of)]
Caller = Annotated[Principal, Depends(current_principal)]
REASON_CAP = 200


def parse_time(text: str | None, field: str) -> float | None:
    """Epoch seconds or ISO 8601 (``2024-05-01T12:00:00Z``)."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"query.{field}", f"{text!r} is not a time; give epoch seconds or ISO 8601"
        ) from None
    if moment.tzinfo is None:
        raise InputError(f"query.{field}", f"{text!r} has no time zone; add Z or +00:00")
    return moment.timestamp()


def record_json(record: AuditRecord) -> JsonObject:
    doc = record.as_dict()
    doc.update(timestamp_fields("at", record.at))
    return doc


def checkpoint_json(checkpoint: Checkpoint) -> JsonObject:
    doc = checkpoint.as_dict()
    doc.update(timestamp_fields("at", checkpoint.at))
    return doc


def selected_endpoints(selector: Selector, tenants: frozenset[str] | None) -> Select[Any]:
    """The endpoints ``selector`` names in the inventory, as a subquery for the audit log."""
    return sa.select(DEVICE.c.endpoint).where(scoped(selector, tenants))


@router.get(
    "/audit",
    response_model=AuditPage,
    response_model_exclude_unset=True,
    tags=["audit"],
    summary="Audit records",
)
async def list_audit(
    ctx: Context,
    principal: Caller,
    since: Annotated[str | None, Query(description="epoch seconds or ISO 8601")] = None,
    until: Annotated[str | None, Query(description="epoch seconds or ISO 8601")] = None,
    action: Annotated[str | None, Query(description="action prefix, e.g. dm. or token.")] = None,
    actor: Annotated[str | None, Query(description="e.g. operator:alice")] = None,
    endpoint: Annotated[list[str] | None, Query(description="records about these devices")] = None,
    select: Annotated[
        str | None,
        Query(description="records about the devices this selector names, e.g. region=eu-west"),
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="older name of cursor")
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JsonObject:
    """Records in log order; ``next_cursor`` pages on."""
    after = after if after is not None else seq_cursor(cursor)
    start, end = parse_time(since, "since"), parse_time(until, "until")
    tenants = None if principal.tenants is None else sorted(principal.tenants)
    devices: list[str] | Select[Any] | None = endpoint or None
    if select is not None:
        if endpoint:
            raise ApiError(
                422, "invalid_input", "select: give either endpoint or select, not both",
                field="select",
            )  # fmt: skip
        devices = selected_endpoints(selector_of(select), principal.tenants)
    records = await ctx.store.read(
        lambda tx: ctx.store.audit.list(
            tx,
            since=start,
            until=end,
            action_prefix=action,
            actor=actor,
            endpoints=devices,
            tenants=tenants,
            after=after,
            limit=limit,
        )
    )
    items = [record_json(r) for r in records]
    last = records[-1].seq if len(records) == limit else None
    return {
        "items": items,
        "next_after": last,
        "next_cursor": None if last is None else str(last),
    }


@router.get(
    "/audit/verify",
    response_model=models.AuditVerdict,
    response_model_exclude_unset=True,
    tags=["audit"],
    summary="Verify the audit log",
)
async def verify_audit(
    ctx: Context,
    principal: Caller,
    tree_size: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="a kept checkpoint's size")
    ] = None,
    root_hash: Annotated[str | None, Query(description="... its root hash (hex)")] = None,
    signature: Annotated[str | None, Query(description="... its signature (base64)")] = None,
    key_id: Annotated[str | None, Query(description="... its key id")] = None,
) -> JsonObject:
    """Recompute every record's leaf hash and the Merkle root at each stored checkpoint and at
    a kept one given in the query (signatures checked with the server's key). ``ok`` false
    names the problem (edited, deleted, reordered, truncated, ...) and the record."""
    verifier = _verifier(ctx) if ctx.audit is not None else None
    kept: list[Checkpoint] = []
    given = (tree_size, root_hash, signature, key_id)
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise InputError(
                "query", "a kept checkpoint needs tree_size, root_hash, signature and key_id"
            )
        try:
            kept.append(
                Checkpoint.from_dict(
                    {
                        "tree_size": tree_size,
                        "root_hash": root_hash,
                        "signature": signature,
                        "key_id": key_id,
                    }
                )
            )
        except ProofError as err:
            raise InputError("query.root_hash", str(err)) from None

    def check(tx: Tx) -> AuditVerdict:
        stored = ctx.store.audit.checkpoints(tx)
        return ctx.store.audit.verify(tx, [*stored, *kept], verifier=verifier)

    verdict = await ctx.store.read(check)
    doc = verdict.as_dict()
    if not principal.all_tenants and not verdict.ok:
        doc["reason"] = f"{verdict.problem} (record {verdict.seq}, checkpoint {verdict.checkpoint})"
    doc["key_id"] = verifier.key_id if verifier is not None else None
    return doc


def _verifier(ctx: ApiContext) -> CheckpointVerifier:
    assert ctx.audit is not None
    return CheckpointVerifier(ctx.audit.public_key_raw)


@router.get(
    "/audit/records/{seq}/proof",
    response_model=ProofOut,
    response_model_exclude_unset=True,
    tags=["audit"],
    summary="Inclusion proof of a record",
)
async def prove(
    ctx: Context,
    principal: Caller,
    seq: RowId,
    tree_size: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="a stored checkpoint's size")
    ] = None,
) -> JsonObject:
    """The record, its audit path and the signed checkpoint it leads to, with the public key:
    ``fleetloop audit check-proof`` verifies it without the server."""
    if ctx.audit is None:
        raise ApiError(503, "unavailable", "this server has no audit signing key")
    try:
        record = await ctx.store.read(lambda tx: ctx.store.audit.get(tx, seq))
    except NotFound:
        raise _no_record(seq) from None
    if not principal.sees(record.tenant):
        raise _no_record(seq)
    proof = await ctx.store.read(lambda tx: ctx.store.audit.inclusion_proof(tx, seq, tree_size))
    return proof_document(
        proof.record.as_dict(),
        proof.record.leaf_data(),
        seq - 1,
        proof.path,
        proof.checkpoint,
        ctx.audit.public_key_raw,
    )


def _no_record(seq: int) -> ApiError:
    return ApiError(404, "not_found", f"no audit record {seq} (see GET /v1/audit)", seq=seq)


@router.get(
    "/audit/checkpoints",
    response_model=CheckpointList,
    response_model_exclude_unset=True,
    tags=["audit"],
    summary="Signed checkpoints",
)
async def list_checkpoints(
    ctx: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> JsonObject:
    """The newest ``limit`` checkpoints, oldest first, and the public key that signs them."""
    found = await ctx.store.read(lambda tx: ctx.store.audit.checkpoints(tx, limit=limit))
    key = ctx.audit.public_key_raw if ctx.audit is not None else None
    return {
        "items": [checkpoint_json(c) for c in found],
        "public_key": base64.b64encode(key).decode() if key is not None else None,
        "key_id": ctx.audit.signer.key_id if ctx.audit is not None else None,
    }


@router.post(
    "/audit/checkpoints",
    response_model=CheckpointMade,
    response_model_exclude_unset=True,
    tags=["audit"],
    summary="Sign a checkpoint now",
    openapi_extra=needs(Role.ADMIN),
)
async def make_checkpoint(ctx: Context) -> JsonObject:
    """Sign the current tree head now (``created`` false: nothing new since the last one)."""
    if ctx.audit is None:
        raise ApiError(503, "unavailable", "this server has no audit signing key")
    made = await ctx.audit.checkpoint_now()
    latest = made or await ctx.store.read(ctx.store.audit.latest_checkpoint)
    return {
        "created": made is not None,
        "checkpoint": checkpoint_json(latest) if latest is not None else None,
    }


# -- the DM routes' helper ---------------------------------------------------------------------


async def _tenant_of(scope: Scope, endpoint: str) -> str | None:
    """The device's tenant for the record. A store without the lifecycle tables (an embedded
    DM server without ``serve``'s schema) records no tenant: the record is then visible to
    all-tenant operators only -- the safe direction."""
    if not endpoint:
        return None
    try:
        return await scope.directory.tenant(endpoint)
    except StoreError as err:
        log.warning("audit: no tenant for %s: %s", endpoint, err)
        return None


async def audit_operation(
    ctx: ApiContext,
    scope: Scope,
    endpoint: str,
    operation: str,
    path: object | None,
    result: OperationResult | None = None,
    *,
    detail: dict[str, Any] | None = None,
    outcome: str | None = None,
) -> None:
    """Append one record for a DM operation an operator made (``dm.<operation>``).

    Called after the device answered (or the request was queued), with the device's code as
    the outcome; the device change itself happened on the device, so this is its own commit.
    """
    info: dict[str, Any] = {"path": None if path is None else str(path), **(detail or {})}
    if result is not None:
        info["queued"] = result.queued
        if result.queued_request_id is not None:
            info["queued_request_id"] = result.queued_request_id
        if not result.ok and result.reason:
            info["reason"] = result.reason[:REASON_CAP]
        outcome = outcome or result.code or str(result.status)
    tenant = await _tenant_of(scope, endpoint)
    principal = scope.principal
    stamp = time.time()
    await ctx.store.write(
        lambda tx: ctx.store.audit.append(
            tx,
            actor=principal.actor,
            token_id=principal.token_id,
            tenant=tenant,
            action=f"dm.{operation}",
            subject=endpoint,
            endpoints=[endpoint] if endpoint else [],
            detail=info,
            outcome=outcome or "ok",
            now=stamp,
        )
    )


async def audit_change(
    ctx: ApiContext, scope: Scope, action: str, endpoint: str, detail: dict[str, Any]
) -> Callable[[Tx], AuditRecord]:
    """An op appending the record of a store change, to run INSIDE the change's transaction
    (``store.write(lambda tx: (change(tx), record(tx))[0])``): both commit or neither."""
    tenant = await _tenant_of(scope, endpoint)
    principal = scope.principal
    stamp = time.time()

    def record(tx: Tx) -> AuditRecord:
        return ctx.store.audit.append(
            tx,
            actor=principal.actor,
            token_id=principal.token_id,
            tenant=tenant,
            action=action,
            subject=endpoint,
            endpoints=[endpoint],
            detail=detail,
            now=stamp,
        )

    return record


__all__ = ["TAGS", "audit_change", "audit_operation", "parse_time", "router"]
