"""The sans-IO CoAP endpoint: every message-layer and exchange-layer transition in one place.

One :class:`CoapEndpoint` per local endpoint. It is both a server (peers send it requests; it
deduplicates, acknowledges, replays, serves block-wise, keeps observers) and a client (it sends
requests, retransmits, matches responses by token, reassembles block-wise, follows
observations). The contract with the transport and the application is in
:mod:`lwm2m.coap`; the design (state, timers, memory bounds) in ``docs/COAP.md``.

The hot path — a CON request answered at once — is: decode, one peer lookup, one dedup lookup,
one record, one event; then on ``respond`` one encode and one list append. Everything else
(block-wise, observe, separate responses) branches off behind a single option lookup.
"""

from __future__ import annotations

from collections.abc import Hashable

from aiocoap import Message

from lwm2m.coap.client_side import ClientSide
from lwm2m.coap.events import CloseReason, Event, ObservationCancelled, ObserverRemoved
from lwm2m.coap.exchange import Observation, RequestHandle, Transmission
from lwm2m.coap.messages import ACK, CON, EMPTY, NON, RST, decode, empty, is_response
from lwm2m.coap.peer import PeerState
from lwm2m.coap.server_side import ServerSide
from lwm2m.coap.state import ACTIVE, DONE, OBSERVING, TOUCH_GRANULARITY, Stats

__all__ = ["CoapEndpoint", "Stats"]


