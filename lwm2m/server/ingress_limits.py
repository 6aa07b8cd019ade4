"""What a peer may make the DM server hold in memory before and after it registered.

Issue 14 item 1: Block1 bodies were reassembled for anybody, before any authentication, up to
16 MiB per transfer and 10 000 transfers. The CoAP core now asks :class:`Block1Admission`
before it buffers a block (``CoapEndpoint.block1_guard``), and the answer follows the
principle "a peer that may not register gets no buffer; everybody else gets what real LwM2M
needs":

* a peer that may not register at all on this socket (plain CoAP while only DTLS or explicit
  NoSec grants are accepted) gets **4.01** at block 0 -- nothing buffered. An explicitly
  granted NoSec device registers with a Register that fits one datagram (a few hundred bytes
  of object links always does);
* a Register/Update (``/rd``) body is capped at :attr:`IngressLimits.register_body` (a few KiB
  of object links is what real clients send; 8 MiB object lists cost 137 MB to parse) --
  **4.13** with Size1 naming the cap, at block 0 when Size1 announced more;
* any other request from an address with no registration gets **4.01** (register first);
* a registered device's bodies (Send) are capped at :attr:`IngressLimits.device_body` per peer;
* all unregistered peers together hold at most :attr:`IngressLimits.unregistered_total`, all
  peers at most :attr:`IngressLimits.total`: beyond it **5.03** (try later) -- the server is
  busy, the device did nothing wrong.

Accounting reads the core's own transfer state (``PeerState.block1``), so a transfer the core
completed, expired or evicted stops counting without a callback: the running totals only
over-count, and are re-summed exactly before anything is refused for them.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass, field

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap.blockwise import Block1Assembly
from lwm2m.coap.errors import RemoteProtocolError, RequestEntityTooLarge
from lwm2m.coap.peer import PeerState

__all__ = [
    "Block1Admission",
    "IngestBudget",
    "IngestMeter",
    "IngressLimits",
    "RefusalLog",
    "ServerBusy",
    "Unauthorized",
    "install_block1_admission",
    "refusal_kind",
    "shown",
]


@dataclass(frozen=True, slots=True)
class IngressLimits:
    """Memory a peer's unfinished Block1 bodies may hold (bytes)."""

    #: A Register/Update body (object links): a few KiB in real clients.
    register_body: int = 16 * 1024
    #: Bodies of one registered device in progress at once (Send of many values).
    device_body: int = 1024 * 1024
    #: Everything peers without a registration hold together.
    unregistered_total: int = 1024 * 1024
    #: Everything every peer holds together.
    total: int = 64 * 1024 * 1024
    #: Sends and notifications one registered device may have stored per second (item 3).
    device_ingest: IngestBudget = field(default_factory=lambda: IngestBudget())

    def __post_init__(self) -> None:
        for name in ("register_body", "device_body", "unregistered_total", "total"):
            if getattr(self, name) < 1:
                raise ValueError(f"IngressLimits.{name} must be positive")


class Unauthorized(RemoteProtocolError):
    """4.01: this peer may not send this body (it may not register here, or has not)."""

    code = Code.UNAUTHORIZED


class ServerBusy(RemoteProtocolError):
    """5.03: the server holds as many unfinished bodies as it allows; try later."""

    code = Code.SERVICE_UNAVAILABLE


def _held(ps: PeerState) -> int:
    return sum(len(assembly.buffer) for assembly in ps.block1.values())


class _Pool:
    """Bytes held by a set of peers: a running total, re-summed exactly before a refusal."""

    __slots__ = ("cap", "counted", "total")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0
        self.counted: dict[PeerState, int] = {}

    def fits(self, ps: PeerState, held: int, adding: int) -> bool:
        self._set(ps, held)
        if self.total + adding <= self.cap:
            return True
        for other in list(self.counted):  # only over-counts: re-sum, then decide
            self._set(other, _held(other))
        return self.total + adding <= self.cap

    def add(self, ps: PeerState, held: int, adding: int) -> None:
        self._set(ps, held + adding)

    def _set(self, ps: PeerState, held: int) -> None:
        self.total += held - self.counted.get(ps, 0)
        if held:
            self.counted[ps] = held
        else:
            self.counted.pop(ps, None)


