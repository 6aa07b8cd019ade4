"""The campaign engine's memory: one :class:`CampaignRun` per campaign, with its waves and
devices, mirroring the ``lc_campaign*`` rows (sans-IO: no asyncio, no database, time passed in).

The runner (:mod:`lifecycle.campaigns.component`) changes these objects only through the
methods here, each of which marks what it touched *dirty*; the runner writes every dirty row
in the tick's one transaction before it acts on any of it (a desired value is written in that
same transaction). So memory is never ahead of the tables by more than one uncommitted tick,
and a restart that rebuilds the runs from the tables (:func:`device_from_row` ...) resumes
where the last commit left off.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lifecycle.campaigns.model import (
    CampaignSpec,
    CampaignState,
    Component,
    DeviceState,
    FailureKind,
    Member,
    Outcome,
    Scope,
)
from lifecycle.state.dimensions import Dimension

#: States of a device the campaign has changed (a desired value was written for it).
CHANGED = frozenset(
    {
        DeviceState.DELIVERING,
        DeviceState.STAGED,
        DeviceState.REGISTERING,
        DeviceState.VERIFIED,
        DeviceState.SUCCEEDED,
        DeviceState.FAILED,
        DeviceState.TIMED_OUT,
    }
)
#: States still waiting for something (a device report, a deadline, the bake end).
IN_FLIGHT = frozenset(
    {
        DeviceState.DELIVERING,
        DeviceState.REGISTERING,
        DeviceState.VERIFIED,
        DeviceState.REVERTING,
    }
)
#: The phases of a two-phase campaign's wave (:attr:`CampaignSpec.phase_split`).
DOWNLOAD, ENABLE = "download", "enable"


@dataclass(slots=True)
class DeviceRun:
    """One member of one campaign (``lc_campaign_device``)."""

    campaign: str
    member: Member
    wave: int
    state: DeviceState = DeviceState.QUEUED
    component: int = 0
    generation: int | None = None
    reverts: dict[str, int] = field(default_factory=dict)  # dimension -> revert generation
    attempt: int = 0
    deadline: float | None = None
    rollback: dict[str, Any] = field(default_factory=dict)  # dimension -> value | None
    failure: FailureKind | None = None
    reason: str = ""
    acked: bool = False
    deregistrations: int = 0
    registrations: int = 0
    error_results: int = 0
    missed_updates: int = 0  # in lc_campaign_telemetry (the device row predates it)
    admitted_at: float | None = None
    verified_at: float | None = None
    """When it verified (VERIFIED, SUCCEEDED); in REGISTERING: when the eIM accepted the
    eUICC's signed enable result (a registration after it completes the step)."""
    updated_at: float = 0.0

    @property
    def endpoint(self) -> str:
        return self.member.endpoint

    @property
    def changed(self) -> bool:
        """Whether the campaign wrote a desired value for this device (and did not undo it)."""
        return self.state in CHANGED and self.generation is not None

    def cohort(self) -> dict[Scope, str]:
        m = self.member
        return {
            Scope.REGION: m.region,
            Scope.CARRIER: m.carrier,
            Scope.POLICY_GROUP: m.policy_group,
        }

    def outcome(self) -> Outcome:
        return Outcome(
            self.endpoint,
            self.state,
            self.cohort(),
            self.failure,
            self.acked,
            self.deregistrations,
            self.missed_updates,
            self.error_results,
        )


@dataclass(slots=True)
class WaveRun:
    """One planned wave (``lc_campaign_wave``); index 0 is the canary."""

    index: int
    name: str
    bake_s: float
    approval: bool = False
    state: str = "pending"  # pending | running | done
    started_at: float | None = None
    done_at: float | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    #: (scope, key) of verdicts already acted on (a failed cohort reverted, an inconclusive
    #: one accepted by an operator) -- kept in ``verdicts`` as ``"acted": true``.
    acted: set[tuple[str, str]] = field(default_factory=set)
    #: A two-phase campaign's wave: ``download`` until the download gate passed, then
    #: ``enable`` ("" for a one-phase campaign); ``lc_campaign_phase``.
    phase: str = ""
    #: The download gate's verdicts once the wave left the download phase (``verdicts``
    #: then holds the enable phase's), and when it did.
    phase_verdicts: list[dict[str, Any]] = field(default_factory=list)
    phase_at: float | None = None


