"""Health gates: per-cohort verdicts from outcomes -- thresholds by count and percentage with
a minimum sample, ACK and verification minimums once the wave is over, telemetry guards
against a control cohort, and the small-cohort rule."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.campaigns.gates import evaluate, evaluate_all
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

S = DeviceState
OPEN = GateSpec(
    min_sample=5,
    max_failure_pct=None,
    max_timeout_pct=None,
    min_ack_pct=None,
    min_verified_pct=None,
)


def outcome(
    i: int,
    state: DeviceState,
    region: str = "eu",
    *,
    carrier: str = "x",
    failure: FailureKind | None = None,
    acked: bool | None = None,
    deregistrations: int = 0,
) -> Outcome:
    return Outcome(
        f"dev-{i}",
        state,
        {Scope.REGION: region, Scope.CARRIER: carrier, Scope.POLICY_GROUP: "pg"},
        failure=failure,
        acked=acked if acked is not None else state in (S.VERIFIED, S.SUCCEEDED),
        deregistrations=deregistrations,
    )


def many(states: Sequence[DeviceState], region: str = "eu", start: int = 0) -> list[Outcome]:
    return [outcome(start + i, s, region) for i, s in enumerate(states)]


def one(verdicts: list[CohortVerdict]) -> CohortVerdict:
    assert len(verdicts) == 1
    return verdicts[0]


def test_failure_percentage_fails_the_cohort_with_the_figure_in_the_reason() -> None:
    gates = GateSpec(min_sample=10, max_failure_pct=10.0, min_ack_pct=None, min_verified_pct=None)
    outcomes = many([S.FAILED] * 4 + [S.SUCCEEDED] * 16)
    v = one(evaluate(gates, outcomes, scope=Scope.BATCH))
    assert v.verdict is Verdict.FAILED
    assert v.key == "" and v.scope is Scope.BATCH
    assert "failures 4/20 = 20.0% > max_failure_pct 10.0%" in v.reasons
    assert v.counts["failed"] == 4 and v.counts["known"] == 20 and v.counts["succeeded"] == 16


def test_percentages_wait_for_the_minimum_sample() -> None:
    gates = GateSpec(min_sample=10, max_failure_pct=10.0)
    outcomes = many([S.FAILED] * 3 + [S.DELIVERING] * 20)
    v = one(evaluate(gates, outcomes, scope=Scope.BATCH))
    assert v.verdict is Verdict.PENDING
    assert v.counts["pending"] == 20
    # 10 known, 3 failed: decided now
    outcomes = many([S.FAILED] * 3 + [S.VERIFIED] * 7 + [S.DELIVERING] * 13)
    assert one(evaluate(gates, outcomes, scope=Scope.BATCH)).verdict is Verdict.FAILED


def test_count_thresholds_fail_at_once_whatever_the_sample() -> None:
    gates = GateSpec(min_sample=50, max_failures=2, max_timeouts=0)
    v = one(evaluate(gates, many([S.FAILED] * 3 + [S.DELIVERING] * 5), scope=Scope.BATCH))
    assert v.verdict is Verdict.FAILED
    assert "failures 3 > max_failures 2" in v.reasons
    v = one(evaluate(gates, many([S.TIMED_OUT] + [S.DELIVERING] * 5), scope=Scope.BATCH))
    assert "timeouts 1 > max_timeouts 0" in v.reasons


def test_timeouts_count_against_the_gate() -> None:
    gates = GateSpec(min_sample=5, max_timeout_pct=10.0, min_ack_pct=None, min_verified_pct=None)
    v = one(evaluate(gates, many([S.TIMED_OUT] * 2 + [S.SUCCEEDED] * 8), scope=Scope.BATCH))
    assert v.verdict is Verdict.FAILED
    assert "timeouts 2/10 = 20.0% > max_timeout_pct 10.0%" in v.reasons


def test_ack_and_verified_minimums_apply_once_the_wave_is_over() -> None:
    gates = GateSpec(min_sample=5, max_failure_pct=None, max_timeout_pct=None,
                     min_ack_pct=90.0, min_verified_pct=90.0)  # fmt: skip
    outcomes = [
        *many([S.SUCCEEDED] * 8 + [S.DELIVERING] * 2),
        outcome(20, S.REVERTED, acked=False),  # known, neither acked nor verified
    ]
    assert one(evaluate(gates, outcomes, scope=Scope.BATCH)).verdict is Verdict.PENDING
    v = one(evaluate(gates, outcomes, scope=Scope.BATCH, wave_over=True))
    assert v.verdict is Verdict.FAILED
    assert "acks 8/9 = 88.9% < min_ack_pct 90.0%" in v.reasons
    assert "verified 8/9 = 88.9% < min_verified_pct 90.0%" in v.reasons


def test_a_complete_cohort_passes_without_waiting_for_the_wave() -> None:
    gates = GateSpec(min_sample=5)
    v = one(evaluate(gates, many([S.SUCCEEDED] * 10), scope=Scope.BATCH))
    assert v.verdict is Verdict.PASSED
    assert v.counts == {
        "devices": 10, "known": 10, "succeeded": 10, "verified": 10, "failed": 0,
        "timed_out": 0, "acked": 10, "pending": 0, "skipped": 0,
    }  # fmt: skip


def test_cohorts_are_judged_apart_so_one_region_fails_alone() -> None:
    gates = GateSpec(min_sample=5, max_failure_pct=10.0)
    outcomes = many([S.FAILED] * 6, "apac") + many([S.SUCCEEDED] * 20, "eu", start=100)
    verdicts = evaluate(gates, outcomes, scope=Scope.REGION, wave_over=True)
    assert [(v.key, v.verdict) for v in verdicts] == [
        ("apac", Verdict.FAILED),
        ("eu", Verdict.PASSED),
    ]
    batch = one(evaluate(gates, outcomes, scope=Scope.BATCH, wave_over=True))
    assert batch.verdict is Verdict.FAILED  # 6/26 = 23%


def test_evaluate_all_covers_the_batch_and_every_cohort_scope() -> None:
    gates = GateSpec(min_sample=1, cohort_by=(Scope.REGION, Scope.CARRIER))
    outcomes = [outcome(1, S.SUCCEEDED, "eu", carrier="x"), outcome(2, S.SUCCEEDED, "us")]
    got = [(v.scope, v.key) for v in evaluate_all(gates, outcomes, wave_over=True)]
    assert got == [
        (Scope.BATCH, ""),
        (Scope.REGION, "eu"),
        (Scope.REGION, "us"),
        (Scope.CARRIER, "x"),
    ]


def test_small_cohorts_at_the_end_of_a_wave() -> None:
    gates = GateSpec(min_sample=5)
    clean = many([S.SUCCEEDED] * 3)
    assert one(evaluate(gates, clean, scope=Scope.BATCH)).verdict is Verdict.PENDING
    assert one(evaluate(gates, clean, scope=Scope.BATCH, wave_over=True)).verdict is Verdict.PASSED
    dirty = many([S.SUCCEEDED] * 2 + [S.FAILED])
    v = one(evaluate(gates, dirty, scope=Scope.BATCH, wave_over=True))
    assert v.verdict is Verdict.INCONCLUSIVE
    assert "min_sample 5" in v.reasons[0]
    unfinished = many([S.SUCCEEDED] * 2 + [S.DELIVERING])
    v = one(evaluate(gates, unfinished, scope=Scope.BATCH, wave_over=True))
    assert v.verdict is Verdict.INCONCLUSIVE


def test_skipped_devices_say_nothing_about_the_change() -> None:
    gates = GateSpec(min_sample=5, max_failure_pct=10.0)
    outcomes = many([S.SUCCEEDED] * 10 + [S.SKIPPED] * 10)
    v = one(evaluate(gates, outcomes, scope=Scope.BATCH, wave_over=True))
    assert v.verdict is Verdict.PASSED
    assert v.counts["devices"] == 10 and v.counts["skipped"] == 10


def test_telemetry_guard_against_the_control_cohort() -> None:
    gates = GateSpec(min_sample=5, max_deregistration_excess_pct=10.0, min_ack_pct=None)
    outcomes = [outcome(i, S.SUCCEEDED, "eu", deregistrations=1 if i < 3 else 0) for i in range(10)]
    control = {"eu": Telemetry(devices=100, deregistrations=5)}
    v = one(evaluate(gates, outcomes, scope=Scope.REGION, control=control, wave_over=True))
    assert v.verdict is Verdict.FAILED
    assert (
        "deregistrations 30.0% per device vs control 5.0% = +25.0 pp > "
        "max_deregistration_excess_pct 10.0" in v.reasons
    )
    calm = {"eu": Telemetry(devices=100, deregistrations=25)}
    v = one(evaluate(gates, outcomes, scope=Scope.REGION, control=calm, wave_over=True))
    assert v.verdict is Verdict.PASSED


def test_telemetry_guard_without_a_usable_control_is_inconclusive() -> None:
    gates = GateSpec(min_sample=5, max_error_excess_pct=5.0)
    outcomes = many([S.SUCCEEDED] * 10)
    v = one(evaluate(gates, outcomes, scope=Scope.REGION, wave_over=True))
    assert v.verdict is Verdict.INCONCLUSIVE
    assert "control cohort for region=eu is none" in v.reasons[0]
    small = {"eu": Telemetry(devices=4)}
    v = one(evaluate(gates, outcomes, scope=Scope.REGION, control=small, wave_over=True))
    assert v.verdict is Verdict.INCONCLUSIVE
    # while the wave runs it is only pending
    running = many([S.SUCCEEDED] * 6 + [S.DELIVERING] * 4)
    assert one(evaluate(gates, running, scope=Scope.REGION)).verdict is Verdict.PENDING


def test_evaluate_all_takes_control_per_scope() -> None:
    gates = GateSpec(min_sample=2, max_deregistration_excess_pct=10.0, cohort_by=(Scope.REGION,))
    outcomes = [outcome(i, S.SUCCEEDED, "eu", deregistrations=1) for i in range(4)]
    control = {
        Scope.BATCH: {"": Telemetry(devices=10, deregistrations=10)},
        Scope.REGION: {"eu": Telemetry(devices=10, deregistrations=0)},
    }
    got = {
        v.scope: v.verdict for v in evaluate_all(gates, outcomes, control=control, wave_over=True)
    }
    assert got == {Scope.BATCH: Verdict.PASSED, Scope.REGION: Verdict.FAILED}


def test_the_batch_control_defaults_to_the_cohorts_added_up() -> None:
    gates = GateSpec(min_sample=2, max_deregistration_excess_pct=10.0, cohort_by=(Scope.REGION,))
    outcomes = [outcome(i, S.SUCCEEDED, "eu", deregistrations=i % 2) for i in range(4)]  # 50%
    control = {
        Scope.REGION: {
            "eu": Telemetry(devices=10, deregistrations=5),  # 50%
            "us": Telemetry(devices=10, deregistrations=1),  # 10%
        }
    }
    verdicts = evaluate_all(gates, outcomes, control=control, wave_over=True)
    batch = next(v for v in verdicts if v.scope is Scope.BATCH)
    assert batch.verdict is Verdict.FAILED  # against 6/20 = 30%: +20 pp
    assert "vs control 30.0% = +20.0 pp" in batch.reasons[0]
    eu = next(v for v in verdicts if v.scope is Scope.REGION)
    assert eu.verdict is Verdict.PASSED


def test_an_artifact_bad_failure_is_reported_whatever_the_verdict() -> None:
    gates = GateSpec(min_sample=5, max_failure_pct=50.0, min_ack_pct=None, min_verified_pct=None)
    outcomes = [*many([S.SUCCEEDED] * 9), outcome(99, S.FAILED, failure=FailureKind.ARTIFACT_BAD)]
    v = one(evaluate(gates, outcomes, scope=Scope.BATCH, wave_over=True))
    assert v.verdict is Verdict.PASSED
    assert v.artifact_bad == ("dev-99",)
    assert any(r.startswith("artifact_bad failures on 1 device(s) (dev-99)") for r in v.reasons)


# -- properties ----------------------------------------------------------------------------------

states = st.sampled_from(list(DeviceState))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(states, st.sampled_from(["eu", "us"]), st.booleans()), max_size=40),
    st.booleans(),
)
def test_verdict_invariants(rows: list[tuple[DeviceState, str, bool]], wave_over: bool) -> None:
    gates = GateSpec(min_sample=5, max_failures=8)
    outcomes = [outcome(i, s, r, acked=a) for i, (s, r, a) in enumerate(rows)]
    verdicts = evaluate_all(gates, outcomes, wave_over=wave_over)
    for v in verdicts:
        c = v.counts
        assert c["devices"] == c["known"] + c["pending"]
        assert c["failed"] + c["timed_out"] + c["verified"] <= c["known"]
        if v.verdict is Verdict.PASSED:
            assert c["failed"] <= 8
            assert wave_over or c["pending"] == 0
        if c["failed"] > 8:
            assert v.verdict is Verdict.FAILED
        if v.verdict is not Verdict.PENDING and v.verdict is not Verdict.FAILED:
            assert wave_over or c["pending"] == 0
    batch = [v for v in verdicts if v.scope is Scope.BATCH]
    assert len(batch) == (1 if outcomes else 0)


def test_open_gates_pass_a_finished_wave() -> None:
    v = one(evaluate(OPEN, many([S.FAILED] * 10), scope=Scope.BATCH, wave_over=True))
    assert v.verdict is Verdict.PASSED
