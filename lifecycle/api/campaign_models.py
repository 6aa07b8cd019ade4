"""Response and request models of the campaign routes (:mod:`lifecycle.api.campaign_routes`).

The engine (:class:`lifecycle.campaigns.component.CampaignComponent`) answers plain dicts;
these models are the contract those dicts are checked against and the schema a client
generates code from. Like :mod:`lifecycle.api.models` they allow extra fields: a newer engine
may add fields, never remove or retype them. Per-state counts are maps from a device state
(``queued``, ``delivering``, ``staged``, ``registering``, ``verified``, ``succeeded``,
``failed``, ``timed_out``, ``reverting``, ``reverted``, ``skipped``) to a number; states with
no device are left out. ``staged`` and ``registering`` occur in an eSIM switch (``kind:
esim``): the download verified, waiting for the wave's download gate; the enable confirmed by
the eUICC, waiting for the device to register over the new profile.

Timestamps come in pairs, as everywhere in the API: ``<name>`` (ISO 8601 UTC, for people)
and ``<name>_epoch`` (seconds, for programs).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CAMPAIGN_STATES = (
    "running",
    "paused",
    "awaiting_approval",
    "inconclusive",
    "halted",
    "reverting",
    "completed",
    "aborted",
    "reverted",
)


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


Counts = dict[str, int]


# -- request bodies --------------------------------------------------------------------------------


class AbortIn(BaseModel):
    """``abort``: say what happens to the devices already changed -- no default, because
    both choices are irreversible in their own way."""

    model_config = ConfigDict(extra="forbid")
    revert: bool = Field(
        description="true: put every device the campaign changed back on its last-known-good "
        "value (the campaign goes reverting, then aborted); false: keep what changed"
    )


class RollbackIn(BaseModel):
    """Which of the campaign's devices to revert: a ``scope``, a ``selector``, or both (the
    devices in the scope that match the selector); at least one."""

    model_config = ConfigDict(extra="forbid")
    scope: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="the campaign's own cohorts: all, wave=N (or batch=N, or a wave's name "
        "such as canary), region=NAME, carrier=NAME, policy_group=NAME, sku=NAME",
        examples=["region=eu-west", "wave=1", "all"],
    )
    selector: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the campaign's devices to revert (selector language, docs/GROUPS.md, "
        "on the inventory now), e.g. region=eu-west",
        examples=["region=eu-west"],
    )


class QuarantineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact: str = Field(
        min_length=1,
        max_length=256,
        description="the artifact as campaigns name it: a firmware image id, "
        "bundle:NAME@VERSION, apn-profile:NAME@rN (see a campaign's `artifacts`)",
        examples=["bundle:tracker@2.0.0"],
    )
    reason: str = Field(default="", max_length=1024, description="why, for the audit log")


# -- shared pieces ---------------------------------------------------------------------------------


class ComponentOut(Out):
    dimension: str = Field(
        description="config, firmware, connectivity, flags, credentials, esim, esim_download"
    )
    artifact: str = Field(description="what is delivered, as quarantine names it ('' if none)")


class ConflictOut(Out):
    """A device left out: another active campaign holds one of its dimensions."""

    endpoint: str
    dimension: str
    campaign: str


class CohortRef(Out):
    scope: str = Field(description="batch, region, carrier or policy_group")
    key: str


class VerdictOut(Out):
    """A health gate's verdict on one cohort of one wave."""

    scope: str = Field(description="batch, region, carrier or policy_group")
    key: str = Field(description="the cohort: a region name, a carrier, ... ('' for batch)")
    verdict: str = Field(description="pending, passed, failed or inconclusive")
    reasons: list[str] = Field(description="why, in words (thresholds crossed, sample size)")
    counts: Counts = Field(description="the outcomes the verdict was judged on")
    acted: bool = Field(
        default=False,
        description="the engine acted on it (a revert or halt done, an inconclusive accepted)",
    )


class CohortCountsOut(Out):
    scope: str
    key: str
    counts: Counts


# -- plan ------------------------------------------------------------------------------------------


class PlanWaveOut(Out):
    index: int
    name: str = Field(description="canary, wave-1, ...")
    devices: int
    bake_s: float
    approval: bool = Field(description="the campaign waits for `approve` after this wave")
    examples: list[str] = Field(description="the first devices of the wave (at most 10)")


class StratumOut(Out):
    region: str
    carrier: str
    sku: str
    devices: int


class PlanOut(Out):
    """What ``createCampaign`` would do with the same spec; nothing is written."""

    name: str
    tenant: str | None
    selector: str
    devices: int = Field(description="devices the campaign would change (conflicts left out)")
    waves: list[PlanWaveOut]
    strata: list[StratumOut] = Field(description="devices per region x carrier x SKU stratum")
    bytes_to_move: int = Field(description="artifact bytes sent to the devices in total")
    estimated_s: float = Field(
        description="seconds to finish with ideal links: pacing, bakes, queue-mode wake-ups"
    )
    components: list[ComponentOut]
    conflicts: list[ConflictOut] = Field(description="at most 1000; `conflict_count` has all")
    conflict_count: int
    spec: dict[str, Any] = Field(
        description="the resolved spec with every setting spelled out (parse_spec's inverse): "
        "what createCampaign stores"
    )


