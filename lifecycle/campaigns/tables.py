"""The campaign engine's tables: campaigns, their waves, their devices, the idempotency keys of
every desired-state write the engine made, and quarantined artifacts.

Everything the engine decides is a row here before it is acted on (docs/CAMPAIGNS.md, "When
it fails"): a restart rebuilds the runner's memory from these tables alone.

* ``lc_campaign`` -- one campaign: its spec (JSON, :func:`lifecycle.campaigns.spec.spec_to_dict`
  or the engine's own encoding), state, the reason it stopped, the wave it is on, the cohorts
  reverted so far.
* ``lc_campaign_wave`` -- one planned wave: when it started, its gate verdicts per cohort.
* ``lc_campaign_device`` -- one member: its wave, cohort keys, state, the component it is on,
  the generation the engine wrote, the absolute deadline of the step it waits for, its
  last-known-good value per dimension (the rollback target) and bake telemetry.
* ``lc_campaign_step`` -- the idempotency key (campaign, endpoint, step, attempt), UNIQUE: a
  desired value is written only together with a new key in one transaction, so after a crash
  the engine can tell a write that happened from one that did not.
* ``lc_quarantine`` -- artifacts no campaign may deliver (quarantining halts their campaigns).
* ``lc_campaign_telemetry`` -- the telemetry guards' inputs: per (campaign, wave, endpoint)
  the deregistrations, missed registration updates (expiries) and error results counted for
  a wave device (``control`` false) or for a device of the control cohort (``control`` true,
  counted while that wave ran). Written in the tick's transaction before any gate reads
  them, so a verdict is never decided on counters a ``kill -9`` lost.

Values are JSON text, times ``double precision`` epoch seconds, as in the other ``lc_`` tables.
"""

from __future__ import annotations

from sqlalchemy import Double, Index, Text
from sqlmodel import Field

from lifecycle.tables import LifecycleModel, table_of


class CampaignRow(LifecycleModel, table=True):
    __tablename__ = "lc_campaign"
    __table_args__ = (Index("ix_lc_campaign_state", "state"),)

    id: str = Field(primary_key=True)
    name: str
    tenant: str | None = None
    spec: str = Field(sa_type=Text)  # JSON
    state: str
    reason: str = Field(default="", sa_type=Text)
    wave: int = 0
    seed: str = ""
    artifacts: str = Field(default="[]", sa_type=Text)  # JSON list of artifact names
    reverted_cohorts: str = Field(default="[]", sa_type=Text)  # JSON [[scope, key], ...]
    conflicts: str = Field(default="[]", sa_type=Text)  # JSON [[endpoint, dim, campaign]]
    created_by: str
    created_at: float = Field(sa_type=Double)
    updated_at: float = Field(sa_type=Double)
    finished_at: float | None = Field(default=None, sa_type=Double)


class CampaignWaveRow(LifecycleModel, table=True):
    __tablename__ = "lc_campaign_wave"

    campaign: str = Field(primary_key=True)
    index: int = Field(primary_key=True)
    name: str
    bake_s: float = Field(sa_type=Double)
    approval: bool = False
    state: str = "pending"  # pending | running | done
    started_at: float | None = Field(default=None, sa_type=Double)
    done_at: float | None = Field(default=None, sa_type=Double)
    verdicts: str = Field(default="[]", sa_type=Text)  # JSON list of cohort verdicts


class CampaignDeviceRow(LifecycleModel, table=True):
    __tablename__ = "lc_campaign_device"
    __table_args__ = (
        Index("ix_lc_campaign_device_state", "campaign", "state"),
        Index("ix_lc_campaign_device_endpoint", "endpoint"),
    )

    campaign: str = Field(primary_key=True)
    endpoint: str = Field(primary_key=True)
    wave: int
    region: str = ""
    carrier: str = ""
    sku: str = ""
    policy_group: str = ""
    country: str = ""
    utc_offset: int | None = None
    wake_interval: float | None = Field(default=None, sa_type=Double)
    state: str
    component: int = 0  # index of the component being delivered (or last delivered)
    generation: int | None = None  # desired generation the engine wrote for it
    reverts: str = Field(default="{}", sa_type=Text)  # JSON {dimension: generation}
    attempt: int = 0
    deadline: float | None = Field(default=None, sa_type=Double)
    rollback: str = Field(default="{}", sa_type=Text)  # JSON {dimension: value | null}
    failure: str | None = None
    reason: str = Field(default="", sa_type=Text)
    acked: bool = False
    deregistrations: int = 0
    registrations: int = 0
    error_results: int = 0
    admitted_at: float | None = Field(default=None, sa_type=Double)
    verified_at: float | None = Field(default=None, sa_type=Double)
    updated_at: float = Field(sa_type=Double)


class CampaignStepRow(LifecycleModel, table=True):
    """The idempotency key of one desired-state write: its primary key is the UNIQUE
    (campaign, endpoint, step, attempt)."""

    __tablename__ = "lc_campaign_step"

    campaign: str = Field(primary_key=True)
    endpoint: str = Field(primary_key=True)
    step: str = Field(primary_key=True)  # "deliver:<component>:<dimension>" | "revert:<dim>"
    attempt: int = Field(primary_key=True)
    generation: int
    at: float = Field(sa_type=Double)


class QuarantineRow(LifecycleModel, table=True):
    __tablename__ = "lc_quarantine"

    artifact: str = Field(primary_key=True)
    reason: str = Field(default="", sa_type=Text)
    actor: str
    at: float = Field(sa_type=Double)


class CampaignTelemetryRow(LifecycleModel, table=True):
    """Guard counters of one device in one wave of one campaign (only devices that had
    telemetry events have a row)."""

    __tablename__ = "lc_campaign_telemetry"

    campaign: str = Field(primary_key=True)
    wave: int = Field(primary_key=True)
    endpoint: str = Field(primary_key=True)
    control: bool = False
    region: str = ""
    carrier: str = ""
    policy_group: str = ""
    deregistrations: int = 0
    missed_updates: int = 0
    error_results: int = 0
    updated_at: float = Field(sa_type=Double)


class CampaignPhaseRow(LifecycleModel, table=True):
    """The phase of one wave of a two-phase campaign (an eSIM switch: ``download`` then
    ``enable``), and the download gate's verdicts once it passed: the barrier between the
    phases survives a restart (a new table: ``create_all`` adds it to an existing database)."""

    __tablename__ = "lc_campaign_phase"

    campaign: str = Field(primary_key=True)
    wave: int = Field(primary_key=True)
    phase: str
    verdicts: str = Field(default="[]", sa_type=Text)  # JSON: the download gate's verdicts
    started_at: float | None = Field(default=None, sa_type=Double)  # of the enable phase


CAMPAIGN = table_of(CampaignRow)
WAVE = table_of(CampaignWaveRow)
DEVICE = table_of(CampaignDeviceRow)
STEP = table_of(CampaignStepRow)
QUARANTINE = table_of(QuarantineRow)
TELEMETRY = table_of(CampaignTelemetryRow)
PHASE = table_of(CampaignPhaseRow)

__all__ = [
    "CAMPAIGN",
    "DEVICE",
    "PHASE",
    "QUARANTINE",
    "STEP",
    "TELEMETRY",
    "WAVE",
    "CampaignDeviceRow",
    "CampaignPhaseRow",
    "CampaignRow",
    "CampaignStepRow",
    "CampaignTelemetryRow",
    "CampaignWaveRow",
    "QuarantineRow",
]
