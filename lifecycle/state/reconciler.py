"""The reconciler: drives enforced dimensions of devices that are not in a campaign to their
desired value, one device at a time per worker, event-driven, rate-limited, queue-mode aware.

Shape:

* :class:`WorkQueue` (sans-IO, time passed in): one entry per endpoint however often it is
  pushed (kinds merge: ``observe``, ``reconcile``), FIFO, optional not-before times for
  backoff; an endpoint being worked on is never handed out twice -- a push meanwhile is kept
  and re-queued when the worker finishes. Sleeping devices are *parked* and re-queued by
  :meth:`WorkQueue.wake` when the device shows it is awake (its Registered / Updated event or
  a notification), so no worker ever waits for a sleeper.
* :class:`TokenBucket` (sans-IO): device-changes started per second (``rate``, ``burst``);
  workers (``concurrency``) cap how many devices are worked on at once.
* :class:`Reconciler`: the asyncio shell. A pass over one device reads its desired state,
  skips what is applied, failed, report-only or excluded (``excluded(endpoint, dimension)``:
  the campaigns hook), and runs the step :func:`~lifecycle.state.dimensions.plan` names for
  each remaining dimension in :data:`~lifecycle.state.dimensions.ORDER`; then it reads the
  changed values back and records them (verified: the generation rule stamps
  ``observed_generation``) together with one audit record of the pass.

Verification. A dimension whose values our observation carries (feature flags; config's
Applied Version and Apply Result -- the staged digest is the one our Write just stored) is
verified by the device's own notification of the new value: the pass holds the device
(:meth:`~lifecycle.state.observer.StateObserver.hold`) and waits up to ``verify_wait``
seconds for it, and only what did not arrive by then, or what no observation carries
(connectivity's profiles, a config Apply that failed and whose detail is wanted), is read
back. The device sends that notification anyway; the read-back was a second round trip and a
second decode for the same fact. Device state and desired state come from the observer's
memory, not from a store read per pass.

APN switches. The device detaches on the link write and re-attaches; the pass waits until it
is back (an Update from a new address, or a notification naming the new APN active: a
static-IP APN keeps the address) or ``reattach_wait`` ran out, then reads it back. A device
that comes back before the write's answer arrived had that answer lost: the write is
cancelled rather than sat out to the request timeout.

Failures: a timeout, an unreachable device or a 5.03 is transient -- the pass is retried with
exponential backoff up to ``max_attempts``, then the dimension is marked failed ("gave up");
a 4.xx answer or a device result such as Apply Result 3 (invalid bundle) is permanent for
that generation: the dimension is marked failed at once, with the reason, and never retried
until an operator sets a new value (no retry storm). A device that de-registers mid-pass is
dropped; its next registration brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lifecycle.state.dimensions import (
    APPLICABLE,
    CFG_APPLIED,
    CFG_APPLY,
    CFG_DETAIL,
    CFG_DIGEST,
    CFG_FLAGS,
    CFG_INSTANCE,
    CFG_RESULT,
    FW_PACKAGE,
    FW_UPDATE,
    FW_URI,
    ORDER,
    WATCHED,
    Desired,
    Dimension,
    Fail,
    InstallFirmware,
    Policy,
    PullFirmware,
    PushFirmware,
    RotateCredentials,
    SetApns,
    Status,
    Step,
    Wait,
    WriteConfig,
    WriteFlags,
    plan,
    satisfies,
    status,
)
from lifecycle.state.observer import ACTOR, StateObserver
from lifecycle.state.repository import ConfigBundle, StateRepository
from lwm2m.codec.link import parse_links
from lwm2m.model import (
    DataType,
    MultipleResource,
    ObjectInstance,
    ObjLink,
    Path,
    SingleResource,
    Value,
)
from lwm2m.server import InvalidRequest, LwM2MServer, OperationResult, OperationStatus, ServerError
from lwm2m.store import Address, Store, Tx
from objects.builtin.fleet_config import FleetConfigResult

log = logging.getLogger("fleetloop.lifecycle.reconciler")

OBSERVE = "observe"
REOBSERVE = "reobserve"
RECONCILE = "reconcile"
CREDENTIALS_RECHECK = 60.0
"""Seconds after a credential rotation step before the device is looked at again."""
MAX_APN_SWITCHES = 3
"""Link writes per generation before a connectivity change counts as failed (the device kept
falling back: its carrier does not serve the APN)."""


# -- sans-IO cores ---------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; time is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is due (not taken)."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(slots=True)
class _Entry:
    kinds: set[str]
    not_before: float = 0.0


@dataclass
class WorkQueue:
    """Endpoints waiting for a worker (module docstring); time is passed in."""

    ready: deque[str] = field(default_factory=deque)
    entries: dict[str, _Entry] = field(default_factory=dict)
    active: dict[str, set[str]] = field(default_factory=dict)
    parked: dict[str, set[str]] = field(default_factory=dict)
    delayed: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, endpoint: str, kind: str, not_before: float = 0.0) -> bool:
        """Queue work on ``endpoint``; True when it became newly ready."""
        if endpoint in self.active:
            self.active[endpoint].add(kind)
            return False
        if endpoint in self.parked:
            self.parked[endpoint].add(kind)
            return False
        entry = self.entries.get(endpoint)
        if entry is not None:
            entry.kinds.add(kind)
            entry.not_before = min(entry.not_before, not_before) if not_before else 0.0
            if not entry.not_before and endpoint in self.delayed:
                del self.delayed[endpoint]
                self.ready.append(endpoint)
                return True
            return False
        self.entries[endpoint] = _Entry({kind}, not_before)
        if not_before:
            self.delayed[endpoint] = not_before
            return False
        self.ready.append(endpoint)
        return True

    def pop(self, now: float) -> tuple[str, set[str]] | None:
        """The next endpoint due and its kinds (it becomes active), or None."""
        for endpoint, due in list(self.delayed.items()):
            if due <= now:
                del self.delayed[endpoint]
                self.ready.append(endpoint)
        while self.ready:
            endpoint = self.ready.popleft()
            entry = self.entries.pop(endpoint, None)
            if entry is None:
                continue
            self.active[endpoint] = set()
            return endpoint, entry.kinds
        return None

    def next_due(self) -> float | None:
        """When the earliest delayed endpoint is due (None: nothing delayed)."""
        return min(self.delayed.values()) if self.delayed else None

    def done(self, endpoint: str) -> None:
        """The worker finished ``endpoint``; work pushed meanwhile is queued again."""
        again = self.active.pop(endpoint, set())
        for kind in sorted(again):
            self.push(endpoint, kind)

    def park(self, endpoint: str, kinds: Iterable[str]) -> None:
        """``endpoint`` sleeps: keep its work until :meth:`wake`."""
        again = self.active.pop(endpoint, set())
        self.parked.setdefault(endpoint, set()).update(kinds, again)

    def wake(self, endpoint: str) -> bool:
        """``endpoint`` is awake: its parked work becomes ready. True if there was some."""
        kinds = self.parked.pop(endpoint, None)
        if not kinds:
            return False
        for kind in sorted(kinds):
            self.push(endpoint, kind)
        return True

    def forget(self, endpoint: str) -> None:
        self.parked.pop(endpoint, None)
        self.delayed.pop(endpoint, None)
        self.entries.pop(endpoint, None)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): doubling from ``base``, at most ``cap``."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))


# -- outcomes of one device pass ---------------------------------------------------------------


class _Transient(Exception):
    pass


class _Permanent(Exception):
    pass


class _Asleep(Exception):
    pass


class _Gone(Exception):
    pass


def _check(result: OperationResult, what: str) -> None:
    """Raise the outcome class of a failed operation."""
    if result.ok:
        return
    detail = f"{what}: {result.status.value}" + (f" {result.code}" if result.code else "")
    if result.reason:
        detail += f" ({result.reason})"
    if result.status is OperationStatus.QUEUED_EXPIRED:
        raise _Asleep(detail)
    if result.status in (OperationStatus.DEREGISTERED, OperationStatus.SERVER_STOPPED):
        raise _Gone(detail)
    if result.status is OperationStatus.DEVICE_ERROR and (result.code or "").startswith("4."):
        raise _Permanent(detail)
    raise _Transient(detail)


def _status_outcome(failed: str | None, what: str) -> None:
    if failed is None:
        return
    if failed == OperationStatus.QUEUED_EXPIRED.value:
        raise _Asleep(f"{what}: {failed}")
    if failed in (OperationStatus.DEREGISTERED.value, OperationStatus.SERVER_STOPPED.value):
        raise _Gone(f"{what}: {failed}")
    raise _Transient(f"{what}: {failed}")


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    """Pacing and patience of the reconciler (env ``FLEETLOOP_RECONCILE_*`` in serve)."""

    rate: float = 500.0
    burst: float = 500.0
    #: Devices worked on at once. A worker is a coroutine that mostly waits for its device's
    #: round trips (and its verifying notification), so the bound is the devices' latency,
    #: not the server's CPU: measured, 32 left the server idle between answers.
    concurrency: int = 256
    max_attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    request_timeout: float = 30.0
    queue_deadline: float = 5.0
    #: Seconds a pass waits for the notification that verifies its change before it reads
    #: the value back instead (module docstring).
    verify_wait: float = 3.0
    #: Seconds a connectivity change waits for the device to come back after the APN link
    #: write (an Update from a new address, or a notification naming the new APN active);
    #: past it the pass reads the device back where it is registered -- the write's answer
    #: may have been lost, or the device re-attached on a static IP and its report was lost.
    reattach_wait: float = 60.0


@dataclass(slots=True)
class _Reattach:
    """A device told to switch its APN: where it was registered, the APN it should come back
    on, until when a pass waits for it, and whether it showed it is back (an Update from a
    new address, or a report of the new APN as its active one)."""

    address: Address
    apn: str
    deadline: float
    #: Set once it is back: a link write whose answer was lost need not wait any longer.
    back: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def returned(self) -> bool:
        return self.back.is_set()


@dataclass(slots=True)
class _Pass:
    """What one pass over one device did (for the audit record and the recording)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    verify: set[Dimension] = field(default_factory=set)
    read: set[Dimension] = field(default_factory=set)
    failures: dict[Dimension, str] = field(default_factory=dict)
    stale: set[Dimension] = field(default_factory=set)
    #: Dimensions this pass wrote (only their new values can come from a notification).
    changed: set[Dimension] = field(default_factory=set)
    #: Verified values no device resource reports (credentials: the rotation proven).
    reported: dict[Dimension, dict[str, Any]] = field(default_factory=dict)


