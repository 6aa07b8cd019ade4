"""The desired-state component as ``fleetloop serve`` runs it: repository, observer and
reconciler built together, their event handlers registered on the lifecycle service.

Pacing comes from the environment (``FLEETLOOP_RECONCILE_RATE`` device-changes per second,
``FLEETLOOP_RECONCILE_BURST``, ``FLEETLOOP_RECONCILE_CONCURRENCY`` workers,
``FLEETLOOP_RECONCILE_TIMEOUT`` seconds per device request, ``FLEETLOOP_RECONCILE_VERIFY_WAIT``
seconds a pass waits for its verifying notification), defaults in
:class:`~lifecycle.state.reconciler.ReconcilerConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from lifecycle.service import LifecycleService
from lifecycle.state.dimensions import Dimension
from lifecycle.state.observer import StateObserver
from lifecycle.state.reconciler import Reconciler, ReconcilerConfig
from lifecycle.state.repository import StateRepository
from lwm2m.server import (
    Deregistered,
    Expired,
    LwM2MServer,
    Notification,
    ObservationEnded,
    Registered,
    Removed,
    SendReceived,
    Updated,
)
from lwm2m.store import Store

_ENV = {
    "rate": "FLEETLOOP_RECONCILE_RATE",
    "burst": "FLEETLOOP_RECONCILE_BURST",
    "concurrency": "FLEETLOOP_RECONCILE_CONCURRENCY",
    "request_timeout": "FLEETLOOP_RECONCILE_TIMEOUT",
    "verify_wait": "FLEETLOOP_RECONCILE_VERIFY_WAIT",
    "reattach_wait": "FLEETLOOP_RECONCILE_REATTACH_WAIT",
}


def config_from_env(env: Mapping[str, str] | None = None) -> ReconcilerConfig:
    """:class:`ReconcilerConfig` with the ``FLEETLOOP_RECONCILE_*`` overrides applied."""
    env = os.environ if env is None else env
    values: dict[str, float | int] = {}
    for name, var in _ENV.items():
        text = env.get(var, "").strip()
        if not text:
            continue
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{var}={text!r} is not a number") from None
        if number <= 0:
            raise ValueError(f"{var} must be positive, got {text}")
        values[name] = int(number) if name == "concurrency" else number
    return ReconcilerConfig(**values)  # type: ignore[arg-type]


class StateComponent:
    """Desired vs reported state for one server and store (module docstring)."""

    def __init__(
        self,
        server: LwM2MServer,
        store: Store,
        config: ReconcilerConfig | None = None,
        *,
        excluded: Callable[[str, Dimension], bool] | None = None,
    ) -> None:
        config = config or ReconcilerConfig()
        self.store = store
        self.repository = StateRepository()
        self.observer = StateObserver(
            server,
            store,
            self.repository,
            request_timeout=config.request_timeout,
            queue_deadline=config.queue_deadline,
        )
        self.reconciler = Reconciler(
            server, store, self.repository, self.observer, config, excluded=excluded
        )

    def install(self, service: LifecycleService) -> None:
        """Register the event handlers (after the inventory's, so it sees devices first)."""
        observer = self.observer
        observer.publish = service.dispatch
        service.on(Registered, observer.on_registered)
        service.on(Updated, observer.on_updated)
        service.on(Deregistered, observer.on_gone)
        service.on(Expired, observer.on_gone)
        service.on(Removed, observer.on_gone)
        service.on(ObservationEnded, observer.on_observation_ended)
        service.on(Notification, observer.on_notification)
        service.on(SendReceived, observer.on_send)

    def start(self) -> None:
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()
        await self.store.flush()  # the reported rows handed over by the last flush


__all__ = ["StateComponent", "config_from_env"]
