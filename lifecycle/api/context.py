"""What the API's routes work with: the running server, the store, the object model, the token.

One :class:`ApiContext` per application (``app.state.context``). It also tracks the open event
streams, because a graceful shutdown must end them first: an open ``text/event-stream``
response would otherwise keep uvicorn waiting for its connection to close.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import metadata

from lifecycle.api.event_sources import AuditTail
from lifecycle.audit_events import AuditComponent
from lifecycle.campaigns.component import CampaignComponent
from lifecycle.inventory_events import InventoryService
from lifecycle.operators import OperatorRegistry
from lifecycle.service import LifecycleService
from lifecycle.state.component import StateComponent
from lifecycle.tenancy import TenantDirectory
from lwm2m.model import ObjectModel
from lwm2m.server import EventSubscription, LwM2MServer
from lwm2m.store import Store


def _version() -> str:
    try:
        return metadata.version("fleetloop")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@dataclass(eq=False)
class ApiContext:
    """The dependencies of every route (module docstring)."""

    server: LwM2MServer
    store: Store
    model: ObjectModel
    token: str
    version: str = field(default_factory=_version)
    started_at: float = field(default_factory=time.time)
    keepalive_interval: float = 15.0
    streams: set[EventSubscription] = field(default_factory=set)
    lifecycle: LifecycleService | None = None
    # -- lifecycle components add their fields here --
    inventory: InventoryService | None = None  # device records, selectors, groups
    state: StateComponent | None = None  # desired vs reported state, the reconciler
    operators: OperatorRegistry | None = None  # named tokens; None: only the serve token
    tenants: TenantDirectory | None = None  # endpoint -> tenant; made on first use if None
    audit: AuditComponent | None = None  # checkpoint signing, refusal aggregation
    campaigns: CampaignComponent | None = None  # the campaign engine (holder() for state set)
    audit_tail: AuditTail | None = None  # the committed audit log, for /v1/events
    closing: bool = False

    def close_streams(self) -> None:
        """End every open event stream (each finishes its response and unsubscribes)."""
        self.closing = True
        for subscription in list(self.streams):
            subscription.close()
