"""The campaign engine as ``fleetloop serve`` runs it: persistence, the per-device and per-wave
state machine, and one asyncio runner -- delivering every change **through desired state**.

Python API (for the API routes, the CLI, the SSE stream and the console)::

    campaigns = CampaignComponent(server, store, state, inventory, clock=time.time)
    campaigns.install(service)          # event handlers + the state layer's status hook
    campaigns.start()                   # loads active campaigns from the tables, runs
    await campaigns.stop()

    plan = await campaigns.plan(spec)                   # dry run -> model.Plan
    cid = await campaigns.create(spec, actor="op", token_id=None, tenant=None)
    await campaigns.pause(cid, actor=...)               # no more admissions
    await campaigns.resume(cid, actor=...)              # paused / inconclusive / halted -> running
    await campaigns.approve(cid, actor=...)             # leave the canary (approval) or accept
                                                        # an inconclusive gate
    await campaigns.abort(cid, revert=True, actor=...)  # revert everything changed, or keep it
    await campaigns.rollback(cid, selector="region=eu", actor=...)  # revert matching devices
    await campaigns.quarantine("bundle-v9", actor=..., reason="...")  # halts its campaigns
    campaigns.quarantined() -> {artifact: {reason, actor, at}}
    await campaigns.status(cid)   # dict: state, reason, counts, per wave & cohort, verdicts
    await campaigns.status(cid, waves=False)            # constant cost: state and counts
    await campaigns.report(cid, limit=1000)  # what changed where, failures, why it stopped
    await campaigns.list(states=None, tenants=None)     # summaries, newest first
    campaigns.holder(endpoint, dimension) -> campaign id | None
    async for event in campaigns.subscribe(): ...       # progress events (dicts) for SSE
    await campaigns.ready()       # the active campaigns are loaded (after start)

Errors: :class:`~lifecycle.campaigns.model.CampaignError` (``field``, ``message``) for a
request that is wrong (422), :class:`CampaignConflict` (a subclass) for one that conflicts
with the campaign's state or another campaign (409), :class:`UnknownCampaign` (404).

How it works (docs/CAMPAIGNS.md, "How a campaign runs"):

* **Delivery is desired state.** Admitting a device writes its desired value for the first
  component (``StateRepository.set_desired``, actor ``campaign:<id>``) in the same
  transaction as its ``lc_campaign_device`` row and an idempotency key in
  ``lc_campaign_step``; after the commit the reconciler is told (``desired_changed``). The
  reconciler delivers, retries transient failures with backoff and verifies by the
  generation rule; the state observer's status hook tells this engine (no polling) when the
  generation the campaign wrote becomes APPLIED or FAILED. The next component is written
  only when the previous one verified.
* **One runner, ticks.** Hooks and events only append to an in-memory queue and wake the
  runner. A tick drains the queue, applies deadlines and bake ends, admits devices (pacing,
  maintenance windows), writes every dirty row and every desired value of the tick in ONE
  transaction, tells the reconciler, and then evaluates the gates on what is now committed.
  A gate's consequence (a revert, a halt) is again written before it is acted on. Between
  events the runner sleeps until the next due time (a deadline, a bake end, a pacing slot).
* **Nothing is excluded from the reconciler.** The state component's ``excluded`` hook
  stays unused: a campaign's devices are the reconciler's to deliver to, like any other.
* **Phases (an eSIM switch).** A change whose first component is ``esim_download``
  (:attr:`CampaignSpec.phase_split`) runs each wave in two gated phases: **download** -- the
  devices are admitted and get the download; one whose download verified waits in STAGED --
  and, once every device of the wave is staged or final and the wave's gates passed on
  those outcomes, **enable**: the staged devices go on to the enable with rollbackFlag and
  the components after it. A download gate that fails halts the campaign (or reverts the
  cohort) before anything of that wave is enabled, and no device whose download did not
  verify is ever enabled. The wave's phase and the download gate's verdicts are rows
  (``lc_campaign_phase``), written in the tick that moves the staged devices on.
  The enable is verified only when, after the eUICC's signed result, the device registers
  or updates its registration with the DM server within ``deadlines.registered``
  (REGISTERING; silence is TIMED_OUT, counted by the gates) -- and, where the eIM's applier
  offers ``check_carrier`` (lifecycle.esim), over the expected network: it reads /4/0/9-10
  and a PLMN the esim value's ``plmns`` do not list fails the device (counted by the gates).
* **Crash safety.** Every transition is a row before it has effects; a restart rebuilds
  memory from the tables and resumes: devices admitted before the crash have their desired
  value and their key (never written twice), queued ones are admitted once, deadlines are
  absolute. A desired value already equal to the campaign's is not a new generation, and
  one already verified counts as verified at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from lifecycle.campaigns.model import (
    CampaignError,
    CampaignSpec,
    CampaignState,
    DeviceState,
    FailureKind,
    Member,
    Membership,
    OnFailure,
    Plan,
    Scope,
    Telemetry,
    Verdict,
)
from lifecycle.campaigns.repository import CampaignRepository
from lifecycle.campaigns.runs import (
    CHANGED,
    DOWNLOAD,
    ENABLE,
    IN_FLIGHT,
    CampaignRun,
    DeviceRun,
    WaveRun,
)
from lifecycle.campaigns.views import report_of, status_of
from lifecycle.campaigns.zones import utc_offset
from lifecycle.inventory import DeviceRecord
from lifecycle.inventory_events import InventoryService
from lifecycle.selector import Selector, SelectorError, parse_selector
from lifecycle.service import LifecycleService
from lifecycle.state.component import StateComponent
from lifecycle.state.dimensions import (
    Desired,
    Dimension,
    Policy,
    Reported,
    StateError,
    Status,
    parse_desired,
    status,
)
from lifecycle.state.observer import StatusChange
from lwm2m.server import Deregistered, Expired, LwM2MServer, Registered, Updated
from lwm2m.store import Store, Tx

log = logging.getLogger("fleetloop.lifecycle.campaigns")

GATE_INTERVAL_S = 0.2
#: The gates wait this many times the last judgement's duration before the next one.
GATE_SHARE = 25
_ZERO = (0, 0, 0)
_FINAL = frozenset(s for s in DeviceState if s.final)
"""Gates are judged at most this often per campaign (every report would cost a pass over the
wave's outcomes)."""

MAX_AUDIT_ENDPOINTS = 1000
"""Endpoints named in one audit record (the record keeps the count of all)."""


class CampaignConflict(CampaignError):
    """The request conflicts with the campaign's state or another campaign (HTTP 409);
    ``holders``: the other campaigns in the way, where that is the conflict."""

    holders: tuple[str, ...] = ()


class UnknownCampaign(LookupError):
    def __init__(self, campaign: str) -> None:
        super().__init__(f"no campaign {campaign!r}; see `fleetloop campaign list`")
        self.campaign = campaign


@dataclass(slots=True)
class _Write:
    """A desired value to write in the tick's transaction (with its idempotency key)."""

    run: CampaignRun
    device: DeviceRun
    dimension: Dimension
    value: Mapping[str, Any]
    step: str
    attempt: int
    revert: bool = False
    capture: bool = False  # record the rollback targets first (admission)
    late: bool = False
    """With ``capture``: record only this dimension's target, where admission found none (an
    eSIM profile the eIM learns of in the download phase; the campaign has not written this
    dimension yet, so the value now is still the value before it)."""


@dataclass(slots=True)
class _Event:
    kind: str  # "status" | "registered" | "gone" | "join" | "carrier" | "carrier_failed"
    endpoint: str
    change: StatusChange | None = None
    detail: str = ""
    record: DeviceRecord | None = None


_FINAL_OK = (Verdict.PASSED,)

_WAITING = -2
"""``DeviceRun.reverts`` value of a dimension whose revert waits for the one after it."""

_BACK = (DeviceState.REVERTING, DeviceState.REVERTED)

_STOPPED = (
    CampaignState.HALTED,
    CampaignState.PAUSED,
    CampaignState.INCONCLUSIVE,
    CampaignState.AWAITING_APPROVAL,
)


def _verdict_json(v: Any) -> dict[str, Any]:
    return {
        "scope": v.scope.value,
        "key": v.key,
        "verdict": v.verdict.value,
        "reasons": list(v.reasons),
        "counts": dict(v.counts),
    }


def _target(
    dimension: Dimension,
    desired: Desired | None,
    reported: Reported | None,
    firmware: Callable[[str], dict[str, Any] | None] = lambda version: None,
) -> Any:
    """A device's last-known-good value of ``dimension``: its desired value, else its
    reported value when that is a usable desired value, else None (no rollback target).

    A reported firmware version is usable when the firmware repository holds exactly one
    image of that version (``firmware(version)``: its push value) -- the device is put back
    on the very image it ran, delivered by fleetloop itself."""
    if desired is not None:
        return dict(desired.value)
    if reported is None or reported.value is None:
        return None
    value = dict(reported.value)
    try:
        if dimension is Dimension.CONFIG:
            digest = value.get("staged_digest")
            if not digest:
                return None
            return parse_desired(
                dimension,
                {"version": value.get("version"), "digest": digest, "bundle": value.get("version")},
            )
        if dimension is Dimension.FIRMWARE:
            version = value.get("version")
            return firmware(version) if isinstance(version, str) else None
        if dimension is Dimension.ESIM:  # the profile it runs, confirmed by the eUICC
            if value.get("state", "enabled") != "enabled":
                return None
            return parse_desired(dimension, {"iccid": value.get("iccid")})
        if dimension is Dimension.ESIM_DOWNLOAD:
            return None  # a download is not undone (the profile stays, disabled)
        return parse_desired(dimension, value)
    except StateError:
        return None


def _firmware_image(tx: Tx, version: str) -> dict[str, Any] | None:
    """The push value of the one repository image of ``version`` (None: none, several, or
    quarantined -- then the device has no firmware rollback target, and the report says so)."""
    from lifecycle.artifacts.firmware import FirmwareError, FirmwareRepository, firmware_component

    try:
        image = FirmwareRepository().resolve(tx, version)
        return dict(firmware_component(image, base_uri="", method="push").value)
    except FirmwareError:
        return None


class CampaignComponent:
    """Campaign persistence, state machine and runner (module docstring)."""

    def __init__(
        self,
        server: LwM2MServer,
        store: Store,
        state: StateComponent,
        inventory: InventoryService | None = None,
        *,
        clock: Callable[[], float] = time.time,
        coalesce_s: float = 0.05,
        max_sleep_s: float = 5.0,
    ) -> None:
        self.server = server
        self.store = store
        self.state = state
        self.inventory = inventory
        self.clock = clock
        self.coalesce_s = coalesce_s
        self.max_sleep_s = max_sleep_s
        self.repository = CampaignRepository()
        self.runs: dict[str, CampaignRun] = {}
        self._holders: dict[tuple[str, Dimension], str] = {}
        self._members: dict[str, set[str]] = {}  # endpoint -> active campaigns holding it
        self._events: deque[_Event] = deque()
        self._writes: list[_Write] = []
        self._audits: list[dict[str, Any]] = []
        self._extra: list[Callable[[Tx], None]] = []  # more writes for the tick's transaction
        self._published: list[dict[str, Any]] = []
        self._quarantined: dict[str, dict[str, Any]] = {}
        self._pacers: dict[str, Any] = {}
        self._queues: dict[tuple[str, int], deque[str]] = {}
        self._gate_due: dict[str, float] = {}
        #: endpoint -> the guarded campaigns it is a control device of
        self._controls: dict[str, set[str]] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Whether any active campaign has dynamic membership (read from the writer thread).
        self._dynamic = False
        self._selectors: dict[str, Selector] = {}
        self._next_due: float | None = None
        #: Counters for operators, tests and the benchmark.
        self.stats: dict[str, int] = {"ticks": 0, "writes": 0, "rows": 0, "events": 0}
        self._carrier: dict[str, asyncio.Task[None]] = {}  # endpoint -> its carrier check

    # -- wiring ------------------------------------------------------------------------------
    def install(self, service: LifecycleService) -> None:
        """Register the event handlers (after the state component's) and the status hook."""
        service.on(Registered, self._on_registered)
        service.on(Updated, self._on_updated)
        service.on(Deregistered, self._on_gone)
        service.on(Expired, self._on_gone)
        self.state.observer.status_hooks.append(self._on_status)
        if self.inventory is not None:
            self.inventory.repository.on_change.append(self._on_inventory_change)

    def start(self) -> None:
        """Load the active campaigns and start the runner (returns at once)."""
        if self._task is None:
            self._running = True
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="campaigns")

    async def stop(self) -> None:
        self._running = False
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        for check in list(self._carrier.values()):
            check.cancel()
        self._carrier.clear()
        for queue in list(self._subscribers):
            queue.put_nowait(None)

    async def ready(self) -> None:
        """Wait until the active campaigns are loaded (after :meth:`start`)."""
        await self._loaded.wait()

    # -- hooks (quick: memory only) ---------------------------------------------------------
    def _on_status(self, change: StatusChange) -> None:
        if change.endpoint in self._members:
            self._events.append(_Event("status", change.endpoint, change))
            self._wakeup.set()
        if change.after is Status.FAILED and change.endpoint in self._controls:
            self._events.append(_Event("control", change.endpoint, detail="error"))
            self._wakeup.set()

    async def _on_registered(self, event: Registered) -> None:
        if event.endpoint in self._members:
            self._events.append(_Event("registered", event.endpoint))
            self._wakeup.set()

    async def _on_updated(self, event: Updated) -> None:
        """A registration Update: only a device waiting to be heard over its new eSIM
        profile (REGISTERING) cares -- the check here is a set lookup."""
        if event.endpoint in self._members:
            self._events.append(_Event("updated", event.endpoint))
            self._wakeup.set()

    async def _on_gone(self, event: Deregistered | Expired) -> None:
        kind = "expired" if isinstance(event, Expired) else "deregistered"
        if event.endpoint in self._members:
            self._events.append(_Event("gone", event.endpoint, detail=kind))
            self._wakeup.set()
        if event.endpoint in self._controls:
            self._events.append(_Event("control", event.endpoint, detail=kind))
            self._wakeup.set()

    def _on_inventory_change(self, tx: Tx, records: Iterable[DeviceRecord]) -> None:
        """Dynamic membership: a changed record may now match a dynamic campaign's selector
        (decided in the next tick). This runs inside the inventory's transaction, on the
        store's writer thread: it only appends to the (thread-safe) deque and wakes the
        runner through the loop -- no campaign state is read here."""
        if not self._dynamic or self._loop is None:
            return
        for record in records:
            self._events.append(_Event("join", record.endpoint, record=record))
        self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- the runner ----------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._load()
        except Exception:
            log.exception("loading the campaigns failed")
            raise
        finally:
            self._loaded.set()
        while self._running:
            try:
                async with self._lock:
                    await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("campaign tick failed; reloading from the tables")
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await self._load()
            now = self.clock()
            wait = self.max_sleep_s
            if self._next_due is not None:
                wait = max(0.0, min(wait, self._next_due - now))
            if self._events:
                wait = 0.0
            if wait > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
            if self.coalesce_s:
                await asyncio.sleep(self.coalesce_s)  # let a burst of reports gather

    async def _load(self) -> None:
        repo = self.repository

        def read(tx: Tx) -> tuple[list[CampaignRun], dict[str, dict[str, Any]]]:
            ids = repo.active_ids(tx) + repo.rolling_back_ids(tx)
            runs = [r for i in ids if (r := repo.load(tx, i)) is not None]
            quarantined = repo.quarantined(tx)
            # one quarantine: a firmware image quarantined in the repository is one for
            # campaigns too (campaigns name an image by its id)
            from lifecycle.artifacts.firmware import FirmwareRepository

            for image in FirmwareRepository().quarantined_images(tx):
                q = image.quarantine
                if image.id not in quarantined and q is not None:
                    quarantined[image.id] = {"reason": q.reason, "actor": q.by, "at": q.at}
            return runs, quarantined

        runs, quarantined = await self.store.read(read)
        self.runs = {}
        self._holders.clear()
        self._members.clear()
        self._queues.clear()
        self._events.clear()
        self._writes.clear()
        self._quarantined = quarantined
        self._dynamic = False
        self._controls.clear()
        for run in runs:
            run.reopened = not run.state.active  # an ended campaign rolling devices back
            self._adopt(run)
            if run.state.active and _guarded(run.spec):  # the guards' control cohort
                _, control = await self._members_of(run.spec)
                fresh = {e: k for e, k in control.items() if e not in run.devices}
                self._set_control(run, {**run.control, **fresh})
        # Devices mid-change: the reconciler lost its queue with the process; ask it again
        # (their desired values are committed; nothing is written twice).
        pending = [
            d.endpoint
            for run in runs
            for d in run.devices.values()
            if d.state in (DeviceState.DELIVERING, DeviceState.REVERTING)
        ]
        if pending:
            await self._recheck(pending)
        now = self.clock()
        for run in runs:  # heard over the new eSIM profile while the engine was down?
            for d in list(run.devices.values()):
                if d.state is DeviceState.REGISTERING:
                    self._heard_since(run, d, now)
        self._wakeup.set()

    def _adopt(self, run: CampaignRun) -> None:
        self.runs[run.id] = run
        if run.spec.membership is Membership.DYNAMIC:
            self._dynamic = True
        for endpoint, dim in run.holds():
            self._holders[(endpoint, dim)] = run.id
        ended = not run.state.active  # rolling back: only its reverting devices matter
        for endpoint, d in run.devices.items():
            if not ended or d.state is DeviceState.REVERTING:
                self._members.setdefault(endpoint, set()).add(run.id)
        for wave in run.waves:
            self._queues[(run.id, wave.index)] = deque(
                d.endpoint for d in run.in_wave(wave.index) if d.state is DeviceState.QUEUED
            )
        self._gate_due[run.id] = 0.0

    def _release(self, run: CampaignRun, device: DeviceRun | None = None) -> None:
        """Drop the holds of ``device`` (None: of the whole campaign, which ended)."""
        devices = [device] if device is not None else list(run.devices.values())
        for d in devices:
            for dim in run.spec.dimensions:
                if self._holders.get((d.endpoint, dim)) == run.id:
                    del self._holders[(d.endpoint, dim)]
            if device is None:
                held = self._members.get(d.endpoint)
                if held is not None:
                    held.discard(run.id)
                    if not held:
                        del self._members[d.endpoint]

    async def _recheck(self, endpoints: list[str]) -> None:
        """After a restart: what the state tables say of devices mid-change (a verification
        committed just before the crash, whose hook never reached us) becomes events."""
        repo = self.state.repository

        def read(tx: Tx) -> tuple[dict[str, Any], dict[str, Any]]:
            return repo.desired_of(tx, endpoints), repo.reported_of(tx, endpoints)

        desired, reported = await self.store.read(read)
        for endpoint in endpoints:
            for dim, want in desired.get(endpoint, {}).items():
                have = reported.get(endpoint, {}).get(dim)
                now_status = status(want, have)
                if now_status in (Status.APPLIED, Status.FAILED):
                    self._events.append(
                        _Event(
                            "status",
                            endpoint,
                            StatusChange(
                                endpoint,
                                dim,
                                want.generation,
                                Status.PENDING,
                                now_status,
                                have.value if have else None,
                                have.detail if have else "",
                            ),
                        )
                    )
        self.state.reconciler.desired_changed(endpoints)

    async def _tick(self) -> None:
        now = self.clock()
        self.stats["ticks"] += 1
        self._next_due = None
        self._drain(now)
        for run in list(self.runs.values()):
            self._timers(run, now)
            if run.state is CampaignState.RUNNING:
                self._admit(run, now)
        await self._flush(now)
        for _ in range(4):  # gates, and what their decisions change, until nothing does
            for run in list(self.runs.values()):
                self._gates(run, now)
                self._progress(run, now)
            if not self._dirty():
                break
            await self._flush(now)
        for run in [r for r in self.runs.values() if not r.state.active]:
            if run.counts.get(DeviceState.REVERTING):
                continue  # ended, still rolling devices back (abort --keep, rollback)
            self._release(run)
            self._drop_control(run)
            del self.runs[run.id]
        self._dynamic = any(r.spec.membership is Membership.DYNAMIC for r in self.runs.values())

    def _due(self, at: float) -> None:
        if self._next_due is None or at < self._next_due:
            self._next_due = at

    def _dirty(self) -> bool:
        return bool(self._writes or self._audits or self._extra) or any(
            r.dirty or r.dirty_devices or r.dirty_waves or r.dirty_telemetry
            for r in self.runs.values()
        )

    # -- events ------------------------------------------------------------------------------------
    def _drain(self, now: float) -> None:
        while self._events:
            event = self._events.popleft()
            self.stats["events"] += 1
            if event.kind == "join":
                self._join(event, now)
                continue
            if event.kind == "control":
                self._control_event(event.endpoint, event.detail, now)
                continue
            for cid in list(self._members.get(event.endpoint, ())):
                run = self.runs.get(cid)
                device = run.devices.get(event.endpoint) if run is not None else None
                if run is None or device is None:
                    continue
                if event.kind == "status" and event.change is not None:
                    self._status(run, device, event.change, now)
                elif event.kind == "registered" or (
                    event.kind == "updated" and device.state is DeviceState.REGISTERING
                ):
                    self._registered(run, device, now)
                elif event.kind == "gone":
                    self._gone_event(run, device, event.detail, now)
                elif event.kind in ("carrier", "carrier_failed"):
                    self._carrier_checked(run, device, event.kind == "carrier", event.detail, now)

    def _status(self, run: CampaignRun, d: DeviceRun, change: StatusChange, now: float) -> None:
        dim = change.dimension
        if change.after is Status.FAILED and d.state not in (
            DeviceState.QUEUED,
            DeviceState.SKIPPED,
        ):
            # an error result (a telemetry guard's input, as for the control cohort), unless
            # it is the outcome of this campaign's own step, which the failure rules count
            own = (
                d.state in (DeviceState.DELIVERING, DeviceState.REGISTERING)
                and dim is run.component(d.component).dimension
                and change.generation == d.generation
            ) or (
                d.state is DeviceState.REVERTING and change.generation == d.reverts.get(dim.value)
            )
            if not own:
                d.error_results += 1
                self._telemetry_changed(run, d, now)
        if d.state is DeviceState.DELIVERING:
            component = run.component(d.component)
            if dim is not component.dimension or change.generation != d.generation:
                return
            if change.after is Status.APPLIED:
                d.acked = True
                switched = d.rollback.get(dim.value) != dict(component.value_for(d.member))
                if dim is Dimension.ESIM:  # the profile switched (not the carrier check's plmns)
                    before = d.rollback.get(dim.value) or {}
                    switched = before.get("iccid") != component.value_for(d.member).get("iccid")
                if dim is Dimension.ESIM and run.spec.phase_split and switched:
                    # the signed result is in; verified once the device is heard again (not
                    # where it ran this profile already: nothing switched, nothing to hear)
                    d.verified_at = now
                    d.deadline = now + self._registration_budget(run, d)
                    run.move(d, DeviceState.REGISTERING, now, "")
                    self._due(d.deadline)
                    self._heard_since(run, d, now)
                else:
                    self._advance(run, d, now)
            elif change.after is Status.FAILED:
                kind = _classify(dim, change)
                d.acked = kind is not FailureKind.TRANSIENT
                d.failure = kind
                d.deadline = None
                run.move(d, DeviceState.FAILED, now, f"{dim.value}: {change.detail or 'failed'}")
        elif d.state is DeviceState.REGISTERING:
            component = run.component(d.component)
            if dim is component.dimension and change.after is not Status.APPLIED:
                d.failure = (
                    _classify(dim, change)
                    if change.after is Status.FAILED
                    else FailureKind.DEVICE_PERMANENT
                )
                d.deadline = None
                run.move(
                    d,
                    DeviceState.FAILED,
                    now,
                    f"{dim.value} went {change.after.value} before the device registered over "
                    f"it" + (f": {change.detail}" if change.detail else ""),
                )
        elif d.state in (DeviceState.VERIFIED, DeviceState.STAGED):
            if dim in run.spec.dimensions and change.after is not Status.APPLIED:
                d.failure = FailureKind.DEVICE_PERMANENT
                when = "during the bake" if d.state is DeviceState.VERIFIED else "while staged"
                run.move(
                    d,
                    DeviceState.FAILED,
                    now,
                    f"{dim.value} went {change.after.value} {when}"
                    + (f": {change.detail}" if change.detail else ""),
                )
        elif d.state is DeviceState.REVERTING:
            want = d.reverts.get(dim.value)
            if not want or want < 0 or change.generation != want:
                return
            if change.after is Status.APPLIED:
                d.reverts[dim.value] = 0
                run.mark(d, now)
                if self._revert_next(run, d):
                    return
                if not any(d.reverts.values()):
                    d.deadline = None
                    run.move(d, DeviceState.REVERTED, now)
                    self._release(run, d)
            elif change.after is Status.FAILED:
                d.failure = _classify(dim, change)
                d.deadline = None
                run.move(
                    d, DeviceState.FAILED, now, f"revert of {dim.value} failed: {change.detail}"
                )

    def _advance(self, run: CampaignRun, d: DeviceRun, now: float) -> None:
        """``d``'s current component verified: the next one, STAGED at the end of the
        download phase while its wave is in it, or VERIFIED / SUCCEEDED after the last."""
        split = run.spec.phase_split
        if d.component + 1 == split and run.waves[d.wave].phase == DOWNLOAD:
            d.deadline = None
            run.move(d, DeviceState.STAGED, now, "downloaded; waiting for the wave's download gate")
            return
        if d.component + 1 < len(run.spec.components):
            self._next_component(run, d, now)
            return
        d.verified_at = now
        d.deadline = None
        d.registrations = 0
        bake = run.waves[d.wave].bake_s
        if bake <= 0:  # nothing to bake: succeeded now (one row write, not two)
            run.move(d, DeviceState.SUCCEEDED, now)
            pacer = self._pacers.get(run.id)
            if pacer is not None:
                pacer.succeeded(1)
        else:
            run.move(d, DeviceState.VERIFIED, now)
            self._due(now + bake)

    def _next_component(self, run: CampaignRun, d: DeviceRun, now: float) -> None:
        if d.state is DeviceState.STAGED:
            d.reason = ""  # no longer waiting for the download gate
        d.component += 1
        nxt = run.component(d.component)
        d.generation = None
        d.deadline = now + self._budget(run, d, nxt.dimension)
        run.move(d, DeviceState.DELIVERING, now)
        self._writes.append(
            _Write(
                run,
                d,
                nxt.dimension,
                nxt.value_for(d.member),
                f"deliver:{d.component}:{nxt.dimension.value}",
                d.attempt,
                capture=d.rollback.get(nxt.dimension.value) is None,
                late=True,
            )
        )

    def _registration_budget(self, run: CampaignRun, d: DeviceRun) -> float:
        return run.spec.deadlines.registered_s + (d.member.wake_interval_s or 0.0)

    def _heard_since(self, run: CampaignRun, d: DeviceRun, now: float) -> None:
        """A REGISTERING device whose registration was renewed after the signed result (an
        Update that came while the engine was not running, or before the status hook in
        the same instant) completes its step now."""
        registration = self.server.registration(d.endpoint)
        since = d.verified_at
        if registration is None or since is None:
            return
        if max(registration.registered_at, registration.updated_at) > since:
            self._registered(run, d, now)

    def _registered(self, run: CampaignRun, d: DeviceRun, now: float) -> None:
        if d.state is DeviceState.REGISTERING:
            if d.endpoint in self._carrier or self._check_carrier(run, d):
                return  # verified (or failed) when the eIM's carrier check answers
            self._esim_registered(run, d, now, "")
            return
        if d.state is DeviceState.VERIFIED:
            d.registrations += 1
            run.mark(d, now)
            if d.registrations > 1:
                d.failure = FailureKind.ARTIFACT_BAD
                run.move(
                    d,
                    DeviceState.FAILED,
                    now,
                    f"reboot loop: registered {d.registrations} times during the bake",
                )

    def _esim_registered(self, run: CampaignRun, d: DeviceRun, now: float, carrier: str) -> None:
        d.registrations = 0
        d.reason = "registered over the new profile after the eUICC's signed result"
        detail: dict[str, Any] = {"wave": d.wave, "after_s": round(now - (d.verified_at or now), 3)}
        if carrier:
            d.reason += f"; {carrier}"
            detail["carrier"] = carrier
        self._audit(run, "campaign.esim_registered", now, [d.endpoint], detail)
        self._advance(run, d, now)

    def _check_carrier(self, run: CampaignRun, d: DeviceRun) -> bool:
        """Ask the eIM's applier (lifecycle.esim) which network ``d`` registered over, where it
        offers ``check_carrier``; the answer comes back as a "carrier" event. False: no check
        (the registration alone verifies)."""
        applier = self.state.reconciler.external.get(Dimension.ESIM)
        check = getattr(applier, "check_carrier", None)
        if check is None or self._loop is None:
            return False
        endpoint = d.endpoint
        value = dict(run.component(d.component).value_for(d.member))

        async def ask() -> None:
            try:
                verdict = await check(endpoint, value)
                ok, why = bool(verdict.ok), str(verdict.reason)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a broken check must not strand the device
                log.exception("campaigns: the carrier check failed", extra={"endpoint": endpoint})
                ok, why = True, f"carrier not checked (the check failed: {err})"
            finally:
                self._carrier.pop(endpoint, None)
            self._events.append(_Event("carrier" if ok else "carrier_failed", endpoint, detail=why))
            self._wakeup.set()

        self._carrier[endpoint] = self._loop.create_task(ask(), name=f"carrier-{endpoint}")
        return True

    def _carrier_checked(
        self, run: CampaignRun, d: DeviceRun, ok: bool, reason: str, now: float
    ) -> None:
        if d.state is not DeviceState.REGISTERING:
            return  # timed out, reverted or aborted meanwhile
        if ok:
            self._esim_registered(run, d, now, reason)
            return
        d.failure = FailureKind.DEVICE_PERMANENT
        d.deadline = None
        run.move(d, DeviceState.FAILED, now, f"esim: {reason}")
        detail = {"wave": d.wave, "carrier": reason}
        self._audit(run, "campaign.esim_registered", now, [d.endpoint], detail, outcome="failed")

    def _gone_event(self, run: CampaignRun, d: DeviceRun, kind: str, now: float) -> None:
        if d.state in (DeviceState.QUEUED, DeviceState.SKIPPED):
            return
        if kind == "expired":
            d.missed_updates += 1  # its registration lapsed: an Update it did not send
        else:
            d.deregistrations += 1
        self._telemetry_changed(run, d, now)
        if d.state is DeviceState.VERIFIED:
            d.failure = FailureKind.DEVICE_PERMANENT
            what = "registration expired" if kind == "expired" else "deregistered"
            run.move(d, DeviceState.FAILED, now, f"{what} during the bake")

    def _join(self, event: _Event, now: float) -> None:
        record = event.record
        if record is None:
            return
        for run in self.runs.values():
            if (
                run.spec.membership is not Membership.DYNAMIC
                or not run.state.active
                or run.state is CampaignState.REVERTING
                or record.endpoint in run.devices
                or (run.spec.tenant is not None and record.tenant != run.spec.tenant)
                or record.stage == "retired"
            ):
                continue
            selector = self._selectors.get(run.id)
            if selector is None:
                try:
                    selector = self._selectors[run.id] = parse_selector(run.spec.selector)
                except SelectorError:
                    continue
            if not selector.matches(record):
                continue
            member = self._member(record)
            if run.cohort_reverted(member) or any(
                self._holders.get((record.endpoint, dim)) not in (None, run.id)
                for dim in run.spec.dimensions
            ):
                continue
            wave = min(run.wave, len(run.waves) - 1)
            try:
                from lifecycle.campaigns.plan import admit_dynamic

                wave = admit_dynamic(self._plan_of(run), wave, member).index
            except ImportError:  # pragma: no cover - the planner lands separately
                pass
            device = DeviceRun(run.id, member, wave, updated_at=now)
            run.add(device)
            self._members.setdefault(record.endpoint, set()).add(run.id)
            for dim in run.spec.dimensions:
                self._holders[(record.endpoint, dim)] = run.id
            self._queues.setdefault((run.id, wave), deque()).append(record.endpoint)
            self._audit(run, "campaign.join", now, [record.endpoint], {"wave": wave})

    # -- deadlines, bakes ----------------------------------------------------------------------
    def _budget(self, run: CampaignRun, d: DeviceRun, dim: Dimension) -> float:
        dl = run.spec.deadlines
        budget = dl.delivered_s + dl.applied_s + dl.verified_s
        if dim in (Dimension.FIRMWARE, Dimension.CONNECTIVITY):
            budget += dl.registered_s
        if d.member.wake_interval_s:
            budget += d.member.wake_interval_s
        return budget

    def _timers(self, run: CampaignRun, now: float) -> None:
        succeeded = 0
        for endpoint in list(run.flight):
            d = run.devices[endpoint]
            if d.state is DeviceState.VERIFIED:
                end = (d.verified_at or now) + run.waves[d.wave].bake_s
                if end <= now:
                    run.move(d, DeviceState.SUCCEEDED, now)
                    succeeded += 1
                else:
                    self._due(end)
            elif d.deadline is not None:
                if d.deadline <= now:
                    d.failure = FailureKind.TIMED_OUT
                    what = "revert" if d.state is DeviceState.REVERTING else "change"
                    why = f"{what} not verified before its deadline"
                    if d.state is DeviceState.REGISTERING:
                        why = (
                            "the eUICC confirmed the enable, but the device did not register "
                            "with the DM server over the new profile within "
                            f"deadlines.registered ({run.spec.deadlines.registered_s:g} s)"
                        )
                    d.deadline = None
                    run.move(
                        d,
                        DeviceState.TIMED_OUT if what == "change" else DeviceState.FAILED,
                        now,
                        why,
                    )
                else:
                    self._due(d.deadline)
        if succeeded:
            pacer = self._pacers.get(run.id)
            if pacer is not None:
                pacer.succeeded(succeeded)

    # -- admission -------------------------------------------------------------------------------
    def _pacer(self, run: CampaignRun, now: float) -> Any:
        pacer = self._pacers.get(run.id)
        if pacer is None:
            from lifecycle.campaigns.plan import Pacer

            # after a restart the rate keeps the growth its successes earned
            done = run.counts.get(DeviceState.SUCCEEDED, 0)
            pacer = self._pacers[run.id] = Pacer(run.spec.pacing, now, succeeded=done)
        return pacer

    def _admit(self, run: CampaignRun, now: float) -> None:
        if run.wave >= len(run.waves):
            return
        wave = run.waves[run.wave]
        if wave.state == "pending":
            wave.state = "running"
            run.stale = True
            wave.started_at = now
            run.dirty_waves.add(wave.index)
            self._audit(
                run, "campaign.wave_start", now, [], {"wave": wave.index, "name": wave.name}
            )
            self._publish(
                {"type": "wave", "campaign": run.id, "wave": wave.index, "state": "running"}
            )
        if wave.state != "running":
            return
        if any(a in self._quarantined for a in run.artifacts):
            bad = next(a for a in run.artifacts if a in self._quarantined)
            run.set_state(CampaignState.HALTED, now, f"artifact {bad} is quarantined")
            return
        queue = self._queues.get((run.id, wave.index))
        if not queue:
            return
        pacer = self._pacer(run, now)
        windows = run.spec.windows
        in_window: Callable[..., bool] | None = None
        if windows:
            from lifecycle.campaigns.plan import in_window as in_window_fn

            in_window = in_window_fn
        flight = (DeviceState.DELIVERING, DeviceState.REGISTERING, DeviceState.VERIFIED)
        in_flight = sum(run.counts.get(s, 0) for s in flight)
        per_carrier: dict[str, int] = {}
        if run.spec.pacing.per_carrier:
            for endpoint in run.flight:
                d = run.devices[endpoint]
                if d.state in flight:
                    per_carrier[d.member.carrier] = per_carrier.get(d.member.carrier, 0) + 1
        deferred: list[str] = []
        first = run.component(0)
        while queue:
            endpoint = queue[0]
            found = run.devices.get(endpoint)
            if found is None or found.state is not DeviceState.QUEUED:
                queue.popleft()
                continue
            d = found
            if in_window is not None and not in_window(windows, d.member.utc_offset_minutes, now):
                deferred.append(queue.popleft())
                continue
            carrier = d.member.carrier
            wait = pacer.admit(now, carrier, in_flight, per_carrier.get(carrier, 0))
            if wait > 0:
                self._due(now + wait)
                break
            queue.popleft()
            in_flight += 1
            per_carrier[carrier] = per_carrier.get(carrier, 0) + 1
            d.component = 0
            d.attempt = 1
            d.admitted_at = now
            d.deadline = now + self._budget(run, d, first.dimension)
            run.move(d, DeviceState.DELIVERING, now)
            self._writes.append(
                _Write(
                    run,
                    d,
                    first.dimension,
                    first.value_for(d.member),
                    f"deliver:0:{first.dimension.value}",
                    1,
                    capture=True,
                )
            )
        if deferred:
            queue.extend(deferred)
            self._due(now + 60.0)  # windows are minutes wide: look again in a minute

    # -- the tick's one transaction ------------------------------------------------------------
    async def _flush(self, now: float) -> None:
        writes, self._writes = self._writes, []
        audits, self._audits = self._audits, []
        extra, self._extra = self._extra, []
        runs = [
            r
            for r in self.runs.values()
            if r.dirty or r.dirty_devices or r.dirty_waves or r.dirty_telemetry
        ]
        if not writes and not audits and not runs and not extra:
            return
        state_repo = self.state.repository
        repo = self.repository
        store = self.store
        # What to write, fixed now: ``write`` may run more than once (the group commit
        # re-runs a batch without a unit that failed), so it must not consume the marks.
        marks = [
            (r, r.dirty, sorted(r.dirty_waves), list(r.dirty_devices), sorted(r.dirty_telemetry))
            for r in runs
        ]

        def write(tx: Tx) -> list[StatusChange]:
            instant: list[StatusChange] = []
            # 1. rollback targets of devices being admitted (their values before us)
            capture = [w for w in writes if w.capture]
            if capture:
                eps = [w.device.endpoint for w in capture]
                desired = state_repo.desired_of(tx, eps)
                reported = state_repo.reported_of(tx, eps)
                images: dict[str, dict[str, Any] | None] = {}

                def firmware(version: str) -> dict[str, Any] | None:
                    if version not in images:
                        images[version] = _firmware_image(tx, version)
                    return images[version]

                for w in capture:
                    ep = w.device.endpoint
                    if w.late:
                        name = w.dimension.value
                        if w.device.rollback.get(name) is None:
                            w.device.rollback[name] = _target(
                                w.dimension,
                                desired[ep].get(w.dimension),
                                reported[ep].get(w.dimension),
                                firmware,
                            )
                        continue
                    w.device.rollback = {
                        dim.value: _target(
                            dim, desired[ep].get(dim), reported[ep].get(dim), firmware
                        )
                        for dim in w.run.spec.dimensions
                    }
            # 2. idempotency keys: a key already there means the value was written before
            by_run: dict[str, list[_Write]] = {}
            for w in writes:
                by_run.setdefault(w.run.id, []).append(w)
            todo: list[_Write] = []
            for cid, group in by_run.items():
                keys = [(w.device.endpoint, w.step, w.attempt) for w in group]
                taken = repo.steps_taken(tx, cid, keys)
                for w in group:
                    gen = taken.get((w.device.endpoint, w.step, w.attempt))
                    if gen is None:
                        todo.append(w)
                    else:
                        self._wrote(w, gen)
            # 3. the desired values, grouped by (dimension, value, campaign)
            groups: dict[tuple[str, str, str], list[_Write]] = {}
            for w in todo:
                key = (w.run.id, w.dimension.value, json.dumps(w.value, sort_keys=True))
                groups.setdefault(key, []).append(w)
            steps: list[dict[str, Any]] = []
            unchanged: list[tuple[_Write, int]] = []
            for (cid, _, _), group in groups.items():
                w0 = group[0]
                changes = state_repo.set_desired(
                    tx,
                    [w.device.endpoint for w in group],
                    {w0.dimension: dict(w0.value)},
                    policy=Policy.ENFORCE,
                    actor=f"campaign:{cid}",
                    now=now,
                )
                generation = {c.endpoint: c for c in changes}
                for w in group:
                    change = generation[w.device.endpoint]
                    self._wrote(w, change.generation)
                    steps.append(
                        {
                            "campaign": cid,
                            "endpoint": w.device.endpoint,
                            "step": w.step,
                            "attempt": w.attempt,
                            "generation": change.generation,
                            "at": now,
                        }
                    )
                    if not change.changed:
                        unchanged.append((w, change.generation))
            repo.add_steps(tx, steps)
            # 4. a value that was already the desired one may be verified (or failed) already
            if unchanged:
                eps = [w.device.endpoint for w, _ in unchanged]
                desired = state_repo.desired_of(tx, eps)
                reported = state_repo.reported_of(tx, eps)
                for w, gen in unchanged:
                    ep = w.device.endpoint
                    want = desired[ep].get(w.dimension)
                    have = reported[ep].get(w.dimension)
                    found = status(want, have)
                    if found in (Status.APPLIED, Status.FAILED):
                        instant.append(
                            StatusChange(
                                ep,
                                w.dimension,
                                gen,
                                Status.PENDING,
                                found,
                                have.value if have else None,
                                have.detail if have else "",
                            )
                        )
            # 5. the campaign rows (what was dirty when the tick began), then the audit
            for run, dirty, waves, endpoints, guards in marks:
                repo.save(
                    tx,
                    run,
                    campaign=dirty,
                    waves=waves,
                    endpoints=endpoints,
                    telemetry=guards,
                    now=now,
                )
            for record in audits:
                store.audit.append(tx, now=now, **record)
            for op in extra:
                op(tx)
            return instant

        instant = await store.write(write)
        self.stats["writes"] += 1
        for run, _, waves, endpoints, guards in marks:  # committed: clear what was written
            run.dirty = False
            run.dirty_waves.difference_update(waves)
            run.dirty_telemetry.difference_update(guards)
            run.dirty_devices.difference_update(endpoints)
            self.stats["rows"] += len(endpoints)
        if writes:
            self.state.reconciler.desired_changed(sorted({w.device.endpoint for w in writes}))
        for change in instant:
            self._events.append(_Event("status", change.endpoint, change))
        for run in runs:
            self._publish(
                {
                    "type": "progress",
                    "campaign": run.id,
                    "state": run.state.value,
                    "counts": {s.value: n for s, n in run.counts.items() if n},
                }
            )
        for event in self._published:
            self._publish_now(event)
        self._published.clear()

    def _wrote(self, w: _Write, generation: int) -> None:
        """Memory learns the generation a write made (in the transaction's thread; the
        device row written after it in the same transaction carries it)."""
        if w.revert:
            w.device.reverts[w.dimension.value] = generation
        else:
            w.device.generation = generation
        w.run.dirty_devices.add(w.device.endpoint)

    # -- gates and waves ----------------------------------------------------------------------
    def _telemetry_changed(self, run: CampaignRun, d: DeviceRun, now: float) -> None:
        run.mark(d, now)
        run.dirty_telemetry.add((d.wave, d.endpoint))
        run.stale = True

    def _set_control(self, run: CampaignRun, control: dict[str, tuple[str, str, str]]) -> None:
        self._drop_control(run)
        run.control = control
        for endpoint in control:
            self._controls.setdefault(endpoint, set()).add(run.id)

    def _drop_control(self, run: CampaignRun) -> None:
        for endpoint in run.control:
            held = self._controls.get(endpoint)
            if held is not None:
                held.discard(run.id)
                if not held:
                    del self._controls[endpoint]

    def _control_event(self, endpoint: str, kind: str, now: float) -> None:
        """A control device deregistered, let its registration lapse or reported an error
        result: counted for the wave running in each campaign it is a control of (written
        in this tick's transaction, before the gates read it)."""
        slot = {"deregistered": 0, "expired": 1, "error": 2}[kind]
        for cid in list(self._controls.get(endpoint, ())):
            run = self.runs.get(cid)
            if run is None or not run.state.active or not run.waves:
                continue
            index = min(run.wave, len(run.waves) - 1)
            if run.waves[index].started_at is None:
                continue
            counts = run.control_counts.setdefault((index, endpoint), [0, 0, 0])
            counts[slot] += 1
            run.dirty_telemetry.add((index, endpoint))
            run.stale = True

    def _control_of(self, run: CampaignRun, wave: int) -> dict[Scope, dict[str, Telemetry]]:
        """The control cohort's telemetry during ``wave``, per cohort scope and key."""
        if not run.control:
            return {}
        totals: dict[tuple[Scope, str], list[int]] = {}
        for endpoint, keys in run.control.items():
            counts = run.control_counts.get((wave, endpoint), _ZERO)
            for scope, key in zip(
                (Scope.REGION, Scope.CARRIER, Scope.POLICY_GROUP), keys, strict=True
            ):
                t = totals.setdefault((scope, key), [0, 0, 0, 0])
                t[0] += 1
                t[1] += counts[0]
                t[2] += counts[1]
                t[3] += counts[2]
        out: dict[Scope, dict[str, Telemetry]] = {}
        for (scope, key), v in totals.items():
            out.setdefault(scope, {})[key] = Telemetry(v[0], v[1], v[2], v[3])
        return out

    def _gates(self, run: CampaignRun, now: float) -> None:
        if run.state in _STOPPED and run.stale and run.waves:
            # Devices in flight finish after a halt (a pause ...): an artifact-bad failure
            # in the canary after the gate stopped it still quarantines the artifact (the
            # canary's second region boot-loops a little after the first).
            run.stale = False
            canary = [d for d in run.in_wave(0) if d.state is not DeviceState.SKIPPED]
            self._artifact_check(run, canary, now)
            return
        if run.state is not CampaignState.RUNNING or run.wave >= len(run.waves):
            return
        wave = run.waves[run.wave]
        if wave.state != "running":
            return
        if not run.stale:
            return
        due = self._gate_due.get(run.id, 0.0)
        if due > now:
            self._due(due)  # outcomes changed: judge them soon, not on every report
            return
        started = time.perf_counter()
        run.stale = False
        try:
            self._judge(run, wave, now)
        finally:
            # at most ~4% of the loop on gates, however big the wave (a 10 000-device wave
            # takes ~20 ms to judge: every ~0.5 s; the gates are cheap, the loop is not idle)
            spent = time.perf_counter() - started
            self._gate_due[run.id] = now + max(GATE_INTERVAL_S, GATE_SHARE * spent)

    def _judge(self, run: CampaignRun, wave: WaveRun, now: float) -> None:
        from lifecycle.campaigns.gates import evaluate_all

        # skipped devices are not judged, nor devices an operator rolled back (reverted
        # outside a reverted cohort): a separate outcome, not "unverified"
        devices = [
            d
            for d in run.in_wave(wave.index)
            if d.state is not DeviceState.SKIPPED
            and not (d.state in _BACK and not run.cohort_reverted(d.member))
            and not run.judged_in_download(d, wave)  # the download gate judged those
        ]
        queued = any(d.state is DeviceState.QUEUED for d in devices)
        downloading = wave.phase == DOWNLOAD
        outcomes = [
            _staged_ok(run.outcome(d)) if downloading else run.outcome(d)
            for d in devices
            if d.state is not DeviceState.QUEUED and not run.cohort_reverted(d.member)
        ]
        # A reverted cohort does not hold the wave up: the others carry on while it reverts.
        # In the download phase a staged device is done (its download verified).
        over = (_FINAL | {DeviceState.STAGED}) if downloading else _FINAL
        wave_over = not queued and all(
            d.state in over for d in devices if not run.cohort_reverted(d.member)
        )
        control = self._control_of(run, wave.index)
        verdicts = evaluate_all(
            run.spec.gates, outcomes, control=control or None, wave_over=wave_over
        )
        shown = [_verdict_json(v) for v in verdicts]
        keys = {(v["scope"], v["key"]) for v in shown}
        # a verdict acted on (a reverted cohort) stays on record after it leaves the outcomes
        shown += [
            v for v in wave.verdicts
            if (v["scope"], v["key"]) in wave.acted and (v["scope"], v["key"]) not in keys
        ]  # fmt: skip
        if shown != wave.verdicts:
            old = {(v["scope"], v["key"]): v["verdict"] for v in wave.verdicts}
            wave.verdicts = shown
            run.dirty_waves.add(wave.index)
            for row in shown:
                if (
                    row["verdict"] != Verdict.PENDING.value
                    and old.get((row["scope"], row["key"])) != row["verdict"]
                ):
                    detail = {"wave": wave.index, **row}
                    if wave.phase:
                        detail["phase"] = wave.phase
                    self._audit(run, "campaign.gate", now, [], detail, outcome=row["verdict"])
        # ARTIFACT_BAD in the canary: quarantine when it is not one cohort's problem
        if wave.index == 0:
            self._artifact_check(run, devices, now)
            if run.state is not CampaignState.RUNNING:
                return
        # Failures at the revert scope first, then the narrower scopes before the batch: one
        # region's failures also fail the batch (and maybe a carrier) -- revert the region,
        # and the next evaluation, without it, judges the rest.
        target = run.spec.revert_scope
        order = sorted(
            verdicts,
            key=lambda v: (v.scope is not target, v.scope is Scope.BATCH, v.scope.value, v.key),
        )
        for v in order:
            key = (v.scope.value, v.key)
            if key in wave.acted:
                continue
            if v.verdict is Verdict.FAILED:
                wave.acted.add(key)
                run.dirty_waves.add(wave.index)
                phase = f" {wave.phase} phase" if wave.phase else ""
                why = (
                    f"wave {wave.index} ({wave.name}){phase}: gate failed for "
                    f"{v.scope.value}={v.key}: " + "; ".join(v.reasons)
                )
                if downloading:
                    why += " (nothing of this wave was enabled)"
                if run.spec.on_failure is OnFailure.HALT:
                    run.set_state(CampaignState.HALTED, now, why)
                    self._audit(run, "campaign.halt", now, [], {"wave": wave.index, "reason": why})
                    self._publish(
                        {
                            "type": "state",
                            "campaign": run.id,
                            "state": run.state.value,
                            "reason": why,
                        }
                    )
                    return
                self._revert_cohort(run, wave, v.scope, v.key, now, why)
                return  # judge again without the reverted cohort
        for v in order:
            key = (v.scope.value, v.key)
            if key not in wave.acted and v.verdict is Verdict.INCONCLUSIVE:
                why = (
                    f"wave {wave.index} ({wave.name}): gate inconclusive for "
                    f"{v.scope.value}={v.key}: " + "; ".join(v.reasons)
                )
                run.set_state(CampaignState.INCONCLUSIVE, now, why)
                self._audit(
                    run, "campaign.inconclusive", now, [], {"wave": wave.index, "reason": why}
                )
                self._publish(
                    {"type": "state", "campaign": run.id, "state": run.state.value, "reason": why}
                )
                return
        if not wave_over:
            return
        undecided = [
            v
            for v in verdicts
            if v.verdict not in _FINAL_OK and (v.scope.value, v.key) not in wave.acted
        ]
        if undecided:
            return
        if downloading:
            self._enter_enable(run, wave, now)
            return
        wave.state = "done"
        wave.done_at = now
        run.dirty_waves.add(wave.index)
        self._audit(run, "campaign.wave_done", now, [], {"wave": wave.index, "name": wave.name})
        self._publish({"type": "wave", "campaign": run.id, "wave": wave.index, "state": "done"})
        run.wave += 1
        run.touch(now)
        self._due(now)  # the next wave's admissions: in the next tick, not at the next event
        if wave.approval and run.wave < len(run.waves):
            run.set_state(
                CampaignState.AWAITING_APPROVAL, now, f"{wave.name} done; approve to go on"
            )
            self._publish({"type": "state", "campaign": run.id, "state": run.state.value})

    def _enter_enable(self, run: CampaignRun, wave: WaveRun, now: float) -> None:
        """The download gate of ``wave`` passed on a complete outcome: the wave enters its
        enable phase and its staged devices go on to the enable (written in this tick's
        transaction together with the wave's new phase -- the barrier is a row)."""
        wave.phase_verdicts = [
            {**v, "acted": (v["scope"], v["key"]) in wave.acted} for v in wave.verdicts
        ]
        wave.verdicts = []
        wave.acted = set()
        wave.phase = ENABLE
        wave.phase_at = now
        run.dirty_waves.add(wave.index)
        run.stale = True
        staged = [
            d
            for d in run.in_wave(wave.index)
            if d.state is DeviceState.STAGED and not run.cohort_reverted(d.member)
        ]
        for d in staged:
            self._next_component(run, d, now)
        self._audit(
            run,
            "campaign.phase",
            now,
            [d.endpoint for d in staged],
            {"wave": wave.index, "name": wave.name, "phase": ENABLE, "enabling": len(staged)},
        )
        self._publish({"type": "phase", "campaign": run.id, "wave": wave.index, "phase": ENABLE})

    def _artifact_check(self, run: CampaignRun, devices: list[DeviceRun], now: float) -> None:
        bad: dict[str, set[str]] = {}
        regions = {d.member.region for d in devices if d.state is not DeviceState.QUEUED}
        for d in devices:
            if d.failure is FailureKind.ARTIFACT_BAD and d.state is DeviceState.FAILED:
                artifact = run.component(d.component).artifact
                if artifact and artifact not in self._quarantined:
                    bad.setdefault(artifact, set()).add(d.member.region)
        for artifact, where in bad.items():
            if len(where) >= min(2, len(regions)):
                self._quarantine_now(
                    artifact,
                    "system:campaigns",
                    now,
                    f"artifact-bad failures in the canary of {run.id} in {len(where)} region(s): "
                    + ", ".join(sorted(where)),
                )
                if run.spec.on_failure is OnFailure.REVERT:
                    self._revert(
                        run,
                        [d for d in run.devices.values() if d.changed],
                        now,
                        f"artifact {artifact} quarantined",
                    )

    def _revert_cohort(
        self, run: CampaignRun, wave: WaveRun, scope: Scope, key: str, now: float, why: str
    ) -> None:
        """Revert at the campaign's revert scope what the failed cohort touches."""
        target = run.spec.revert_scope
        if target is Scope.BATCH:
            devices = [d for d in run.in_wave(wave.index) if d.changed]
            self._revert(run, devices, now, why)
            run.set_state(CampaignState.HALTED, now, why + " (the batch was reverted)")
            self._audit(run, "campaign.halt", now, [], {"wave": wave.index, "reason": why})
            return
        failing = [d for d in run.in_wave(wave.index) if d.member.cohort(scope) == key]
        keys = {d.member.cohort(target) for d in failing} if scope is not target else {key}
        for cohort in sorted(keys):
            run.reverted_cohorts.add((target.value, cohort))
            run.touch(now)
            changed = [
                d for d in run.devices.values() if d.member.cohort(target) == cohort and d.changed
            ]
            for d in run.devices.values():
                if d.member.cohort(target) == cohort and d.state is DeviceState.QUEUED:
                    run.move(d, DeviceState.SKIPPED, now, "cohort reverted")
                    self._release(run, d)
            self._revert(run, changed, now, f"{why}; reverting {target.value}={cohort}")

    def _revert(self, run: CampaignRun, devices: list[DeviceRun], now: float, why: str) -> None:
        """Put ``devices`` back on their last-known-good values (one new generation per
        dimension the campaign wrote); a device without a usable target is reported."""
        reverting: list[str] = []
        stuck: list[str] = []
        for d in devices:
            if not d.changed:
                continue
            dims = [c.dimension for c in run.spec.components[: d.component + 1]]
            if d.generation is None and dims:
                dims = dims[:-1]  # the last component was never written
            # a downloaded profile stays on the eUICC, disabled (docs/CAMPAIGNS.md, "Phases")
            dims = [dim for dim in dims if dim is not Dimension.ESIM_DOWNLOAD]
            if not dims:
                d.deadline = None
                run.move(
                    d,
                    DeviceState.REVERTED,
                    now,
                    f"{why}; nothing was enabled: the downloaded profile stays on the eUICC, "
                    "disabled",
                )
                self._release(run, d)
                reverting.append(d.endpoint)
                continue
            targets: dict[Dimension, Any] = {
                dim: d.rollback[dim.value] for dim in dims if d.rollback.get(dim.value) is not None
            }
            missing = [dim.value for dim in dims if dim not in targets]
            if missing:  # reported (status, report), never silently skipped
                stuck.append(d.endpoint)
                d.reason = f"no last-known-good value for {', '.join(missing)}: not reverted"
                run.mark(d, now)
                if not targets:
                    continue
            d.reverts = {dim.value: _WAITING for dim in targets}
            d.attempt += 1
            d.deadline = now + sum(self._budget(run, d, dim) for dim in targets)
            run.move(d, DeviceState.REVERTING, now, d.reason if missing else why)
            self._revert_next(run, d)
            reverting.append(d.endpoint)
        self._audit(
            run,
            "campaign.revert",
            now,
            reverting,
            {
                "reason": why,
                "reverting": len(reverting),
                "no_rollback_target": stuck[:100],
                "no_rollback_target_count": len(stuck),
            },
        )
        self._publish(
            {"type": "revert", "campaign": run.id, "devices": len(reverting), "reason": why}
        )

    def _revert_next(self, run: CampaignRun, d: DeviceRun) -> bool:
        """Write ``d``'s next revert: components are undone in reverse order, each once the
        one after it verified (the APN before the config before the firmware). False when
        none is waiting."""
        for component in reversed(run.spec.components):
            dim = component.dimension
            if d.reverts.get(dim.value) == _WAITING:
                d.reverts[dim.value] = -1  # pending until the write tells its generation
                self._writes.append(
                    _Write(
                        run, d, dim, d.rollback[dim.value], f"revert:{dim.value}", d.attempt,
                        revert=True,
                    )
                )  # fmt: skip
                return True
        return False

    def _progress(self, run: CampaignRun, now: float) -> None:
        """Finish a campaign whose work is done."""
        busy = any(run.counts.get(s, 0) for s in IN_FLIGHT)
        if run.state is CampaignState.RUNNING and run.wave >= len(run.waves) and not busy:
            run.set_state(CampaignState.COMPLETED, now, run.reason or "every wave done")
            self._release(run)
            self._audit(run, "campaign.complete", now, [], self._summary_counts(run))
            self._publish({"type": "state", "campaign": run.id, "state": run.state.value})
        elif run.state is CampaignState.REVERTING and not run.counts.get(DeviceState.REVERTING):
            run.set_state(CampaignState.ABORTED, now, run.reason)
            self._release(run)
            self._audit(run, "campaign.aborted", now, [], self._summary_counts(run))
            self._publish({"type": "state", "campaign": run.id, "state": run.state.value})
        elif run.reopened and not run.counts.get(DeviceState.REVERTING):
            # the rollback of an ended campaign is over: REVERTED when nothing it changed
            # is left on its change, else it keeps its ended state
            run.reopened = False
            if not any(run.counts.get(s, 0) for s in CHANGED):
                run.set_state(
                    CampaignState.REVERTED,
                    now,
                    "rolled back: every device it changed is back on its last-known-good value",
                )
            else:
                run.touch(now)
            self._audit(run, "campaign.rollback_done", now, [], self._summary_counts(run))
            self._publish({"type": "state", "campaign": run.id, "state": run.state.value})

    @staticmethod
    def _summary_counts(run: CampaignRun) -> dict[str, Any]:
        return {"counts": {s.value: n for s, n in run.counts.items() if n}, "reason": run.reason}

    # -- audit and events ------------------------------------------------------------------------
    def _audit(
        self,
        run: CampaignRun,
        action: str,
        now: float,
        endpoints: list[str],
        detail: Mapping[str, Any],
        *,
        actor: str | None = None,
        token_id: str | None = None,
        outcome: str = "ok",
    ) -> None:
        self._audits.append(
            {
                "actor": actor or f"campaign:{run.id}",
                "action": action,
                "subject": f"campaign:{run.id}",
                "token_id": token_id,
                "tenant": run.spec.tenant,
                "endpoints": endpoints[:MAX_AUDIT_ENDPOINTS],
                "detail": {**detail, "devices": len(endpoints)} if endpoints else dict(detail),
                "outcome": outcome,
            }
        )

    def _publish(self, event: dict[str, Any]) -> None:
        self._published.append(event)

    def _publish_now(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() < 1000:
                queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Progress events (dicts with ``type``: progress, wave, state, revert, quarantine),
        until the component stops. A slow reader misses events beyond 1000 queued."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(queue)

    # -- members -----------------------------------------------------------------------------------
    def _member(self, record: DeviceRecord) -> Member:
        registration = self.server.registration(record.endpoint)
        wake = None
        if registration is not None and registration.queue_mode:
            wake = float(registration.lifetime)
        return Member(
            record.endpoint,
            record.region or "",
            record.carrier or "",
            record.sku or "",
            record.policy_group or "",
            record.country or "",
            utc_offset(record.country),
            wake,
        )

    async def _members_of(
        self, spec: CampaignSpec
    ) -> tuple[list[Member], dict[str, tuple[str, str, str]]]:
        """The selection's members and the control candidates (same tenant, not selected)."""
        try:
            selector = parse_selector(spec.selector)
        except SelectorError as err:
            raise CampaignError("selector", str(err)) from None
        from lifecycle.inventory import InventoryRepository

        inventory = self.inventory.repository if self.inventory else InventoryRepository()
        tenants = frozenset({spec.tenant}) if spec.tenant is not None else None
        everything = parse_selector("")

        def read(tx: Tx) -> tuple[list[DeviceRecord], list[DeviceRecord]]:
            chosen = inventory.endpoints(tx, selector, tenants)
            records = inventory.get_many(tx, chosen)
            others: list[DeviceRecord] = []
            if _guarded(spec):
                rest = set(inventory.endpoints(tx, everything, tenants)) - set(chosen)
                others = inventory.get_many(tx, sorted(rest))
            return records, others

        records, others = await self.store.read(read)
        members = [self._member(r) for r in records if r.stage != "retired"]
        control = {
            r.endpoint: (r.region or "", r.carrier or "", r.policy_group or "") for r in others
        }
        return members, control

    def _active_holds(self) -> dict[str, dict[Dimension, str]]:
        held: dict[str, dict[Dimension, str]] = {}
        for (endpoint, dim), cid in self._holders.items():
            held.setdefault(endpoint, {})[dim] = cid
        return held

    def _plan_of(self, run: CampaignRun) -> Plan:
        waves = tuple(_wave_plan(w, [d.endpoint for d in run.in_wave(w.index)]) for w in run.waves)
        return Plan(waves, {}, 0, 0.0)

    # -- the operator's verbs --------------------------------------------------------------------
    async def plan(self, spec: CampaignSpec) -> Plan:
        """What :meth:`create` would do (nothing is written)."""
        from lifecycle.campaigns.plan import build_plan

        await self._loaded.wait()
        self._check_spec(spec)
        members, _ = await self._members_of(spec)
        return build_plan(spec, members, active=self._active_holds(), seed="plan")

    def _check_spec(self, spec: CampaignSpec) -> None:
        if not spec.components:
            raise CampaignError("change", "name at least one component")
        from lifecycle.campaigns.spec import check_phases

        check_phases(spec.components)
        for c in spec.components:
            if c.artifact and c.artifact in self._quarantined:
                why = self._quarantined[c.artifact].get("reason", "")
                raise CampaignConflict(
                    "change", f"artifact {c.artifact} is quarantined ({why}); use another"
                )
            if c.dimension is Dimension.FIRMWARE and "uri" not in c.value:
                raise CampaignError(
                    "change", "a firmware component needs the image URI (VERSION@URI)"
                )

    async def create(
        self,
        spec: CampaignSpec,
        *,
        actor: str,
        token_id: str | None = None,
        tenant: str | None = None,
    ) -> str:
        """Plan and persist a campaign, then start it; its id. Devices held by another active
        campaign on a dimension of this one are left out (``conflicts`` in the status)."""
        from lifecycle.campaigns.plan import build_plan

        await self._loaded.wait()
        if tenant is not None and spec.tenant is None:
            spec = replace(spec, tenant=tenant)
        self._check_spec(spec)
        members, control = await self._members_of(spec)
        cid = "c-" + uuid.uuid4().hex[:12]
        async with self._lock:
            plan = build_plan(spec, members, active=self._active_holds(), seed=cid)
            now = self.clock()
            by_endpoint = {m.endpoint: m for m in members}
            run = CampaignRun(
                id=cid,
                spec=spec,
                state=CampaignState.RUNNING,
                created_by=actor,
                created_at=now,
                seed=cid,
                artifacts=tuple(dict.fromkeys(c.artifact for c in spec.components if c.artifact)),
                conflicts=[[c.endpoint, c.dimension.value, c.campaign] for c in plan.conflicts],
                updated_at=now,
            )
            for wp in plan.waves:
                wave_run = WaveRun(wp.index, wp.name, wp.bake_s, wp.approval)
                wave_run.phase = DOWNLOAD if spec.phase_split else ""
                run.waves.append(wave_run)
                for endpoint in wp.endpoints:
                    run.add(DeviceRun(cid, by_endpoint[endpoint], wp.index, updated_at=now))
            if not run.devices:
                raise CampaignError(
                    "selector",
                    f"the selection {spec.selector!r} has no device to change"
                    + (
                        f" ({len(plan.conflicts)} held by other campaigns)"
                        if plan.conflicts
                        else ""
                    ),
                )
            run.dirty = True
            run.dirty_waves = set(range(len(run.waves)))
            self._audit(
                run,
                "campaign.create",
                now,
                sorted(run.devices),
                {
                    "name": spec.name,
                    "selector": spec.selector,
                    "waves": len(run.waves),
                    "components": [
                        {"dimension": c.dimension.value, "artifact": c.artifact}
                        for c in spec.components
                    ],
                    "conflicts": len(plan.conflicts),
                },
                actor=actor,
                token_id=token_id,
            )
            self._adopt(run)
            if _guarded(spec):
                self._set_control(run, control)
            await self._flush(now)
        self._wakeup.set()
        return cid

    async def _verb(self, cid: str) -> CampaignRun:
        await self._loaded.wait()
        run = self.runs.get(cid)
        if run is None:
            found = await self.store.read(lambda tx: self.repository.load(tx, cid))
            if found is None:
                raise UnknownCampaign(cid)
            raise CampaignConflict(
                "campaign", f"campaign {cid} is {found.state.value}; nothing to change"
            )
        return run

    async def pause(self, cid: str, *, actor: str, token_id: str | None = None) -> None:
        async with self._lock:
            run = await self._verb(cid)
            if run.state is not CampaignState.RUNNING:
                raise CampaignConflict("pause", f"campaign {cid} is {run.state.value}, not running")
            now = self.clock()
            run.set_state(CampaignState.PAUSED, now, f"paused by {actor}")
            self._audit(run, "campaign.pause", now, [], {}, actor=actor, token_id=token_id)
            self._publish({"type": "state", "campaign": cid, "state": run.state.value})
            await self._flush(now)

    async def resume(self, cid: str, *, actor: str, token_id: str | None = None) -> None:
        """Paused, inconclusive (the open verdicts are accepted) or halted -> running."""
        await self._go_on(
            cid,
            actor,
            token_id,
            "campaign.resume",
            (CampaignState.PAUSED, CampaignState.INCONCLUSIVE, CampaignState.HALTED),
        )

    async def approve(self, cid: str, *, actor: str, token_id: str | None = None) -> None:
        """Leave the canary (awaiting approval), or accept an inconclusive gate."""
        await self._go_on(
            cid,
            actor,
            token_id,
            "campaign.approve",
            (CampaignState.AWAITING_APPROVAL, CampaignState.INCONCLUSIVE),
        )

    async def _go_on(
        self,
        cid: str,
        actor: str,
        token_id: str | None,
        action: str,
        allowed: tuple[CampaignState, ...],
    ) -> None:
        async with self._lock:
            run = await self._verb(cid)
            if run.state not in allowed:
                names = ", ".join(s.value for s in allowed)
                raise CampaignConflict(
                    action.split(".")[1], f"campaign {cid} is {run.state.value}; this needs {names}"
                )
            if run.state is CampaignState.HALTED and any(
                a in self._quarantined for a in run.artifacts
            ):
                raise CampaignConflict(
                    "resume", f"campaign {cid} uses a quarantined artifact; abort it"
                )
            now = self.clock()
            accepted = []
            # resuming a halted campaign accepts the failed verdicts of its wave (the batch
            # may fail beside the cohort that halted it: judged again, it would halt again)
            open_verdicts = {Verdict.INCONCLUSIVE.value}
            if run.state is CampaignState.HALTED:
                open_verdicts.add(Verdict.FAILED.value)
            if run.state in (CampaignState.INCONCLUSIVE, CampaignState.HALTED) and run.wave < len(
                run.waves
            ):
                wave = run.waves[run.wave]
                for v in wave.verdicts:
                    if v["verdict"] in open_verdicts:
                        wave.acted.add((v["scope"], v["key"]))
                        accepted.append(f"{v['scope']}={v['key']}")
                run.dirty_waves.add(wave.index)
            run.set_state(CampaignState.RUNNING, now, f"{action.split('.')[1]}d by {actor}")
            self._audit(
                run, action, now, [], {"accepted": accepted}, actor=actor, token_id=token_id
            )
            self._publish({"type": "state", "campaign": cid, "state": run.state.value})
            await self._flush(now)
        self._wakeup.set()

    async def abort(
        self, cid: str, *, revert: bool, actor: str, token_id: str | None = None
    ) -> None:
        """Stop for good: queued devices are skipped; with ``revert`` every device the
        campaign changed goes back to its last-known-good value (REVERTING, then ABORTED)."""
        async with self._lock:
            run = await self._verb(cid)
            if run.state is CampaignState.REVERTING:
                raise CampaignConflict("abort", f"campaign {cid} is already reverting")
            if not run.state.active:  # ended, rolling devices back
                raise CampaignConflict(
                    "campaign", f"campaign {cid} is {run.state.value}; nothing to abort"
                )
            now = self.clock()
            for d in run.devices.values():
                if d.state is DeviceState.QUEUED:
                    run.move(d, DeviceState.SKIPPED, now, "campaign aborted")
            why = f"aborted by {actor}" + (" (revert)" if revert else " (keep)")
            self._audit(
                run, "campaign.abort", now, [], {"revert": revert}, actor=actor, token_id=token_id
            )
            if revert:
                run.set_state(CampaignState.REVERTING, now, why)
                self._revert(run, [d for d in run.devices.values() if d.changed], now, why)
            else:
                run.set_state(CampaignState.ABORTED, now, why)
                self._release(run)
            self._publish({"type": "state", "campaign": cid, "state": run.state.value})
            await self._flush(now)
        self._wakeup.set()

    async def rollback(
        self,
        cid: str,
        *,
        selector: str | None = None,
        scope: str | None = None,
        actor: str,
        token_id: str | None = None,
    ) -> int:
        """Revert the campaign's changed devices in ``scope`` (``all``, ``wave=N`` /
        ``batch=N`` or a wave's name, ``region=``, ``carrier=``, ``policy_group=``, ``sku=``
        -- the cohorts the campaign recorded) that match ``selector`` (the inventory now),
        and skip its queued ones; the number reverting. An active campaign otherwise keeps
        its state. An **ended** campaign (completed, aborted, reverted) is loaded again from
        its rows: each device goes back to the last-known-good value recorded at its
        admission, through desired state, verified like any change; the campaign keeps its
        ended state (``reverted`` once nothing it changed is left) and holds only the devices
        it is rolling back. Refused (:class:`CampaignConflict`, naming the campaign) when
        another campaign holds, or has since changed, a dimension of those devices."""
        if not selector and not scope:
            raise CampaignError(
                "scope",
                "say which devices: a scope (all, wave=N, region=NAME, carrier=NAME, "
                "policy_group=NAME, sku=NAME) or a selector",
            )
        chosen: Selector | None = None
        if selector:
            try:
                chosen = parse_selector(selector)
            except SelectorError as err:
                raise CampaignError("selector", str(err)) from None
        async with self._lock:
            await self._loaded.wait()
            run = self.runs.get(cid)
            ended = run is None or not run.state.active
            if run is None:
                found = await self.store.read(lambda tx: self.repository.load(tx, cid))
                if found is None:
                    raise UnknownCampaign(cid)
                if found.state.active:  # pragma: no cover - active campaigns are loaded
                    raise CampaignConflict("campaign", f"campaign {cid} is not loaded yet")
                run = found
            in_scope = _scope_filter(run, scope)
            devices = [d for d in run.devices.values() if in_scope(d)]
            if chosen is not None:
                from lifecycle.inventory import InventoryRepository

                inventory = self.inventory.repository if self.inventory else InventoryRepository()
                picked = chosen
                matched = set(await self.store.read(lambda tx: inventory.endpoints(tx, picked)))
                devices = [d for d in devices if d.endpoint in matched]
            changed = [d for d in devices if d.changed]
            if ended:
                await self._rollback_conflicts(run, changed)
            now = self.clock()
            for d in devices:
                if d.state is DeviceState.QUEUED:
                    run.move(d, DeviceState.SKIPPED, now, f"rolled back by {actor}")
                    self._release(run, d)
            what = " ".join(
                part
                for part in (
                    f"--scope {scope}" if scope else "",
                    f"--select {selector}" if selector else "",
                )
                if part
            )
            self._audit(
                run,
                "campaign.rollback",
                now,
                [d.endpoint for d in changed],
                {"selector": selector, "scope": scope, "ended": run.state.value if ended else None},
                actor=actor,
                token_id=token_id,
            )
            self._revert(run, changed, now, f"rollback {what} by {actor}")
            if ended and run.id not in self.runs:
                run.reopened = True
                self._adopt(run)  # holds and events of the devices rolling back
            elif ended:
                run.reopened = True
                for d in changed:
                    self._members.setdefault(d.endpoint, set()).add(run.id)
                    for dim in run.spec.dimensions:
                        self._holders[(d.endpoint, dim)] = run.id
            if ended:
                self._publish({"type": "state", "campaign": cid, "state": run.state.value})
            await self._flush(now)
        self._wakeup.set()
        return sum(1 for d in changed if d.state is DeviceState.REVERTING)

    async def _rollback_conflicts(self, run: CampaignRun, devices: list[DeviceRun]) -> None:
        """Refuse to roll an ended campaign back over a newer change: a dimension of one of
        ``devices`` held by another active campaign, or whose desired value is no longer the
        one this campaign delivered (another campaign, an operator set it since; a newer
        campaign rolled back itself is out of the way again)."""
        from lifecycle.state.tables import DESIRED

        mine = f"campaign:{run.id}"
        wanted = {d.endpoint: _written(run, d) for d in devices}
        dims = sorted({dim.value for ds in wanted.values() for dim in ds})
        endpoints = sorted(wanted)

        def read(tx: Tx) -> dict[tuple[str, str], tuple[str, Any]]:
            found: dict[tuple[str, str], tuple[str, Any]] = {}
            c = DESIRED.c
            for start in range(0, len(endpoints), 500):
                rows = tx.execute(
                    select(c.endpoint, c.dimension, c.set_by, c.value).where(
                        c.endpoint.in_(endpoints[start : start + 500]), c.dimension.in_(dims)
                    )
                )
                for r in rows:
                    found[(r.endpoint, r.dimension)] = (str(r.set_by), json.loads(r.value))
            return found

        if not endpoints:
            return
        current = await self.store.read(read)
        delivered = {c.dimension: c for c in run.spec.components}
        clashes: dict[tuple[str, str], list[str]] = {}  # (who, dimension) -> endpoints
        for endpoint, written in wanted.items():
            member = run.devices[endpoint].member
            for dim in written:
                holder = self._holders.get((endpoint, dim))
                who = mine
                if holder is not None and holder != run.id:
                    who = f"campaign:{holder}"
                elif (endpoint, dim.value) in current:
                    set_by, value = current[(endpoint, dim.value)]
                    if value != json.loads(json.dumps(dict(delivered[dim].value_for(member)))):
                        who = set_by if set_by != mine else "an operator"
                if who != mine:
                    clashes.setdefault((who, dim.value), []).append(endpoint)
        if not clashes:
            return
        parts = []
        for (who, dim_name), eps in sorted(clashes.items()):
            name = f"campaign {who.split(':', 1)[1]}" if who.startswith("campaign:") else who
            parts.append(
                f"{name} changed {dim_name} of {len(eps)} of these devices since "
                f"(e.g. {', '.join(sorted(eps)[:3])})"
            )
        error = CampaignConflict(
            "scope",
            f"cannot roll campaign {run.id} back: "
            + "; ".join(parts)
            + ": roll that change back first, or narrow the scope",
        )
        error.holders = tuple(
            sorted({who.split(":", 1)[1] for who, _ in clashes if who.startswith("campaign:")})
        )
        raise error

    async def quarantine(
        self, artifact: str, *, actor: str, reason: str = "", token_id: str | None = None
    ) -> list[str]:
        """Quarantine ``artifact``: no campaign delivers it again, and every active campaign
        using it halts. The campaigns halted."""
        async with self._lock:
            now = self.clock()
            halted = self._quarantine_now(
                artifact, actor, now, reason or f"quarantined by {actor}", token_id
            )
            await self._flush(now)
        return halted

    def _quarantine_now(
        self, artifact: str, actor: str, now: float, reason: str, token_id: str | None = None
    ) -> list[str]:
        self._quarantined[artifact] = {"reason": reason, "actor": actor, "at": now}
        halted = []
        for run in self.runs.values():
            if (
                artifact in run.artifacts
                and run.state.active
                and run.state is not CampaignState.REVERTING
            ):
                run.set_state(
                    CampaignState.HALTED, now, f"artifact {artifact} quarantined: {reason}"
                )
                halted.append(run.id)
        repo = self.repository

        def write(tx: Tx) -> None:
            _quarantine_firmware(tx, self.store, artifact, reason, actor, now)
            if repo.quarantine(tx, artifact, reason=reason, actor=actor, now=now):
                self.store.audit.append(
                    tx,
                    actor=actor,
                    action="campaign.quarantine",
                    subject=f"artifact:{artifact}",
                    now=now,
                    token_id=token_id,
                    detail={"reason": reason, "halted": halted},
                )

        self._extra.append(write)
        self._publish(
            {"type": "quarantine", "artifact": artifact, "halted": halted, "reason": reason}
        )
        return halted

    def quarantined(self) -> dict[str, dict[str, Any]]:
        return dict(self._quarantined)

    async def unquarantine(self, artifact: str, *, actor: str, token_id: str | None = None) -> bool:
        """Lift ``artifact``'s quarantine (a firmware image's in the repository too): new
        campaigns may use it and campaigns it halted may ``resume``. False when it was not
        quarantined."""
        async with self._lock:
            now = self.clock()
            known = self._quarantined.pop(artifact, None) is not None
            repo, store = self.repository, self.store

            def write(tx: Tx) -> bool:
                from lifecycle.artifacts.firmware import FirmwareError, FirmwareRepository

                lifted = repo.unquarantine(tx, artifact)
                firmware = FirmwareRepository(store.audit)
                image = firmware.image(tx, artifact)
                if image is not None and image.quarantined:
                    with contextlib.suppress(FirmwareError):
                        firmware.unquarantine(tx, artifact, actor=actor, now=now)
                    lifted = True
                if lifted:
                    store.audit.append(
                        tx,
                        actor=actor,
                        action="campaign.unquarantine",
                        subject=f"artifact:{artifact}",
                        now=now,
                        token_id=token_id,
                        detail={},
                    )
                return lifted

            lifted = await self.store.write(write)
        self._publish_now({"type": "unquarantine", "artifact": artifact})
        return lifted or known

    # -- reading -----------------------------------------------------------------------------------
    def holder(self, endpoint: str, dimension: Dimension) -> str | None:
        """The active campaign holding ``endpoint``'s ``dimension`` (None: no campaign)."""
        return self._holders.get((endpoint, dimension))

    async def _run_of(self, cid: str) -> CampaignRun:
        run = self.runs.get(cid)
        if run is not None:
            return run
        found = await self.store.read(lambda tx: self.repository.load(tx, cid))
        if found is None:
            raise UnknownCampaign(cid)
        return found

    async def status(self, cid: str, *, waves: bool = True) -> dict[str, Any]:
        """State, reason, counts per state, per wave (with per-cohort counts and the gate
        verdicts) and the conflicts left out (:func:`lifecycle.campaigns.views.status_of`).
        ``waves=False``: without the per-wave part (constant cost, for a progress bar)."""
        return status_of(await self._run_of(cid), waves=waves)

    async def report(self, cid: str, *, limit: int = 1000) -> dict[str, Any]:
        """What changed where and why it stopped (:func:`lifecycle.campaigns.views.report_of`)."""
        return report_of(await self._run_of(cid), limit=limit)

    async def list(
        self, *, states: Iterable[str] | None = None, tenants: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """Campaign summaries, newest first."""
        return await self.store.read(
            lambda tx: self.repository.summaries(tx, states=states, tenants=tenants)
        )


def _quarantine_firmware(
    tx: Tx, store: Store, artifact: str, reason: str, actor: str, now: float
) -> None:
    """A campaign names a firmware image by its id: quarantine the image in the firmware
    repository too (no new download, the firmware views show it) -- one quarantine."""
    from lifecycle.artifacts.firmware import FirmwareError, FirmwareRepository

    firmware = FirmwareRepository(store.audit)
    image = firmware.image(tx, artifact)
    if image is not None and not image.quarantined:
        with contextlib.suppress(FirmwareError):
            firmware.quarantine(tx, image.id, reason=reason or "quarantined", actor=actor, now=now)


def _written(run: CampaignRun, d: DeviceRun) -> list[Dimension]:
    """The dimensions the campaign wrote on ``d`` (what a revert undoes)."""
    dims = [c.dimension for c in run.spec.components[: d.component + 1]]
    if d.generation is None and dims:
        dims = dims[:-1]  # the last component was never written
    return dims


def _scope_filter(run: CampaignRun, scope: str | None) -> Callable[[DeviceRun], bool]:
    """Which devices of ``run`` a rollback ``scope`` names (:meth:`rollback`)."""
    if scope is None or scope.strip() in ("", "all", "campaign"):
        return lambda d: True
    kind, sep, value = scope.strip().partition("=")
    kind, value = kind.strip().replace("-", "_"), value.strip()
    fix = "use all, wave=N, region=NAME, carrier=NAME, policy_group=NAME or sku=NAME"
    if not sep or not value:
        raise CampaignError("scope", f"{scope[:60]!r} is no scope; {fix}")
    if kind in ("wave", "batch"):
        names = {w.name: w.index for w in run.waves}
        index = names.get(value)
        if index is None:
            try:
                index = int(value)
            except ValueError:
                index = -1
        if not 0 <= index < len(run.waves):
            waves = ", ".join(f"{w.index} ({w.name})" for w in run.waves)
            raise CampaignError(
                "scope", f"campaign {run.id} has no wave {value[:40]!r}; its waves: {waves}"
            )
        return lambda d: d.wave == index
    if kind in ("region", "carrier", "policy_group"):
        cohort = Scope(kind)
        return lambda d: d.member.cohort(cohort) == value
    if kind == "sku":
        return lambda d: d.member.sku == value
    raise CampaignError("scope", f"unknown scope {kind[:40]!r}; {fix}")


def _guarded(spec: CampaignSpec) -> bool:
    """Whether the spec's gates have telemetry guards (which need a control cohort)."""
    g = spec.gates
    return any(
        v is not None
        for v in (
            g.max_deregistration_excess_pct,
            g.max_missed_update_excess_pct,
            g.max_error_excess_pct,
        )
    )


def _wave_plan(w: WaveRun, endpoints: list[str]) -> Any:
    from lifecycle.campaigns.model import WavePlan

    return WavePlan(w.index, w.name, tuple(endpoints), w.bake_s, w.approval)


def _staged_ok(outcome: Any) -> Any:
    """The download gate's view of a device: STAGED (its download verified) succeeded."""
    if outcome.state is DeviceState.STAGED:
        return replace(outcome, state=DeviceState.SUCCEEDED)
    return outcome


def _classify(dim: Dimension, change: StatusChange) -> FailureKind:
    """The failure kind of a FAILED status (failures.py where it has the answer)."""
    detail = change.detail or ""
    if detail.startswith("gave up"):
        return FailureKind.TRANSIENT
    value = change.value if isinstance(change.value, Mapping) else {}
    try:
        from lifecycle.campaigns import failures
    except ImportError:  # pragma: no cover - lands separately
        return FailureKind.DEVICE_PERMANENT
    if dim is Dimension.CONFIG and value.get("result"):
        from objects.builtin.fleet_config import FleetConfigResult

        try:
            code = FleetConfigResult[str(value["result"]).upper()]
        except KeyError:
            return FailureKind.DEVICE_PERMANENT
        try:
            return failures.classify_config(int(code))
        except ValueError:
            return FailureKind.DEVICE_PERMANENT
    if dim is Dimension.FIRMWARE and value.get("update_result"):
        from objects.enums import FirmwareUpdateResult

        try:
            fw = FirmwareUpdateResult[str(value["update_result"]).upper()]
        except KeyError:
            return FailureKind.DEVICE_PERMANENT
        try:
            return failures.classify_firmware(int(fw))
        except ValueError:
            return FailureKind.DEVICE_PERMANENT
    return failures.classify_reason(detail) if detail else FailureKind.DEVICE_PERMANENT


__all__ = ["CampaignComponent", "CampaignConflict", "UnknownCampaign"]