class Block1Admission:
    """The ``block1_guard`` of one DM-server socket.

    ``registered`` answers whether a transport peer holds a registration (the server's
    by-peer index); ``may_register`` whether an unregistered peer of this socket could
    register at all (DTLS: the handshake authenticated it; plain CoAP: only when NoSec is the
    default for unknown endpoints).
    """

    def __init__(
        self,
        limits: IngressLimits,
        *,
        registered: Container[object],
        may_register: bool,
        pools: tuple[_Pool, _Pool] | None = None,
    ) -> None:
        self.limits = limits
        self._registered = registered
        self._may_register = may_register
        #: (every peer, unregistered peers): shared by the server's sockets via :meth:`sibling`.
        self._all, self._unregistered = pools or (
            _Pool(limits.total),
            _Pool(limits.unregistered_total),
        )
        #: Blocks refused, by answer code (for operators and tests).
        self.refused: dict[str, int] = {}

    def sibling(self, *, registered: Container[object], may_register: bool) -> Block1Admission:
        """The guard of another socket of the same server, sharing the global caps."""
        return Block1Admission(
            self.limits,
            registered=registered,
            may_register=may_register,
            pools=(self._all, self._unregistered),
        )

    def __call__(
        self, ps: PeerState, message: Message, assembly: Block1Assembly | None, adding: int
    ) -> RemoteProtocolError | None:
        refusal = self._check(ps, message, adding)
        if refusal is not None:
            name = str(refusal.code)
            self.refused[name] = self.refused.get(name, 0) + 1
        return refusal

    def _check(self, ps: PeerState, message: Message, adding: int) -> RemoteProtocolError | None:
        limits = self.limits
        registered = ps.peer in self._registered
        path = message.opt.uri_path
        registering = bool(path) and path[0] == "rd"
        if not registered:
            if not self._may_register:
                return Unauthorized(
                    "block-wise body refused: this address may not register over plain CoAP "
                    "(use DTLS, or a Register that fits one datagram if NoSec is granted)"
                )
            if not registering:
                return Unauthorized("block-wise body refused: no registration from this address")
        cap = limits.register_body if registering else limits.device_body
        held = _held(ps)
        size1 = message.opt.size1
        if size1 is not None and size1 > cap:
            return RequestEntityTooLarge(f"announced body of {size1} bytes", size1=cap)
        if held + adding > cap:
            return RequestEntityTooLarge("body exceeds what this server accepts", size1=cap)
        if not self._all.fits(ps, held, adding):
            return ServerBusy("too many unfinished block-wise bodies; retry later")
        if not registered and not self._unregistered.fits(ps, held, adding):
            return ServerBusy("too many unfinished block-wise bodies; retry later")
        self._all.add(ps, held, adding)
        if not registered:
            self._unregistered.add(ps, held, adding)
        return None


def install_block1_admission(
    cores: list[tuple[object, bool]],
    limits: IngressLimits,
    registered: Container[object],
    *,
    nosec_by_default: bool,
) -> list[Block1Admission]:
    """Give each ``(CoapEndpoint, secure)`` of the server its guard, all sharing the caps."""
    guards: list[Block1Admission] = []
    for core, secure in cores:
        may_register = secure or nosec_by_default
        guard = (
            guards[0].sibling(registered=registered, may_register=may_register)
            if guards
            else Block1Admission(limits, registered=registered, may_register=may_register)
        )
        core.block1_guard = guard  # type: ignore[attr-defined]
        guards.append(guard)
    return guards


# -- refusal logging (issue 14 item 2) ----------------------------------------------------------


class _Refusals:
    __slots__ = ("level", "logger", "suppressed", "until")

    def __init__(self, logger: logging.Logger, level: int, until: float) -> None:
        self.logger = logger
        self.level = level
        self.until = until
        self.suppressed = 0


class RefusalLog:
    """Refusal log lines that do not scale with the attacker.

    Every refused Register was one log line (~1.3 KB, the attacker's text inside: ~3.1 GB/h
    under a flood). Now: per (source address, kind of refusal) at most one line per
    ``interval``; what was held back is counted and reported in one summary line once the
    interval is over (``refused N more like this from SOURCE ...``). At most ``burst`` lines
    per interval in all, whatever the number of sources, and at most ``max_keys`` sources
    remembered (the oldest forgotten). Callers cut the attacker's text before it gets here.
    """

    def __init__(self, *, interval: float = 1.0, burst: int = 20, max_keys: int = 1024) -> None:
        self.interval = interval
        self.burst = burst
        self.max_keys = max_keys
        self._keys: OrderedDict[tuple[str, str], _Refusals] = OrderedDict()
        self._window_end = float("-inf")
        self._lines = 0
        self._over_burst = 0
        self._over_burst_logger: logging.Logger | None = None
        #: Lines held back since start (for operators and tests).
        self.suppressed_total = 0

    def log(
        self,
        logger: logging.Logger,
        level: int,
        now: float,
        source: str,
        kind: str,
        msg: str,
        *args: object,
    ) -> bool:
        """Log ``msg % args`` unless this source logged this kind within ``interval``;
        True if the line was written."""
        if now >= self._window_end:
            self._close_window(now)
        key = (source, kind)
        entry = self._keys.get(key)
        if entry is not None and now < entry.until:
            entry.suppressed += 1
            self.suppressed_total += 1
            return False
        if self._lines >= self.burst:
            self._over_burst += 1
            self._over_burst_logger = logger
            self.suppressed_total += 1
            return False
        self._lines += 1
        if entry is None:
            entry = self._keys[key] = _Refusals(logger, level, now + self.interval)
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            entry.until = now + self.interval
            self._keys.move_to_end(key)
        logger.log(level, msg, *args)
        return True

    def _close_window(self, now: float) -> None:
        """Summaries of what the last interval held back; forget quiet sources."""
        self._window_end = now + self.interval
        self._lines = 0
        if self._over_burst and self._over_burst_logger is not None:
            self._over_burst_logger.warning(
                "refused %d more requests from many sources (refusal log limited to %d lines "
                "per %g s)",
                self._over_burst,
                self.burst,
                self.interval,
            )
            self._over_burst = 0
        done = [key for key, entry in self._keys.items() if entry.until <= now]
        for key in done:
            entry = self._keys.pop(key)
            if entry.suppressed:
                entry.logger.log(
                    entry.level,
                    "refused %d more like this from %s (%s) in the last %g s",
                    entry.suppressed,
                    key[0],
                    key[1],
                    self.interval,
                )


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def refusal_kind(code: str, reason: str) -> str:
    """What makes two refusals "alike": the code and the reason with quoted (attacker's)
    text blanked, cut to 60 characters."""
    return f"{code} {_QUOTED.sub('…', reason)[:60]}"