# -- status, list, report --------------------------------------------------------------------------


class WaveOut(Out):
    index: int
    name: str
    state: str = Field(description="pending, running, baking, done, ...")
    bake_s: float
    approval: bool
    started_at: str | None
    started_at_epoch: float | None
    done_at: str | None
    done_at_epoch: float | None
    devices: int
    counts: Counts
    cohorts: list[CohortCountsOut] = Field(description="per-cohort counts, by gate scope")
    verdicts: list[VerdictOut]
    phase: str = Field(
        default="",
        description="an eSIM switch's wave: download (until its download gate passed), then "
        "enable ('' for a one-phase campaign)",
    )
    download_verdicts: list[VerdictOut] = Field(
        default_factory=list,
        description="the download gate's verdicts, once the wave entered its enable phase",
    )


class PhaseOut(Out):
    name: str = Field(description="download or enable")
    components: list[str] = Field(description="the dimensions delivered in this phase")


class CampaignSummaryOut(Out):
    id: str
    name: str
    tenant: str | None
    state: str = Field(description=", ".join(CAMPAIGN_STATES))
    reason: str = Field(description="why it is in this state (who paused it, which gate, ...)")
    wave: int = Field(description="index of the current wave")
    created_by: str
    created_at: str | None
    created_at_epoch: float | None
    updated_at: str | None
    updated_at_epoch: float | None
    finished_at: str | None
    finished_at_epoch: float | None
    artifacts: list[str]


class CampaignList(Out):
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[CampaignSummaryOut]
    next_cursor: str | None = Field(description="pass as cursor= for the next page")


class CampaignOut(CampaignSummaryOut):
    """A campaign's status: counts per device state, per wave and per cohort, and the gate
    verdicts of every wave."""

    devices: int
    counts: Counts
    waves: list[WaveOut]
    kind: str = Field(default="change", description="change, or esim (two gated phases)")
    phases: list[PhaseOut] = Field(
        default_factory=list, description="an eSIM switch's phases and their components"
    )
    phase: str = Field(default="", description="the current wave's phase ('' if one phase)")
    reverted_cohorts: list[CohortRef]
    conflicts: int = Field(description="devices left out because another campaign held them")
    rolling_back: int = Field(
        default=0,
        description="an ended campaign being rolled back (`rollback`): its devices still "
        "reverting (0 for an active campaign, whose counts show them)",
    )
    components: list[ComponentOut]


class FailureGroupOut(Out):
    reason: str = Field(description="device state and why, e.g. 'failed: config: rejected'")
    devices: int
    examples: list[str] = Field(description="at most 10 endpoints")


class ReportDeviceOut(Out):
    endpoint: str
    wave: int
    state: str
    region: str
    carrier: str
    policy_group: str
    failure: str | None = Field(
        description="transient, device_permanent, artifact_bad, timed_out; null if none"
    )
    reason: str
    rollback: Any = Field(
        default=None, description="the last-known-good values a revert goes back to"
    )


class CampaignReportOut(CampaignOut):
    """What changed where and why it stopped."""

    stopped: str = Field(description="the reason of the last state change ('' if none)")
    by_region: dict[str, Counts] = Field(description="device states per region ('-': none)")
    changed: int = Field(description="devices now on the campaign's change (verified/succeeded)")
    reverted: int
    failures: list[FailureGroupOut]
    no_rollback_target: list[str] = Field(
        description="devices that had no last-known-good value to go back to"
    )
    conflict_list: list[ConflictOut]
    device_list: list[ReportDeviceOut] = Field(description="the first `limit` devices by name")


class RollbackOut(Out):
    reverting: int = Field(description="devices sent back to their last-known-good value")
    campaign: CampaignOut


class QuarantineOut(Out):
    artifact: str
    reason: str
    actor: str
    at: str | None
    at_epoch: float | None
    halted: list[str] = Field(default_factory=list, description="campaigns halted by it")


class QuarantineList(Out):
    items: list[QuarantineOut]


class QuarantineLifted(Out):
    artifact: str
    lifted: bool = Field(description="true: it was quarantined and no longer is")
    resumable: list[str] = Field(
        default_factory=list,
        description="halted campaigns that deliver it: they may `resume` now",
    )


__all__ = [
    "CAMPAIGN_STATES",
    "AbortIn",
    "CampaignList",
    "CampaignOut",
    "CampaignReportOut",
    "CampaignSummaryOut",
    "PlanOut",
    "QuarantineIn",
    "QuarantineList",
    "QuarantineOut",
    "RollbackIn",
    "RollbackOut",
]
