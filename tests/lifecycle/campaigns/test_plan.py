"""Planning: a canary over every stratum, stratified waves by count or percent with every
member in exactly one wave, conflicts left out, an honest duration estimate, pacing that
never admits above its rate or caps, and maintenance windows in local time."""

from __future__ import annotations

import calendar
import math
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.campaigns.model import (
    CampaignError,
    CampaignSpec,
    CanarySpec,
    Component,
    Member,
    Pacing,
    WaveSpec,
    Window,
)
from lifecycle.campaigns.plan import (
    Pacer,
    admit_dynamic,
    build_plan,
    in_window,
    next_window_start,
)
from lifecycle.state.dimensions import Dimension

FW = Component(Dimension.FIRMWARE, {"version": "2.0"}, "img", size=1000)
CFG = Component(Dimension.CONFIG, {"version": "7", "digest": "ab" * 32}, "eu", size=24)


def spec(**kw: object) -> CampaignSpec:
    base = CampaignSpec("c", "", (FW, CFG), canary=CanarySpec(bake_s=0.0))
    return replace(base, **kw)  # type: ignore[arg-type]


def fleet(n: int, regions: str = "ab", carriers: str = "xy", skus: str = "s") -> list[Member]:
    return [
        Member(
            f"dev-{i:04d}",
            region=regions[i % len(regions)],
            carrier=carriers[(i // len(regions)) % len(carriers)],
            sku=skus[(i // (len(regions) * len(carriers))) % len(skus)],
        )
        for i in range(n)
    ]


def where(plan_endpoints: tuple[str, ...], members: list[Member]) -> Counter[str]:
    region = {m.endpoint: m.region for m in members}
    return Counter(region[e] for e in plan_endpoints)


def test_canary_takes_per_stratum_from_every_stratum_then_waves_by_percent_and_count() -> None:
    members = fleet(200)  # 4 strata of 50
    plan = build_plan(
        spec(
            canary=CanarySpec(per_stratum=2, max_devices=50, bake_s=0),
            waves=(
                WaveSpec(percent=10, bake_s=0),
                WaveSpec(count=30, bake_s=0),
                WaveSpec(percent=90, bake_s=0),
            ),
        ),
        members,
        seed="c1",
    )
    sizes = [len(w.endpoints) for w in plan.waves]
    assert sizes == [8, 20, 30, 142]  # 10% of 200; 30; the last takes the rest
    assert [w.name for w in plan.waves] == ["canary", "wave 1", "wave 2", "wave 3"]
    by_stratum = Counter(m.stratum for m in members if m.endpoint in plan.waves[0].endpoints)
    assert set(by_stratum.values()) == {2} and len(by_stratum) == 4
    assert plan.strata == {
        ("a", "x", "s"): 50,
        ("a", "y", "s"): 50,
        ("b", "x", "s"): 50,
        ("b", "y", "s"): 50,
    }
    assert plan.devices == 200
    # every wave is a stratified sample: both regions, in proportion
    assert where(plan.waves[1].endpoints, members) == {"a": 10, "b": 10}
    # 30 over four strata of 43 left: 7 or 8 each (largest remainder), so both regions
    wave2 = Counter(m.stratum for m in members if m.endpoint in plan.waves[2].endpoints)
    assert sorted(wave2.values()) == [7, 7, 8, 8]


def test_percent_is_of_the_whole_selection_rounded_up_at_least_one() -> None:
    plan = build_plan(
        spec(waves=(WaveSpec(percent=0.1), WaveSpec(percent=50))), fleet(30), seed="s"
    )
    assert [len(w.endpoints) for w in plan.waves] == [4, 1, 25]


def test_the_plan_is_deterministic_in_its_seed() -> None:
    members = fleet(100)
    one = build_plan(spec(), members, seed="camp-1")
    assert build_plan(spec(), list(reversed(members)), seed="camp-1") == one
    assert build_plan(spec(), members, seed="camp-2").waves[0] != one.waves[0]


def test_the_canary_cap_samples_the_largest_strata_first_round_robin() -> None:
    members = [Member(f"a{i}", "big", "x", "s") for i in range(50)]
    members += [Member(f"b{i}", "mid", "x", "s") for i in range(20)]
    members += [Member(f"c{i}", "small", "x", "s") for i in range(5)]
    plan = build_plan(spec(canary=CanarySpec(per_stratum=3, max_devices=5, bake_s=0)), members)
    assert where(plan.waves[0].endpoints, members) == {"big": 2, "mid": 2, "small": 1}
    plan = build_plan(spec(canary=CanarySpec(per_stratum=3, max_devices=2, bake_s=0)), members)
    assert where(plan.waves[0].endpoints, members) == {"big": 1, "mid": 1}


def test_conflicts_are_left_out_and_listed_per_dimension() -> None:
    members = fleet(20)
    active = {
        "dev-0003": {Dimension.FIRMWARE: "camp-9", Dimension.CONFIG: "camp-9"},
        "dev-0004": {Dimension.FLAGS: "camp-8"},  # another dimension: no conflict
    }
    plan = build_plan(spec(), members, active=active)
    assert plan.devices == 19
    assert all("dev-0003" not in w.endpoints for w in plan.waves)
    assert {(c.endpoint, c.dimension, c.campaign) for c in plan.conflicts} == {
        ("dev-0003", Dimension.FIRMWARE, "camp-9"),
        ("dev-0003", Dimension.CONFIG, "camp-9"),
    }
    assert plan.bytes_to_move == 19 * 1024


def test_estimate_counts_pacing_growth_bakes_and_sleepers() -> None:
    members = fleet(300)
    pacing = Pacing(rate=10, growth_factor=2, growth_every=100, max_rate=25, concurrency=1000)
    s = spec(
        canary=CanarySpec(per_stratum=1, max_devices=4, bake_s=60),
        waves=(WaveSpec(count=96, bake_s=100), WaveSpec(percent=100, bake_s=200)),
        pacing=pacing,
    )
    plan = build_plan(s, members)
    # 4 at 10/s, 96 at 10/s (admissions 4..99), then 100 at 20/s and 100 at 25/s (capped)
    expected = (4 / 10 + 60) + (96 / 10 + 100) + (100 / 20 + 100 / 25 + 200)
    assert plan.estimated_s == pytest.approx(expected)
    sleepers = [
        replace(m, wake_interval_s=900.0 if i == 7 else None) for i, m in enumerate(members)
    ]
    slow = build_plan(s, sleepers)
    assert slow.estimated_s == pytest.approx(expected + 900)


def test_caps_bind_the_estimate_only_when_devices_hold_slots() -> None:
    members = fleet(100, carriers="x")
    s = spec(
        canary=CanarySpec(per_stratum=1, max_devices=1, bake_s=0),
        waves=(WaveSpec(percent=100, bake_s=0),),
        pacing=Pacing(rate=1000, max_rate=1000, concurrency=10, per_carrier={"x": 2}),
    )
    assert build_plan(s, members).estimated_s == pytest.approx(100 / 1000)
    # the canary device holds its slot 1 s; then 99 devices of carrier x, 2 at a time
    assert build_plan(s, members, service_s=1.0).estimated_s == pytest.approx(1 + 50)


def test_admit_dynamic_adds_a_new_member_to_the_current_wave() -> None:
    members = fleet(20)
    plan = build_plan(spec(), members)
    newcomer = Member("dev-new", "a", "x", "s")
    wave = admit_dynamic(plan, 1, newcomer)
    assert wave.endpoints == (*plan.waves[1].endpoints, "dev-new")
    assert wave.index == 1
    assert admit_dynamic(replace(plan, waves=(plan.waves[0], wave)), 1, newcomer) == wave
    with pytest.raises(CampaignError):
        admit_dynamic(plan, 5, newcomer)
    with pytest.raises(CampaignError):
        admit_dynamic(
            plan, 1, members[0] if members[0].endpoint in plan.waves[0].endpoints else members[1]
        )


# -- properties ----------------------------------------------------------------------------------

member_lists = st.lists(
    st.builds(
        Member,
        st.text("abcdefgh0123", min_size=1, max_size=6),
        st.sampled_from(["eu", "us", "ap"]),
        st.sampled_from(["x", "y"]),
        st.sampled_from(["T1", "T2"]),
    ),
    max_size=120,
)
wave_specs = st.lists(
    st.one_of(
        st.builds(WaveSpec, count=st.integers(1, 60), bake_s=st.just(0.0)),
        st.builds(WaveSpec, percent=st.floats(1, 40), bake_s=st.just(0.0)),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(member_lists, wave_specs, st.integers(1, 3), st.integers(1, 40), st.text(max_size=5))
def test_every_member_is_in_exactly_one_wave(
    members: list[Member], waves: list[WaveSpec], per: int, cap: int, seed: str
) -> None:
    s = spec(canary=CanarySpec(per_stratum=per, max_devices=cap, bake_s=0), waves=tuple(waves))
    plan = build_plan(s, members, seed=seed)
    placed = [e for w in plan.waves for e in w.endpoints]
    assert sorted(placed) == sorted({m.endpoint for m in members})
    assert len(plan.waves) == len(waves) + 1
    strata = {m.stratum for m in {m.endpoint: m for m in reversed(members)}.values()}
    canary = set(plan.waves[0].endpoints)
    assert len(canary) <= cap
    if cap >= len(strata):
        first: dict[str, Member] = {}
        for m in members:
            first.setdefault(m.endpoint, m)
        assert {first[e].stratum for e in canary} == strata
    assert plan.estimated_s >= 0 and math.isfinite(plan.estimated_s)


@settings(max_examples=150, deadline=None)
@given(
    st.floats(0.5, 200),
    st.floats(1.0, 3.0),
    st.integers(1, 20),
    st.integers(1, 8),
    st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
    st.integers(0, 3),
)
def test_the_pacer_never_admits_above_its_rate_or_caps(
    rate: float, growth: float, every: int, concurrency: int, steps: list[float], finish: int
) -> None:
    pacing = Pacing(rate, growth, every, rate * 4, concurrency, {"x": 2})
    pacer = Pacer(pacing, 1000.0)
    now, in_flight, on_x, admitted = 1000.0, 0, 0, 0
    for i, step in enumerate(steps):
        now += step
        carrier = "x" if i % 2 else "y"
        wait = pacer.admit(now, carrier, in_flight, on_x if carrier == "x" else 0)
        assert wait >= 0
        if wait == 0.0:
            assert in_flight < concurrency
            assert carrier != "x" or on_x < 2
            admitted += 1
            in_flight += 1
            on_x += carrier == "x"
        if finish and in_flight and i % (finish + 1) == 0:  # some devices finish
            in_flight -= 1
            on_x = max(0, min(on_x, in_flight) - (carrier == "x"))
            pacer.succeeded()
        # at most the burst plus the fastest rate over the elapsed time
        assert (
            admitted
            <= 1
            + max(1.0, pacing.max_rate * pacer.burst_s)
            + pacing.max_rate * (now - 1000.0)
            + 1e-9
        )
        assert pacer.rate <= pacing.max_rate


def test_the_pacer_spaces_admissions_and_grows_its_rate() -> None:
    pacer = Pacer(Pacing(rate=2, growth_factor=2, growth_every=3, max_rate=5, concurrency=10), 0.0)
    assert pacer.admit(0.0, "x", 0, 0) == 0.0
    assert pacer.admit(0.0, "x", 1, 1) == pytest.approx(0.5)
    assert pacer.admit(0.5, "x", 1, 1) == 0.0
    assert pacer.admit(0.5, "x", 10, 1) > 0  # concurrency bites
    pacer.succeeded(2)
    assert pacer.rate == 2
    pacer.succeeded()
    assert pacer.rate == 4
    pacer.succeeded(300)
    assert pacer.rate == 5
    resumed = Pacer(Pacing(rate=2, growth_factor=2, growth_every=3, max_rate=5), 0.0, succeeded=3)
    assert resumed.rate == 4


def test_the_pacer_growth_never_overflows() -> None:
    pacer = Pacer(Pacing(rate=1, growth_factor=100, growth_every=1, max_rate=1e9), 0.0)
    pacer.succeeded(10**9)
    assert pacer.rate == 1e9


# -- windows -------------------------------------------------------------------------------------


def at(text: str) -> float:
    """UTC seconds of 'YYYY-MM-DD HH:MM' (2026-12-07 is a Monday)."""
    date, clock = text.split()
    y, m, d = (int(p) for p in date.split("-"))
    hh, mm = (int(p) for p in clock.split(":"))
    return float(calendar.timegm((y, m, d, hh, mm, 0)))


WEEKNIGHTS = Window(frozenset({0, 1, 2, 3, 4}), 2 * 60, 5 * 60)
FRIDAY_NIGHT = Window(frozenset({4}), 22 * 60, 2 * 60)  # wraps into Saturday


def test_windows_in_local_time() -> None:
    assert in_window([], None, at("2026-12-07 12:00"))
    assert in_window([WEEKNIGHTS], None, at("2026-12-07 02:00"))
    assert not in_window([WEEKNIGHTS], None, at("2026-12-07 05:00"))
    assert not in_window([WEEKNIGHTS], None, at("2026-12-12 03:00"))  # Saturday
    # 03:00 in UTC+2 is 01:00 UTC
    assert in_window([WEEKNIGHTS], 120, at("2026-12-07 01:00"))
    assert not in_window([WEEKNIGHTS], -120, at("2026-12-07 03:00"))


def test_windows_that_wrap_midnight() -> None:
    assert in_window([FRIDAY_NIGHT], None, at("2026-12-11 23:30"))  # Friday
    assert in_window([FRIDAY_NIGHT], None, at("2026-12-12 01:59"))  # Saturday morning
    assert not in_window([FRIDAY_NIGHT], None, at("2026-12-12 02:00"))
    assert not in_window([FRIDAY_NIGHT], None, at("2026-12-11 01:00"))  # Thursday's night
    # Sunday night 22:00 UTC is Monday 00:00 in UTC+2 -- not Friday
    assert not in_window([FRIDAY_NIGHT], 120, at("2026-12-13 22:30"))
    assert in_window([FRIDAY_NIGHT], 120, at("2026-12-11 21:00"))


def test_next_window_start() -> None:
    now = at("2026-12-07 12:00")  # Monday noon
    assert next_window_start([WEEKNIGHTS], None, now) == at("2026-12-08 02:00")
    assert next_window_start([WEEKNIGHTS], 60, now) == at("2026-12-08 01:00")
    inside = at("2026-12-08 03:00")
    assert next_window_start([WEEKNIGHTS], None, inside) == inside
    assert next_window_start([WEEKNIGHTS], None, at("2026-12-11 06:00")) == at("2026-12-14 02:00")
    assert next_window_start([FRIDAY_NIGHT, WEEKNIGHTS], None, at("2026-12-11 06:00")) == at(
        "2026-12-11 22:00"
    )
    assert next_window_start([], None, now) == now


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            Window,
            st.frozensets(st.integers(0, 6), min_size=1),
            st.integers(0, 1439),
            st.integers(1, 1440),
        ).filter(lambda w: w.start_minute != w.end_minute),
        min_size=1,
        max_size=3,
    ),
    st.none() | st.integers(-720, 840),
    st.floats(0, 4e9),
)
def test_next_window_start_is_inside_a_window_and_nothing_earlier_is(
    windows: list[Window], offset: int | None, now: float
) -> None:
    start = next_window_start(windows, offset, now)
    assert now <= start <= now + 8 * 86400
    assert in_window(windows, offset, start)
    if start > now:  # a minute before it opened, it was closed (windows open on minutes)
        assert not in_window(windows, offset, max(now, start - 60))
