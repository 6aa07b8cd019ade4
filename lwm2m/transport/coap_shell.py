"""Run a sans-IO CoAP core (``lwm2m.coap.CoapEndpoint``) on a transport.

The whole asyncio side of CoAP, aioquic style: feed each datagram to the core with the loop's
clock, hand the core's events to the application, send what the core wants sent, and keep one
asyncio timer armed at the core's next deadline. The core never sees a socket or a clock; the
transport never sees CoAP.

Usage::

    core = CoapEndpoint(rng=random.SystemRandom())
    shell = CoapShell(core, on_event)
    transport = await DtlsServer.create(shell, config, host, port,
                                        on_session_closed=shell.session_closed)
    shell.attach(transport)

``on_event(event)`` runs for every event the core emits and may act on the core directly
(``core.respond(event.request, message, shell.now())``); the shell flushes after it returns.
Actions taken outside an event (a server-initiated request, a notification) are followed by
``shell.flush()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from lwm2m.transport._common import RateLimitedLog
from lwm2m.transport.errors import NoSession, TransportClosed, TransportError
from lwm2m.transport.interface import Transport
from lwm2m.transport.peer import Peer

logger = logging.getLogger("lwm2m.transport.coap_shell")

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class SansIoCore(Protocol[E_co]):
    """The transport contract of the sans-IO CoAP core (see ``lwm2m.coap``)."""

    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Hashable]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> E_co | None: ...

    def forget_peer(self, peer: Hashable, now: float) -> None: ...


class CoapShell(Generic[E]):
    """Glue between one transport and one sans-IO core; it is the transport's sink.

    ``forget_unreachable``: when the transport says a peer has no session any more (DTLS
    session evicted, expired, closed), tell the core to forget that peer, so its pending
    exchanges fail now (``PEER_FORGOTTEN``) instead of retransmitting into the void for 93 s.
    """

    def __init__(
        self,
        core: SansIoCore[E],
        on_event: Callable[[E], None],
        *,
        forget_unreachable: bool = True,
    ) -> None:
        self.core = core
        self._on_event = on_event
        self._forget_unreachable = forget_unreachable
        self._loop = asyncio.get_running_loop()
        # The loop's clock, since the core's deadlines become loop timers. asyncio's own loops
        # read time.monotonic through a Python method: call it directly then (same values, one
        # frame less, twice per datagram); any other loop keeps its own clock.
        loop_time = type(self._loop).time
        self._clock: Callable[[], float] = (
            time.monotonic if loop_time is asyncio.BaseEventLoop.time else self._loop.time
        )
        self._transport: Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self._unreachable: list[Hashable] = []
        #: Datagrams the transport refused (no session, too large, closed).
        self.send_errors = 0
        #: Exceptions raised by ``on_event`` (logged, rate-limited; the shell carries on).
        self.handler_errors = 0
        self._log_send = RateLimitedLog(logger, logging.WARNING)
        self._log_handler = RateLimitedLog(logger, logging.ERROR)

    def attach(self, transport: Transport) -> None:
        """Start sending through ``transport`` (created with this shell as its sink)."""
        self._transport = transport
        self.flush()

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise TransportClosed("no transport attached")
        return self._transport

    def now(self) -> float:
        """The clock the core runs on (the event loop's monotonic time)."""
        return self._clock()

    # -- sink ---------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, peer: Peer) -> None:
        now = self._clock()
        self.core.receive_datagram(data, peer, now)
        self._process(now)

    def session_closed(self, peer: Peer, reason: str) -> None:
        """``on_session_closed`` callback for the DTLS transports: the core forgets ``peer``."""
        if self._forget_unreachable and not self._closed:
            now = self._clock()
            self.core.forget_peer(peer, now)
            self._process(now)

    # -- driving the core ---------------------------------------------------------------------

    def flush(self) -> None:
        """Deliver pending events, send pending datagrams, re-arm the timer. Call after acting
        on the core outside an event handler."""
        self._process(self._clock())

    def _process(self, now: float) -> None:
        """Events to the application, datagrams to the transport, the timer to the core's
        deadline. Runs after every datagram: the common case (no unreachable peer, the
        deadline not earlier than the armed timer) is one pass with no extra calls."""
        core = self.core
        handler = self._on_event
        next_event = core.next_event
        while (event := next_event()) is not None:
            try:
                handler(event)
            except Exception:
                self.handler_errors += 1
                self._log_handler("CoAP event handler failed on %r", event, exc_info=True)
        datagrams = core.datagrams_to_send(now)
        if datagrams:
            self._send(datagrams)
        if self._unreachable:
            self._forget_unreachable_peers(now)
        deadline = core.get_timer()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._arm(deadline)

    def _forget_unreachable_peers(self, now: float) -> None:
        """Peers the transport has no session for: the core forgets them, which may produce
        events and datagrams of its own (bounded, in case forgetting keeps failing)."""
        core = self.core
        for _ in range(8):
            unreachable, self._unreachable = self._unreachable, []
            for peer in unreachable:
                core.forget_peer(peer, now)
            self._drain_events(core)
            self._send(core.datagrams_to_send(now))
            if not self._unreachable:
                break

    def _drain_events(self, core: SansIoCore[E]) -> None:
        handler = self._on_event
        while (event := core.next_event()) is not None:
            try:
                handler(event)
            except Exception:
                self.handler_errors += 1
                self._log_handler("CoAP event handler failed on %r", event, exc_info=True)

    def _send(self, datagrams: list[tuple[bytes, Hashable]]) -> None:
        if not datagrams:
            return
        transport = self._transport
        if transport is None or self._closed:
            self.send_errors += len(datagrams)
            return
        send = transport.send
        for data, peer in datagrams:
            try:
                send(data, peer)  # type: ignore[arg-type]  # the core hands back our Peers
            except NoSession:
                self.send_errors += 1
                if self._forget_unreachable:
                    self._unreachable.append(peer)
            except TransportError as exc:
                self.send_errors += 1
                self._log_send("could not send to %s: %s", peer, exc)

    def _arm(self, deadline: float | None) -> None:
        """Keep one timer at the core's next deadline. A later deadline keeps the earlier timer
        (it fires, finds nothing due, and re-arms): cheaper than cancelling per datagram."""
        if deadline is None or self._closed:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        now = self._clock()
        try:
            self.core.handle_timer(now)
        except Exception:
            self.handler_errors += 1
            self._log_handler("CoAP core timer handling failed", exc_info=True)
        self._process(now)

    def close(self) -> None:
        """Stop the timer and close the transport."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