class CoapEndpoint(ServerSide, ClientSide):
    """One local CoAP endpoint (one UDP socket / DTLS listener) serving any number of peers.

    ``rng`` supplies every random choice (initial Message IDs, tokens, retransmission jitter):
    pass ``random.SystemRandom()`` in production, a seeded ``random.Random`` in tests.
    ``config`` holds the RFC 7252 transmission parameters and this layer's limits.
    """

    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None:
        """Feed one datagram from ``peer``. Never raises on the datagram's content."""
        self.stats.received += 1
        if now >= self._next_housekeeping:
            self._housekeeping(now)
        try:
            message = decode(data)
        except Exception:  # aiocoap raises UnparsableMessage, UnicodeDecodeError, ValueError...
            self._malformed(data, peer, "undecodable")
            return
        # aiocoap does not enforce these two header rules (RFC 7252 §3): TKL 9..15 is a format
        # error, and a token cut short by the end of the datagram is one too.
        tkl = data[0] & 0x0F
        if tkl > 8 or len(data) < 4 + tkl:
            self._malformed(data, peer, "bad token length")
            return
        ps = self._peers.get(peer)
        if ps is None:
            ps = self._admit_peer(peer, now)
            if ps is None:
                return
        elif now - ps.last_active > TOUCH_GRANULARITY:
            self._touch(ps, now)
        code = message.code
        mtype = message.mtype
        if code < 32:
            if code == EMPTY:
                self._on_empty(ps, message, len(data), mtype, now)
            elif mtype <= NON:
                self._on_request(ps, message, mtype == CON, now)
            else:  # a request in an ACK or RST: format error, and no RST for those
                self._malformed(data, peer, "request in ACK/RST")
        elif is_response(code) and mtype != RST:
            self._on_response(ps, message, mtype, now)
        else:
            self._malformed(data, peer, f"code {code} not usable over UDP here")

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Hashable]]:
        """Everything to send now, as ``(datagram, peer)``; the list is the caller's."""
        out = self._out
        if out:
            self._out = []
        return out

    def get_timer(self) -> float | None:
        """Absolute time at which ``handle_timer`` must be called next, or None.

        A transport asks after every datagram, so this stays cheap: the housekeeping deadline
        is cached. Between housekeeping runs it can only move later (heads of the expiry FIFOs
        and of the idle order are popped or pushed back), except when a table goes from empty
        to non-empty, which marks the cache dirty. A stale cached deadline is therefore never
        late: at worst the timer fires early once, housekeeping runs and recomputes it.
        """
        deadline = self._timers.next_deadline()
        fifo = self._ack_fifo
        if fifo:
            while fifo and fifo[0].responded:
                fifo.popleft()
            if fifo:
                first = fifo[0].ack_deadline
                if deadline is None or first < deadline:
                    deadline = first
        if self._chores_dirty or self._dedup.started or self._blockwise.started:
            self._chores_at = self._housekeeping_deadline()
            self._chores_dirty = False
        chores = self._chores_at
        if chores is not None and (deadline is None or chores < deadline):
            deadline = chores
        return deadline

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``: empty ACKs, retransmissions, timeouts, expiry."""
        if now >= self._next_housekeeping:
            self._housekeeping(now)
        fifo = self._ack_fifo
        while fifo and fifo[0].ack_deadline <= now:
            request = fifo.popleft()
            if not request.responded and not request.acked:
                request.acked = True
                request.reply = data = empty(ACK, request.mid)
                self._out.append((data, request.peer))
                self.stats.empty_acks_sent += 1
        heap = self._timers
        while (target := heap.pop_due(now)) is not None:
            if isinstance(target, Transmission):
                self._on_retransmit_timer(target, now)
            elif isinstance(target, RequestHandle):
                self._on_response_timeout(target, now)

    def next_event(self) -> Event | None:
        events = self._events
        return events.popleft() if events else None

    def forget_peer(self, peer: Hashable, now: float) -> None:
        """Drop all state about ``peer`` (DTLS session closed, device deregistered).

        Its open requests end with :class:`RequestFailed` / :class:`ObservationCancelled`, its
        observers with :class:`ObserverRemoved`, all with reason PEER_FORGOTTEN.
        """
        ps = self._peers.pop(peer, None)
        if ps is None:
            return
        ps.alive = False
        queued = list(ps.queue) if ps.queue else []
        ps.queue = None  # so that failing one request does not start the next
        handles = {id(h): h for h in (*queued, *ps.tokens.values())}
        for handle in handles.values():
            if handle.state is OBSERVING:
                self._finish(handle, now)
                self._emit(ObservationCancelled(handle, CloseReason.PEER_FORGOTTEN))
            elif handle.state is not DONE:
                self._fail(handle, now, CloseReason.PEER_FORGOTTEN, "peer forgotten")
        for observation in list(ps.observers.values()):
            self._drop_observer(observation)
            self._emit(ObserverRemoved(observation, CloseReason.PEER_FORGOTTEN))
        for tx in ps.in_flight.values():
            self._timers.cancel(tx)
        ps.in_flight.clear()
        ps.dedup.clear()
        ps.block1.clear()
        ps.block2.clear()
        ps.non_notifications.clear()

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    @property
    def dedup_size(self) -> int:
        """Dedup records held (live or awaiting lazy removal) — bounded by the cap."""
        return len(self._dedup)

    @property
    def dedup_evicted(self) -> int:
        return self._dedup.evicted

    @property
    def timer_entries(self) -> int:
        return len(self._timers)

    def has_peer(self, peer: Hashable) -> bool:
        return peer in self._peers

    def _admit_peer(self, peer: Hashable, now: float) -> PeerState | None:
        """A datagram from a new peer: make room under ``max_peers`` or drop it."""
        peers = self._peers
        if len(peers) >= self.config.max_peers:
            oldest = next(iter(peers.values()))
            if oldest.holds_state():
                self.stats.peers_dropped += 1
                return None
            del peers[oldest.peer]
            oldest.alive = False
            oldest.dedup.clear()
            self.stats.peers_evicted += 1
        return self._new_peer(peer, now)

    def _on_empty(
        self, ps: PeerState, message: Message, length: int, mtype: int, now: float
    ) -> None:
        if length != 4:  # an Empty message carries nothing after the header (RFC 7252 §4.1)
            self._malformed(b"", ps.peer, "non-empty Empty message", mtype, message.mid)
            return
        mid = message.mid
        if mtype == CON:  # CoAP ping (§4.3)
            self.stats.pings += 1
            self._send_rst(ps.peer, mid)
        elif mtype == ACK:
            tx = ps.in_flight.get(mid)
            if tx is None or not tx.confirmable:
                self.stats.unmatched += 1
                return
            del ps.in_flight[mid]
            self._timers.cancel(tx)
            self._on_acknowledged(tx, now)
        elif mtype == RST:
            tx = ps.in_flight.pop(mid, None)
            if tx is not None:
                self._timers.cancel(tx)
                self._on_transmission_failed(tx, now, CloseReason.RESET)
                return
            observation = ps.non_notifications.pop(mid, None)
            if observation is not None and observation.active:
                observation.non_mid = None
                self._drop_observer(observation)
                self._emit(ObserverRemoved(observation, CloseReason.RESET))
            else:
                self.stats.unmatched += 1

    def _on_acknowledged(self, tx: Transmission, now: float) -> None:
        owner = tx.owner
        if isinstance(owner, RequestHandle):
            if owner.tx is tx:
                owner.tx = None
                self._timers.schedule(owner, now + self._response_timeout)
                if owner.body is None and owner.b2_buffer is None:
                    self._release_slot(owner, now)
        elif isinstance(owner, Observation) and owner.tx is tx:
            owner.tx = None
            pending = owner.pending
            if pending is not None and owner.active:
                owner.pending = None
                self._emit_notification(owner, pending[0], now, pending[1])

    def _on_retransmit_timer(self, tx: Transmission, now: float) -> None:
        ps = tx.peer_state
        if ps.in_flight.get(tx.mid) is not tx:
            return
        if tx.retries >= self._max_retransmit:
            del ps.in_flight[tx.mid]
            self._on_transmission_failed(tx, now, CloseReason.TIMEOUT)
            return
        owner = tx.owner
        if isinstance(owner, Observation) and owner.pending is not None and owner.active:
            # RFC 7641 §4.5.2: send the newer notification in place of the retransmission,
            # keeping the retransmission counter and timeout; it needs its own Message ID.
            message, _confirmable = owner.pending
            owner.pending = None
            self._renew_notification(owner, tx, message, now)
        tx.retries += 1
        tx.timeout *= 2
        self.stats.retransmissions += 1
        self._timers.schedule(tx, now + tx.timeout)
        self._out.append((tx.data, ps.peer))

    def _on_transmission_failed(self, tx: Transmission, now: float, reason: CloseReason) -> None:
        """A CON of ours timed out or was reset."""
        owner = tx.owner
        if isinstance(owner, RequestHandle):
            if owner.tx is not tx:
                return
            owner.tx = None
            if (
                owner.b2_token is not None
                and tx.token == owner.b2_token
                and owner.state is OBSERVING
            ):
                self._end_block2(owner)  # a notification's fetch failed; the observation lives
                self.stats.stale_notifications += 1
                return
            if owner.state is OBSERVING:
                return
            self._fail(
                owner, now, reason, "no acknowledgement" if reason is CloseReason.TIMEOUT else ""
            )
        elif isinstance(owner, Observation) and owner.tx is tx:
            owner.tx = None
            if owner.active:
                self._drop_observer(owner)
                self._emit(ObserverRemoved(owner, reason))

    def _on_response_timeout(self, handle: RequestHandle, now: float) -> None:
        if handle.state is ACTIVE:
            self._fail(handle, now, CloseReason.TIMEOUT, "no response")
        elif handle.state is OBSERVING and handle.b2_buffer is not None:
            self._end_block2(handle)
            self.stats.stale_notifications += 1

    def _housekeeping_deadline(self) -> float | None:
        deadline = self._dedup.next_expiry()
        blockwise = self._blockwise.next_expiry()
        if blockwise is not None and (deadline is None or blockwise < deadline):
            deadline = blockwise
        if self._peers:
            idle = next(iter(self._peers.values())).last_active + self._idle_after
            if deadline is None or idle < deadline:
                deadline = idle
        if deadline is None:
            return None
        return max(deadline, self._next_housekeeping)

    def _housekeeping(self, now: float) -> None:
        self._next_housekeeping = now + self.config.housekeeping_interval
        self._dedup.expire(now)
        self._blockwise.expire(now)
        peers = self._peers
        horizon = now - self._idle_after
        for _ in range(len(peers)):
            ps = next(iter(peers.values()))
            if ps.last_active > horizon:
                break
            if ps.holds_state():
                self._touch(ps, now)  # still in use: look again an idle period from now
            else:
                del peers[ps.peer]
                ps.alive = False
        # Release emptied queues (an idle endpoint should cost next to nothing) and have
        # get_timer recompute the housekeeping deadline.
        if not self._events:
            self._events = None
        if not self._ack_fifo:
            self._ack_fifo = None
        self._chores_dirty = True
