"""Network emulation for simulated devices: latency, jitter, loss, duplication, reordering,
bandwidth, MTU and NAT binding timeouts, as a pure function of a profile, the datagram size,
the current time, a little per-device link state and an injected RNG.

Nothing here sleeps or owns a timer: :func:`transit` answers "when does this datagram arrive
(never, once, or twice)", and the fleet's scheduler delivers it then. So a seeded RNG and a
fake clock reproduce a lossy NB-IoT run exactly, and a fleet of ten thousand devices on one
link profile costs a few floats per device, not a queue per device.

Model, per direction (uplink = device to server):

1. a datagram whose IP packet (payload + 28 bytes of IPv4/UDP header) exceeds ``mtu`` is
   dropped -- a path-MTU black hole, which is what a CoAP device without block-wise meets on
   an NB-IoT bearer;
2. it is lost with probability ``loss``;
3. it waits for the link to be free and takes ``8 * size / bps`` seconds to serialise
   (``uplink_bps`` / ``downlink_bps``; 0 means unlimited), so a burst queues up as on a real
   narrow-band bearer;
4. it then travels ``rtt / 2`` plus a uniform jitter in ``[-jitter, +jitter]``;
5. datagrams arrive in order (a later one never overtakes an earlier one) unless the datagram
   is picked for reordering (probability ``reorder``): it is held back ``reorder_gap`` seconds
   and overtaken;
6. with probability ``duplicate`` a second copy arrives ``duplicate_gap`` seconds later.

NAT (``nat_timeout`` > 0): a binding dies after that many seconds without an uplink datagram.
A downlink datagram arriving after that is dropped (the server cannot reach an idle device
behind a carrier NAT), and the device's next uplink datagram leaves from a new source port
(the fleet rebinds the device's socket), which the server sees as NAT rebinding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

IP_UDP_HEADER = 28
"""IPv4 (20) + UDP (8) header bytes counted against the MTU and the bandwidth."""


class Random(Protocol):
    """The part of :class:`random.Random` netem uses (injected, seeded by the fleet)."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """One bearer's behaviour; frozen and shared by every device on it (see the module doc)."""

    name: str = "ideal"
    rtt: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    duplicate_gap: float = 0.001
    reorder: float = 0.0
    reorder_gap: float = 0.05
    mtu: int = 65_535
    uplink_bps: float = 0.0
    downlink_bps: float = 0.0
    nat_timeout: float = 0.0
    #: Seconds a device needs to re-attach (new PDN context, new IP) after an APN change.
    attach_time: float = 2.0
    #: The APNs give the device a static IP and no NAT: re-attaching keeps its address and
    #: source port, so its client sees nothing to tell the server (no registration Update).
    static_address: bool = False

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability (0..1), got {value}")
        for name in (
            "rtt",
            "jitter",
            "duplicate_gap",
            "reorder_gap",
            "uplink_bps",
            "downlink_bps",
            "nat_timeout",
            "attach_time",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.mtu < IP_UDP_HEADER + 1:
            raise ValueError(f"mtu must exceed the {IP_UDP_HEADER}-byte IP/UDP header")

    @property
    def ideal(self) -> bool:
        """True when every datagram arrives at once, exactly once, in order: the fleet then
        skips the scheduler entirely (the cheap path for load tests)."""
        return (
            self.rtt == 0.0
            and self.jitter == 0.0
            and self.loss == 0.0
            and self.duplicate == 0.0
            and self.reorder == 0.0
            and self.mtu >= 65_535
            and self.uplink_bps == 0.0
            and self.downlink_bps == 0.0
        )

    def replace(self, **changes: object) -> LinkProfile:
        """A copy with ``changes`` (the CLI's ``--rtt``/``--loss`` overrides)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


IDEAL = LinkProfile()

PRESETS: dict[str, LinkProfile] = {
    "ideal": IDEAL,
    # A wired lab network: for checking that netem itself costs nothing.
    "lan": LinkProfile("lan", rtt=0.001, jitter=0.0002, mtu=1500),
    # LTE Cat-M1: ~100-150 ms RTT, a few hundred kbit/s in practice, the MTU many IoT APNs use.
    "ltem": LinkProfile(
        "ltem",
        rtt=0.12,
        jitter=0.03,
        loss=0.002,
        reorder=0.001,
        mtu=1358,
        uplink_bps=300_000,
        downlink_bps=500_000,
        attach_time=2.0,
    ),
    # NB-IoT Cat-NB1 in ordinary-to-poor coverage: ~800 ms RTT with large jitter, a few kbit/s,
    # 1 % loss, the IPv6 minimum MTU; attaching to a new PDN takes seconds.
    "nbiot": LinkProfile(
        "nbiot",
        rtt=0.8,
        jitter=0.2,
        loss=0.01,
        duplicate=0.001,
        reorder=0.005,
        reorder_gap=0.4,
        mtu=1280,
        uplink_bps=5_000,
        downlink_bps=6_000,
        attach_time=6.0,
    ),
}
"""Named link profiles (``fleetloop sim run --profile nbiot``)."""


def preset(name: str) -> LinkProfile:
    """The preset called ``name`` (ValueError naming the choices otherwise)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown network profile {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None


@dataclass(slots=True)
class Direction:
    """Link state of one direction of one device: when the bearer is free again and when the
    last in-order datagram arrives. Two floats; the fleet keeps them in arrays."""

    free_at: float = 0.0
    last_at: float = 0.0


def transit(
    profile: LinkProfile,
    size: int,
    now: float,
    free_at: float,
    last_at: float,
    bps: float,
    rng: Random,
) -> tuple[tuple[float, ...], float, float, bool]:
    """Arrival times of a ``size``-byte datagram sent at ``now`` over one direction.

    ``free_at``/``last_at`` are that direction's state (see :class:`Direction`) and ``bps``
    its bandwidth (0: unlimited). Returns ``(arrivals, free_at, last_at, too_big)``:
    ``arrivals`` is empty when the datagram is lost (``too_big`` says whether the MTU was
    the reason), else one time, or two for a duplicate.
    """
    packet = size + IP_UDP_HEADER
    if packet > profile.mtu:
        return (), free_at, last_at, True
    if profile.loss and rng.random() < profile.loss:
        return (), free_at, last_at, False
    sent = now
    if bps:
        start = free_at if free_at > now else now
        sent = start + packet * 8.0 / bps
        free_at = sent
    delay = profile.rtt / 2.0
    if profile.jitter:
        delay += profile.jitter * (2.0 * rng.random() - 1.0)
        if delay < 0.0:
            delay = 0.0
    at = sent + delay
    if profile.reorder and rng.random() < profile.reorder:
        at += profile.reorder_gap
    else:
        if at < last_at:
            at = last_at
        last_at = at
    if profile.duplicate and rng.random() < profile.duplicate:
        return (at, at + profile.duplicate_gap), free_at, last_at, False
    return (at,), free_at, last_at, False


__all__ = [
    "IDEAL",
    "IP_UDP_HEADER",
    "PRESETS",
    "Direction",
    "LinkProfile",
    "Random",
    "preset",
    "transit",
]