def shown(text: str | None, limit: int = 64) -> str:
    """An attacker's text as it may appear in a log line: repr, cut to ``limit``."""
    if text is None:
        return "-"
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- per-device ingest budget (issue 14 item 3) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestBudget:
    """What one registered device may make the server store per second: Sends and
    notifications together, counted in messages and in payload bytes (token buckets)."""

    messages_per_second: float = 20.0
    message_burst: int = 200
    bytes_per_second: float = 64 * 1024
    byte_burst: int = 1024 * 1024

    def __post_init__(self) -> None:
        if min(self.messages_per_second, self.message_burst) <= 0:
            raise ValueError("IngestBudget messages_per_second and message_burst must be > 0")
        if min(self.bytes_per_second, self.byte_burst) <= 0:
            raise ValueError("IngestBudget bytes_per_second and byte_burst must be > 0")


class IngestMeter:
    """Token buckets per endpoint for :class:`IngestBudget`.

    One device sent 5 000 Sends x 50 values in 18 s (250 000 rows) before this. Over budget, a
    Send is answered 4.29 Too Many Requests with Max-Age saying when to retry (RFC 8516) and a
    notification is acknowledged by CoAP but not decoded, stored or published; both counted.
    Nothing is queued: the meter is three numbers per endpoint, and endpoints whose buckets
    are full again are forgotten every ``sweep_every`` calls.
    """

    def __init__(self, budget: IngestBudget, *, sweep_every: int = 10_000) -> None:
        self.budget = budget
        self._buckets: dict[str, list[float]] = {}
        self._calls = 0
        self._sweep_every = sweep_every
        #: Messages refused, for operators and tests.
        self.refused = 0

    def wait(self, endpoint: str, now: float, size: int) -> float | None:
        """None when ``endpoint`` may send a message of ``size`` bytes now (and charge it),
        else the seconds until it may."""
        budget = self.budget
        self._calls += 1
        if self._calls % self._sweep_every == 0:
            self._sweep(now)
        bucket = self._buckets.get(endpoint)
        if bucket is None:
            bucket = self._buckets[endpoint] = [
                float(budget.message_burst),
                float(budget.byte_burst),
                now,
            ]
        else:  # conditionals, not min()/max(): this runs per notification (issue 13)
            elapsed = now - bucket[2]
            if elapsed > 0.0:
                messages = bucket[0] + elapsed * budget.messages_per_second
                octets = bucket[1] + elapsed * budget.bytes_per_second
                bucket[0] = messages if messages < budget.message_burst else budget.message_burst
                bucket[1] = octets if octets < budget.byte_burst else budget.byte_burst
                bucket[2] = now
        if size > budget.byte_burst:  # one message larger than the burst still passes
            size = budget.byte_burst
        if bucket[0] >= 1.0 and bucket[1] >= size:
            bucket[0] -= 1.0
            bucket[1] -= size
            return None
        self.refused += 1
        return max(
            (1.0 - bucket[0]) / budget.messages_per_second,
            (size - bucket[1]) / budget.bytes_per_second,
            0.0,
        )

    def _sweep(self, now: float) -> None:
        budget = self.budget
        full = (
            budget.message_burst / budget.messages_per_second
            + budget.byte_burst / budget.bytes_per_second
        )
        for endpoint in [e for e, b in self._buckets.items() if now - b[2] > full]:
            del self._buckets[endpoint]