@dataclass(slots=True)
class CampaignRun:
    """One campaign with its waves and devices (``lc_campaign``)."""

    id: str
    spec: CampaignSpec
    state: CampaignState
    created_by: str
    created_at: float
    reason: str = ""
    wave: int = 0
    seed: str = ""
    artifacts: tuple[str, ...] = ()
    reverted_cohorts: set[tuple[str, str]] = field(default_factory=set)
    conflicts: list[list[str]] = field(default_factory=list)
    updated_at: float = 0.0
    finished_at: float | None = None
    waves: list[WaveRun] = field(default_factory=list)
    devices: dict[str, DeviceRun] = field(default_factory=dict)
    #: Dirty tracking: the runner writes these and clears them.
    dirty_devices: set[str] = field(default_factory=set)
    dirty_waves: set[int] = field(default_factory=set)
    dirty: bool = False
    #: Device states changed since the gates last looked.
    stale: bool = True
    #: Per-state counts, kept current by :meth:`move` (status and gates read them).
    counts: dict[DeviceState, int] = field(default_factory=dict)
    #: Devices per wave, and the endpoints waiting for something (:data:`IN_FLIGHT`): the
    #: runner's per-tick work walks these, not every device of a 10 000-device campaign.
    by_wave: dict[int, list[DeviceRun]] = field(default_factory=dict)
    flight: set[str] = field(default_factory=set)
    #: Gate outcomes per endpoint, dropped when the device changes (rebuilt on demand).
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    #: The telemetry guards' control cohort: endpoint -> (region, carrier, policy group) of
    #: the devices of the campaign's tenant outside its selection (memory: rebuilt from the
    #: inventory on load), and their counters per (wave, endpoint) as
    #: [deregistrations, missed updates, error results] (``lc_campaign_telemetry``).
    control: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    control_counts: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    #: (wave, endpoint) whose guard counters (wave device or control) are not yet written.
    dirty_telemetry: set[tuple[int, str]] = field(default_factory=set)
    #: An ended campaign loaded again to roll devices back (memory only: a restart finds it
    #: again by its devices in ``reverting``).
    reopened: bool = False

    # -- bookkeeping ---------------------------------------------------------------------
    def touch(self, now: float) -> None:
        self.dirty = True
        self.updated_at = now

    def add(self, device: DeviceRun) -> None:
        self.devices[device.endpoint] = device
        self.by_wave.setdefault(device.wave, []).append(device)
        self.counts[device.state] = self.counts.get(device.state, 0) + 1
        if device.state in IN_FLIGHT:
            self.flight.add(device.endpoint)
        self.dirty_devices.add(device.endpoint)

    def move(self, device: DeviceRun, state: DeviceState, now: float, reason: str = "") -> None:
        """Set ``device``'s state (counts and dirty marks follow)."""
        if device.state is not state:
            self.counts[device.state] = self.counts.get(device.state, 0) - 1
            self.counts[state] = self.counts.get(state, 0) + 1
            device.state = state
            self.stale = True
            if state in IN_FLIGHT:
                self.flight.add(device.endpoint)
            else:
                self.flight.discard(device.endpoint)
        if reason:
            device.reason = reason
        self.mark(device, now)

    def mark(self, device: DeviceRun, now: float) -> None:
        device.updated_at = now
        self.dirty_devices.add(device.endpoint)
        self.outcomes.pop(device.endpoint, None)

    def outcome(self, device: DeviceRun) -> Outcome:
        """``device``'s gate outcome (cached until it changes)."""
        found = self.outcomes.get(device.endpoint)
        if found is None:
            found = self.outcomes[device.endpoint] = device.outcome()
        return found

    def set_state(self, state: CampaignState, now: float, reason: str = "") -> None:
        self.state = state
        self.stale = True
        if reason:
            self.reason = reason
        if not state.active:
            self.finished_at = now
        self.touch(now)

    # -- views -----------------------------------------------------------------------------
    def component(self, index: int) -> Component:
        return self.spec.components[index]

    def in_wave(self, index: int) -> Iterator[DeviceRun]:
        return iter(self.by_wave.get(index, ()))

    def judged_in_download(self, device: DeviceRun, wave: WaveRun) -> bool:
        """Whether ``device``'s outcome belongs to ``wave``'s download gate only: it ended
        (failed, timed out, reverted) before reaching the enable."""
        split = self.spec.phase_split
        return bool(
            split and wave.phase == ENABLE and device.component < split and device.state.final
        )

    def in_flight(self) -> int:
        return sum(self.counts.get(s, 0) for s in (DeviceState.DELIVERING, DeviceState.REVERTING))

    def cohort_reverted(self, member: Member) -> bool:
        if not self.reverted_cohorts:
            return False
        for scope in (Scope.REGION, Scope.CARRIER, Scope.POLICY_GROUP):
            if (scope.value, member.cohort(scope)) in self.reverted_cohorts:
                return True
        return False

    def holds(self) -> Iterable[tuple[str, Dimension]]:
        """(endpoint, dimension) pairs this campaign holds (``holder``): an ended campaign
        holds only the devices it is rolling back."""
        if not self.state.active:
            for device in self.devices.values():
                if device.state is DeviceState.REVERTING:
                    for dim in self.spec.dimensions:
                        yield device.endpoint, dim
            return
        for device in self.devices.values():
            if device.state in (DeviceState.SKIPPED, DeviceState.REVERTED):
                continue
            for dim in self.spec.dimensions:
                yield device.endpoint, dim


