"""The lifecycle layer's event loop: one subscription to the DM server, handlers per event type.

The layer is driven by what the server reports (registrations, updates, notifications, Sends,
queue-state changes), never by scanning the fleet. Components register handlers with
:meth:`LifecycleService.on`; each event goes to its handlers in registration order, so the
inventory sees a registration before the state view and the reconciler do. A handler must be
quick (a store write, a queue push): work that talks to devices runs in the component's own
tasks, so one slow device never holds up the event stream.

A handler that raises is logged and counted; the stream goes on. If the server's bounded event
buffer overflowed (:attr:`~lwm2m.server.EventSubscription.dropped` grew), the ``on_resync``
callbacks run so components can rebuild what they derive from events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from lwm2m.model import Path, ValueType
from lwm2m.server import EventSubscription, LwM2MServer, ServerEvent

log = logging.getLogger("fleetloop.lifecycle")

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class DeviceRead:
    """Values the lifecycle layer itself read from a device (an observation's first answer,
    a read at set-up or a verification), published so other components learn them too: the
    server reports only *changes* as events, and the first values of a newly registered
    device would otherwise reach nobody but the component that asked."""

    endpoint: str
    values: Mapping[Path, ValueType]


Handler = Callable[[Any], Awaitable[None]]


class LifecycleService:
    """Dispatches the DM server's events to the lifecycle components (module docstring)."""

    def __init__(self, server: LwM2MServer) -> None:
        self.server = server
        self._handlers: dict[type[Any], list[Handler]] = defaultdict(list)
        self._resync: list[Callable[[], Awaitable[None]]] = []
        self._subscription: EventSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._dropped_seen = 0
        #: Events dispatched and handler failures, for operators and tests.
        self.dispatched = 0
        self.handler_errors = 0

    def on(self, event_type: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Call ``handler(event)`` for every event of ``event_type`` (after earlier handlers)."""
        self._handlers[event_type].append(handler)

    def on_resync(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback()`` after events were lost to a full buffer."""
        self._resync.append(callback)

    def start(self) -> None:
        """Subscribe now (so no event after this call is missed) and start dispatching."""
        if self._task is not None:
            return
        self._subscription = self.server.subscribe()
        self._task = asyncio.create_task(self._run(self._subscription), name="lifecycle-events")

    async def _run(self, subscription: EventSubscription) -> None:
        async for event in subscription:
            await self.dispatch(event)
            if subscription.dropped != self._dropped_seen:
                self._dropped_seen = subscription.dropped
                log.warning("lifecycle event buffer overflowed; resynchronising")
                for callback in self._resync:
                    await self._guard(callback(), "resync")

    async def dispatch(self, event: ServerEvent | DeviceRead) -> None:
        """Run the handlers of ``event``'s type (also for tests and replays)."""
        self.dispatched += 1
        for handler in self._handlers.get(type(event), ()):
            await self._guard(handler(event), type(event).__name__)

    async def _guard(self, call: Awaitable[None], what: str) -> None:
        try:
            await call
        except asyncio.CancelledError:
            raise
        except Exception:
            self.handler_errors += 1
            log.exception("lifecycle handler failed", extra={"event": what})

    async def stop(self) -> None:
        """Stop dispatching; events still buffered are dropped (the store has the facts)."""
        if self._subscription is not None:
            self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._subscription = None
