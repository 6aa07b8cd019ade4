"""Observe (RFC 7641) rules that do not depend on endpoint state.

The endpoint drives observations on both sides; this module holds the two decisions that are
pure functions: whether a notification is fresher than the last one (client side, §3.4), and
whether the next notification must be confirmable (server side, §4.5).
"""

from __future__ import annotations

from lwm2m.coap.messages import OBSERVE_MODULO

#: §3.4: sequence numbers more than 2**23 apart are treated as having wrapped.
_HALF = 1 << 23
#: §3.4: after 128 s a notification is fresh whatever its number (the server may have
#: rebooted and restarted its counter).
REORDER_WINDOW = 128.0


def is_fresh(v1: int, t1: float, v2: int, t2: float) -> bool:
    """True if notification (v2, received at t2) is newer than (v1, received at t1)."""
    return (
        (v1 < v2 and v2 - v1 < _HALF) or (v1 > v2 and v1 - v2 > _HALF) or t2 > t1 + REORDER_WINDOW
    )


def next_sequence(current: int) -> int:
    return (current + 1) % OBSERVE_MODULO


def must_confirm(since_con: int, last_con: float, now: float, every: int, interval: float) -> bool:
    """§4.5: a server must check now and then that the observer is still there — we send a
    CON at least every ``every`` notifications and at least once per ``interval`` seconds."""
    return since_con + 1 >= every or now - last_con >= interval