# -- rows <-> runs ---------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def device_row(d: DeviceRun) -> dict[str, Any]:
    m = d.member
    return {
        "campaign": d.campaign,
        "endpoint": m.endpoint,
        "wave": d.wave,
        "region": m.region,
        "carrier": m.carrier,
        "sku": m.sku,
        "policy_group": m.policy_group,
        "country": m.country,
        "utc_offset": m.utc_offset_minutes,
        "wake_interval": m.wake_interval_s,
        "state": d.state.value,
        "component": d.component,
        "generation": d.generation,
        "reverts": _dumps(d.reverts),
        "attempt": d.attempt,
        "deadline": d.deadline,
        "rollback": _dumps(d.rollback),
        "failure": d.failure.value if d.failure else None,
        "reason": d.reason,
        "acked": d.acked,
        "deregistrations": d.deregistrations,
        "registrations": d.registrations,
        "error_results": d.error_results,
        "admitted_at": d.admitted_at,
        "verified_at": d.verified_at,
        "updated_at": d.updated_at,
    }


def device_from_row(row: Mapping[str, Any]) -> DeviceRun:
    member = Member(
        row["endpoint"],
        row["region"] or "",
        row["carrier"] or "",
        row["sku"] or "",
        row["policy_group"] or "",
        row["country"] or "",
        row["utc_offset"],
        row["wake_interval"],
    )
    return DeviceRun(
        campaign=row["campaign"],
        member=member,
        wave=int(row["wave"]),
        state=DeviceState(row["state"]),
        component=int(row["component"]),
        generation=row["generation"],
        reverts=json.loads(row["reverts"] or "{}"),
        attempt=int(row["attempt"]),
        deadline=row["deadline"],
        rollback=json.loads(row["rollback"] or "{}"),
        failure=FailureKind(row["failure"]) if row["failure"] else None,
        reason=row["reason"] or "",
        acked=bool(row["acked"]),
        deregistrations=int(row["deregistrations"]),
        registrations=int(row["registrations"]),
        error_results=int(row["error_results"]),
        admitted_at=row["admitted_at"],
        verified_at=row["verified_at"],
        updated_at=float(row["updated_at"]),
    )


