"""Campaign specs: every key parsed and checked, errors that name the field and the fix, the
exact inverse for persistence (hypothesis round trip), and nothing but CampaignError on any
JSON-like input (hypothesis fuzz)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.campaigns.model import (
    CampaignError,
    CampaignSpec,
    CanarySpec,
    Component,
    Deadlines,
    GateSpec,
    Membership,
    OnFailure,
    Pacing,
    RetrySpec,
    Scope,
    WaveSpec,
    Window,
)
from lifecycle.campaigns.spec import parse_duration, parse_spec, spec_to_dict
from lifecycle.state.dimensions import Dimension

DIGEST = "ab" * 32


def base(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "eu config 7",
        "selector": "region=eu-west,sku=T1",
        "change": [{"config": {"version": "7", "digest": DIGEST}}],
    }
    raw.update(extra)
    return raw


def error_of(raw: Any) -> CampaignError:
    with pytest.raises(CampaignError) as info:
        parse_spec(raw)
    return info.value


FULL: dict[str, Any] = {
    "name": "fw 2.4.1 + config 7",
    "description": "spring rollout",
    "selector": "region in (eu-west,eu-north),label:pilot",
    "tenant": "acme",
    "change": [
        {"config": {"version": "7", "digest": DIGEST}},
        {"dimension": "fw", "value": "2.4.1"},
        {"apn": "iot.a,iot.b"},
    ],
    "membership": "dynamic",
    "canary": {"per_stratum": 2, "max_devices": 30, "bake": "10m", "approval": True},
    "waves": [{"percent": 10, "bake": "30m"}, {"count": 500, "bake": "1h"}, {"percent": 50}],
    "pacing": {
        "rate": 20,
        "growth_factor": 2,
        "growth_every": 100,
        "max_rate": 400,
        "concurrency": 300,
        "per_carrier": {"tmo": 50},
    },
    "windows": [
        {"days": "mon-fri", "start": "02:00", "end": "05:00"},
        {"days": ["sat", "sun"], "start": "22:00", "end": "06:00"},
    ],
    "deadlines": {"delivered": "2m", "applied": "10m", "registered": "5m", "verified": 90},
    "retry": {"max_attempts": 4, "backoff": "15s", "backoff_cap": "10m"},
    "gates": {
        "min_sample": 10,
        "max_failures": 20,
        "max_failure_pct": 5,
        "max_timeouts": None,
        "max_timeout_pct": 10,
        "min_ack_pct": 95,
        "min_verified_pct": 90,
        "max_deregistration_excess_pct": 5,
        "max_missed_update_excess_pct": 10,
        "max_error_excess_pct": 2.5,
        "cohort_by": ["region", "carrier"],
    },
    "on_failure": "halt",
    "revert_scope": "carrier",
}


def test_a_full_spec_parses_into_every_field() -> None:
    spec = parse_spec(FULL)
    assert spec.name == "fw 2.4.1 + config 7"
    assert spec.tenant == "acme"
    assert [c.dimension for c in spec.components] == [
        Dimension.CONFIG,
        Dimension.FIRMWARE,
        Dimension.CONNECTIVITY,
    ]
    assert spec.components[1].value == {"version": "2.4.1"}
    assert spec.components[2].value == {"apns": ["iot.a", "iot.b"], "active": "iot.a"}
    assert spec.membership is Membership.DYNAMIC
    assert spec.canary == CanarySpec(per_stratum=2, max_devices=30, bake_s=600.0, approval=True)
    assert spec.waves == (
        WaveSpec(percent=10.0, bake_s=1800.0),
        WaveSpec(count=500, bake_s=3600.0),
        WaveSpec(percent=50.0, bake_s=60.0),
    )
    assert spec.pacing == Pacing(20.0, 2.0, 100, 400.0, 300, {"tmo": 50})
    assert spec.windows == (
        Window(frozenset({0, 1, 2, 3, 4}), 120, 300),
        Window(frozenset({5, 6}), 1320, 360),
    )
    assert spec.deadlines == Deadlines(120.0, 600.0, 300.0, 90.0)
    assert spec.retry == RetrySpec(4, 15.0, 600.0)
    assert spec.gates == GateSpec(
        min_sample=10,
        max_failures=20,
        max_failure_pct=5.0,
        max_timeouts=None,
        max_timeout_pct=10.0,
        min_ack_pct=95.0,
        min_verified_pct=90.0,
        max_deregistration_excess_pct=5.0,
        max_missed_update_excess_pct=10.0,
        max_error_excess_pct=2.5,
        cohort_by=(Scope.REGION, Scope.CARRIER),
    )
    assert spec.on_failure is OnFailure.HALT
    assert spec.revert_scope is Scope.CARRIER


def test_defaults_come_from_the_model() -> None:
    spec = parse_spec(base())
    assert spec == CampaignSpec(
        "eu config 7",
        "region=eu-west,sku=T1",
        (Component(Dimension.CONFIG, {"version": "7", "digest": DIGEST}),),
    )


def test_the_full_spec_round_trips_through_json() -> None:
    spec = parse_spec(FULL)
    assert parse_spec(json.loads(json.dumps(spec_to_dict(spec)))) == spec


def test_resolve_turns_names_into_components_and_its_errors_name_the_entry() -> None:
    def resolve(dimension: Dimension, value: Any) -> Component:
        if value == "missing-bundle":
            raise LookupError("no bundle named missing-bundle")
        return Component(dimension, {"version": "7", "digest": DIGEST}, artifact=value, size=42)

    spec = parse_spec(base(change=[{"config": "eu-bundle"}]), resolve=resolve)
    assert spec.components[0].artifact == "eu-bundle"
    assert spec.components[0].size == 42
    # persisted and reloaded without the resolver: the resolved form is taken as it is
    assert parse_spec(spec_to_dict(spec)) == spec
    with pytest.raises(CampaignError) as info:
        parse_spec(base(change=[{"config": "missing-bundle"}]), resolve=resolve)
    assert info.value.field == "change[0].config"
    assert "no bundle named missing-bundle" in info.value.message


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (base(colour="red"), "colour", "unknown key"),
        (base(canary={"per_stratum": 1, "bake_time": 5}), "canary.bake_time", "unknown key"),
        ({"selector": "", "change": []}, "name", "missing"),
        (base(selector="region=eu,,sku=T1"), "selector", "character"),
        (base(change=[]), "change", "list of components"),
        (
            base(change=[{"firmware": "1.0"}, {"fw": "2.0"}]),
            "change[1].firmware",
            "one component per dimension",
        ),
        (base(change=[{"firmware": "not a version!"}]), "change[0].firmware", "not a version"),
        (base(change=[{"colour": "red"}]), "change[0].dimension", "unknown dimension"),
        (base(waves=[{"percent": 60}, {"percent": 50}]), "waves[1].percent", "add up to 110"),
        (base(waves=[{"percent": 0}]), "waves[0].percent", "not a percentage"),
        (base(waves=[{"percent": 101}]), "waves[0].percent", "not a percentage"),
        (base(waves=[{"count": 5, "percent": 5}]), "waves[0]", "exactly one of count or percent"),
        (base(waves=[{"percent": 5}, {"percent": 5}, {"count": 0}]), "waves[2].count", "range"),
        (base(waves=[{"count": 1.5}]), "waves[0].count", "whole number"),
        (base(pacing={"rate": 0}), "pacing.rate", "greater than 0"),
        (base(pacing={"rate": 10, "max_rate": 5}), "pacing.max_rate", "below rate"),
        (base(pacing={"growth_factor": 0.5}), "pacing.growth_factor", "1 (no growth)"),
        (base(pacing={"per_carrier": {"tmo": 0}}), "pacing.per_carrier.tmo", "range"),
        (base(canary={"bake": "5 minutes"}), "canary.bake", "not a duration"),
        (base(deadlines={"applied": 0}), "deadlines.applied", "more than 0"),
        (base(deadlines={"applied": "-5s"}), "deadlines.applied", "not a duration"),
        (base(retry={"backoff": "1m", "backoff_cap": "10s"}), "retry.backoff_cap", "below"),
        (base(gates={"max_failure_pct": 150}), "gates.max_failure_pct", "percentage"),
        (base(gates={"min_sample": 0}), "gates.min_sample", "range"),
        (base(gates={"cohort_by": ["region", "sku"]}), "gates.cohort_by[1]", "not one of"),
        (base(gates={"cohort_by": ["region", "region"]}), "gates.cohort_by[1]", "twice"),
        (base(on_failure="explode"), "on_failure", "halt, revert"),
        (base(revert_scope="country"), "revert_scope", "not one of"),
        (
            base(windows=[{"days": "mon-fry", "start": "02:00", "end": "05:00"}]),
            "windows[0].days",
            "day",
        ),
        (base(windows=[{"start": "25:00", "end": "05:00"}]), "windows[0].start", "time of day"),
        (base(windows=[{"start": "02:00", "end": "02:00"}]), "windows[0].end", "equals start"),
        (base(windows=[{"start": "02:00"}]), "windows[0].end", "missing"),
        (base(canary={"approval": "yes"}), "canary.approval", "true or false"),
        (base(name=""), "name", "empty"),
        (base(membership=3), "membership", "one of"),
    ],
)
def test_errors_name_the_field_and_say_what_to_do(raw: Any, field: str, words: str) -> None:
    error = error_of(raw)
    assert error.field == field
    assert words in error.message
    assert str(error).startswith(f"{field}: ")


def test_durations_accept_numbers_and_units() -> None:
    assert parse_duration(90, "x") == 90.0
    assert parse_duration("30s", "x") == 30.0
    assert parse_duration("5m", "x") == 300.0
    assert parse_duration("2h", "x") == 7200.0
    assert parse_duration("1d", "x") == 86400.0
    assert parse_duration("250ms", "x") == 0.25
    assert parse_duration(0, "x", zero=True) == 0.0
    with pytest.raises(CampaignError):
        parse_duration(0, "x")
    with pytest.raises(CampaignError):
        parse_duration(float("nan"), "x")
    with pytest.raises(CampaignError):
        parse_duration(True, "x")


def test_windows_wrap_day_ranges_and_midnight() -> None:
    spec = parse_spec(base(windows=[{"days": "fri-mon", "start": "22:00", "end": "24:00"}]))
    assert spec.windows == (Window(frozenset({4, 5, 6, 0}), 1320, 1440),)
    spec = parse_spec(base(windows=[{"days": [0, 6], "start": "00:00", "end": "24:00"}]))
    assert spec.windows[0].days == frozenset({0, 6})


# -- hypothesis ----------------------------------------------------------------------------------

names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=20)
names = names.filter(lambda s: bool(s.strip()))
durations = st.floats(min_value=0.5, max_value=86400.0, allow_nan=False)
pcts = st.none() | st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
components = st.sampled_from(
    [
        Component(Dimension.FIRMWARE, {"version": "2.4.1", "uri": "coaps://fl/fw/1"}, "img-1", 9),
        Component(
            Dimension.CONFIG,
            {"version": "7", "digest": DIGEST, "bundle": "eu"},
            "eu",
            120,
            {"region=us": {"version": "7-us", "digest": "cd" * 32}},
        ),
        Component(Dimension.CONNECTIVITY, {"apns": ["a.b", "c"], "active": "c"}),
        Component(Dimension.FLAGS, {"beta": "true", "x": "1"}),
        Component(Dimension.CREDENTIALS, {"generation": 3}),
        Component(Dimension.ESIM, {"iccid": "8944" + "1" * 15}),
    ]
)


@st.composite
def specs(draw: st.DrawFn) -> CampaignSpec:
    comps = draw(st.lists(components, min_size=1, max_size=4, unique_by=lambda c: c.dimension))
    waves = []
    left = 100.0
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            waves.append(WaveSpec(count=draw(st.integers(1, 10_000)), bake_s=draw(durations)))
        elif left >= 1:
            pct = draw(st.floats(min_value=1.0, max_value=left, allow_nan=False))
            left -= pct
            waves.append(WaveSpec(percent=pct, bake_s=draw(durations)))
    if not waves:
        waves.append(WaveSpec(count=1))
    rate = draw(st.floats(min_value=0.1, max_value=500, allow_nan=False))
    backoff = draw(durations)
    windows = draw(
        st.lists(
            st.builds(
                Window,
                st.frozensets(st.integers(0, 6), min_size=1),
                st.integers(0, 1439),
                st.integers(1, 1440),
            ).filter(lambda w: w.start_minute != w.end_minute),
            max_size=3,
        )
    )
    return CampaignSpec(
        name=draw(names),
        selector=draw(st.sampled_from(["", "region=eu", 'label:pilot,carrier in (a,"b c")'])),
        components=tuple(comps),
        tenant=draw(st.none() | names),
        membership=draw(st.sampled_from(Membership)),
        canary=CanarySpec(
            draw(st.integers(1, 9)), draw(st.integers(1, 999)), draw(durations), draw(st.booleans())
        ),
        waves=tuple(waves),
        pacing=Pacing(
            rate,
            draw(st.floats(min_value=1.0, max_value=10.0, allow_nan=False)),
            draw(st.integers(1, 1000)),
            rate + draw(st.floats(min_value=0, max_value=1000, allow_nan=False)),
            draw(st.integers(1, 5000)),
            draw(st.dictionaries(st.sampled_from(["tmo", "vzw", "att"]), st.integers(1, 99))),
        ),
        windows=tuple(windows),
        deadlines=Deadlines(*(draw(durations) for _ in range(4))),
        retry=RetrySpec(draw(st.integers(1, 10)), backoff, backoff + draw(durations)),
        gates=GateSpec(
            draw(st.integers(1, 100)),
            draw(st.none() | st.integers(0, 100)),
            draw(pcts),
            draw(st.none() | st.integers(0, 100)),
            draw(pcts),
            draw(pcts),
            draw(pcts),
            draw(pcts),
            draw(pcts),
            draw(pcts),
            tuple(
                draw(
                    st.lists(
                        st.sampled_from([Scope.REGION, Scope.CARRIER, Scope.POLICY_GROUP]),
                        unique=True,
                    )
                )
            ),
        ),
        on_failure=draw(st.sampled_from(OnFailure)),
        revert_scope=draw(st.sampled_from(Scope)),
        description=draw(
            st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30)
        ),
    )


@settings(max_examples=150, deadline=None)
@given(specs())
def test_spec_to_dict_is_the_exact_inverse_through_json(spec: CampaignSpec) -> None:
    as_json = json.loads(json.dumps(spec_to_dict(spec)))
    assert parse_spec(as_json) == spec


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "name",
        "selector",
        "change",
        "canary",
        "waves",
        "pacing",
        "windows",
        "deadlines",
        "retry",
        "gates",
        "membership",
        "tenant",
        "on_failure",
        "revert_scope",
        "description",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, json_like, max_size=8) | json_like)
def test_any_json_like_input_raises_only_campaign_error(raw: Any) -> None:
    with contextlib.suppress(CampaignError):
        parse_spec(raw)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(FULL)), json_like, max_size=3))
def test_damaging_a_valid_spec_raises_only_campaign_error(damage: dict[str, Any]) -> None:
    with contextlib.suppress(CampaignError):
        parse_spec({**FULL, **damage})


def test_the_example_in_docs_campaigns_parses() -> None:
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    page = (Path(__file__).parents[3] / "docs" / "CAMPAIGNS.md").read_text()
    block = page.split("<!-- campaign-spec-example -->")[1].split(
        "<!-- /campaign-spec-example -->"
    )[0]
    text = block.strip().removeprefix("```yaml").removesuffix("```")
    spec = parse_spec(yaml.safe_load(text))
    assert spec.dimensions == (Dimension.CONFIG, Dimension.FIRMWARE, Dimension.CONNECTIVITY)
    assert spec.canary.approval and spec.membership is Membership.DYNAMIC
    assert len(spec.windows) == 2 and spec.gates.max_timeouts is None
    assert parse_spec(spec_to_dict(spec)) == spec
