"""Health gates: the verdict on each cohort of a wave from its devices' outcomes (sans-IO).

The engine calls :func:`evaluate_all` whenever outcomes change and when a wave's bake time is
over; each :class:`~lifecycle.campaigns.model.CohortVerdict` says PENDING (keep going),
PASSED, FAILED (halt or revert that cohort, per the campaign's policy) or INCONCLUSIVE
(pause for an operator), with the counts it was decided on and reasons that name the
threshold and the figure, e.g. ``failures 4/20 = 20.0% > max_failure_pct 10.0%``.

The rules, for one cohort (the devices of one region / carrier / policy group -- or the
whole wave for the batch scope):

* **Counted** devices: every outcome but SKIPPED (a device that left the selection or is
  held elsewhere says nothing about the change). **Known**: counted devices whose state is
  final or VERIFIED; **pending**: the other counted ones.
* **Count thresholds** (``max_failures``, ``max_timeouts``) fail the cohort as soon as they
  are exceeded, whatever the sample: more outcomes can never bring a count back down, so
  waiting would only let the damage spread.
* **Percentage thresholds** (``max_failure_pct``, ``max_timeout_pct``, of known outcomes)
  apply from ``min_sample`` known outcomes: below that one failure among two devices is
  50% and means little. ``min_ack_pct`` and ``min_verified_pct`` (of known outcomes) apply
  only once the outcome is complete -- the wave is over (``wave_over``) or every device is
  final -- since devices still delivering have not had their chance yet.
* **Telemetry guards** compare the cohort's deregistrations / missed updates / error
  results per admitted device (in %) with the control cohort's (``control[key]``, devices
  of the same key outside the campaign over the same period); an excess above the guard's
  percentage points fails the cohort. A guard whose control is missing or smaller than
  ``min_sample`` cannot be judged: INCONCLUSIVE when the verdict is due.
* Below ``min_sample`` known outcomes: PENDING while the wave is not over. When it is over,
  a small cohort with any failure, timeout or device still unfinished is INCONCLUSIVE (too
  few to judge by percentage, too bad to pass silently: an operator decides), while a small
  cohort whose every device finished without failure PASSES -- a region with three devices,
  all verified, must not stop the rollout for want of a sample.
* Otherwise PASSED once the outcome is complete, PENDING before.
* An ARTIFACT_BAD failure on any device is reported (``artifact_bad`` and a reason) whatever
  the verdict, so the engine can quarantine the artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lifecycle.campaigns.model import (
    CohortVerdict,
    DeviceState,
    FailureKind,
    GateSpec,
    Outcome,
    Scope,
    Telemetry,
    Verdict,
)

#: Telemetry guards: (GateSpec field, Outcome/Telemetry field, what the reason calls it).
GUARDS = (
    ("max_deregistration_excess_pct", "deregistrations", "deregistrations"),
    ("max_missed_update_excess_pct", "missed_updates", "missed updates"),
    ("max_error_excess_pct", "error_results", "error results"),
)


_SKIPPED, _FAILED, _TIMED_OUT = DeviceState.SKIPPED, DeviceState.FAILED, DeviceState.TIMED_OUT
_SUCCEEDED, _VERIFIED = DeviceState.SUCCEEDED, DeviceState.VERIFIED
#: States whose outcome is known: final ones, and VERIFIED (baking).
_KNOWN = frozenset(s for s in DeviceState if s.final) | {DeviceState.VERIFIED}


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _ratio(what: str, part: int, whole: int) -> str:
    return f"{what} {part}/{whole} = {_pct(part, whole):.1f}%"


def evaluate(
    gates: GateSpec,
    outcomes: Sequence[Outcome],
    *,
    scope: Scope,
    control: Mapping[str, Telemetry] | None = None,
    wave_over: bool = False,
) -> list[CohortVerdict]:
    """One verdict per cohort of ``outcomes`` under ``scope`` (one cohort, key ``""``, for
    the batch), in key order. Rules: module docstring."""
    cohorts: dict[str, list[Outcome]] = {}
    if scope is Scope.BATCH:
        if outcomes:
            cohorts[""] = list(outcomes)
    else:
        for outcome in outcomes:
            key = outcome.cohort.get(scope, "")
            group = cohorts.get(key)
            if group is None:
                cohorts[key] = [outcome]
            else:
                group.append(outcome)
    return [_decide(gates, scope, key, cohorts[key], control, wave_over) for key in sorted(cohorts)]


def evaluate_all(
    gates: GateSpec,
    outcomes: Sequence[Outcome],
    *,
    control: Mapping[Scope, Mapping[str, Telemetry]] | Mapping[str, Telemetry] | None = None,
    wave_over: bool = False,
) -> list[CohortVerdict]:
    """The batch verdict first, then each scope of ``gates.cohort_by``. ``control`` is either
    per scope (``{Scope.REGION: {"eu": Telemetry(...)}}``; without a ``Scope.BATCH`` entry
    the batch's control is one scope's cohorts added up) or one mapping of keys used for
    every scope (the keys of different scopes rarely collide, but per scope is exact)."""
    scopes = [Scope.BATCH, *(s for s in dict.fromkeys(gates.cohort_by) if s is not Scope.BATCH)]
    verdicts: list[CohortVerdict] = []
    for scope in scopes:
        verdicts.extend(
            evaluate(
                gates,
                outcomes,
                scope=scope,
                control=_control_for(control, scope),
                wave_over=wave_over,
            )
        )
    return verdicts


def _control_for(
    control: Mapping[Scope, Mapping[str, Telemetry]] | Mapping[str, Telemetry] | None,
    scope: Scope,
) -> Mapping[str, Telemetry] | None:
    if control is None:
        return None
    if any(isinstance(k, Scope) for k in control):
        per_scope = control.get(scope)
        if isinstance(per_scope, Mapping):
            return per_scope
        if scope is Scope.BATCH:
            return _batch_control(control)  # type: ignore[arg-type]
        return None
    return control  # type: ignore[return-value]


def _batch_control(control: Mapping[Scope, Mapping[str, Telemetry]]) -> dict[str, Telemetry]:
    """The batch's control when none is given: the control devices of one cohort scope added
    up (each scope partitions the same control devices, so any one gives the whole)."""
    for scope in (Scope.REGION, Scope.CARRIER, Scope.POLICY_GROUP):
        cohorts = control.get(scope)
        if cohorts:
            parts = list(cohorts.values())
            return {
                "": Telemetry(
                    devices=sum(t.devices for t in parts),
                    deregistrations=sum(t.deregistrations for t in parts),
                    missed_updates=sum(t.missed_updates for t in parts),
                    error_results=sum(t.error_results for t in parts),
                )
            }
    return {}


def _decide(
    gates: GateSpec,
    scope: Scope,
    key: str,
    outcomes: Sequence[Outcome],
    control: Mapping[str, Telemetry] | None,
    wave_over: bool,
) -> CohortVerdict:
    # one pass over the cohort (a 10 000-device wave is judged every few tenths of a second)
    counted: list[Outcome] = []
    k = failed = timed_out = verified = acked = acked_all = succeeded = 0
    for o in outcomes:
        state = o.state
        if state is _SKIPPED:
            continue
        counted.append(o)
        if o.acked:
            acked_all += 1
        if state in _KNOWN:
            k += 1
            if o.acked:
                acked += 1
            if state is _FAILED:
                failed += 1
            elif state is _TIMED_OUT:
                timed_out += 1
            elif state is _SUCCEEDED:
                succeeded += 1
                verified += 1
            elif state is _VERIFIED:
                verified += 1
    n = len(counted)
    counts = {
        "devices": n,
        "known": k,
        "succeeded": succeeded,
        "verified": verified,
        "failed": failed,
        "timed_out": timed_out,
        "acked": acked_all,
        "pending": n - k,
        "skipped": len(outcomes) - n,
    }
    artifact_bad = tuple(
        sorted(o.endpoint for o in counted if o.failure is FailureKind.ARTIFACT_BAD)
    )
    notes: list[str] = []
    if artifact_bad:
        shown = ", ".join(artifact_bad[:3]) + (", ..." if len(artifact_bad) > 3 else "")
        notes.append(
            f"artifact_bad failures on {len(artifact_bad)} device(s) ({shown}): "
            "the artifact itself may be bad"
        )
    complete = wave_over or n == k

    def verdict(v: Verdict, reasons: Sequence[str]) -> CohortVerdict:
        return CohortVerdict(scope, key, v, (*reasons, *notes), counts, artifact_bad)

    failures: list[str] = []
    if gates.max_failures is not None and failed > gates.max_failures:
        failures.append(f"failures {failed} > max_failures {gates.max_failures}")
    if gates.max_timeouts is not None and timed_out > gates.max_timeouts:
        failures.append(f"timeouts {timed_out} > max_timeouts {gates.max_timeouts}")

    undecidable: list[str] = []
    if k >= gates.min_sample:
        for part, what, limit in (
            (failed, "failures", "max_failure_pct"),
            (timed_out, "timeouts", "max_timeout_pct"),
        ):
            threshold = getattr(gates, limit)
            if threshold is not None and _pct(part, k) > threshold:
                failures.append(f"{_ratio(what, part, k)} > {limit} {threshold:.1f}%")
        if complete:
            for part, what, limit in (
                (acked, "acks", "min_ack_pct"),
                (verified, "verified", "min_verified_pct"),
            ):
                threshold = getattr(gates, limit)
                if threshold is not None and _pct(part, k) < threshold:
                    failures.append(f"{_ratio(what, part, k)} < {limit} {threshold:.1f}%")
        failures_t, undecidable = _telemetry(gates, scope, key, counted, control)
        failures.extend(failures_t)

    if failures:
        return verdict(Verdict.FAILED, failures)
    if k < gates.min_sample:
        if not wave_over:
            return verdict(Verdict.PENDING, [f"known {k} < min_sample {gates.min_sample}; waiting"])
        bad = failed + timed_out
        if bad or n > k:
            return verdict(
                Verdict.INCONCLUSIVE,
                [
                    f"wave over with known {k} < min_sample {gates.min_sample} and "
                    f"{failed} failed, {timed_out} timed out, {n - k} unfinished: "
                    "too few to judge; approve or revert"
                ],
            )
        return verdict(
            Verdict.PASSED,
            [f"known {k} < min_sample {gates.min_sample} but no failure and none unfinished"],
        )
    if not complete:
        return verdict(Verdict.PENDING, [f"pending {n - k}/{n}; no threshold exceeded yet"])
    if undecidable:
        return verdict(Verdict.INCONCLUSIVE, undecidable)
    return verdict(Verdict.PASSED, [])


def _telemetry(
    gates: GateSpec,
    scope: Scope,
    key: str,
    counted: Sequence[Outcome],
    control: Mapping[str, Telemetry] | None,
) -> tuple[list[str], list[str]]:
    """(failures, reasons it cannot be judged) of the telemetry guards."""
    failures: list[str] = []
    undecidable: list[str] = []
    admitted = [o for o in counted if o.state is not DeviceState.QUEUED]
    ctl = control.get(key) if control is not None else None
    label = f"{scope.value}={key}" if scope is not Scope.BATCH else "the batch"
    for limit, field, what in GUARDS:
        threshold = getattr(gates, limit)
        if threshold is None or not admitted:
            continue
        if ctl is None or ctl.devices < gates.min_sample:
            size = "none" if ctl is None else f"{ctl.devices} devices"
            undecidable.append(
                f"{limit}: control cohort for {label} is {size} < min_sample "
                f"{gates.min_sample}; cannot compare {what}"
            )
            continue
        mine = _pct(sum(getattr(o, field) for o in admitted), len(admitted))
        theirs = _pct(getattr(ctl, field), ctl.devices)
        excess = mine - theirs
        if excess > threshold:
            failures.append(
                f"{what} {mine:.1f}% per device vs control {theirs:.1f}% = "
                f"+{excess:.1f} pp > {limit} {threshold:.1f}"
            )
    return failures, undecidable


__all__ = ["GUARDS", "evaluate", "evaluate_all"]