def telemetry_rows(
    run: CampaignRun, keys: Iterable[tuple[int, str]], now: float
) -> list[dict[str, Any]]:
    """``lc_campaign_telemetry`` rows of ``keys`` (wave, endpoint): a wave device's counters
    or a control device's in that wave."""
    rows: list[dict[str, Any]] = []
    for wave, endpoint in keys:
        d = run.devices.get(endpoint)
        if d is not None and d.wave == wave:
            m = d.member
            keys3 = (m.region, m.carrier, m.policy_group)
            counts = [d.deregistrations, d.missed_updates, d.error_results]
            control = False
        else:
            found = run.control_counts.get((wave, endpoint))
            if found is None:
                continue
            keys3 = run.control.get(endpoint, ("", "", ""))
            counts = found
            control = True
        rows.append(
            {
                "campaign": run.id,
                "wave": wave,
                "endpoint": endpoint,
                "control": control,
                "region": keys3[0],
                "carrier": keys3[1],
                "policy_group": keys3[2],
                "deregistrations": counts[0],
                "missed_updates": counts[1],
                "error_results": counts[2],
                "updated_at": now,
            }
        )
    return rows


def adopt_telemetry(run: CampaignRun, row: Mapping[str, Any]) -> None:
    """Counters read back from ``lc_campaign_telemetry`` into ``run``."""
    counts = [int(row["deregistrations"]), int(row["missed_updates"]), int(row["error_results"])]
    endpoint, wave = row["endpoint"], int(row["wave"])
    if not row["control"]:
        d = run.devices.get(endpoint)
        if d is not None:
            d.deregistrations = max(d.deregistrations, counts[0])
            d.missed_updates = counts[1]
            d.error_results = max(d.error_results, counts[2])
        return
    run.control_counts[(wave, endpoint)] = counts
    run.control.setdefault(
        endpoint, (row["region"] or "", row["carrier"] or "", row["policy_group"] or "")
    )


def wave_row(campaign: str, w: WaveRun) -> dict[str, Any]:
    verdicts = [
        {**v, "acted": (v.get("scope"), v.get("key")) in w.acted}
        for v in w.verdicts
        if isinstance(v, dict)
    ]
    acted_only = [
        {"scope": s, "key": k, "acted": True}
        for s, k in sorted(w.acted)
        if not any((v.get("scope"), v.get("key")) == (s, k) for v in w.verdicts)
    ]
    return {
        "campaign": campaign,
        "index": w.index,
        "name": w.name,
        "bake_s": w.bake_s,
        "approval": w.approval,
        "state": w.state,
        "started_at": w.started_at,
        "done_at": w.done_at,
        "verdicts": _dumps(verdicts + acted_only),
    }


def phase_row(campaign: str, w: WaveRun) -> dict[str, Any]:
    """The ``lc_campaign_phase`` row of a two-phase campaign's wave."""
    return {
        "campaign": campaign,
        "wave": w.index,
        "phase": w.phase,
        "verdicts": _dumps(w.phase_verdicts),
        "started_at": w.phase_at,
    }


def adopt_phase(w: WaveRun, row: Mapping[str, Any]) -> None:
    w.phase = str(row["phase"])
    w.phase_verdicts = json.loads(row["verdicts"] or "[]")
    w.phase_at = row["started_at"]


def wave_from_row(row: Mapping[str, Any]) -> WaveRun:
    verdicts = json.loads(row["verdicts"] or "[]")
    acted = {(v["scope"], v["key"]) for v in verdicts if v.get("acted")}
    return WaveRun(
        index=int(row["index"]),
        name=row["name"],
        bake_s=float(row["bake_s"]),
        approval=bool(row["approval"]),
        state=row["state"],
        started_at=row["started_at"],
        done_at=row["done_at"],
        verdicts=[v for v in verdicts if "verdict" in v],
        acted=acted,
    )


__all__ = [
    "CHANGED",
    "DOWNLOAD",
    "ENABLE",
    "IN_FLIGHT",
    "CampaignRun",
    "DeviceRun",
    "WaveRun",
    "adopt_phase",
    "adopt_telemetry",
    "device_from_row",
    "device_row",
    "phase_row",
    "telemetry_rows",
    "wave_from_row",
    "wave_row",
]
