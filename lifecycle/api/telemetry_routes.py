"""``GET /v1/devices/{endpoint}/telemetry/{path}``: a resource's reported values over time.

Diagnosing a device starts with "what did it say, and when": the battery falling before it
went silent, the signal strength the night the Updates stopped, the firmware version it
reported after a campaign. The DM server already keeps every notified and sent value in the
telemetry history (kept by the retention settings, docs/CONFIG.md); this route reads it back,
newest first by default, one page at a time.

Paging uses the one scheme of the API (``cursor`` + ``limit`` -> ``next_cursor``). The cursor
is the timestamp of the last value shown; the next page is everything strictly older (or
newer, oldest first). Values that share the page's last timestamp are never split across two
pages -- they are all on this page, or all on the next -- so nothing is skipped or repeated.

A device that is not registered still has its history (it went silent: that is when an
operator looks); an endpoint with neither a registration nor any value is 404.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.audit_routes import parse_time
from lifecycle.api.auth import context_of
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import unknown_endpoint
from lifecycle.api.parse import InputError, parse_path
from lifecycle.api.render import JsonObject, resource_name
from lifecycle.api.scope import Scoped
from lifecycle.api.views import reported_value_json
from lwm2m.model import Path
from lwm2m.store import ReportedValue

TAGS = [
    {
        "name": "telemetry",
        "description": "Reported values of a device's resource over time (notifications, Send).",
    }
]

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]


class TelemetryValueOut(BaseModel):
    """One reported value: what the device said, when, and how (notify, send, read)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(examples=["/3/0/9"])
    name: str | None = Field(description="from the object model; null if unknown")
    type: str = Field(description="LwM2M data type")
    value: Any = Field(default=None, description="JSON value by data type (docs/API.md)")
    label: str | None = Field(default=None, description="name of an enumerated value")
    iso: str | None = Field(default=None, description="Time values: the instant, ISO 8601")
    encoding: str | None = Field(default=None, description="Opaque values: base64")
    at: str | None = Field(default=None, description="when the device reported it (ISO 8601)")
    at_epoch: float | None = None
    source: str = Field(description="notify, send or read")


class TelemetryPage(BaseModel):
    """One page of a resource's history; ``next_cursor`` pages on (null: no more)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    path: str
    name: str | None
    order: Literal["newest", "oldest"]
    items: list[TelemetryValueOut]
    next_cursor: str | None


def _cursor(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(
            "query.cursor", f"{text[:40]!r} is not a cursor; pass next_cursor of the last page"
        )
    return value


@router.get(
    "/devices/{endpoint}/telemetry/{path:path}",
    response_model=TelemetryPage,
    response_model_exclude_unset=True,
    tags=["telemetry"],
    summary="A resource's reported values over time",
)
async def device_telemetry(
    ctx: Context,
    scope: Scoped,
    endpoint: str,
    path: Annotated[str, "LwM2M resource path without the leading slash, e.g. 3/0/9"],
    since: Annotated[
        str | None, Query(description="epoch seconds or ISO 8601; values at or after it")
    ] = None,
    until: Annotated[
        str | None, Query(description="epoch seconds or ISO 8601; values before it")
    ] = None,
    order: Annotated[
        Literal["newest", "oldest"], Query(description="newest first (default) or oldest first")
    ] = "newest",
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JsonObject:
    """Values of one resource (or resource instance) as the device reported them."""
    await scope.endpoint(endpoint)
    target = parse_path(path)
    if target.resource_id is None:
        raise InputError(
            "path",
            f"{target} is not a resource; name one resource like /3/0/9",
        )
    start, end = parse_time(since, "since"), parse_time(until, "until")
    newest = order == "newest"
    after = _cursor(cursor)
    if after is not None:
        if newest:
            end = after if end is None else min(end, after)
        else:
            later = math.nextafter(after, math.inf)
            start = later if start is None else max(start, later)
    values = await _page(ctx, endpoint, target, start, end, newest, limit)
    if not values and after is None and ctx.server.registration(endpoint) is None:
        known = await ctx.store.read(lambda tx: ctx.store.telemetry.latest(tx, endpoint))
        if not known:
            raise unknown_endpoint(endpoint)
    more = len(values) > limit
    shown = values[:limit]
    if more and values[limit].at == shown[-1].at:
        # never split one timestamp across pages: drop its run from this page (the next page
        # starts with it) unless it is the whole page -- then show the whole run here
        run_at = shown[-1].at
        cut = [v for v in shown if v.at != run_at]
        if cut:
            shown = cut
        else:
            shown = await _all_at(ctx, endpoint, target, run_at)
    return {
        "endpoint": endpoint,
        "path": str(target),
        "name": resource_name(ctx.model, target),
        "order": order,
        "items": [reported_value_json(v, ctx.model) for v in shown],
        "next_cursor": repr(shown[-1].at) if more and shown else None,
    }


async def _page(
    ctx: ApiContext,
    endpoint: str,
    target: Path,
    start: float | None,
    end: float | None,
    newest: bool,
    limit: int,
) -> list[ReportedValue]:
    def query(tx: Any) -> list[ReportedValue]:
        return ctx.store.telemetry.history(
            tx, endpoint, target, since=start, until=end, limit=limit + 1, newest_first=newest
        )

    return await ctx.store.read(query)


async def _all_at(ctx: ApiContext, endpoint: str, target: Path, at: float) -> list[ReportedValue]:
    """Every value of ``target`` reported at exactly ``at`` (a Send can carry several)."""

    def query(tx: Any) -> list[ReportedValue]:
        return ctx.store.telemetry.history(
            tx, endpoint, target, since=at, until=math.nextafter(at, math.inf), limit=100_000
        )

    return await ctx.store.read(query)
