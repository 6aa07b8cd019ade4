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
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from lifecycle.api.auth import context_of
from lifecycle.api.context import ApiContext
from lifecycle.api.naming import JSON_ERRORS
from lifecycle.api.parse import InputError
from lifecycle.api.scope import Scope, Scoped
from lifecycle.api.views import EVENT_TYPES, event_json, event_type
from lwm2m.server import EventSubscription, Notification, ObservationEnded

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]
TYPE_NAMES = tuple(EVENT_TYPES.values())


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE message; JSON never contains a raw newline, so ``data`` is one line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


async def _messages(
    ctx: ApiContext,
    scope: Scope,
    subscription: EventSubscription,
    endpoints: frozenset[str],
    types: frozenset[str],
    observation: str | None,
    filters: dict[str, Any],
) -> AsyncIterator[bytes]:
    counter = 0
    dropped_seen = 0
    try:
        yield sse("ready", {"type": "ready", "filters": filters})
        while True:
            try:
                event = await asyncio.wait_for(anext(subscription), ctx.keepalive_interval)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            except StopAsyncIteration:
                return
            if subscription.dropped != dropped_seen:
                lost = subscription.dropped - dropped_seen
                dropped_seen = subscription.dropped
                yield sse("dropped", {"type": "dropped", "count": lost})
            if endpoints and event.endpoint not in endpoints:
                continue
            if not scope.principal.all_tenants and (
                event.endpoint is None or not await scope.sees(event.endpoint)
            ):
                continue  # another tenant's device (or a refusal naming no device)
            name = event_type(event)
            if types and name not in types:
                continue
            if observation is not None and (
                not isinstance(event, Notification | ObservationEnded)
                or event.observation_id != observation
            ):
                continue
            counter += 1
            yield sse(name, event_json(event, ctx.model), counter)
    finally:
        ctx.streams.discard(subscription)
        subscription.close()


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
    type: Annotated[
        list[str] | None,
        Query(description="only these event types: " + ", ".join(TYPE_NAMES)),
    ] = None,
    observation: Annotated[
        str | None, Query(description="only this observation's notifications and end")
    ] = None,
) -> StreamingResponse:
    """Registrations, updates, de-registrations, notifications, Sends, queue changes."""
    wanted: set[str] = set()
    for n, item in enumerate(type or []):
        for name in item.split(","):
            if name.strip() not in TYPE_NAMES:
                raise InputError(
                    f"query.type[{n}]", f"unknown event type {name!r}; use {', '.join(TYPE_NAMES)}"
                )
            wanted.add(name.strip())
    subscription = ctx.server.subscribe()
    ctx.streams.add(subscription)
    filters = {
        "endpoint": sorted(endpoint or []),
        "type": sorted(wanted),
        "observation": observation,
    }
    return StreamingResponse(
        _messages(
            ctx,
            scope,
            subscription,
            frozenset(endpoint or ()),
            frozenset(wanted),
            observation,
            filters,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
