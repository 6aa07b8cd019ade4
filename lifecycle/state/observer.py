"""Reported state: the observations the dimensions need, and every report turned into state.

On a registration the observer asks the reconciler's workers (never the event stream itself)
to set up one Observe-Composite (LwM2M 1.1+; one Observe per path on 1.0) over the paths of
:data:`~lifecycle.state.dimensions.OBSERVED` that the device's object links include. It
re-establishes them when they are gone: after a re-registration, on an Update when the server
holds none of ours (a server restart loses observations: the CoAP tokens die with the
process), and once at start-up for every registration loaded from the store. It never cancels
an observation it did not make.

Notifications, Sends, the initial content of an observation and the reconciler's read-backs
all land in :meth:`StateObserver.ingest`: the device's values are kept per endpoint in
memory (flat, one entry per resource instance), the dimensions they touch are re-derived and
recorded in ``lc_reported`` (the generation rule is applied there), a drift is audited, and a
dimension that is enforced but not applied asks the reconciler to act.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lifecycle.state.dimensions import (
    OBSERVED,
    READ_AT_SETUP,
    WATCHED,
    Dimension,
    Leaves,
    Policy,
    Status,
    dimensions_of,
    reported_value,
)
from lifecycle.state.repository import Recorded, StateRepository
from lwm2m.codec.link import parse_links
from lwm2m.model import Node, Path, ValueType, iter_leaves
from lwm2m.server import (
    Deregistered,
    Expired,
    LwM2MServer,
    Notification,
    ObservationEnded,
    Registered,
    Registration,
    SendReceived,
    UnknownObservation,
    Updated,
)
from lwm2m.store import Store, Tx

log = logging.getLogger("fleetloop.lifecycle.state")

ACTOR = "system:reconciler"


def supported_paths(registration: Registration, wanted: Iterable[Path] = OBSERVED) -> list[Path]:
    """The paths of ``wanted`` the device's object links include (an object-level path needs
    the object, deeper ones the instance)."""
    instances: set[tuple[int, int | None]] = set()
    root = registration.root_path.rstrip("/")
    for link in parse_links(registration.object_links):
        target = link.target
        if root and target.startswith(root + "/"):
            target = target[len(root) :]
        try:
            path = Path.parse(target)
        except ValueError:
            continue
        if path.is_root or path.object_id is None:
            continue
        instances.add((path.object_id, path.instance_id))
    objects = {o for o, _ in instances}
    found = []
    for path in wanted:
        oid, iid = path.object_id, path.instance_id
        if oid is None:
            continue
        if (iid is None and oid in objects) or (oid, iid) in instances:
            found.append(path)
    return found


def _lwm2m_11(registration: Registration) -> bool:
    return registration.lwm2m_version not in ("1.0", "")


class StateObserver:
    """Per-endpoint reported values, our observations, and recording (module docstring)."""

    def __init__(
        self,
        server: LwM2MServer,
        store: Store,
        repository: StateRepository,
        *,
        clock: Callable[[], float] = time.time,
        request_timeout: float = 30.0,
        queue_deadline: float = 5.0,
    ) -> None:
        self.server = server
        self.store = store
        self.repository = repository
        self.clock = clock
        self.request_timeout = request_timeout
        self.queue_deadline = queue_deadline
        self.leaves: dict[str, dict[Path, ValueType]] = {}
        self.ours: dict[str, set[str]] = {}
        #: Called with (endpoint, kind) to ask the reconciler for device work.
        self.schedule: Callable[[str, str], None] = lambda endpoint, kind: None
        #: Called when a device shows it is awake (its parked work may run now).
        self.awake: Callable[[str], None] = lambda endpoint: None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.recorded = 0
        self.drifts = 0

    # -- events (quick: memory and task spawns only) --------------------------------------
    async def on_registered(self, event: Registered) -> None:
        self.leaves.pop(event.endpoint, None)
        self.ours.pop(event.endpoint, None)
        self.schedule(event.endpoint, "observe")
        self.awake(event.endpoint)

    async def on_updated(self, event: Updated) -> None:
        moved = event.registration.address != event.previous.address
        if moved:
            # A new address (NAT rebinding, an APN re-attach): a notification the device sent
            # from it before this Update was answered RST, which ended our observation on
            # the device while the server still holds it -- set it up again.
            self.schedule(event.endpoint, "reobserve")
        elif not self.holds_observation(event.endpoint):
            self.schedule(event.endpoint, "observe")
        self.awake(event.endpoint)

    async def on_gone(self, event: Deregistered | Expired) -> None:
        self.leaves.pop(event.endpoint, None)
        self.ours.pop(event.endpoint, None)

    async def on_observation_ended(self, event: ObservationEnded) -> None:
        ours = self.ours.get(event.endpoint)
        if ours is not None:
            ours.discard(event.observation_id)

    async def on_notification(self, event: Notification) -> None:
        self._spawn(self.ingest(event.endpoint, event.paths, event.content, "notify"))
        self.awake(event.endpoint)

    async def on_send(self, event: SendReceived) -> None:
        self._spawn(self.ingest(event.endpoint, tuple(event.content), event.content, "send"))
        self.awake(event.endpoint)

    def holds_observation(self, endpoint: str) -> bool:
        """Whether the server still holds one of our observations on ``endpoint``."""
        ours = self.ours.get(endpoint)
        if not ours:
            return False
        try:
            held = {o.observation_id for o in self.server.observations(endpoint)}
        except Exception:
            return False
        return bool(ours & held)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording reported state failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for recordings in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- device I/O (run by the reconciler's workers) --------------------------------------
    async def establish(self, endpoint: str, *, renew: bool = False) -> str | None:
        """Set up our observations on ``endpoint`` (``renew``: forget ours first, without
        a message); None on success, else why not (the result status name, for the
        reconciler's retry decision)."""
        registration = self.server.registration(endpoint)
        if registration is None:
            return "deregistered"
        if renew:
            for observation_id in self.ours.pop(endpoint, set()):
                with contextlib.suppress(UnknownObservation):
                    await self.server.cancel_observation(observation_id, active=False)
        elif self.holds_observation(endpoint):
            return None
        paths = supported_paths(registration)
        if not paths:
            self.ours[endpoint] = set()
            return None
        ids: set[str] = set()
        groups = [paths] if _lwm2m_11(registration) else [[p] for p in paths]
        for group in groups:
            if len(group) > 1:
                result = await self.server.observe_composite(
                    endpoint,
                    group,
                    timeout=self.request_timeout,
                    queue_deadline=self.queue_deadline,
                )
            else:
                result = await self.server.observe(
                    endpoint,
                    group[0],
                    timeout=self.request_timeout,
                    queue_deadline=self.queue_deadline,
                )
            if not result.ok or result.observation_id is None:
                if result.code and result.code.startswith("4.") and len(group) > 1:
                    # Composite refused (e.g. a 1.1 device without it): one path at a time.
                    groups.extend([p] for p in group)
                    continue
                if result.code and result.code.startswith("4."):
                    continue  # this path is not observable on this device
                self.ours[endpoint] = ids
                return result.status.value
            ids.add(result.observation_id)
            self.absorb(endpoint, group, result.content)
        self.ours[endpoint] = ids
        failed = await self.read_back(endpoint, READ_AT_SETUP)
        touched = set(paths) | set(READ_AT_SETUP)
        dims = dimensions_of(frozenset(touched))
        await self.record(endpoint, self.values_of(endpoint, dims), "observe")
        return failed

    async def read_back(self, endpoint: str, paths: Iterable[Path]) -> str | None:
        """Read ``paths`` (verification); values go into memory, not the store (the caller
        records them with its outcome). None on success, else the failed status's name."""
        registration = self.server.registration(endpoint)
        if registration is None:
            return "deregistered"
        wanted = supported_paths(registration, paths)
        if not wanted:
            return None
        if _lwm2m_11(registration) and len(wanted) > 1:
            composite = await self.server.read_composite(
                endpoint, wanted, timeout=self.request_timeout, queue_deadline=self.queue_deadline
            )
            if not composite.ok:
                return composite.status.value
            self.absorb(endpoint, wanted, composite.content)
            return None
        for path in wanted:
            single = await self.server.read(
                endpoint, path, timeout=self.request_timeout, queue_deadline=self.queue_deadline
            )
            if single.ok and single.content is not None:
                self.absorb(endpoint, [path], {path: single.content})
            elif not (single.code or "").startswith("4."):
                return single.status.value
        return None

    # -- recording -------------------------------------------------------------------------
    def absorb(
        self, endpoint: str, paths: Iterable[Path], content: Mapping[Path, Node]
    ) -> set[Path]:
        """Replace what is known under each of ``paths`` with ``content``; the paths."""
        leaves = self.leaves.setdefault(endpoint, {})
        touched = set(paths)
        for path in touched:
            for known in [p for p in leaves if p.startswith(path)]:
                del leaves[known]
        for path, node in content.items():
            touched.add(path)
            for leaf, value in iter_leaves(node, path):
                leaves[leaf] = value.value
        return touched

    def values_of(self, endpoint: str, dims: Iterable[Dimension]) -> dict[Dimension, Any]:
        leaves: Leaves = self.leaves.get(endpoint, {})
        return {d: reported_value(d, leaves) for d in dims if WATCHED[d]}

    async def ingest(
        self,
        endpoint: str,
        paths: Iterable[Path],
        content: Mapping[Path, Node],
        source: str,
    ) -> list[Recorded]:
        """Absorb a report and record the dimensions it touches."""
        touched = self.absorb(endpoint, paths, content)
        dims = dimensions_of(frozenset(touched))
        if not dims:
            return []
        return await self.record(endpoint, self.values_of(endpoint, dims), source)

    async def record(
        self,
        endpoint: str,
        values: Mapping[Dimension, Any],
        source: str,
        *,
        failures: Mapping[Dimension, str] | None = None,
        audit: Callable[[Tx, float], None] | None = None,
        reschedule: bool = True,
    ) -> list[Recorded]:
        """Record values (and failures) in one transaction with their audit records; ask the
        reconciler to act where an enforced dimension is not applied (unless the reconciler
        itself is recording: ``reschedule=False``)."""
        now = self.clock()
        repo = self.repository
        store = self.store

        def write(tx: Tx) -> list[Recorded]:
            done = repo.record(tx, endpoint, values, now=now, source=source, failures=failures)
            for item in done:
                # An enforced drift is confirmed (and audited) by the reconciler's read; a
                # report-only one has nobody else to tell.
                if (
                    item.before is Status.APPLIED
                    and item.after is Status.DRIFTED
                    and item.policy is Policy.REPORT_ONLY
                ):
                    store.audit.append(
                        tx,
                        actor=f"device:{endpoint}",
                        action="state.drifted",
                        subject=f"device:{endpoint}",
                        now=now,
                        endpoints=[endpoint],
                        detail={
                            "dimension": item.dimension.value,
                            "reported": values.get(item.dimension),
                        },
                        outcome="detected",
                    )
            if audit is not None:
                audit(tx, now)
            return done

        done = await store.write(write)
        self.recorded += 1
        for item in done:
            if item.after is Status.DRIFTED and item.before is Status.APPLIED:
                self.drifts += 1
            if (
                reschedule
                and item.policy is Policy.ENFORCE
                and item.after
                in (
                    Status.PENDING,
                    Status.DRIFTED,
                    Status.UNKNOWN,
                )
            ):
                self.schedule(endpoint, "reconcile")
        return done


__all__ = ["ACTOR", "StateObserver", "supported_paths"]
