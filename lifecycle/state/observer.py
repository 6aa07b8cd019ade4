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

**Why the state is kept in memory.** A notification arrives for every change of any observed
value, so recording has to be cheap: measured, one store transaction per notification (read
desired and reported, write the changed rows) cost milliseconds of server CPU, most of it
SQLAlchemy's per-statement work. So the observer keeps each device's desired and reported
state in memory -- loaded once per device, in bulk after a ``PUT /state``
(:meth:`StateObserver.desired_changed`) -- and applies the generation rule there
(:func:`~lifecycle.state.repository.apply_report`). A report that changes nothing writes
nothing; a report that changes only reported values (telemetry) is coalesced per endpoint and
dimension and written in one ``executemany`` per event-loop turn through the store's group
commit (``write_nowait``: a crash loses at most the last flush interval, as for all
telemetry, ``docs/STORE.md``). What must be durable is awaited: a report that flips a
generation to applied or records a failure, and every recording with an audit record, commit
with that record before anybody is told. This process is the only writer of ``lc_reported``;
``lc_desired`` changes reach it through ``desired_changed`` (the API calls it after its
commit), which is also what wakes the reconciler.

**Verification by notification.** While the reconciler works on a device it *holds* it
(:meth:`StateObserver.hold`): a notification that would flip a dimension to applied is then
not recorded by the observer but handed to the reconciler, which records it with the audit
record of its pass (one committed transaction, the durability rule above) instead of reading
the value back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lifecycle.service import DeviceRead
from lifecycle.state.dimensions import (
    FACTS_AT_SETUP,
    OBSERVED,
    READ_AT_SETUP,
    WATCHED,
    Desired,
    Dimension,
    Leaves,
    Policy,
    Reported,
    Status,
    dimensions_of,
    reported_value,
)
from lifecycle.state.repository import Recorded, StateRepository, apply_report, reported_row
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
    Removed,
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


#: Sources whose reports a reconciler pass may take over as its verification.
_DEVICE_SOURCES = frozenset({"notify", "send"})


@dataclass(slots=True)
class Hold:
    """A reconciler pass in progress on one endpoint (:meth:`StateObserver.hold`)."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Dimensions a device report would have flipped to applied, left to the pass to record.
    deferred: set[Dimension] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One dimension of one device changed status (``record``/``report`` computed it), for
    :attr:`StateObserver.status_hooks`: the campaign engine learns VERIFIED / FAILED from it
    without polling. ``generation`` is the desired generation it was judged against (None:
    no desired value); ``detail`` the failure reason ("gave up after ..." for exhausted
    retries, the device's apply result otherwise)."""

    endpoint: str
    dimension: Dimension
    generation: int | None
    before: Status
    after: Status
    value: Any
    detail: str


@dataclass(slots=True)
class _Recording:
    """What one recording computed: the statuses, rows to write, audits and how to write."""

    done: list[Recorded]
    rows: list[dict[str, Any]]
    drift_audits: list[tuple[Dimension, Any]]
    durable: bool


