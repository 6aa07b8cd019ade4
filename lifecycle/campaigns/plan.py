"""Planning a campaign: waves, pacing and maintenance windows (sans-IO; time is passed in).

:func:`build_plan` splits a selection into a **canary** that samples every region x carrier x
SKU stratum present and then the spec's **waves**, each a stratified sample of what is left
(so no wave is one region only); devices held by another active campaign on one of the
change's dimensions are left out and listed as conflicts. The choice is deterministic: within
a stratum devices are ordered by ``sha256(seed, endpoint)``, so the same seed (the campaign
id) plans the same waves after a restart, and two campaigns with different seeds do not
always pick the same canaries.

:class:`Pacer` admits devices at the spec's rate (a token bucket whose rate grows by
``growth_factor`` every ``growth_every`` successes, AWS IoT Jobs' exponential rollout) under
the concurrency and per-carrier caps. :func:`in_window` / :func:`next_window_start` place
maintenance windows in the device's local time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from lifecycle.campaigns.model import (
    CampaignError,
    CampaignSpec,
    Conflict,
    Member,
    Pacing,
    Plan,
    WavePlan,
    Window,
)
from lifecycle.state.dimensions import Dimension

Stratum = tuple[str, str, str]
_DAY = 86400.0
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def order_key(seed: str, endpoint: str) -> bytes:
    """The deterministic pseudo-random rank of ``endpoint`` under ``seed``."""
    return hashlib.sha256(f"{seed}\x00{endpoint}".encode()).digest()


def _by_stratum(members: Iterable[Member], seed: str) -> dict[Stratum, list[Member]]:
    strata: dict[Stratum, list[Member]] = {}
    for m in members:
        strata.setdefault(m.stratum, []).append(m)
    for group in strata.values():
        group.sort(key=lambda m: order_key(seed, m.endpoint))
    return strata


def _largest_first(strata: Mapping[Stratum, Sequence[Member]]) -> list[Stratum]:
    return sorted(strata, key=lambda s: (-len(strata[s]), s))


def _canary(strata: dict[Stratum, list[Member]], per_stratum: int, cap: int) -> list[Member]:
    """Round-robin over the strata, largest first: one device from each, then a second from
    each... up to ``per_stratum`` rounds, stopping at ``cap`` devices. So every stratum is in
    the canary whenever the cap is at least the number of strata."""
    chosen: list[Member] = []
    order = _largest_first(strata)
    for round_ in range(per_stratum):
        for stratum in order:
            if len(chosen) >= cap:
                return chosen
            if round_ < len(strata[stratum]):
                chosen.append(strata[stratum][round_])
    return chosen


def _apportion(sizes: Mapping[Stratum, int], k: int) -> dict[Stratum, int]:
    """``k`` split across strata in proportion to ``sizes`` (largest remainder: exact sum,
    no stratum given more than it has)."""
    total = sum(sizes.values())
    if total == 0 or k <= 0:
        return {s: 0 for s in sizes}
    k = min(k, total)
    share = {s: k * n // total for s, n in sizes.items()}
    rest = k - sum(share.values())
    by_remainder = sorted(sizes, key=lambda s: (-(k * sizes[s] % total), -sizes[s], s))
    for s in by_remainder[:rest]:
        share[s] += 1
    return share


def _wave_sizes(spec: CampaignSpec, total: int, available: int) -> list[int]:
    """Devices per wave after the canary: ``count``, or ``percent`` of the whole selection
    rounded up (at least 1), never more than is left; the last wave takes the rest."""
    sizes = []
    left = available
    for i, wave in enumerate(spec.waves):
        if i == len(spec.waves) - 1:
            size = left
        elif wave.count is not None:
            size = min(wave.count, left)
        else:
            size = min(max(1, math.ceil((wave.percent or 0.0) * total / 100 - 1e-9)), left)
        sizes.append(size)
        left -= size
    return sizes


def _sorted_endpoints(members: Iterable[Member], seed: str) -> tuple[str, ...]:
    # Admission order within a wave: the seeded rank, which interleaves the strata.
    return tuple(m.endpoint for m in sorted(members, key=lambda m: order_key(seed, m.endpoint)))


def build_plan(
    spec: CampaignSpec,
    members: Sequence[Member],
    *,
    active: Mapping[str, Mapping[Dimension, str]] = {},
    seed: str = "",
    service_s: float = 0.0,
) -> Plan:
    """The waves of ``spec`` over ``members`` (what ``campaign plan`` shows and ``campaign
    create`` persists).

    * ``active`` maps endpoint -> dimension -> id of another active campaign holding it;
      such members are left out and listed in ``Plan.conflicts`` (one per dimension held).
      A member listed twice counts once.
    * Wave 0 is the canary (:func:`_canary`); waves 1.. follow ``spec.waves`` in order by
      count or percent of the whole (conflict-free) selection, rounded up, at least one
      device; the last wave takes whatever remains. A wave may be empty when the ones before
      took everything: it is kept so that plan wave ``i + 1`` is always spec wave ``i``.
      Each wave is a proportional stratified sample (largest remainder) of what is left.
    * ``bytes_to_move`` = sum over members of their components' sizes.
    * ``estimated_s`` is an ideal-link estimate (every device succeeds at once): for each
      non-empty wave, the time to admit its devices at the paced rate -- the rate grows by
      ``growth_factor`` every ``growth_every`` devices admitted so far in the campaign,
      capped at ``max_rate``, so a wave takes ``sum(1 / rate)`` over its devices -- or, if
      longer, the time the concurrency and per-carrier caps allow when each device holds a
      slot ``service_s`` seconds, ``ceil(devices / cap) * service_s`` (``service_s`` is 0
      by default: on an ideal link the caps do not bind), plus the wave's bake time, plus
      the largest ``wake_interval_s`` of its queue-mode members (the last sleeper may wake
      that late before it can be updated). Maintenance windows and operator approval are
      not included: they depend on when the campaign starts and on people.
    """
    conflicts: list[Conflict] = []
    eligible: list[Member] = []
    seen: set[str] = set()
    for m in members:
        if m.endpoint in seen:
            continue
        seen.add(m.endpoint)
        held = active.get(m.endpoint, {})
        clashes = [Conflict(m.endpoint, d, held[d]) for d in spec.dimensions if d in held]
        if clashes:
            conflicts.extend(clashes)
        else:
            eligible.append(m)

    strata = _by_stratum(eligible, seed)
    counts = {s: len(g) for s, g in sorted(strata.items())}
    canary = _canary(strata, spec.canary.per_stratum, spec.canary.max_devices)
    taken = {m.endpoint for m in canary}
    left = {s: [m for m in g if m.endpoint not in taken] for s, g in strata.items()}

    wave_members: list[list[Member]] = [canary]
    for size in _wave_sizes(spec, len(eligible), len(eligible) - len(canary)):
        share = _apportion({s: len(g) for s, g in left.items()}, size)
        wave: list[Member] = []
        for s, n in share.items():
            wave.extend(left[s][:n])
            left[s] = left[s][n:]
        wave_members.append(wave)

    waves = [
        WavePlan(
            0,
            "canary",
            _sorted_endpoints(canary, seed),
            spec.canary.bake_s,
            approval=spec.canary.approval,
        )
    ]
    for i, (wspec, group) in enumerate(zip(spec.waves, wave_members[1:], strict=True), 1):
        waves.append(WavePlan(i, f"wave {i}", _sorted_endpoints(group, seed), wspec.bake_s))

    per_device = sum(c.size for c in spec.components)
    return Plan(
        waves=tuple(waves),
        strata=counts,
        bytes_to_move=per_device * len(eligible),
        estimated_s=_estimate(spec, wave_members, [w.bake_s for w in waves], service_s),
        conflicts=tuple(conflicts),
    )


def _admission_s(pacing: Pacing, admitted: int, n: int) -> float:
    """Seconds to admit ``n`` devices when ``admitted`` were admitted before (growth rule)."""
    if pacing.growth_factor <= 1.0 or pacing.rate >= pacing.max_rate:
        return n / _grown_rate(pacing, admitted)
    seconds = 0.0
    done = 0
    while done < n:
        rate = _grown_rate(pacing, admitted + done)
        if rate >= pacing.max_rate:
            return seconds + (n - done) / pacing.max_rate
        step = min(n - done, pacing.growth_every - (admitted + done) % pacing.growth_every)
        seconds += step / rate
        done += step
    return seconds


def _grown_rate(pacing: Pacing, successes: int) -> float:
    """``rate * growth_factor ** (successes // growth_every)``, capped at ``max_rate``
    (computed without overflowing for huge counts)."""
    if pacing.growth_factor <= 1.0 or pacing.rate >= pacing.max_rate:
        return min(pacing.rate, pacing.max_rate)
    steps = successes // pacing.growth_every
    needed = math.log(pacing.max_rate / pacing.rate) / math.log(pacing.growth_factor)
    if steps >= needed:
        return pacing.max_rate
    return min(pacing.max_rate, pacing.rate * pacing.growth_factor**steps)


def _estimate(
    spec: CampaignSpec, waves: Sequence[Sequence[Member]], bakes: Sequence[float], service_s: float
) -> float:
    total = 0.0
    admitted = 0
    pacing = spec.pacing
    for group, bake in zip(waves, bakes, strict=True):
        if not group:
            continue
        admission = _admission_s(pacing, admitted, len(group))
        if service_s > 0:
            # devices go through a cap in rounds of ``cap``, each holding its slot service_s
            admission = max(admission, math.ceil(len(group) / pacing.concurrency) * service_s)
            for carrier, cap in pacing.per_carrier.items():
                on = sum(1 for m in group if m.carrier == carrier)
                admission = max(admission, math.ceil(on / cap) * service_s)
        wakes = [m.wake_interval_s for m in group if m.wake_interval_s]
        total += admission + bake + (max(wakes) if wakes else 0.0)
        admitted += len(group)
    return total


def admit_dynamic(plan: Plan, wave_index: int, member: Member) -> WavePlan:
    """Wave ``wave_index`` with ``member`` (a device that joined the selection of a dynamic
    campaign) added at its end; unchanged when the device is in it already. The caller
    persists the result; a device already in another wave is refused (it is not new)."""
    if not 0 <= wave_index < len(plan.waves):
        raise CampaignError("wave", f"no wave {wave_index}; the plan has 0..{len(plan.waves) - 1}")
    wave = plan.waves[wave_index]
    if member.endpoint in wave.endpoints:
        return wave
    for other in plan.waves:
        if member.endpoint in other.endpoints:
            raise CampaignError(
                "member", f"{member.endpoint} is already in {other.name}; it is not a new member"
            )
    return replace(wave, endpoints=(*wave.endpoints, member.endpoint))


# -- pacing --------------------------------------------------------------------------------------


class Pacer:
    """A token bucket for admissions (sans-IO: ``now`` is passed in).

    Tokens accrue at :attr:`rate` per second up to a burst of ``max(1, rate * burst_s)``, so
    over any interval at most ``burst + rate * elapsed`` devices are admitted; the bucket
    starts with one token (the first device goes at once). :meth:`succeeded` grows the rate
    by ``growth_factor`` for every ``growth_every`` successes, up to ``max_rate``.
    ``succeeded`` (constructor) restores the count after a restart so a resumed campaign
    keeps the rate it had earned.
    """

    def __init__(
        self, pacing: Pacing, now: float, *, burst_s: float = 0.1, succeeded: int = 0
    ) -> None:
        self.pacing = pacing
        self.burst_s = burst_s
        self.successes = succeeded
        self._rate = _grown_rate(pacing, succeeded)
        self._tokens = 1.0
        self._last = now

    @property
    def rate(self) -> float:
        """Admissions per second now."""
        return self._rate

    @property
    def burst(self) -> float:
        return max(1.0, self._rate * self.burst_s)

    def _retry_hint(self) -> float:
        # A cap binds: a slot frees when a device finishes (the engine should also try again
        # then); meanwhile poll at the admission interval, within 10 ms .. 1 s.
        return min(1.0, max(0.01, 1.0 / self._rate))

    def admit(self, now: float, carrier: str, in_flight: int, in_flight_on_carrier: int) -> float:
        """0.0 when one device (on ``carrier``) may be admitted now -- its token is taken --
        else the seconds to wait before asking again. ``in_flight`` counts devices admitted
        and not final, ``in_flight_on_carrier`` those on ``carrier``."""
        if in_flight >= self.pacing.concurrency:
            return self._retry_hint()
        cap = self.pacing.per_carrier.get(carrier)
        if cap is not None and in_flight_on_carrier >= cap:
            return self._retry_hint()
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def succeeded(self, count: int = 1) -> None:
        """``count`` more devices succeeded: grow the rate per the growth rule."""
        self.successes += max(0, count)
        self._rate = _grown_rate(self.pacing, self.successes)


# -- maintenance windows -------------------------------------------------------------------------


def _local(utc_offset_minutes: int | None, now: float) -> tuple[int, int, float]:
    """(weekday, minute of day, local seconds) of ``now`` in the device's local time."""
    local = now + (utc_offset_minutes or 0) * 60
    day_number = math.floor(local / _DAY)
    minute = int((local - day_number * _DAY) // 60)
    return (day_number + _EPOCH_WEEKDAY) % 7, minute, local


def _open(window: Window, weekday: int, minute: int) -> bool:
    if window.start_minute < window.end_minute:
        return weekday in window.days and window.start_minute <= minute < window.end_minute
    # wraps midnight: opened on a listed day, runs into the next one
    return (weekday in window.days and minute >= window.start_minute) or (
        (weekday - 1) % 7 in window.days and minute < window.end_minute
    )


def in_window(windows: Sequence[Window], utc_offset_minutes: int | None, now: float) -> bool:
    """Whether ``now`` is inside one of ``windows`` in the device's local time (``None``
    offset: UTC). No windows means always. A window's ``days`` are the days it *opens* on: a
    ``fri 22:00-02:00`` window runs into Saturday morning."""
    if not windows:
        return True
    weekday, minute, _ = _local(utc_offset_minutes, now)
    return any(_open(w, weekday, minute) for w in windows)


def next_window_start(
    windows: Sequence[Window], utc_offset_minutes: int | None, now: float
) -> float:
    """The first instant at or after ``now`` inside a window: ``now`` when inside one (or
    when there are no windows), else the next opening; ``math.inf`` if no window ever
    opens (a window without days)."""
    if in_window(windows, utc_offset_minutes, now):
        return now
    offset_s = (utc_offset_minutes or 0) * 60
    weekday, _, local = _local(utc_offset_minutes, now)
    midnight = math.floor(local / _DAY) * _DAY
    best = math.inf
    for ahead in range(8):
        day = (weekday + ahead) % 7
        for w in windows:
            if day in w.days:
                start = midnight + ahead * _DAY + w.start_minute * 60 - offset_s
                if start > now:
                    best = min(best, start)
    return best


__all__ = [
    "Pacer",
    "admit_dynamic",
    "build_plan",
    "in_window",
    "next_window_start",
    "order_key",
]
