"""The vocabulary of campaigns, shared by the planner, the gates, the engine and the API (sans-IO).

A **campaign** moves a selection of devices from what they run to a **change** -- one or more
components (firmware, config, connectivity, flags, credentials), each a desired value of one
state dimension, applied in order -- in **waves**: a canary that samples every
region x carrier x SKU stratum present, then waves by count or percentage, each baked for a
while and judged by **health gates** per cohort. A device succeeds when it is *verified and
healthy* (it reports the campaign's value for the campaign's generation and stays healthy
through the bake window), never merely when it acknowledged a write. A failed gate halts the
campaign or reverts the failing cohort (batch, region, carrier or policy group) to each
device's **last-known-good** value while healthy cohorts carry on.

This module holds only data: frozen dataclasses and enums with no I/O, so the planner
(:mod:`lifecycle.campaigns.plan`), gates (:mod:`lifecycle.campaigns.gates`), the engine and
the API all speak the same words. Times are seconds (floats); "now" is always passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lifecycle.state.dimensions import Dimension

JsonValue = Any


class CampaignError(ValueError):
    """A campaign request is wrong; ``field`` names what (a spec key or a verb), ``message``
    says what is wrong and how to fix it. The API answers it as 422 (or 409 for a conflict)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Scope(StrEnum):
    """The unit a gate judges and a revert undoes."""

    BATCH = "batch"  # one wave
    REGION = "region"
    CARRIER = "carrier"
    POLICY_GROUP = "policy_group"


class OnFailure(StrEnum):
    """What a failed gate does: stop everything, or revert the failing scope only."""

    HALT = "halt"
    REVERT = "revert"


class Membership(StrEnum):
    """``snapshot``: the selection as planned; ``dynamic``: devices that join the selection
    mid-campaign enter the current wave under the same gates."""

    SNAPSHOT = "snapshot"
    DYNAMIC = "dynamic"


class CampaignState(StrEnum):
    """Where a campaign stands."""

    RUNNING = "running"
    PAUSED = "paused"  # an operator paused it
    AWAITING_APPROVAL = "awaiting_approval"  # canary done, approval required to go on
    INCONCLUSIVE = "inconclusive"  # a gate could not decide: paused for an operator
    HALTED = "halted"  # a gate failed and the policy is halt
    REVERTING = "reverting"  # abort --revert / rollback of everything under way
    COMPLETED = "completed"  # every wave done (some cohorts may have been reverted)
    ABORTED = "aborted"  # abort --keep, or abort --revert finished
    REVERTED = "reverted"  # everything the campaign changed is back on last-known-good

    @property
    def active(self) -> bool:
        """Whether the campaign still holds its devices' dimensions (blocks other campaigns)."""
        return self not in (CampaignState.COMPLETED, CampaignState.ABORTED, CampaignState.REVERTED)


class DeviceState(StrEnum):
    """Where one device stands in a campaign."""

    QUEUED = "queued"  # a member, not yet admitted into its wave
    DELIVERING = "delivering"  # desired value set; not yet verified
    STAGED = "staged"  # the download phase verified; waits for the wave's download gate
    REGISTERING = "registering"  # eSIM enable confirmed; waits for a registration over it
    VERIFIED = "verified"  # verified on the campaign's generation; baking
    SUCCEEDED = "succeeded"  # verified and healthy through the bake window
    FAILED = "failed"  # refused for good, or retries exhausted
    TIMED_OUT = "timed_out"  # silent past a step's deadline
    REVERTING = "reverting"  # being put back on last-known-good
    REVERTED = "reverted"  # back on last-known-good (verified)
    SKIPPED = "skipped"  # left the selection, retired, or held by another campaign

    @property
    def final(self) -> bool:
        return self in (
            DeviceState.SUCCEEDED,
            DeviceState.FAILED,
            DeviceState.TIMED_OUT,
            DeviceState.REVERTED,
            DeviceState.SKIPPED,
        )


class Step(StrEnum):
    """The steps of a device's change, each with a deadline (:class:`Deadlines`)."""

    DELIVERED = "delivered"  # the device acknowledged the write / download started
    APPLIED = "applied"  # apply / install reported done
    REGISTERED = "registered"  # re-registered after a reboot or re-attach (where one happens)
    VERIFIED = "verified"  # reports the new value for the campaign's generation


class FailureKind(StrEnum):
    """Why a device failed: only transient failures are retried."""

    TRANSIENT = "transient"  # timeout of one request, 5.03, lost connection
    DEVICE_PERMANENT = "device_permanent"  # this device cannot take it (4.xx, not supported)
    ARTIFACT_BAD = "artifact_bad"  # the artifact is bad (integrity, invalid bundle, boot loop)
    TIMED_OUT = "timed_out"  # silent past a step's deadline


class Verdict(StrEnum):
    """A gate's verdict on one cohort of one wave."""

    PENDING = "pending"  # not enough outcomes yet (below the minimum sample, wave not baked)
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"  # cannot decide (e.g. the wave ended below the minimum
    # sample, or the control cohort is too small): pause for an operator