async def _ignore(event: DeviceRead) -> None:
    """The publish hook before a service is installed."""


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
        #: Paths our observations on each endpoint cover (the verification-by-notification
        #: check: a dimension is only awaited from notifications when they carry it).
        self.watched: dict[str, frozenset[Path]] = {}
        #: Desired and reported state per endpoint (module docstring), loaded on first need.
        self.desired: dict[str, dict[Dimension, Desired]] = {}
        self.reported: dict[str, dict[Dimension, Reported]] = {}
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._epoch: dict[str, int] = {}
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._flush_due = False
        self._holds: dict[str, Hold] = {}
        #: Publishes what set-up read to the other lifecycle components (the service's
        #: ``dispatch`` once installed).
        self.publish: Callable[[DeviceRead], Awaitable[None]] = _ignore
        #: Called with (endpoint, kind) to ask the reconciler for device work.
        self.schedule: Callable[[str, str], None] = lambda endpoint, kind: None
        #: Called when a device shows it is awake (its parked work may run now).
        self.awake: Callable[[str], None] = lambda endpoint: None
        #: Called with every :class:`StatusChange` (after a durable change committed); must be
        #: quick (memory only). The campaign engine's hook.
        self.status_hooks: list[Callable[[StatusChange], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.recorded = 0
        self.drifts = 0
        self.skipped = 0
        self.flushed_rows = 0

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

    async def on_gone(self, event: Deregistered | Expired | Removed) -> None:
        self.leaves.pop(event.endpoint, None)
        self.ours.pop(event.endpoint, None)
        self.watched.pop(event.endpoint, None)

    async def on_observation_ended(self, event: ObservationEnded) -> None:
        ours = self.ours.get(event.endpoint)
        if ours is not None:
            ours.discard(event.observation_id)

    async def on_notification(self, event: Notification) -> None:
        self.report(event.endpoint, event.paths, event.content, "notify")
        self.awake(event.endpoint)

    async def on_send(self, event: SendReceived) -> None:
        self.report(event.endpoint, tuple(event.content), event.content, "send")
        self.awake(event.endpoint)

    def report(
        self, endpoint: str, paths: Iterable[Path], content: Mapping[Path, Node], source: str
    ) -> None:
        """A device report, from the event stream: recorded inline when the device's state is
        in memory and nothing needs a commit (the common case), else in a task."""
        touched = self.absorb(endpoint, paths, content)
        dims = dimensions_of(frozenset(touched))
        if not dims:
            self.skipped += 1
            return
        values = self.values_of(endpoint, dims)
        if not self.ready(endpoint):
            self._spawn(self.record(endpoint, values, source))
            return
        recording = self._compute(endpoint, values, source, None, self.clock())
        if recording.durable:
            self._spawn(self._commit(endpoint, recording, source, None, True))
        else:
            self._finish(endpoint, recording, True)

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
        """Wait for recordings in flight (shutdown, tests), then queue their rows."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.flush()

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
        observed: set[Path] = set()
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
                self.watched[endpoint] = frozenset(observed)
                return result.status.value
            ids.add(result.observation_id)
            observed.update(group)
            self.absorb(endpoint, group, result.content)
        self.ours[endpoint] = ids
        self.watched[endpoint] = frozenset(observed)
        failed = await self.read_back(endpoint, READ_AT_SETUP)
        if failed is None:
            await self.read_back(endpoint, FACTS_AT_SETUP)
        await self.publish(DeviceRead(endpoint, dict(self.leaves.get(endpoint, {}))))
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

    # -- desired and reported state in memory ------------------------------------------------
    def ready(self, endpoint: str) -> bool:
        """Whether ``endpoint``'s desired and reported state are in memory and current."""
        return (
            endpoint in self.desired and endpoint in self.reported and endpoint not in self._loading
        )

    async def state(
        self, endpoint: str
    ) -> tuple[dict[Dimension, Desired], dict[Dimension, Reported]]:
        """``endpoint``'s desired and reported state (copies), loaded if not in memory."""
        while not self.ready(endpoint):
            pending = self._loading.get(endpoint)
            if pending is None:
                pending = self._load([endpoint])
            await asyncio.shield(pending)
        return dict(self.desired[endpoint]), dict(self.reported[endpoint])

    def desired_changed(self, endpoints: Iterable[str]) -> None:
        """Desired values of ``endpoints`` were committed: reload them (in bulk; reports of
        those endpoints wait for it, so none is judged against the old generation)."""
        wanted = list(dict.fromkeys(endpoints))
        for endpoint in wanted:
            self.desired.pop(endpoint, None)
        if wanted:
            self._load(wanted)

    def _load(self, endpoints: list[str]) -> asyncio.Future[None]:
        """Start loading ``endpoints``' desired state (and reported state where not in
        memory: this process writes it, so memory is newer than the table)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        epochs = {}
        for endpoint in endpoints:
            epochs[endpoint] = self._epoch[endpoint] = self._epoch.get(endpoint, 0) + 1
            self._loading[endpoint] = future
        missing = [e for e in endpoints if e not in self.reported]
        repo = self.repository

        def read(tx: Tx) -> tuple[dict[str, Any], dict[str, Any]]:
            return repo.desired_of(tx, endpoints), repo.reported_of(tx, missing)

        async def run() -> None:
            try:
                desired, reported = await self.store.read(read)
            except BaseException as err:
                for endpoint in endpoints:
                    if self._loading.get(endpoint) is future:
                        del self._loading[endpoint]
                if not future.done():
                    future.set_exception(err)
                    future.exception()  # retrieved: the waiters re-raise it
                raise
            for endpoint in endpoints:
                if self._loading.get(endpoint) is future:
                    del self._loading[endpoint]
                if self._epoch.get(endpoint) != epochs[endpoint]:
                    continue  # changed since this read began: a newer load brings it
                self.desired[endpoint] = desired[endpoint]
                if endpoint in reported and endpoint not in self.reported:
                    self.reported[endpoint] = reported[endpoint]
            future.set_result(None)

        self._spawn(run())
        return future

    def forget_state(self, endpoint: str) -> None:
        """Drop ``endpoint``'s state from memory (after a failed write: reload it)."""
        self.desired.pop(endpoint, None)
        self.reported.pop(endpoint, None)
        self._epoch[endpoint] = self._epoch.get(endpoint, 0) + 1

    # -- holds: a reconciler pass in progress ------------------------------------------------
    def hold(self, endpoint: str) -> Hold:
        """The reconciler starts a pass on ``endpoint`` (module docstring)."""
        hold = self._holds.get(endpoint)
        if hold is None:
            hold = self._holds[endpoint] = Hold()
        return hold

    async def release(self, endpoint: str) -> None:
        """The pass is over: record what a device report left to it and it did not record."""
        hold = self._holds.pop(endpoint, None)
        if hold is not None and hold.deferred:
            await self.record(endpoint, self.values_of(endpoint, hold.deferred), "notify")

    # -- recording -------------------------------------------------------------------------
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
        """Record values (and failures) with their audit records -- committed before this
        returns when anything must be durable (module docstring), else group-committed; ask
        the reconciler to act where an enforced dimension is not applied (unless the
        reconciler itself is recording: ``reschedule=False``)."""
        await self.state(endpoint)
        recording = self._compute(endpoint, values, source, failures, self.clock())
        if recording.durable or audit is not None:
            return await self._commit(endpoint, recording, source, audit, reschedule)
        self._finish(endpoint, recording, reschedule)
        return recording.done

    def _compute(
        self,
        endpoint: str,
        values: Mapping[Dimension, Any],
        source: str,
        failures: Mapping[Dimension, str] | None,
        now: float,
    ) -> _Recording:
        """Apply a report to the state in memory (which it updates); what to write."""
        desired = self.desired[endpoint]
        reported = self.reported[endpoint]
        hold = self._holds.get(endpoint)
        done: list[Recorded] = []
        rows: list[dict[str, Any]] = []
        audits: list[tuple[Dimension, Any]] = []
        durable = bool(failures)
        for item, new, changed in apply_report(desired, reported, values, failures):
            flips = item.after is Status.APPLIED and item.before is not Status.APPLIED
            if flips and hold is not None and source in _DEVICE_SOURCES:
                hold.deferred.add(item.dimension)  # the reconciler's pass records it
                continue
            if (
                hold is not None
                and item.dimension in hold.deferred
                and source not in (_DEVICE_SOURCES)
            ):
                hold.deferred.discard(item.dimension)
            done.append(item)
            if not changed:
                continue
            reported[item.dimension] = new
            rows.append(reported_row(endpoint, new, now=now, source=source))
            if flips:
                durable = True
            # An enforced drift is confirmed (and audited) by the reconciler's read; a
            # report-only one has nobody else to tell.
            if (
                item.before is Status.APPLIED
                and item.after is Status.DRIFTED
                and item.policy is Policy.REPORT_ONLY
            ):
                audits.append((item.dimension, values.get(item.dimension)))
                durable = True
        if hold is not None:
            hold.changed.set()
        return _Recording(done, rows, audits, durable)

    async def _commit(
        self,
        endpoint: str,
        recording: _Recording,
        source: str,
        audit: Callable[[Tx, float], None] | None,
        reschedule: bool,
    ) -> list[Recorded]:
        """Write ``recording`` with its audit records and wait for the commit."""
        now = self.clock()
        repo = self.repository
        store = self.store
        rows = recording.rows
        drifts = recording.drift_audits

        def write(tx: Tx) -> None:
            repo.write_reported(tx, rows)
            for dim, value in drifts:
                store.audit.append(
                    tx,
                    actor=f"device:{endpoint}",
                    action="state.drifted",
                    subject=f"device:{endpoint}",
                    now=now,
                    endpoints=[endpoint],
                    detail={"dimension": dim.value, "reported": value},
                    outcome="detected",
                )
            if audit is not None:
                audit(tx, now)

        self.flush()  # telemetry queued before this report commits first, in order
        try:
            await store.write(write)
        except BaseException:
            self.forget_state(endpoint)  # memory may be ahead of the table now
            raise
        self._finish(endpoint, recording, reschedule, written=True)
        return recording.done

    def _finish(
        self, endpoint: str, recording: _Recording, reschedule: bool, *, written: bool = False
    ) -> None:
        if not written:
            for row in recording.rows:
                self._queue_row(row)
        if recording.rows:
            self.recorded += 1
        if self.status_hooks:
            self._tell(endpoint, recording.done)
        for item in recording.done:
            if item.after is Status.DRIFTED and item.before is Status.APPLIED:
                self.drifts += 1
            if (
                reschedule
                and item.policy is Policy.ENFORCE
                and item.after in (Status.PENDING, Status.DRIFTED, Status.UNKNOWN)
            ):
                self.schedule(endpoint, "reconcile")

    def _tell(self, endpoint: str, done: list[Recorded]) -> None:
        desired = self.desired.get(endpoint, {})
        reported = self.reported.get(endpoint, {})
        for item in done:
            if item.before is item.after:
                continue
            want = desired.get(item.dimension)
            have = reported.get(item.dimension)
            change = StatusChange(
                endpoint,
                item.dimension,
                want.generation if want is not None else None,
                item.before,
                item.after,
                have.value if have is not None else None,
                have.detail if have is not None else "",
            )
            for hook in self.status_hooks:
                try:
                    hook(change)
                except Exception:
                    log.exception("status hook failed", extra={"endpoint": endpoint})

    # -- telemetry rows: coalesced, one group-committed write per event-loop turn -----------
    def _queue_row(self, row: dict[str, Any]) -> None:
        self._rows[(row["endpoint"], row["dimension"])] = row
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand the queued reported rows to the store's group commit (nobody waits)."""
        self._flush_due = False
        if not self._rows:
            return
        rows = list(self._rows.values())
        self._rows.clear()
        self.flushed_rows += len(rows)
        repo = self.repository
        self.store.write_nowait(lambda tx: repo.write_reported(tx, rows))


__all__ = ["ACTOR", "Hold", "StateObserver", "StatusChange", "supported_paths"]