class CredentialRotation(Protocol):
    """What the reconciler needs to rotate credentials: ``rotate`` answers ``"requested"``,
    ``"waiting"`` or ``"verified"`` and raises an exception whose ``permanent`` attribute
    says whether retrying could help (:mod:`lifecycle.artifacts.credentials`)."""

    async def rotate(self, endpoint: str, generation: int) -> str: ...


class ExternalApplier(Protocol):
    """Applies a dimension the LwM2M pass cannot (the eSIM profile: through the eIM). It is
    told which endpoints' desired values changed and records its verdicts itself
    (``StateObserver.record``), so status hooks and campaigns see them like any other."""

    def desired_changed(self, endpoints: list[str]) -> None: ...


class Reconciler:
    """The asyncio shell around :class:`WorkQueue` (module docstring)."""

    def __init__(
        self,
        server: LwM2MServer,
        store: Store,
        repository: StateRepository,
        observer: StateObserver,
        config: ReconcilerConfig | None = None,
        *,
        excluded: Callable[[str, Dimension], bool] | None = None,
        clock: Callable[[], float] = time.time,
        firmware_content: Callable[[str], Awaitable[bytes | None]] | None = None,
    ) -> None:
        self.server = server
        self.store = store
        self.repository = repository
        self.observer = observer
        self.config = config or ReconcilerConfig()
        self.excluded: Callable[[str, Dimension], bool] = excluded or (lambda ep, dim: False)
        self.clock = clock
        #: The bytes of a repository image by SHA-256 (push firmware); None: push unsupported.
        self.firmware_content = firmware_content
        #: Rotates a device's DM credentials (:class:`CredentialRotation`; serve sets
        #: :class:`lifecycle.artifacts.credentials.CredentialRotator` when the bootstrap server
        #: runs); None: a desired credentials generation fails, saying why.
        self.credentials: CredentialRotation | None = None
        #: Dimensions applied by another component (:class:`ExternalApplier`; serve sets the
        #: eIM's for esim when it runs); they are never part of an LwM2M pass.
        self.external: dict[Dimension, ExternalApplier] = {}
        self.queue = WorkQueue()
        self._loop_time: Callable[[], float] = time.monotonic
        self.bucket = TokenBucket(self.config.rate, self.config.burst, self._loop_time())
        self._attempts: dict[str, int] = {}
        self._attempted: dict[tuple[str, Dimension], int] = {}
        self._stale: dict[str, set[Dimension]] = {}
        self._reattach: dict[str, _Reattach] = {}
        self._switches: dict[tuple[str, Dimension], tuple[int, int]] = {}
        self._bundles: dict[str, ConfigBundle] = {}  # immutable once registered
        self._bundle_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._running = False
        #: Counters for operators, tests and the benchmark.
        self.stats: dict[str, int] = {
            "passes": 0,
            "applied": 0,
            "failed": 0,
            "retries": 0,
            "parked": 0,
            "observes": 0,
            "verified_by_notification": 0,
            "read_backs": 0,
        }
        observer.schedule = self.schedule
        observer.awake = self.wake

    # -- feeding ---------------------------------------------------------------------------
    def schedule(self, endpoint: str, kind: str = RECONCILE) -> None:
        """Ask for work on ``endpoint`` (deduplicated per endpoint)."""
        if kind == RECONCILE:
            self._attempts.pop(endpoint, None)
        if self.queue.push(endpoint, kind):
            self._wakeup.set()

    def wake(self, endpoint: str) -> None:
        """``endpoint`` talked to the server: run its parked work (and re-verify what it was
        changing when it went away)."""
        pending = self._reattach.get(endpoint)
        if pending is not None and not pending.returned:
            registration = self.server.registration(endpoint)
            moved = registration is not None and registration.address != pending.address
            # An Update from a new address, or a report of the new APN as active (from the
            # same address: a static-IP APN): it is back.
            if moved or self._attached_on(endpoint, pending.apn):
                pending.back.set()
        if self.queue.wake(endpoint):
            self._wakeup.set()
        elif self._stale.get(endpoint):
            self.schedule(endpoint, RECONCILE)  # runs after the current pass if one is on

    def _reattach_overdue(self, endpoint: str, pending: _Reattach) -> None:
        """The re-attach wait of ``endpoint`` ran out: look at the device again (the pass
        reads it back) -- nothing else would, if it never comes back."""
        if (
            self._reattach.get(endpoint) is pending
            and not pending.returned
            and self.queue.push(endpoint, RECONCILE)
        ):
            self._wakeup.set()

    def desired_changed(self, endpoints: Iterable[str]) -> None:
        """Desired values of ``endpoints`` changed (after the commit)."""
        endpoints = list(endpoints)
        self.observer.desired_changed(endpoints)
        for endpoint in endpoints:
            self.schedule(endpoint, RECONCILE)
        for applier in self.external.values():
            applier.desired_changed(endpoints)

    def start(self) -> None:
        """Start the workers and set up observations on devices already registered (a
        restart lost them)."""
        if self._running:
            return
        self._running = True
        for registration in self.server.registrations():
            self.queue.push(registration.endpoint, OBSERVE)
        self._wakeup.set()
        self._workers = [
            asyncio.create_task(self._worker(), name=f"reconciler-{i}")
            for i in range(self.config.concurrency)
        ]

    async def stop(self) -> None:
        self._running = False
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        await self.observer.drain()

    @property
    def idle(self) -> bool:
        """Nothing queued, delayed or being worked on (parked sleepers do not count)."""
        return not self.queue.entries and not self.queue.active

    # -- workers ---------------------------------------------------------------------------
    async def _worker(self) -> None:
        while self._running:
            item = self.queue.pop(self._loop_time())
            if item is None:
                self._wakeup.clear()
                due = self.queue.next_due()
                timeout = None if due is None else max(0.0, due - self._loop_time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                continue
            endpoint, kinds = item
            log.debug("pass starts", extra={"endpoint": endpoint, "kinds": sorted(kinds)})
            try:
                await self._work(endpoint, kinds)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciler pass failed", extra={"endpoint": endpoint})
                self.queue.done(endpoint)

    async def _work(self, endpoint: str, kinds: set[str]) -> None:
        if self.server.registration(endpoint) is None:
            self.queue.done(endpoint)
            self.queue.forget(endpoint)
            return
        if not self.server.is_awake(endpoint):
            self.stats["parked"] += 1
            self.queue.park(endpoint, kinds)
            return
        try:
            if OBSERVE in kinds or REOBSERVE in kinds:
                self.stats["observes"] += 1
                renew = REOBSERVE in kinds
                _status_outcome(await self.observer.establish(endpoint, renew=renew), "observe")
            if kinds & {RECONCILE, OBSERVE, REOBSERVE}:
                await self._reconcile(endpoint)
        except _Asleep as err:
            log.debug("device asleep; parked", extra={"endpoint": endpoint, "reason": str(err)})
            self.stats["parked"] += 1
            self.queue.park(endpoint, kinds)
            return
        except _Gone:
            self.queue.done(endpoint)
            return
        except (_Transient, ServerError) as err:
            log.debug("transient failure", extra={"endpoint": endpoint, "reason": str(err)})
            attempt = self._attempts.get(endpoint, 0) + 1
            self._attempts[endpoint] = attempt
            self.queue.done(endpoint)
            if attempt < self.config.max_attempts:
                self.stats["retries"] += 1
                delay = backoff(attempt, self.config.backoff, self.config.max_backoff)
                for kind in kinds:
                    self.queue.push(endpoint, kind, self._loop_time() + delay)
                self._wakeup.set()
            else:
                self._attempts.pop(endpoint, None)
                await self._give_up(endpoint, f"gave up after {attempt} attempts: {err}")
            return
        self._attempts.pop(endpoint, None)
        self.queue.done(endpoint)

    async def _give_up(self, endpoint: str, reason: str) -> None:
        desired, _ = await self.observer.state(endpoint)
        failures = {dim: reason for dim, want in desired.items() if self._enforced(endpoint, want)}
        if failures:
            self.stats["failed"] += len(failures)
            await self.observer.record(
                endpoint,
                {},
                "reconcile",
                failures=failures,
                reschedule=False,
                audit=self._audit(endpoint, [{"step": "give-up", "reason": reason}], "failed"),
            )

    def _enforced(self, endpoint: str, want: Desired) -> bool:
        return (
            want.policy is Policy.ENFORCE
            and want.dimension in APPLICABLE
            and not self.excluded(endpoint, want.dimension)
        )

    # -- one pass over one device --------------------------------------------------------------
    async def _bundle(self, desired: dict[Dimension, Desired]) -> ConfigBundle | None:
        config = desired.get(Dimension.CONFIG)
        name = config.value.get("bundle") if config is not None else None
        if name is None:
            return None
        found = self._bundles.get(str(name))
        if found is None:
            async with self._bundle_lock:  # one read, not one per worker, after a PUT
                found = self._bundles.get(str(name))
                if found is None:
                    repo = self.repository
                    found = await self.store.read(lambda tx: repo.bundle(tx, str(name)))
                    if found is not None:
                        self._bundles[found.name] = found
        return found

    async def _reconcile(self, endpoint: str) -> None:
        self.observer.hold(endpoint)
        try:
            await self._pass(endpoint)
        finally:
            await self.observer.release(endpoint)

    async def _pass(self, endpoint: str) -> None:
        desired, reported = await self.observer.state(endpoint)
        todo: list[Desired] = []
        for dim in ORDER:
            want = desired.get(dim)
            if want is None or not self._enforced(endpoint, want):
                continue
            state = status(want, reported.get(dim))
            if state in (Status.APPLIED, Status.FAILED):
                continue
            todo.append(want)
        if not todo:
            self._stale.pop(endpoint, None)
            self._reattach.pop(endpoint, None)
            return
        bundle = await self._bundle(desired)
        self.stats["passes"] += 1
        registration = self.server.registration(endpoint)
        away = self._reattach.pop(endpoint, None)
        if away is not None and (
            away.returned or registration is None or registration.address != away.address
        ):
            away = None  # back (or gone): nothing to wait for
        if away is not None and self._loop_time() < away.deadline:
            # A new APN is being attached: the device is unreachable until it shows it is
            # back (that wakes this endpoint again; the deadline's timer if nothing does).
            self._reattach[endpoint] = away
            return
        work = _Pass()
        if away is not None:  # the wait ran out
            work.steps.append(
                {
                    "dimension": Dimension.CONNECTIVITY.value,
                    "step": "no-reattach",
                    "reason": f"no sign of the device on APN {away.apn} within "
                    f"{self.config.reattach_wait:g} s (no Update from a new address, no report "
                    "of the APN): read back at its registered address",
                }
            )
        stale = self._stale.pop(endpoint, set())
        # A drift seen in a notification is confirmed by a read before it is corrected: a
        # notification overtaken by our own read-back must not undo a change.
        drifted = {
            w.dimension for w in todo if status(w, reported.get(w.dimension)) is Status.DRIFTED
        }
        refresh = ({w.dimension for w in todo} & stale) | drifted
        if refresh:
            # The device was changing these when it went away: see where it stands first.
            _status_outcome(await self.observer.read_back(endpoint, _paths(refresh)), "read back")
        leaves = self.observer.leaves.get(endpoint, {})
        for dim in sorted(drifted, key=lambda d: d.value):
            value = self.observer.values_of(endpoint, [dim]).get(dim)
            if not satisfies(dim, desired[dim].value, value):
                work.steps.append({"dimension": dim.value, "step": "drift-confirmed"})
        for want in todo:
            value = self.observer.values_of(endpoint, [want.dimension]).get(want.dimension)
            if value is not None and satisfies(want.dimension, want.value, value):
                work.verify.add(want.dimension)  # already there: verify for this generation
                continue
            attempted = self._attempted.get((endpoint, want.dimension)) == want.generation
            step = plan(want, leaves, bundle=_content(bundle, want), attempted=attempted)
            unread = work.verify - work.read
            if unread and isinstance(step, SetApns | InstallFirmware | RotateCredentials):
                # This step costs the device its connection (re-attach, reboot): read back
                # what was changed so far while it still answers.
                _status_outcome(await self.observer.read_back(endpoint, _paths(unread)), "verify")
                work.read |= unread
            await self._delay_for_rate()
            try:
                await self._apply(endpoint, want, step, work)
            except _Permanent as err:
                work.failures[want.dimension] = str(err)
                work.steps.append(
                    {"dimension": want.dimension.value, "outcome": "failed", "reason": str(err)}
                )
        if work.verify - work.read:
            await self._verify(endpoint, desired, work)
        if work.verify:
            self._config_result(endpoint, desired, work)
        if work.stale:
            self._stale.setdefault(endpoint, set()).update(work.stale)
        dims = work.verify | set(work.failures)
        if not dims and not work.steps:
            return
        values = self.observer.values_of(endpoint, work.verify)
        values.update(work.reported)
        outcome = "failed" if work.failures else "ok"
        done = await self.observer.record(
            endpoint,
            values,
            "verify",
            failures=work.failures,
            reschedule=False,
            audit=self._audit(endpoint, work.steps, outcome),
        )
        self.stats["applied"] += sum(
            1 for d in done if d.after is Status.APPLIED and d.before is not Status.APPLIED
        )
        self.stats["failed"] += len(work.failures)

    def _notified(self, endpoint: str, want: Desired) -> bool | None:
        """Whether the device's notified values verify ``want``: True, False (they show a
        failure: read back for its detail), None (not yet)."""
        leaves = self.observer.leaves.get(endpoint, {})
        if want.dimension is Dimension.CONFIG:
            code = leaves.get(CFG_RESULT)
            if isinstance(code, int) and code in _RESULT_CODES:
                result = FleetConfigResult(code)
                if result.is_failure or result is FleetConfigResult.ROLLED_BACK:
                    return False
                if result is not FleetConfigResult.APPLIED:
                    return None  # staged (idle) or applying: the outcome is still to come
        value = self.observer.values_of(endpoint, [want.dimension]).get(want.dimension)
        return True if value is not None and satisfies(want.dimension, want.value, value) else None

    async def _verify(self, endpoint: str, desired: dict[Dimension, Desired], work: _Pass) -> None:
        """Verify what the pass changed: from notifications where our observation carries
        the values (waiting up to ``verify_wait``), by reading back the rest."""
        unread = work.verify - work.read
        watched = self.observer.watched.get(endpoint, frozenset())
        held = self.observer.holds_observation(endpoint)
        awaited = {
            d
            for d in unread & work.changed
            if held and d in desired and all(p in watched for p in _NOTIFIED[d])
        }
        hold = self.observer.hold(endpoint)
        deadline = self._loop_time() + self.config.verify_wait
        while awaited:
            verdicts = {d: self._notified(endpoint, desired[d]) for d in awaited}
            if all(v is not None for v in verdicts.values()):
                break
            remaining = deadline - self._loop_time()
            if remaining <= 0:
                break
            hold.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hold.changed.wait(), remaining)
        verified = {d for d in awaited if self._notified(endpoint, desired[d]) is True}
        for dim in sorted(verified, key=lambda d: d.value):
            work.steps.append({"dimension": dim.value, "step": "verified", "by": "notification"})
        self.stats["verified_by_notification"] += len(verified)
        rest = unread - verified
        if rest:
            self.stats["read_backs"] += 1
            _status_outcome(await self.observer.read_back(endpoint, _paths(rest)), "verify")

    async def _delay_for_rate(self) -> None:
        while (wait := self.bucket.take(self._loop_time())) > 0:
            await asyncio.sleep(wait)

    def _config_result(self, endpoint: str, desired: dict[Dimension, Desired], work: _Pass) -> None:
        """A config Apply the device refused is a permanent failure of this generation."""
        if Dimension.CONFIG not in work.verify or Dimension.CONFIG in work.failures:
            return
        leaves = self.observer.leaves.get(endpoint, {})
        code = leaves.get(CFG_RESULT)
        if isinstance(code, int) and code in _RESULT_CODES and FleetConfigResult(code).is_failure:
            detail = str(leaves.get(CFG_DETAIL) or "")
            reason = f"apply result {FleetConfigResult(code).name.lower()} ({code})"
            work.failures[Dimension.CONFIG] = f"{reason}: {detail}" if detail else reason

    async def _apply(self, endpoint: str, want: Desired, step: Step, work: _Pass) -> None:
        dim = want.dimension
        server, timeout, deadline = (
            self.server,
            self.config.request_timeout,
            self.config.queue_deadline,
        )
        ops: dict[str, Any] = {"timeout": timeout, "queue_deadline": deadline}
        record: dict[str, Any] = {"dimension": dim.value, "generation": want.generation}
        try:
            if isinstance(step, Wait):
                record.update(step="wait", reason=step.reason)
            elif isinstance(step, Fail):
                raise _Permanent(step.reason)
            elif isinstance(step, WriteFlags):
                node = MultipleResource(
                    CFG_FLAGS.ids[2],
                    DataType.STRING,
                    {i: Value.string(e) for i, e in enumerate(step.entries)},
                )
                _check(await server.write(endpoint, CFG_FLAGS, node, **ops), "write flags")
                record.update(step="write-flags")
                work.verify.add(dim)
                work.changed.add(dim)
            elif isinstance(step, WriteConfig):
                instance = ObjectInstance.of(
                    0,
                    [
                        SingleResource(0, Value.string(step.version)),
                        SingleResource(1, Value.opaque(step.bundle)),
                        SingleResource(2, Value.opaque(step.digest)),
                    ],
                )
                _check(
                    await server.write(endpoint, CFG_INSTANCE, instance, replace=False, **ops),
                    "write config",
                )
                # The device stored what it acknowledged: the staged digest is ours now, and
                # staging resets the result (and its detail) -- object 32001's contract.
                leaves = self.observer.leaves.setdefault(endpoint, {})
                leaves[CFG_DIGEST] = step.digest
                leaves[CFG_DETAIL] = ""
                escaped = step.version.replace("'", "")
                _check(
                    await server.execute(endpoint, CFG_APPLY, f"0='{escaped}'", **ops),
                    "apply config",
                )
                record.update(step="write-apply-config", version=step.version)
                work.verify.add(dim)
                work.changed.add(dim)
            elif isinstance(step, SetApns) and self._attached_on(endpoint, step.active):
                # Already attached on the active APN: the link write changes nothing and the
                # device does not re-attach -- read it back now (else: pending for ever).
                await self._set_apns(endpoint, step, record, ops)
                work.verify.add(dim)
                work.changed.add(dim)
            elif isinstance(step, SetApns):
                key = (endpoint, dim)
                switches = self._switches.get(key, (want.generation, 0))
                switches = switches if switches[0] == want.generation else (want.generation, 0)
                if switches[1] >= MAX_APN_SWITCHES:
                    raise _Permanent(
                        f"the device left APN {step.active} {switches[1]} times (it falls back: "
                        "its carrier may not serve it)"
                    )
                self._switches[key] = (want.generation, switches[1] + 1)
                # The device re-attaches (new address, then an Update) once the link changes:
                # mark it before the write, so an Update that beats this pass is not missed.
                registration = self.server.registration(endpoint)
                if registration is not None:
                    pending = _Reattach(
                        registration.address,
                        step.active,
                        self._loop_time() + self.config.reattach_wait,
                    )
                    self._reattach[endpoint] = pending
                    asyncio.get_running_loop().call_later(
                        self.config.reattach_wait, self._reattach_overdue, endpoint, pending
                    )
                self._stale.setdefault(endpoint, set()).add(dim)
                await self._set_apns(endpoint, step, record, ops, pending)
            elif isinstance(step, PullFirmware):
                _check(
                    await server.write(
                        endpoint, FW_URI, SingleResource(1, Value.string(step.uri)), **ops
                    ),
                    "write package uri",
                )
                self._attempted[(endpoint, dim)] = want.generation
                record.update(step="pull-firmware", uri=step.uri)
            elif isinstance(step, PushFirmware):
                content = None
                if self.firmware_content is not None:
                    content = await self.firmware_content(step.image)
                if content is None:
                    raise _Permanent(
                        f"firmware image {step.image[:16]} is not in the repository (or is "
                        "quarantined): push needs a published image"
                    )
                # Block1 of the whole image: one round trip per 1 KiB block.
                push_ops = dict(ops, timeout=max(timeout, 5.0 + len(content) / 1024.0))
                package = SingleResource(FW_PACKAGE.ids[2], Value.opaque(content))
                _check(
                    await server.write(endpoint, FW_PACKAGE, package, **push_ops), "push package"
                )
                self._attempted[(endpoint, dim)] = want.generation
                record.update(step="push-firmware", image=step.image, size=len(content))
            elif isinstance(step, RotateCredentials):
                await self._rotate(endpoint, step, work, record)
            elif isinstance(step, InstallFirmware):
                _check(await server.execute(endpoint, FW_UPDATE, None, **ops), "execute update")
                self._attempted[(endpoint, dim)] = want.generation
                record.update(step="install-firmware")
        except InvalidRequest as err:
            raise _Permanent(f"{dim.value}: {err}") from None
        if "step" in record:
            work.steps.append(record)

    async def _rotate(
        self, endpoint: str, step: RotateCredentials, work: _Pass, record: dict[str, Any]
    ) -> None:
        """Rotate the DM credentials by re-bootstrap; verified once the device registered
        with the new key (the rotator decides), which no resource reports: the value is
        recorded from here."""
        if self.credentials is None:
            raise _Permanent(
                "credential rotation needs the bootstrap server (fleetloop serve with "
                "--bs-coap or --bs-coaps on): only it may write the Security object"
            )
        try:
            progress = await self.credentials.rotate(endpoint, step.generation)
        except Exception as err:
            if getattr(err, "permanent", False):
                raise _Permanent(f"rotate credentials: {err}") from None
            raise _Transient(f"rotate credentials: {err}") from None
        if progress == "verified":
            work.reported[Dimension.CREDENTIALS] = {"generation": step.generation}
            work.verify.add(Dimension.CREDENTIALS)
            work.read.add(Dimension.CREDENTIALS)  # nothing to read back: the rotator proved it
            record.update(step="verified", by="registration with the new key")
            return
        if progress == "requested":
            record.update(step="rotate-credentials", via="re-bootstrap")
        else:
            record.update(step="wait", reason="re-bootstrap under way")
        # The device's new registration normally brings the next pass; look again later in
        # case it never comes (the rotator then asks again, or the device is gone).
        asyncio.get_running_loop().call_later(
            CREDENTIALS_RECHECK, self.schedule, endpoint, RECONCILE
        )

    def _attached_on(self, endpoint: str, apn: str) -> bool:
        """Whether the device reports ``apn`` as its active APN already."""
        value = self.observer.values_of(endpoint, [Dimension.CONNECTIVITY]).get(
            Dimension.CONNECTIVITY
        )
        return isinstance(value, dict) and value.get("active") == apn

    async def _set_apns(
        self,
        endpoint: str,
        step: SetApns,
        record: dict[str, Any],
        ops: dict[str, Any],
        pending: _Reattach | None = None,
    ) -> None:
        instances = dict(step.existing)
        for apn in step.create:
            created = await self.server.create(
                endpoint,
                "/11",
                [SingleResource(0, Value.string(apn)), SingleResource(1, Value.string(apn))],
                **ops,
            )
            _check(created, f"create APN profile {apn}")
            if created.location is None or created.location.instance_id is None:
                raise _Permanent(f"create APN profile {apn}: the device named no instance")
            instances[apn] = created.location.instance_id
        registration = self.server.registration(endpoint)
        server_instance = _first_instance(registration.object_links if registration else "", 1)
        link = Path.of(1, server_instance, 10)
        target = instances[step.active]
        node = SingleResource(10, Value(DataType.OBJLNK, ObjLink(11, target)))
        written = await _unless_back(self.server.write(endpoint, link, node, **ops), pending)
        if written is None:
            record["answer"] = "lost: the device came back on the new APN first"
        else:
            _check(written, "write APN link")
        record.update(
            step="set-apns", created=list(step.create), active=step.active, profile=target
        )

    def _audit(
        self, endpoint: str, steps: list[dict[str, Any]], outcome: str
    ) -> Callable[[Tx, float], None]:
        store = self.store

        def append(tx: Tx, now: float) -> None:
            store.audit.append(
                tx,
                actor=ACTOR,
                action="state.reconcile",
                subject=f"device:{endpoint}",
                now=now,
                endpoints=[endpoint],
                detail={"steps": steps},
                outcome=outcome,
            )

        return append