# -- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Component:
    """One part of a change: a dimension and its desired value (as
    :func:`lifecycle.state.dimensions.parse_desired` normalises it). ``artifact`` names what
    the value came from (a bundle name, a firmware image id, an APN profile name) for
    reports; ``size`` is the bytes one device downloads for it (0 when nothing is moved)."""

    dimension: Dimension
    value: Mapping[str, JsonValue]
    artifact: str = ""
    size: int = 0
    overlays: Mapping[str, Mapping[str, JsonValue]] = field(default_factory=dict)
    """Per-cohort replacements of ``value`` resolved at plan time, keyed ``region=NAME``,
    ``policy_group=NAME``, ``carrier=NAME`` or ``country=NAME`` (e.g. a config bundle's
    regional variant, a carrier's APN set): see :meth:`value_for`."""

    def value_for(self, member: Member) -> Mapping[str, JsonValue]:
        """The value ``member`` gets: the overlay of its policy group, else its carrier's,
        else its country's, else its region's, else the base value (the more specific
        grouping wins; an empty attribute matches no overlay)."""
        for kind, label in (
            ("policy_group", member.policy_group),
            ("carrier", member.carrier),
            ("country", member.country),
            ("region", member.region),
        ):
            key = f"{kind}={label}"
            if label and key in self.overlays:
                return self.overlays[key]
        return self.value


@dataclass(frozen=True, slots=True)
class CanarySpec:
    """The first wave: ``per_stratum`` devices from every region x carrier x SKU stratum
    present, at most ``max_devices`` in all (strata beyond that are sampled round-robin by
    size), baked ``bake_s`` seconds; ``approval``: wait for an operator's approve after it."""

    per_stratum: int = 1
    max_devices: int = 50
    bake_s: float = 60.0
    approval: bool = False


@dataclass(frozen=True, slots=True)
class WaveSpec:
    """One wave after the canary: ``count`` devices or ``percent`` of the selection (exactly
    one is set), baked ``bake_s`` seconds. The last wave takes whatever remains."""

    count: int | None = None
    percent: float | None = None
    bake_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Pacing:
    """How fast devices are admitted: ``rate`` per second to start, multiplied by
    ``growth_factor`` each time ``growth_every`` more devices succeeded (AWS IoT Jobs'
    exponential rollout), never above ``max_rate``; at most ``concurrency`` devices in flight
    (admitted, not final) and at most ``per_carrier[c]`` in flight on carrier ``c``."""

    rate: float = 50.0
    growth_factor: float = 1.0
    growth_every: int = 100
    max_rate: float = 1000.0
    concurrency: int = 500
    per_carrier: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    """A maintenance window in the device's local time: ``days`` (0 = Monday .. 6) and
    ``start``..``end`` as minutes after local midnight (``end`` < ``start`` wraps midnight)."""

    days: frozenset[int]
    start_minute: int
    end_minute: int


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds a device may take for each step after the previous one (after admission for
    ``delivered``); silence past one is TIMED_OUT. Queue-mode devices get their wake interval
    added to ``delivered``."""

    delivered_s: float = 120.0
    applied_s: float = 600.0
    registered_s: float = 300.0
    verified_s: float = 120.0


@dataclass(frozen=True, slots=True)
class RetrySpec:
    """Transient failures are retried at most ``max_attempts`` times in all, with exponential
    backoff from ``backoff_s`` capped at ``backoff_cap_s``."""

    max_attempts: int = 3
    backoff_s: float = 10.0
    backoff_cap_s: float = 300.0


@dataclass(frozen=True, slots=True)
class GateSpec:
    """Thresholds a wave's cohort must meet. A percentage is of the cohort's devices in that
    wave whose outcome is known; nothing is decided below ``min_sample`` known outcomes unless
    the wave is over (then: inconclusive). ``None`` disables a threshold.

    Telemetry guards compare the cohort to a **control cohort** (devices of the same scope
    that are not in the campaign): deregistrations, missed registration updates and error
    results per device may exceed the control's by at most the given percentage points."""

    min_sample: int = 5
    max_failures: int | None = None
    max_failure_pct: float | None = 10.0
    max_timeouts: int | None = None
    max_timeout_pct: float | None = 10.0
    min_ack_pct: float | None = 90.0
    min_verified_pct: float | None = 90.0
    max_deregistration_excess_pct: float | None = None
    max_missed_update_excess_pct: float | None = None
    max_error_excess_pct: float | None = None
    cohort_by: tuple[Scope, ...] = (Scope.REGION, Scope.CARRIER, Scope.POLICY_GROUP)


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """Everything a campaign is created from (a YAML/JSON file or CLI flags; see
    :func:`lifecycle.campaigns.spec.parse_spec`)."""

    name: str
    selector: str
    components: tuple[Component, ...]
    tenant: str | None = None
    membership: Membership = Membership.SNAPSHOT
    canary: CanarySpec = field(default_factory=CanarySpec)
    waves: tuple[WaveSpec, ...] = (WaveSpec(percent=100.0),)
    pacing: Pacing = field(default_factory=Pacing)
    windows: tuple[Window, ...] = ()
    deadlines: Deadlines = field(default_factory=Deadlines)
    retry: RetrySpec = field(default_factory=RetrySpec)
    gates: GateSpec = field(default_factory=GateSpec)
    on_failure: OnFailure = OnFailure.REVERT
    revert_scope: Scope = Scope.REGION
    description: str = ""

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return tuple(c.dimension for c in self.components)

    @property
    def phase_split(self) -> int:
        """How many components make up the **download phase** (0: the campaign has one
        phase). An eSIM switch with an activation code is two gated phases: ``esim_download``
        (component 0: the profile present on the eUICC, disabled) and then the enable with
        rollbackFlag and whatever moves with it (docs/CAMPAIGNS.md, "Phases")."""
        if self.components and self.components[0].dimension is Dimension.ESIM_DOWNLOAD:
            return 1
        return 0

    @property
    def kind(self) -> str:
        """``esim`` for a two-phase eSIM switch, else ``change``."""
        return "esim" if self.phase_split else "change"


