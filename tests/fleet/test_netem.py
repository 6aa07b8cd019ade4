"""Link emulation as a pure function: arrival times for given sizes, times and random draws."""

from __future__ import annotations

import random

import pytest

from simulators.netem import IDEAL, IP_UDP_HEADER, PRESETS, LinkProfile, preset, transit


class Draws:
    """An RNG that returns the given values in turn (so each branch is chosen on purpose)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_ideal_link_delivers_at_once_exactly_once() -> None:
    assert IDEAL.ideal
    arrivals, _, _, too_big = transit(IDEAL, 100, 5.0, 0.0, 0.0, 0.0, Draws())
    assert arrivals == (5.0,) and not too_big


def test_latency_is_half_the_rtt_per_direction() -> None:
    link = LinkProfile(rtt=0.8)
    assert not link.ideal
    arrivals, *_ = transit(link, 100, 10.0, 0.0, 0.0, 0.0, Draws())
    assert arrivals == (10.4,)


def test_bandwidth_queues_a_burst_behind_each_datagram() -> None:
    link = LinkProfile(rtt=0.2, uplink_bps=8000)
    free = last = 0.0
    times = []
    for _ in range(3):
        arrivals, free, last, _ = transit(link, 100 - IP_UDP_HEADER, 0.0, free, last, 8000, Draws())
        times.append(arrivals[0])
    # 100 bytes at 8 kbit/s take 0.1 s each; then 0.1 s of propagation
    assert times == pytest.approx([0.2, 0.3, 0.4])


def test_a_datagram_above_the_mtu_is_dropped_as_too_big() -> None:
    link = LinkProfile(mtu=1280)
    assert transit(link, 1280 - IP_UDP_HEADER, 0.0, 0, 0, 0, Draws())[0] == (0.0,)
    arrivals, _, _, too_big = transit(link, 1281 - IP_UDP_HEADER, 0.0, 0, 0, 0, Draws())
    assert arrivals == () and too_big


def test_loss_drops_when_the_draw_is_below_the_probability() -> None:
    link = LinkProfile(loss=0.3)
    assert transit(link, 10, 0.0, 0, 0, 0, Draws(0.29))[0] == ()
    assert transit(link, 10, 0.0, 0, 0, 0, Draws(0.31))[0] == (0.0,)


def test_jitter_never_lets_a_later_datagram_overtake_without_reordering() -> None:
    link = LinkProfile(rtt=1.0, jitter=0.2)
    first, free, last, _ = transit(link, 10, 0.0, 0, 0, 0, Draws(1.0))  # +0.2
    second, *_ = transit(link, 10, 0.01, free, last, 0, Draws(0.0))  # -0.2, clamped
    assert first == (0.7,)
    assert second == (0.7,)


def test_a_reordered_datagram_is_held_back_and_overtaken() -> None:
    link = LinkProfile(rtt=0.2, reorder=0.5, reorder_gap=0.3)
    held, free, last, _ = transit(link, 10, 0.0, 0, 0, 0, Draws(0.1))
    after, *_ = transit(link, 10, 0.01, free, last, 0, Draws(0.9))
    assert held[0] == pytest.approx(0.4)
    assert after[0] == pytest.approx(0.11)
    assert after[0] < held[0]


def test_duplication_delivers_a_second_copy() -> None:
    link = LinkProfile(duplicate=0.5, duplicate_gap=0.01)
    arrivals, *_ = transit(link, 10, 1.0, 0, 0, 0, Draws(0.2))
    assert arrivals == (1.0, 1.01)


def test_loss_rate_over_many_datagrams_matches_the_profile() -> None:
    rng = random.Random(7)
    link = PRESETS["nbiot"].replace(loss=0.1, duplicate=0.0, reorder=0.0)
    lost = sum(1 for _ in range(20_000) if not transit(link, 50, 0.0, 0, 0, 0, rng)[0])
    assert 1800 < lost < 2200


def test_presets_and_validation() -> None:
    nbiot = preset("nbiot")
    assert nbiot.rtt == 0.8 and nbiot.uplink_bps <= 10_000 and nbiot.mtu == 1280
    assert preset("ltem").rtt < nbiot.rtt
    with pytest.raises(ValueError, match="choose one of"):
        preset("5g")
    with pytest.raises(ValueError, match="probability"):
        LinkProfile(loss=1.5)
    with pytest.raises(ValueError, match="negative"):
        LinkProfile(rtt=-1)