async def _unless_back(
    write: Awaitable[OperationResult], pending: _Reattach | None
) -> OperationResult | None:
    """The link write's result, or None when the device came back on the new APN before the
    answer did (the answer was lost: the device acted on the write, and waiting for the
    request's timeout would only hold the pass). The write is then cancelled."""
    if pending is None:
        return await write
    task = asyncio.ensure_future(write)
    back = asyncio.ensure_future(pending.back.wait())
    try:
        await asyncio.wait({task, back}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        back.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


def _first_instance(object_links: str, object_id: int) -> int:
    found = []
    for link in parse_links(object_links):
        path = link.path
        if path is not None and path.object_id == object_id and path.instance_id is not None:
            found.append(path.instance_id)
    return min(found) if found else 0


#: The observed paths a notification must carry to verify a dimension (:meth:`_verify`).
#: Object 32001's result codes (built once: ``set(FleetConfigResult)`` per check was a
#: measurable share of a 10 000-device campaign's verify loop).
_RESULT_CODES = frozenset(int(r) for r in FleetConfigResult)

_NOTIFIED: dict[Dimension, tuple[Path, ...]] = {
    Dimension.FLAGS: (CFG_FLAGS,),
    Dimension.CONFIG: (CFG_APPLIED, CFG_RESULT),
    Dimension.CONNECTIVITY: (Path.of(11),),  # profiles are read, not observed: read back
    Dimension.FIRMWARE: (Path.of(3, 0, 3), Path.of(5, 0, 3), Path.of(5, 0, 5)),
}


def _paths(dims: Iterable[Dimension]) -> list[Path]:
    seen: list[Path] = []
    for dim in dims:
        for path in WATCHED[dim]:
            if path not in seen:
                seen.append(path)
    return seen


def _content(bundle: ConfigBundle | None, want: Desired) -> bytes | None:
    if want.dimension is not Dimension.CONFIG or bundle is None:
        return None
    return bundle.content if bundle.digest == want.value.get("digest") else None


__all__ = [
    "OBSERVE",
    "RECONCILE",
    "ExternalApplier",
    "Reconciler",
    "ReconcilerConfig",
    "TokenBucket",
    "WorkQueue",
    "backoff",
]
