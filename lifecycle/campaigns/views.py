"""What ``status`` and ``report`` show of a campaign, from its run (sans-IO: plain dicts of JSON
data, the API and CLI shape them further)."""

from __future__ import annotations

from typing import Any

from lifecycle.campaigns.model import DeviceState
from lifecycle.campaigns.runs import CampaignRun


def status_of(run: CampaignRun, *, waves: bool = True) -> dict[str, Any]:
    """State, reason, counts per state, per wave (with per-cohort counts and the gate
    verdicts) and the conflicts left out. ``waves=False``: without the per-wave part
    (constant cost, for a progress bar polled often)."""
    per_wave = []
    for w in run.waves if waves else ():
        counts: dict[str, int] = {}
        region: dict[str, dict[str, int]] = {}
        carrier: dict[str, dict[str, int]] = {}
        group: dict[str, dict[str, int]] = {}
        for d in run.in_wave(w.index):
            name = d.state.value
            counts[name] = counts.get(name, 0) + 1
            m = d.member
            for by_key, key in (
                (region, m.region),
                (carrier, m.carrier),
                (group, m.policy_group),
            ):
                by = by_key.get(key)
                if by is None:
                    by = by_key[key] = {}
                by[name] = by.get(name, 0) + 1
        cohorts = {"region": region, "carrier": carrier, "policy_group": group}
        per_wave.append(
            {
                "index": w.index,
                "name": w.name,
                "state": w.state,
                "phase": w.phase,
                "download_verdicts": list(w.phase_verdicts),
                "bake_s": w.bake_s,
                "approval": w.approval,
                "started_at": w.started_at,
                "done_at": w.done_at,
                "devices": sum(counts.values()),
                "counts": counts,
                "cohorts": cohorts,
                "verdicts": [{**v, "acted": (v["scope"], v["key"]) in w.acted} for v in w.verdicts],
            }
        )
    return {
        "id": run.id,
        "name": run.spec.name,
        "kind": run.spec.kind,
        "phases": _phases(run),
        "phase": _current_phase(run),
        "tenant": run.spec.tenant,
        "state": run.state.value,
        "reason": run.reason,
        "wave": run.wave,
        "created_by": run.created_by,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "devices": len(run.devices),
        "counts": {s.value: n for s, n in run.counts.items() if n},
        # an ended campaign rolling devices back (``rollback``): its devices still reverting
        "rolling_back": 0 if run.state.active else run.counts.get(DeviceState.REVERTING, 0),
        "waves": per_wave,
        "reverted_cohorts": [{"scope": s, "key": k} for s, k in sorted(run.reverted_cohorts)],
        "conflicts": len(run.conflicts),
        "artifacts": list(run.artifacts),
        "components": [
            {"dimension": c.dimension.value, "artifact": c.artifact} for c in run.spec.components
        ],
    }


def _phases(run: CampaignRun) -> list[dict[str, Any]]:
    """A two-phase campaign's phases and the components of each ([] for one phase)."""
    split = run.spec.phase_split
    if not split:
        return []
    dims = [c.dimension.value for c in run.spec.components]
    return [
        {"name": "download", "components": dims[:split]},
        {"name": "enable", "components": dims[split:]},
    ]


def _current_phase(run: CampaignRun) -> str:
    """The phase of the wave the campaign is on ("" for one phase or when every wave is
    done)."""
    if not run.spec.phase_split or run.wave >= len(run.waves):
        return ""
    return run.waves[run.wave].phase


def report_of(run: CampaignRun, *, limit: int = 1000) -> dict[str, Any]:
    """What changed where and why it stopped: per cohort counts, failures grouped by
    reason (with sample devices), devices without a rollback target, conflicts, and the
    first ``limit`` devices with their state."""
    by_region: dict[str, dict[str, int]] = {}
    reasons: dict[str, list[str]] = {}
    unrevertable = []
    for d in run.devices.values():
        c = by_region.setdefault(d.member.region or "-", {})
        c[d.state.value] = c.get(d.state.value, 0) + 1
        if d.state in (
            DeviceState.FAILED,
            DeviceState.TIMED_OUT,
            DeviceState.SKIPPED,
        ) or d.reason.startswith("no last-known-good"):
            reasons.setdefault(f"{d.state.value}: {d.reason or d.failure or ''}", []).append(
                d.endpoint
            )
        if d.reason.startswith("no last-known-good"):
            unrevertable.append(d.endpoint)
    return {
        **status_of(run),
        "stopped": run.reason,
        "by_region": by_region,
        "changed": sum(
            1
            for d in run.devices.values()
            if d.state in (DeviceState.SUCCEEDED, DeviceState.VERIFIED)
        ),
        "reverted": run.counts.get(DeviceState.REVERTED, 0),
        "failures": [
            {"reason": r, "devices": len(eps), "examples": sorted(eps)[:10]}
            for r, eps in sorted(reasons.items(), key=lambda kv: -len(kv[1]))
        ],
        "no_rollback_target": sorted(unrevertable),
        "conflict_list": run.conflicts[:limit],
        "device_list": [
            {
                "endpoint": d.endpoint,
                "wave": d.wave,
                "state": d.state.value,
                "region": d.member.region,
                "carrier": d.member.carrier,
                "policy_group": d.member.policy_group,
                "failure": d.failure.value if d.failure else None,
                "reason": d.reason,
                "rollback": d.rollback,
            }
            for d in sorted(run.devices.values(), key=lambda d: d.endpoint)[:limit]
        ],
    }


__all__ = ["report_of", "status_of"]
