"""``GET /v1/fleet/summary``: the fleet's breakdowns, computed by the server over every device.

The console's overview (and ``fleetloop`` scripts) need counts by stage, region, carrier,
firmware, SKU and tenant, the config bundles the devices run and want, and how many devices
are out of line with their desired state. Computing them in the browser meant fetching the
inventory page by page and stopping at a sample; here each attribute breakdown is one
``GROUP BY`` over the inventory table (its indexed columns), and config and drift are one pass
over the desired/reported rows of the selected devices, using the same status rule as
``GET /v1/state/drift`` (:func:`lifecycle.state.dimensions.status`).

The optional ``select`` narrows it (``region=eu``); a tenant-scoped token counts its tenants'
devices only.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.auth import context_of
from lifecycle.api.context import ApiContext
from lifecycle.api.inventory_routes import selector_of
from lifecycle.api.render import iso8601
from lifecycle.api.scope import Scoped
from lifecycle.inventory import scoped
from lifecycle.selector import Selector
from lifecycle.state.dimensions import Desired, Dimension, Policy, Reported, status
from lifecycle.state.tables import DESIRED, REPORTED
from lifecycle.tables import DEVICE
from lwm2m.store import Tx

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]

TAGS = [
    {
        "name": "fleet",
        "description": "Fleet-wide breakdowns computed by the server over every device.",
    }
]

BREAKDOWNS = ("stage", "region", "carrier", "firmware", "sku", "tenant")
"""Inventory columns counted by ``GROUP BY``."""

_D = DEVICE.c


class Count(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str | None = Field(description="the attribute's value; null: not known")
    count: int


class DriftCount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dimension: str
    status: str = Field(description="applied, pending, drifted, failed or unknown")
    count: int


class FleetSummary(BaseModel):
    """Counts over every selected device (not a sample)."""

    model_config = ConfigDict(extra="forbid")
    select: str = Field(description="the selector, in canonical form (empty: every device)")
    devices: int = Field(description="devices in the inventory that match")
    registered: int = Field(description="... of them registered now")
    stage: list[Count]
    region: list[Count]
    carrier: list[Count]
    firmware: list[Count]
    sku: list[Count]
    tenant: list[Count]
    config: list[Count] = Field(description="the config bundle version each device reports")
    config_desired: list[Count] = Field(
        description="the config bundle version each device is set to"
    )
    drift: list[DriftCount] = Field(description="devices per dimension and status (desired set)")
    out_of_line: int = Field(
        description="devices with a dimension pending, drifted, failed or unknown"
    )
    computed_at: str
    computed_at_epoch: float


def _counts(counter: Counter[str | None]) -> list[Count]:
    ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0] is None, item[0] or ""))
    return [Count(value=value, count=n) for value, n in ordered]


def _version(value: Any) -> str | None:
    if isinstance(value, dict):
        version = value.get("version")
        return None if version is None or version == "" else str(version)  # "": no bundle
    return None


def summarize(tx: Tx, selector: Selector, tenants: frozenset[str] | None) -> dict[str, Any]:
    """The summary's counts in one read transaction (module docstring)."""
    where = scoped(selector, tenants)
    out: dict[str, Any] = {}
    devices = registered = 0
    for name in BREAKDOWNS:
        column = _D[name]
        counter: Counter[str | None] = Counter()
        query = sa.select(column, sa.func.count()).where(where).group_by(column)
        rows: list[Any] = list(tx.execute(query))
        for value, n in rows:
            counter[value] += int(n)
        out[name] = _counts(counter)
        devices = sum(counter.values())
    registered = int(
        tx.execute(sa.select(sa.func.count()).where(where & _D.registered.is_(True))).scalar_one()
    )
    chosen = sa.select(_D.endpoint).where(where)
    reported_config: Counter[str | None] = Counter()
    configs = sa.select(REPORTED.c.value).where(
        (REPORTED.c.dimension == Dimension.CONFIG.value) & REPORTED.c.endpoint.in_(chosen)
    )
    for (text,) in tx.execute(configs):
        reported_config[_version(json.loads(text) if text is not None else None)] += 1
    desired_config: Counter[str | None] = Counter()
    drift: Counter[tuple[str, str]] = Counter()
    behind: set[str] = set()
    joined = (
        sa.select(
            DESIRED,
            REPORTED.c.value.label("r_value"),
            REPORTED.c.observed_generation,
            REPORTED.c.failed_generation,
            REPORTED.c.reported_at,
        )
        .select_from(
            DESIRED.outerjoin(
                REPORTED,
                (REPORTED.c.endpoint == DESIRED.c.endpoint)
                & (REPORTED.c.dimension == DESIRED.c.dimension),
            )
        )
        .where(DESIRED.c.endpoint.in_(chosen))
    )
    for row in tx.execute(joined):
        try:
            dimension = Dimension(row.dimension)
        except ValueError:
            continue  # a dimension a newer server wrote
        want = Desired(dimension, json.loads(row.value), int(row.generation), Policy(row.policy))
        have = (
            Reported(
                dimension,
                json.loads(row.r_value) if row.r_value is not None else None,
                row.observed_generation,
                row.failed_generation,
            )
            if row.reported_at is not None
            else None
        )
        state = status(want, have)
        drift[(dimension.value, state.value)] += 1
        if state.out_of_line:
            behind.add(str(row.endpoint))
        if dimension is Dimension.CONFIG:
            desired_config[_version(want.value)] += 1
    out["config"] = _counts(reported_config)
    out["config_desired"] = _counts(desired_config)
    out["drift"] = [
        DriftCount(dimension=d, status=s, count=n) for (d, s), n in sorted(drift.items())
    ]
    out["out_of_line"] = len(behind)
    out["devices"] = devices
    out["registered"] = registered
    return out


@router.get(
    "/fleet/summary",
    tags=["fleet"],
    summary="Fleet breakdowns over every device",
    response_model=FleetSummary,
)
async def get_fleet_summary(
    ctx: Context,
    scope: Scoped,
    select: Annotated[
        str | None, Query(description="only the devices this selector names, e.g. region=eu")
    ] = None,
) -> FleetSummary:
    """Devices by stage, region, carrier, firmware, SKU, tenant and config bundle (reported
    and desired), and drift per dimension and status -- counted by the server over every
    matching device, not a page of them."""
    selector = selector_of(select)
    tenants = scope.principal.tenants
    found = await ctx.store.read(lambda tx: summarize(tx, selector, tenants))
    now = time.time()
    return FleetSummary(
        select=str(selector),
        computed_at=iso8601(now),
        computed_at_epoch=now,
        **found,
    )


__all__ = ["TAGS", "FleetSummary", "router", "summarize"]