# -- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A device in a campaign's selection, with what planning and gating need to know of it
    (from the inventory). ``utc_offset_minutes`` places its maintenance windows (None: UTC);
    ``wake_interval_s`` is set for queue-mode devices (how long until it talks again)."""

    endpoint: str
    region: str = ""
    carrier: str = ""
    sku: str = ""
    policy_group: str = ""
    country: str = ""
    utc_offset_minutes: int | None = None
    wake_interval_s: float | None = None

    @property
    def stratum(self) -> tuple[str, str, str]:
        return (self.region, self.carrier, self.sku)

    def cohort(self, scope: Scope) -> str:
        """This device's key under ``scope`` (the batch scope is the wave, not the device)."""
        if scope is Scope.REGION:
            return self.region
        if scope is Scope.CARRIER:
            return self.carrier
        if scope is Scope.POLICY_GROUP:
            return self.policy_group
        return ""


@dataclass(frozen=True, slots=True)
class Conflict:
    """``endpoint``'s ``dimension`` is held by another active campaign."""

    endpoint: str
    dimension: Dimension
    campaign: str


@dataclass(frozen=True, slots=True)
class WavePlan:
    """One planned wave: index 0 is the canary."""

    index: int
    name: str
    endpoints: tuple[str, ...]
    bake_s: float
    approval: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What a campaign would do (``campaign plan``) and what ``campaign create`` persists."""

    waves: tuple[WavePlan, ...]
    strata: Mapping[tuple[str, str, str], int]
    """Devices per (region, carrier, SKU) stratum."""
    bytes_to_move: int
    estimated_s: float
    """Seconds to finish with ideal links: pacing, bake times and queue-mode wake intervals."""
    conflicts: tuple[Conflict, ...] = ()
    """Devices held by another active campaign on a dimension of this one (left out)."""

    @property
    def devices(self) -> int:
        return sum(len(w.endpoints) for w in self.waves)


# -- gating ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One device's standing in a wave, as the gates see it. ``acked``: it acknowledged
    delivery; ``deregistrations``/``missed_updates``/``error_results``: telemetry since it
    was admitted (for the control cohort: over the same period)."""

    endpoint: str
    state: DeviceState
    cohort: Mapping[Scope, str]
    failure: FailureKind | None = None
    acked: bool = False
    deregistrations: int = 0
    missed_updates: int = 0
    error_results: int = 0


@dataclass(frozen=True, slots=True)
class Telemetry:
    """A control cohort's telemetry: devices and their totals over the same period."""

    devices: int
    deregistrations: int = 0
    missed_updates: int = 0
    error_results: int = 0


@dataclass(frozen=True, slots=True)
class CohortVerdict:
    """A gate's verdict on one cohort (``scope`` = ``key``) of one wave, with the counts it
    was decided on and the reasons (each names the threshold and the figure)."""

    scope: Scope
    key: str
    verdict: Verdict
    reasons: tuple[str, ...]
    counts: Mapping[str, int]
    artifact_bad: tuple[str, ...] = ()
    """Endpoints in the cohort whose failure was ARTIFACT_BAD, whatever the verdict: the
    engine may quarantine the artifact (which halts every campaign that uses it)."""


__all__ = [
    "CampaignError",
    "CampaignSpec",
    "CampaignState",
    "CanarySpec",
    "CohortVerdict",
    "Component",
    "Conflict",
    "Deadlines",
    "DeviceState",
    "FailureKind",
    "GateSpec",
    "Member",
    "Membership",
    "OnFailure",
    "Outcome",
    "Pacing",
    "Plan",
    "RetrySpec",
    "Scope",
    "Step",
    "Telemetry",
    "Verdict",
    "WavePlan",
    "WaveSpec",
    "Window",
]
