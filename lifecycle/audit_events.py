"""The audit log's running parts: registration refusals into the log, and signed checkpoints.

Refusals. The DM server emits :class:`~lwm2m.server.RegistrationRefused` for every refused
Register/Update -- which an attacker can send as fast as their uplink allows. Writing one audit
record each would let them grow the log (and the proof cost) at will, so
:class:`RefusalAggregator` (sans-IO: time comes in as ``now``) keeps one counter per (source
host, reason): the first refusal of a window is recorded at once, repeats within
``window`` seconds only count, and the count is written as one record when the window closes.
At most ``max_sources`` keys are tracked per window; beyond that every refusal folds into one
overflow bucket. Attacker-supplied text (endpoint name, identity, reason) is cut to
:data:`TEXT_CAP` characters. The log therefore grows by at most ``2 * (max_sources + 1)``
records per window, however hard the server is hit.

Checkpoints. :class:`AuditComponent` signs a checkpoint at start, every ``interval`` seconds
when new records exist, and at shutdown (``fleetloop serve`` wires it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lifecycle.service import LifecycleService
from lwm2m.server import RegistrationRefused
from lwm2m.store import AuditTampered, Checkpoint, CheckpointSigner, Store, Tx

log = logging.getLogger("lifecycle.audit")

TEXT_CAP = 200
REFUSAL_ACTION = "registration.refused"
SERVER_ACTOR = "lwm2m-server"
OVERFLOW = "*"


def cap(text: str | None, limit: int = TEXT_CAP) -> str | None:
    """Attacker-supplied text, cut to ``limit`` characters (marked with an ellipsis)."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def source_host(address: str) -> str:
    """``host`` of ``host:port`` / ``[v6]:port``: a sender rotating ports is one source."""
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else address
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else address


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    """One audit record the aggregator wants written (see :meth:`AuditLog.append`)."""

    subject: str
    endpoints: tuple[str, ...]
    detail: dict[str, Any]
    outcome: str
    at: float


@dataclass
class _Window:
    started: float
    first: RegistrationRefused
    repeats: int = 0
    last_endpoint: str | None = None
    codes: set[str] = field(default_factory=set)


class RefusalAggregator:
    """Per-(source host, reason) refusal counting; pure, the caller writes what it returns."""

    def __init__(self, *, window: float = 60.0, max_sources: int = 1000) -> None:
        self.window = window
        self.max_sources = max_sources
        self._windows: dict[tuple[str, str], _Window] = {}

    def feed(self, event: RegistrationRefused, now: float) -> list[RefusalRecord]:
        """Account one refusal; return the records to write now (possibly none)."""
        out = self.flush(now)
        reason = cap(event.reason) or ""
        key = (source_host(event.address), reason)
        if key not in self._windows and len(self._windows) >= self.max_sources:
            key = (OVERFLOW, OVERFLOW)
        current = self._windows.get(key)
        if current is None:
            self._windows[key] = _Window(now, event, codes={event.code})
            out.append(self._first(key, event, now))
        else:
            current.repeats += 1
            current.last_endpoint = event.endpoint
            current.codes.add(event.code)
        return out

    def flush(self, now: float, *, everything: bool = False) -> list[RefusalRecord]:
        """Close windows older than ``window`` (all of them with ``everything``): one record
        per window that saw repeats."""
        out: list[RefusalRecord] = []
        for key, win in list(self._windows.items()):
            if everything or now - win.started >= self.window:
                del self._windows[key]
                if win.repeats:
                    out.append(self._summary(key, win, now))
        return out

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    def _first(self, key: tuple[str, str], event: RegistrationRefused, now: float) -> RefusalRecord:
        endpoint = cap(event.endpoint)
        detail: dict[str, Any] = {
            "address": cap(event.address),
            "reason": cap(event.reason),
            "code": event.code,
            "identity": cap(event.identity),
        }
        if key[0] == OVERFLOW:
            detail["overflow"] = True  # too many sources this window: later ones fold here
        return RefusalRecord(
            subject=endpoint or key[0],
            endpoints=(endpoint,) if endpoint else (),
            detail=detail,
            outcome=event.code,
            at=now,
        )

    def _summary(self, key: tuple[str, str], win: _Window, now: float) -> RefusalRecord:
        first = cap(win.first.endpoint)
        return RefusalRecord(
            subject=first or key[0],
            endpoints=(first,) if first else (),
            detail={
                "source": key[0],
                "reason": key[1],
                "repeats": win.repeats,
                "window_start": win.started,
                "window_end": now,
                "codes": sorted(win.codes),
                "last_endpoint": cap(win.last_endpoint),
            },
            outcome="repeated",
            at=now,
        )


class AuditComponent:
    """Refusals into the log and periodic signed checkpoints, for one running server."""

    def __init__(
        self,
        store: Store,
        signer: CheckpointSigner,
        *,
        public_key_raw: bytes,
        interval: float = 60.0,
        refusal_window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.signer = signer
        self.public_key_raw = public_key_raw
        self.interval = interval
        self.clock = clock
        self.refusals = RefusalAggregator(window=refusal_window)
        self._task: asyncio.Task[None] | None = None

    def install(self, lifecycle: LifecycleService) -> None:
        lifecycle.on(RegistrationRefused, self.on_refused)

    async def on_refused(self, event: RegistrationRefused) -> None:
        await self._write(self.refusals.feed(event, self.clock()))

    async def _write(self, records: list[RefusalRecord]) -> None:
        if not records:
            return

        def op(tx: Tx) -> None:
            for r in records:
                self.store.audit.append(
                    tx,
                    actor=SERVER_ACTOR,
                    action=REFUSAL_ACTION,
                    subject=r.subject,
                    now=r.at,
                    endpoints=r.endpoints,
                    detail=r.detail,
                    outcome=r.outcome,
                )

        await self.store.write(op)

    async def checkpoint_now(self) -> Checkpoint | None:
        """Sign the current tree head (None when nothing is new since the last checkpoint)."""
        now = self.clock()
        return await self.store.write(lambda tx: self.store.audit.checkpoint(tx, self.signer, now))

    async def start(self) -> None:
        """First checkpoint now (covering whatever an earlier run left), then the timer.

        A log that no longer matches its hashes is not signed over -- and does not stop the
        server either: it is reported, and ``fleetloop audit verify`` names the record.
        """
        try:
            made = await self.checkpoint_now()
        except AuditTampered as err:
            log.error("audit log does not verify, not signing a checkpoint: %s", err)
        else:
            if made is not None:
                log.info("audit checkpoint", extra={"tree_size": made.tree_size})
        self._task = asyncio.create_task(self._run(), name="audit-checkpoints")

    async def _run(self) -> None:
        tick = min(self.interval, 5.0)
        last = self.clock()
        while True:
            await asyncio.sleep(tick)
            try:
                await self._write(self.refusals.flush(self.clock()))
                if self.clock() - last >= self.interval:
                    last = self.clock()
                    await self.checkpoint_now()
            except Exception:
                log.exception("audit checkpoint failed; retrying at the next interval")

    async def stop(self) -> None:
        """Write open refusal counters and a last checkpoint (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._write(self.refusals.flush(self.clock(), everything=True))
            made = await self.checkpoint_now()
            if made is not None:
                log.info("audit checkpoint", extra={"tree_size": made.tree_size})
        except Exception:
            log.exception("the last audit checkpoint failed")


__all__ = [
    "REFUSAL_ACTION",
    "TEXT_CAP",
    "AuditComponent",
    "RefusalAggregator",
    "RefusalRecord",
    "cap",
    "source_host",
]
