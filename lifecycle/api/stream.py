"""``GET /v1/events``: the server's events as a ``text/event-stream`` (server-sent events).

Each event is one SSE message whose ``event:`` is the type and whose ``data:`` is one line of
JSON (:func:`lifecycle.api.views.event_json`)::

    event: ready
    data: {"type": "ready", "filters": {...}}

    id: 1
    event: notification
    data: {"type": "notification", "endpoint": "dev-1", "observation_id": "...", ...}

The subscription is made before the response starts and ``ready`` is its first message, so a
client that waits for ``ready`` and then starts an observation cannot miss the first
notification (this is how ``fleetloop observe`` works). A comment line (``: keepalive``) every
``keepalive_interval`` seconds keeps proxies from closing an idle stream. When the server's
per-subscriber buffer overflowed, a ``dropped`` event says how many events were lost, so a
client can resynchronise (``GET /v1/devices/{endpoint}``).

Besides the DM server's events the stream carries the campaign engine's (``campaign_wave``,
``campaign_state``, ``campaign_revert``, ``campaign_progress``, ``campaign_quarantine``) and
every committed audit record (``audit``), see :mod:`lifecycle.api.event_sources`. ``kind``
selects families of types (``registration``, ``notification``, ``queue``, ``campaign``,
``audit``); ``type`` single types; both together: an event passes when either names it.
A scoped (tenant) token sees the campaigns and audit records of its tenants only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from lifecycle.api.auth import context_of
from lifecycle.api.context import ApiContext
from lifecycle.api.event_sources import CAMPAIGN_TYPES, AuditSubscription, AuditTail
from lifecycle.api.naming import JSON_ERRORS
from lifecycle.api.parse import InputError
from lifecycle.api.render import timestamp_fields
from lifecycle.api.scope import Scope, Scoped
from lifecycle.api.views import EVENT_TYPES, event_json, event_type
from lwm2m.server import EventSubscription, Notification, ObservationEnded
from lwm2m.store import AuditRecord

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]
DM_TYPES = tuple(EVENT_TYPES.values())
CAMPAIGN_EVENT_TYPES = tuple(f"campaign_{t}" for t in CAMPAIGN_TYPES)
TYPE_NAMES = (*DM_TYPES, *CAMPAIGN_EVENT_TYPES, "audit")
KINDS: dict[str, tuple[str, ...]] = {
    "registration": (
        "registered",
        "updated",
        "deregistered",
        "expired",
        "removed",
        "registration_refused",
    ),
    "notification": ("notification", "send", "observation_ended"),
    "queue": ("queue_state",),
    "campaign": CAMPAIGN_EVENT_TYPES,
    "audit": ("audit",),
}
"""``kind`` -> the event types it selects (every type is in exactly one kind)."""
assert sorted(t for ts in KINDS.values() for t in ts) == sorted(TYPE_NAMES)


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE message; JSON never contains a raw newline, so ``data`` is one line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


def audit_event_json(record: AuditRecord) -> dict[str, Any]:
    """An audit record as the stream sends it (the shape of ``GET /v1/audit`` items)."""
    return {"type": "audit", **record.as_dict(), **timestamp_fields("at", record.at)}


def _audit_tail(ctx: ApiContext) -> AuditTail:
    if ctx.audit_tail is None:
        ctx.audit_tail = AuditTail(ctx.store)
    return ctx.audit_tail


class _Sources:
    """The stream's sources (DM server, campaign engine, audit tail) read as one."""

    def __init__(
        self,
        subscription: EventSubscription,
        campaigns: AsyncIterator[dict[str, Any]] | None,
        audit: AuditSubscription | None,
    ) -> None:
        self.subscription = subscription
        self.campaigns = campaigns
        self.audit = audit
        self.pending: dict[asyncio.Future[Any], str] = {}
        self._arm("dm")
        if campaigns is not None:
            self._arm("campaign")
        if audit is not None:
            self._arm("audit")

    def _arm(self, source: str) -> None:
        future: asyncio.Future[Any]
        if source == "dm":
            future = asyncio.ensure_future(anext(self.subscription))
        elif source == "campaign":
            assert self.campaigns is not None
            future = asyncio.ensure_future(anext(self.campaigns))
        else:
            assert self.audit is not None
            future = asyncio.ensure_future(self.audit.get())
        self.pending[future] = source

    async def next(self, timeout: float) -> list[tuple[str, Any]] | None:
        """What arrived within ``timeout`` (``[]`` for none); None when the server's
        subscription ended (server stopping, or the stream closed)."""
        done, _ = await asyncio.wait(
            set(self.pending), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        out: list[tuple[str, Any]] = []
        ended = False
        for future in done:
            source = self.pending.pop(future)
            try:
                item = future.result()
            except StopAsyncIteration:
                if source == "dm":
                    ended = True
                continue  # the campaign engine stopped: the other sources go on
            out.append((source, item))
            self._arm(source)
        if ended:
            return None
        return out

    async def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        if self.campaigns is not None:
            closing = getattr(self.campaigns, "aclose", None)
            if closing is not None:
                with contextlib.suppress(RuntimeError, asyncio.CancelledError):
                    await closing()
        if self.audit is not None:
            self.audit.close()


async def _dm_message(
    ctx: ApiContext,
    scope: Scope,
    event: Any,
    endpoints: frozenset[str],
    types: frozenset[str],
    observation: str | None,
) -> tuple[str, Any] | None:
    if endpoints and event.endpoint not in endpoints:
        return None
    if not scope.principal.all_tenants and (
        event.endpoint is None or not await scope.sees(event.endpoint)
    ):
        return None  # another tenant's device (or a refusal naming no device)
    name = event_type(event)
    if types and name not in types:
        return None
    if observation is not None and (
        not isinstance(event, Notification | ObservationEnded)
        or event.observation_id != observation
    ):
        return None
    return name, event_json(event, ctx.model)


def _campaign_message(
    ctx: ApiContext, scope: Scope, event: dict[str, Any]
) -> tuple[str, Any] | None:
    name = f"campaign_{event.get('type', 'event')}"
    if not scope.principal.all_tenants:
        engine = ctx.campaigns
        runs: dict[str, Any] = getattr(engine, "runs", {}) if engine is not None else {}
        ids = [event["campaign"]] if "campaign" in event else list(event.get("halted") or [])
        tenants = [getattr(getattr(runs.get(c), "spec", None), "tenant", None) for c in ids]
        if not ids or not all(scope.principal.sees(t) for t in tenants):
            return None  # another tenant's campaign (or a fleet-wide quarantine)
    data = dict(event)
    data["type"] = name
    data["event"] = event.get("type")
    return name, data


async def _messages(
    ctx: ApiContext,
    scope: Scope,
    sources: _Sources,
    endpoints: frozenset[str],
    types: frozenset[str],
    observation: str | None,
    filters: dict[str, Any],
) -> AsyncIterator[bytes]:
    counter = 0
    dropped_seen = 0
    audit_dropped_seen = 0
    try:
        yield sse("ready", {"type": "ready", "filters": filters})
        while True:
            arrived = await sources.next(ctx.keepalive_interval)
            if arrived is None:
                return
            if not arrived:
                yield b": keepalive\n\n"
                continue
            lost = sources.subscription.dropped - dropped_seen
            if sources.audit is not None:
                lost += sources.audit.dropped - audit_dropped_seen
                audit_dropped_seen = sources.audit.dropped
            if lost:
                dropped_seen = sources.subscription.dropped
                yield sse("dropped", {"type": "dropped", "count": lost})
            for source, item in arrived:
                message: tuple[str, Any] | None
                if source == "dm":
                    message = await _dm_message(ctx, scope, item, endpoints, types, observation)
                elif source == "campaign":
                    message = _campaign_message(ctx, scope, item)
                    if message is not None and types and message[0] not in types:
                        message = None
                else:
                    record: AuditRecord = item
                    visible = scope.principal.sees(record.tenant)
                    about = not endpoints or bool(endpoints.intersection(record.endpoints))
                    message = ("audit", audit_event_json(record)) if visible and about else None
                if message is None:
                    continue
                counter += 1
                yield sse(message[0], message[1], counter)
    finally:
        ctx.streams.discard(sources.subscription)
        sources.subscription.close()
        await sources.close()


def _wanted_types(kind: list[str] | None, type: list[str] | None) -> set[str]:
    wanted: set[str] = set()
    for n, item in enumerate(kind or []):
        for name in item.split(","):
            if name.strip() not in KINDS:
                raise InputError(
                    f"query.kind[{n}]", f"unknown event kind {name!r}; use {', '.join(KINDS)}"
                )
            wanted.update(KINDS[name.strip()])
    for n, item in enumerate(type or []):
        for name in item.split(","):
            if name.strip() not in TYPE_NAMES:
                raise InputError(
                    f"query.type[{n}]", f"unknown event type {name!r}; use {', '.join(TYPE_NAMES)}"
                )
            wanted.add(name.strip())
    return wanted


@router.get(
    "/events",
    tags=["events"],
    summary="Event stream (server-sent events)",
    response_class=StreamingResponse,
    responses={
        **JSON_ERRORS,
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "`event: <type>` + `data: <JSON>` per event; the data "
                        "of each type is described in docs/API.md (Event stream)",
                    }
                }
            },
            "description": "SSE stream: a `ready` event first, then the events as they happen",
        },
    },
)
async def events(
    ctx: Context,
    scope: Scoped,
    endpoint: Annotated[
        list[str] | None, Query(description="only these devices (repeat the parameter)")
    ] = None,
    kind: Annotated[
        list[str] | None,
        Query(
            description="only these kinds of event (comma-separated or repeated): "
            + ", ".join(KINDS)
        ),
    ] = None,
    type: Annotated[
        list[str] | None,
        Query(description="only these event types: " + ", ".join(TYPE_NAMES)),
    ] = None,
    observation: Annotated[
        str | None, Query(description="only this observation's notifications and end")
    ] = None,
) -> StreamingResponse:
    """Registrations, updates, de-registrations, notifications, Sends, queue changes,
    campaign progress (waves, gate decisions, halts, reverts) and audit records."""
    wanted = _wanted_types(kind, type)
    all_types = not wanted
    campaigns: AsyncIterator[dict[str, Any]] | None = None
    engine = ctx.campaigns
    if (
        engine is not None
        and observation is None
        and not endpoint
        and (all_types or wanted.intersection(CAMPAIGN_EVENT_TYPES))
    ):
        campaigns = engine.subscribe()
    audit: AuditSubscription | None = None
    if observation is None and (all_types or "audit" in wanted):
        audit = await _audit_tail(ctx).subscribe()
    subscription = ctx.server.subscribe()
    ctx.streams.add(subscription)
    sources = _Sources(subscription, campaigns, audit)
    await asyncio.sleep(0)  # the campaign subscription is made on its first step: before ready
    filters = {
        "endpoint": sorted(endpoint or []),
        "type": sorted(wanted),
        "kind": sorted({k.strip() for item in kind or [] for k in item.split(",") if k.strip()}),
        "observation": observation,
    }
    return StreamingResponse(
        _messages(
            ctx,
            scope,
            sources,
            frozenset(endpoint or ()),
            frozenset(wanted),
            observation,
            filters,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
