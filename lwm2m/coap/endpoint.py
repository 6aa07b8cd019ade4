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

import logging
from collections import deque
from collections.abc import Hashable

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap.blockwise import (
    Block1Assembly,
    Block2Cache,
    BlockwiseRegistry,
    block_size,
    read_block,
    request_key,
    slice_block,
)
from lwm2m.coap.dedup import DedupTable
from lwm2m.coap.errors import (
    BadRequest,
    LocalProtocolError,
    RemoteProtocolError,
    RequestEntityIncomplete,
    RequestEntityTooLarge,
)
from lwm2m.coap.events import (
    CloseReason,
    Event,
    NotificationReceived,
    ObservationCancelled,
    ObserverRemoved,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.coap.exchange import (
    IncomingRequest,
    Observation,
    Received,
    RequestHandle,
    RequestState,
    Transmission,
)
from lwm2m.coap.messages import (
    ACK,
    BLOCK1,
    BLOCK2,
    CON,
    CONTINUE,
    EMPTY,
    FETCH,
    GET,
    NON,
    OBSERVE,
    RST,
    empty,
    is_response,
    is_success,
    peek_header,
)
from lwm2m.coap.observe import is_fresh, must_confirm, next_sequence
from lwm2m.coap.params import EndpointConfig
from lwm2m.coap.peer import PeerState
from lwm2m.coap.rng import RandomSource
from lwm2m.coap.timers import TimerHeap

_log = logging.getLogger(__name__)

_T_CON, _T_NON, _T_ACK = Type.CON, Type.NON, Type.ACK
_QUEUED, _ACTIVE, _OBSERVING, _DONE = (
    RequestState.QUEUED,
    RequestState.ACTIVE,
    RequestState.OBSERVING,
    RequestState.DONE,
)
#: A peer's ``last_active`` is refreshed (and the peer moved to the back of the idle order) at
#: most this often, so the hot path rarely pays for the re-insertion.
_TOUCH_GRANULARITY = 1.0


class Stats:
    """Counters of what the core dropped, replayed or retried; the transport may export them.

    Nothing the core drops is logged above DEBUG: a flood of garbage must not become a flood
    of log lines. These counters are how an operator sees it.
    """

    __slots__ = (
        "duplicates",
        "empty_acks_sent",
        "malformed",
        "peers_dropped",
        "peers_evicted",
        "pings",
        "received",
        "retransmissions",
        "rsts_sent",
        "stale_notifications",
        "unmatched",
    )

    def __init__(self) -> None:
        self.received = 0  #: datagrams handed to receive_datagram
        self.malformed = 0  #: datagrams that failed to parse or broke a format rule
        self.duplicates = 0  #: retransmitted messages recognised by Message ID
        self.retransmissions = 0  #: CON retransmissions we sent
        self.empty_acks_sent = 0  #: CON requests answered late (separate response)
        self.rsts_sent = 0  #: RSTs we sent (pings, unknown tokens, malformed CONs)
        self.pings = 0  #: empty CONs (CoAP ping) answered with RST
        self.unmatched = 0  #: ACKs/RSTs/responses that matched nothing we sent
        self.stale_notifications = 0  #: notifications older than one already delivered
        self.peers_evicted = 0  #: idle peer states dropped to make room under max_peers
        self.peers_dropped = 0  #: datagrams dropped because max_peers was reached

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class CoapEndpoint:
    """One local CoAP endpoint (one UDP socket / DTLS listener) serving any number of peers.

    ``rng`` supplies every random choice (initial Message IDs, tokens, retransmission jitter):
    pass ``random.SystemRandom()`` in production, a seeded ``random.Random`` in tests.
    """

    def __init__(self, *, rng: RandomSource, config: EndpointConfig | None = None) -> None:
        cfg = config or EndpointConfig()
        tp = cfg.transmission
        self.config = cfg
        self.stats = Stats()
        self._rng = rng
        self._peers: dict[Hashable, PeerState] = {}
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Hashable]] = []
        self._timers = TimerHeap()
        self._ack_fifo: deque[IncomingRequest] = deque()
        self._dedup = DedupTable(tp.exchange_lifetime, tp.non_lifetime, cfg.max_dedup_entries)
        self._blockwise = BlockwiseRegistry(cfg.blockwise_lifetime, cfg.max_blockwise_states)
        self._next_housekeeping = float("-inf")
        # Hot-path copies of configuration.
        self._empty_ack_delay = cfg.empty_ack_delay
        self._max_szx = cfg.max_block_szx
        self._max_block = cfg.max_block_size
        self._ack_timeout = tp.ack_timeout
        self._jitter = tp.ack_random_factor - 1.0
        self._max_retransmit = tp.max_retransmit
        self._nstart = tp.nstart
        self._idle_after = tp.exchange_lifetime
        self._response_timeout = cfg.effective_response_timeout
        self._token_bits = cfg.token_length * 8
        self._token_length = cfg.token_length

    # ------------------------------------------------------------------ transport contract

    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None:
        """Feed one datagram from ``peer``. Never raises on the datagram's content."""
        self.stats.received += 1
        if now >= self._next_housekeeping:
            self._housekeeping(now)
        try:
            message = Message.decode(data)
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
        elif now - ps.last_active > _TOUCH_GRANULARITY:
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
        """Absolute time at which ``handle_timer`` must be called next, or None."""
        deadline = self._timers.next_deadline()
        fifo = self._ack_fifo
        while fifo and fifo[0].responded:
            fifo.popleft()
        if fifo:
            first = fifo[0].ack_deadline
            if deadline is None or first < deadline:
                deadline = first
        chores = self._housekeeping_deadline()
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

    # ------------------------------------------------------------------ application: server

    def respond(self, request: IncomingRequest, message: Message, now: float) -> Observation | None:
        """Answer ``request`` with response ``message`` (any size: large bodies go block-wise).

        Piggybacked on the ACK when the request is a CON not yet acknowledged, else a separate
        CON (or NON for a NON request). If the request registered an observation (GET/FETCH
        with Observe 0) and the response is 2.xx, the observer is registered and returned;
        notify it with :meth:`send_notification`.
        """
        if request.responded:
            raise LocalProtocolError(f"{request!r} has already been answered")
        if not is_response(message.code):
            raise LocalProtocolError(f"{message.code} is not a response code")
        observation = None
        if request.observe is not None:
            observation = self._observe_response(request, message, now)
        if request.block1 is not None:
            message.opt.block1 = (request.block1[0], False, request.block1[1])
        if request.block2 is not None or len(message.payload) > self._max_block:
            self._respond_blockwise(request, message, now, observation)
        else:
            self._send_response(request, message, observation, now)
        return observation

    def send_notification(
        self,
        observation: Observation,
        message: Message,
        now: float,
        *,
        confirmable: bool | None = None,
    ) -> None:
        """Send a notification to an observer (RFC 7641 §4.2).

        ``confirmable=None`` lets the core choose: NON, with a CON every
        ``notification_con_every`` notifications and at least every
        ``notification_con_interval`` seconds. A non-2.xx notification ends the observation.
        While a CON notification is unacknowledged a newer one waits and replaces it at the
        next retransmission (RFC 7641 §4.5.2), so a slow observer gets the latest state only.
        """
        if not observation.active:
            raise LocalProtocolError(f"{observation!r} has been removed")
        if not is_response(message.code):
            raise LocalProtocolError(f"{message.code} is not a response code")
        if observation.tx is not None:
            observation.pending = (message, confirmable)
            return
        self._emit_notification(observation, message, now, confirmable)

    def remove_observer(self, observation: Observation, now: float) -> None:
        """Forget an observer without telling it (its next interaction gets no notification).

        To tell it, send a final notification with an error code instead.
        """
        if observation.active:
            self._drop_observer(observation)

    # ------------------------------------------------------------------ application: client

    def send_request(
        self, peer: Hashable, message: Message, now: float, *, confirmable: bool = True
    ) -> RequestHandle:
        """Send request ``message`` to ``peer``; events about it carry the returned handle.

        A GET/FETCH with Observe 0 registers an observation. Bodies larger than the block size
        go Block1; Block2 responses are fetched and reassembled. At most NSTART CON requests are
        outstanding per peer; further ones queue (state QUEUED) and start in order.
        """
        if not 1 <= message.code < 32:
            raise LocalProtocolError(f"{message.code} is not a request code")
        ps = self._peers.get(peer)
        if ps is None:
            ps = self._new_peer(peer, now)
        else:
            self._touch(ps, now)
        handle = RequestHandle(ps, message, self._new_token(ps), confirmable)
        if message.code in (GET, FETCH) and message.opt.observe == 0:
            handle.observe = True
        ps.tokens[handle.token] = handle
        if confirmable and ps.nstart_used >= self._nstart:
            ps.queue.append(handle)
        else:
            self._start_request(handle, now)
        return handle

    def cancel_request(self, request: RequestHandle, now: float) -> None:
        """Stop a request (or forget an observation): no more retransmissions, no events.

        A response or notification that still arrives for it is answered with RST, which also
        ends an observation at the peer (RFC 7641 §3.6). Idempotent.
        """
        if request.state is not _DONE:
            self._finish(request, now)

    def cancel_observation(
        self, request: RequestHandle, now: float, *, deregister: bool = True
    ) -> RequestHandle | None:
        """End an observation we hold. With ``deregister`` (RFC 7641 §3.6) a GET with
        Observe 1 and the registration's token is sent; its response arrives as a
        :class:`ResponseReceived` on the returned handle. Without, the next notification is
        answered with RST (as :meth:`cancel_request`)."""
        if not request.observe:
            raise LocalProtocolError(f"{request!r} is not an observation")
        base = request.message
        ps = request.peer_state
        token = request.token
        confirmable = request.confirmable
        if request.state is not _DONE:
            self._finish(request, now)
        if not deregister or base is None:
            return None
        message = base.copy(payload=b"", observe=1, block1=None, block2=None, size1=None)
        handle = RequestHandle(ps, message, token, confirmable)
        ps.tokens[token] = handle
        if confirmable and ps.nstart_used >= self._nstart:
            ps.queue.append(handle)
        else:
            self._start_request(handle, now)
        return handle

    def forget_peer(self, peer: Hashable, now: float) -> None:
        """Drop all state about ``peer`` (DTLS session closed, device deregistered).

        Its open requests end with :class:`RequestFailed` / :class:`ObservationCancelled`, its
        observers with :class:`ObserverRemoved`, all with reason PEER_FORGOTTEN.
        """
        ps = self._peers.pop(peer, None)
        if ps is None:
            return
        ps.alive = False
        queued = list(ps.queue)
        ps.queue.clear()  # so that failing one request does not start the next
        handles = {id(h): h for h in (*queued, *ps.tokens.values())}
        for handle in handles.values():
            if handle.state is _OBSERVING:
                self._finish(handle, now)
                self._events.append(ObservationCancelled(handle, CloseReason.PEER_FORGOTTEN))
            elif handle.state is not _DONE:
                self._fail(handle, now, CloseReason.PEER_FORGOTTEN, "peer forgotten")
        for observation in list(ps.observers.values()):
            self._drop_observer(observation)
            self._events.append(ObserverRemoved(observation, CloseReason.PEER_FORGOTTEN))
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

    # ------------------------------------------------------------------ peers

    def _new_peer(self, peer: Hashable, now: float) -> PeerState:
        ps = PeerState(peer, self._rng.getrandbits(16), now)
        self._peers[peer] = ps
        return ps

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

    def _touch(self, ps: PeerState, now: float) -> None:
        """Mark activity: the peer moves to the back of the idle order."""
        ps.last_active = now
        if ps.alive:
            peers = self._peers
            del peers[ps.peer]
            peers[ps.peer] = ps

    # ------------------------------------------------------------------ incoming: server side

    def _on_request(self, ps: PeerState, message: Message, confirmable: bool, now: float) -> None:
        mid = message.mid
        record = ps.dedup.get(mid)
        if record is not None and record.expires > now:
            self.stats.duplicates += 1
            if confirmable and record.reply is not None:
                self._out.append((record.reply, ps.peer))
            return
        request = IncomingRequest(ps, mid, message.token, confirmable)
        self._dedup.add(request, confirmable, now)
        request.message = message
        opt = message.opt
        if opt.get_option(BLOCK1) or opt.get_option(BLOCK2) or opt.get_option(OBSERVE):
            try:
                if not self._prepare_special_request(ps, request, message, now):
                    return
            except RemoteProtocolError as exc:
                self._reject_request(request, exc, now)
                return
        self._events.append(RequestReceived(ps.peer, request, message))
        if confirmable:
            request.ack_deadline = now + self._empty_ack_delay
            self._ack_fifo.append(request)

    def _prepare_special_request(
        self, ps: PeerState, request: IncomingRequest, message: Message, now: float
    ) -> bool:
        """Block-wise and Observe handling of a request. False: the core answered it itself."""
        if message.opt.get_option(BLOCK1) and not self._on_block1(ps, request, message, now):
            return False
        block2 = read_block(message, BLOCK2)
        if block2 is not None:
            num, _more, szx = block2
            szx = min(szx, self._max_szx)
            request.block2 = (num, szx)
            if num > 0:
                cache = ps.block2.get(request_key(message))
                if cache is not None:
                    self._serve_block(request, cache, num, szx, now)
                    return False
        if message.code in (GET, FETCH):
            observe = message.opt.observe
            if observe is not None:
                request.observe = observe
                if observe == 1:
                    self._deregister(ps, message)
        return True

    def _on_block1(
        self, ps: PeerState, request: IncomingRequest, message: Message, now: float
    ) -> bool:
        """RFC 7959 §2.5: collect a Block1 body. True when it is complete (``message`` then
        carries the whole body and no Block1/Size1), False when the core answered the block."""
        block1 = read_block(message, BLOCK1)
        assert block1 is not None
        num, more, szx = block1
        limit = self.config.max_body_size
        key = request_key(message)
        assembly = ps.block1.get(key)
        payload = message.payload
        if num == 0:
            size1 = message.opt.size1
            if size1 is not None and size1 > limit:
                if assembly is not None:
                    self._blockwise.remove(assembly)
                raise RequestEntityTooLarge(f"announced body of {size1} bytes", size1=limit)
            assembly = Block1Assembly(ps, key, szx)
            self._blockwise.add(assembly, now)
        elif assembly is None:
            raise RequestEntityIncomplete(f"Block1 #{num} without a transfer in progress")
        start = num * block_size(szx)
        if start != len(assembly.buffer):
            self._blockwise.remove(assembly)
            raise RequestEntityIncomplete(
                f"Block1 #{num} starts at {start}, expected {len(assembly.buffer)}"
            )
        if more and len(payload) != block_size(szx):
            self._blockwise.remove(assembly)
            raise BadRequest(f"Block1 #{num} carries {len(payload)} bytes, szx says {szx}")
        if len(assembly.buffer) + len(payload) > limit:
            self._blockwise.remove(assembly)
            raise RequestEntityTooLarge("body exceeds the limit", size1=limit)
        assembly.buffer += payload
        if more:
            self._blockwise.touch(assembly, now)
            # 2.31 with our preferred size: the client continues from the bytes received so far
            # in our block size (RFC 7959 §2.3, "late negotiation").
            reply = Message(code=Code.CONTINUE)
            reply.opt.block1 = (num, True, min(szx, self._max_szx))
            self._send_response(request, reply, None, now)
            return False
        self._blockwise.remove(assembly)
        message.payload = bytes(assembly.buffer)
        message.opt.block1 = None
        message.opt.size1 = None
        request.block1 = (num, szx)
        return True

    def _deregister(self, ps: PeerState, message: Message) -> None:
        """GET/FETCH with Observe 1: the observer with that token — or, failing that, with the
        same request options — is removed (RFC 7641 §3.6)."""
        observation = ps.observers.get(message.token)
        if observation is None:
            key = request_key(message)
            observation = next((o for o in ps.observers.values() if o.key == key), None)
        if observation is not None:
            self._drop_observer(observation)
            self._events.append(ObserverRemoved(observation, CloseReason.DEREGISTERED))

    def _reject_request(
        self, request: IncomingRequest, exc: RemoteProtocolError, now: float
    ) -> None:
        reply = Message(code=exc.code)
        if isinstance(exc, RequestEntityTooLarge):
            reply.opt.size1 = exc.size1
        reply.payload = str(exc).encode()[:128]
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("rejecting request from %r: %s", request.peer, exc)
        self._send_response(request, reply, None, now)

    def _observe_response(
        self, request: IncomingRequest, message: Message, now: float
    ) -> Observation | None:
        """Register an observer if the request asked for it and the response grants it."""
        if request.observe != 0 or not is_success(message.code):
            message.opt.observe = None
            return None
        ps = request.peer_state
        assert request.message is not None
        old = ps.observers.get(request.token)
        if old is not None:
            self._drop_observer(old)
            self._events.append(ObserverRemoved(old, CloseReason.REPLACED))
        observation = Observation(ps, request.token, request_key(request.message))
        observation.last_con = now
        if request.block2 is not None:
            observation.szx = request.block2[1]
        message.opt.observe = observation.sequence
        ps.observers[request.token] = observation
        return observation

    def _respond_blockwise(
        self,
        request: IncomingRequest,
        message: Message,
        now: float,
        observation: Observation | None,
    ) -> None:
        """Serve block ``num`` of a response (block 0 unless the request asked for another),
        and cache the whole body so that the following blocks do not reach the application."""
        num, szx = request.block2 if request.block2 is not None else (0, self._max_szx)
        payload = message.payload
        if num == 0 and len(payload) <= block_size(szx):
            if request.block2 is not None and len(payload) > 0:
                message.opt.block2 = (0, False, szx)
            self._send_response(request, message, observation, now)
            return
        assert request.message is not None
        cache = Block2Cache(request.peer_state, request_key(request.message), message, payload)
        self._blockwise.add(cache, now)
        self._serve_block(request, cache, num, szx, now, observation)

    def _serve_block(
        self,
        request: IncomingRequest,
        cache: Block2Cache,
        num: int,
        szx: int,
        now: float,
        observation: Observation | None = None,
    ) -> None:
        piece = slice_block(cache.payload, num, szx)
        if piece is None:
            self._reject_request(request, BadRequest(f"Block2 #{num} is beyond the body"), now)
            return
        chunk, more = piece
        self._blockwise.touch(cache, now)
        if num == 0:
            reply = cache.response
            reply.payload = chunk
            reply.opt.block2 = (0, more, szx)
            reply.opt.size2 = len(cache.payload)
        else:
            reply = cache.response.copy(
                payload=chunk, block2=(num, more, szx), size2=None, observe=None, block1=None
            )
        self._send_response(request, reply, observation, now)

    def _send_response(
        self,
        request: IncomingRequest,
        message: Message,
        observation: Observation | None,
        now: float,
    ) -> None:
        message.token = request.token
        ps = request.peer_state
        request.responded = True
        request.message = None
        if request.confirmable and not request.acked:
            message.mtype = _T_ACK
            message.mid = request.mid
            data = message.encode()
            request.reply = data
            self._out.append((data, ps.peer))
            return
        mid = ps.allocate_mid()
        message.mid = mid
        if request.confirmable:
            message.mtype = _T_CON
            tx = Transmission(ps, mid, message.encode(), observation, True, request.token)
            if observation is not None:
                observation.tx = tx
                observation.since_con = 0
            self._start_con(tx, now)
        else:
            message.mtype = _T_NON
            self._out.append((message.encode(), ps.peer))

    def _emit_notification(
        self, observation: Observation, message: Message, now: float, confirmable: bool | None
    ) -> None:
        ps = observation.peer_state
        final = not is_success(message.code)
        if final:
            message.opt.observe = None
            self._drop_observer(observation)
        else:
            observation.sequence = next_sequence(observation.sequence)
            message.opt.observe = observation.sequence
        if confirmable is None:
            cfg = self.config
            confirmable = final or must_confirm(
                observation.since_con,
                observation.last_con,
                now,
                cfg.notification_con_every,
                cfg.notification_con_interval,
            )
        message.token = observation.token
        szx = observation.szx if observation.szx is not None else self._max_szx
        payload = message.payload
        if len(payload) > block_size(szx):
            cache = Block2Cache(ps, observation.key, message, payload)
            self._blockwise.add(cache, now)
            message.payload = payload[: block_size(szx)]
            message.opt.block2 = (0, True, szx)
            message.opt.size2 = len(payload)
        mid = ps.allocate_mid()
        message.mid = mid
        if confirmable:
            message.mtype = _T_CON
            tx = Transmission(
                ps, mid, message.encode(), None if final else observation, True, observation.token
            )
            observation.tx = None if final else tx
            observation.since_con = 0
            observation.last_con = now
            self._start_con(tx, now)
        else:
            message.mtype = _T_NON
            observation.since_con += 1
            if observation.non_mid is not None:
                ps.non_notifications.pop(observation.non_mid, None)
            if not final:
                observation.non_mid = mid
                ps.non_notifications[mid] = observation
            self._out.append((message.encode(), ps.peer))

    def _drop_observer(self, observation: Observation) -> None:
        observation.active = False
        observation.pending = None
        ps = observation.peer_state
        if ps.observers.get(observation.token) is observation:
            del ps.observers[observation.token]
        if observation.non_mid is not None:
            ps.non_notifications.pop(observation.non_mid, None)
            observation.non_mid = None
        tx = observation.tx
        if tx is not None:
            # The CON in flight keeps being retransmitted (the observer should still learn the
            # state it carries) but no longer speaks for the observation.
            tx.owner = None
            observation.tx = None

    # ------------------------------------------------------------------ incoming: client side

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
                self._events.append(ObserverRemoved(observation, CloseReason.RESET))
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

    def _on_response(self, ps: PeerState, message: Message, mtype: int, now: float) -> None:
        token = message.token
        if mtype == ACK:
            # Piggybacked: must match the Message ID *and* the token of our CON (§5.3.2).
            tx = ps.in_flight.get(message.mid)
            if tx is None or not tx.confirmable or tx.token != token:
                self.stats.unmatched += 1
                return
            owner = tx.owner
            del ps.in_flight[tx.mid]
            self._timers.cancel(tx)
            if not isinstance(owner, RequestHandle) or owner.tx is not tx:
                self.stats.unmatched += 1
                if owner is not None:
                    self._on_acknowledged(tx, now)
                return
            owner.tx = None
            self._on_response_to(owner, message, now)
            return
        mid = message.mid
        record = ps.dedup.get(mid)
        if record is not None and record.expires > now:
            self.stats.duplicates += 1
            if mtype == CON and record.reply is not None:
                self._out.append((record.reply, ps.peer))
            return
        record = Received(ps, mid)
        self._dedup.add(record, mtype == CON, now)
        handle = ps.tokens.get(token)
        if handle is None or (
            not handle.observe and message.opt.observe is not None and token == handle.token
        ):
            # Unknown token, or a notification for an observation we no longer hold: RST
            # tells the peer to stop (RFC 7252 §5.3.2, RFC 7641 §3.6).
            self.stats.unmatched += 1
            record.reply = self._send_rst(ps.peer, mid)
            return
        if mtype == CON:
            record.reply = data = empty(ACK, mid)
            self._out.append((data, ps.peer))
        tx = handle.tx
        if tx is not None and tx.token == token:
            # A separate response also acknowledges the request (§5.2.2).
            ps.in_flight.pop(tx.mid, None)
            self._timers.cancel(tx)
            handle.tx = None
        self._on_response_to(handle, message, now)

    def _on_response_to(self, handle: RequestHandle, message: Message, now: float) -> None:
        """A response (or notification) matched to ``handle`` by token."""
        token = message.token
        if handle.b2_token is not None and token == handle.b2_token:
            self._on_block2_continuation(handle, message, now)
            return
        if handle.state is _OBSERVING:
            self._on_notification(handle, message, now)
            return
        if handle.state is not _ACTIVE:
            return
        self._timers.cancel(handle)
        code = message.code
        if handle.body is not None:
            if code == CONTINUE and self._continue_upload(handle, message, now):
                return
            handle.body = None
        observing = handle.observe and is_success(code) and message.opt.observe is not None
        sequence = message.opt.observe if observing else None
        if self._start_block2(handle, message, now, sequence):
            return
        self._deliver(handle, message, now, observing, sequence)

    def _on_notification(self, handle: RequestHandle, message: Message, now: float) -> None:
        sequence = message.opt.observe
        if sequence is None or not is_success(message.code):
            self._events.append(NotificationReceived(handle, message, None))
            self._finish(handle, now)
            self._events.append(ObservationCancelled(handle, CloseReason.ENDED_BY_PEER))
            return
        if not is_fresh(handle.obs_seq, handle.obs_time, sequence, now):
            self.stats.stale_notifications += 1
            return
        handle.obs_seq = sequence
        handle.obs_time = now
        if self._start_block2(handle, message, now, sequence):
            return
        self._events.append(NotificationReceived(handle, message, sequence))

    def _deliver(
        self,
        handle: RequestHandle,
        message: Message,
        now: float,
        observing: bool,
        sequence: int | None,
    ) -> None:
        """Hand a complete response or notification to the application."""
        if handle.state is _OBSERVING:
            self._events.append(NotificationReceived(handle, message, sequence))
        elif observing:
            assert sequence is not None
            handle.state = _OBSERVING
            handle.obs_seq = sequence
            handle.obs_time = now
            self._release_slot(handle, now)
            self._events.append(ResponseReceived(handle, message, True))
        else:
            self._finish(handle, now)
            self._events.append(ResponseReceived(handle, message, False))

    # ------------------------------------------------------------------ block-wise: client side

    def _continue_upload(self, handle: RequestHandle, message: Message, now: float) -> bool:
        """2.31 to a Block1 block: send the next one (in the size the server asked for)."""
        body = handle.body
        assert body is not None
        try:
            block1 = read_block(message, BLOCK1)
        except BadRequest:
            block1 = None
        sent_end = handle.body_offset + block_size(handle.body_szx)
        if block1 is None or sent_end >= len(body):
            self._fail(handle, now, CloseReason.BLOCKWISE, "2.31 Continue without a next block")
            return True
        szx = min(handle.body_szx, block1[2])
        handle.body_szx = szx
        handle.body_offset = sent_end
        self._send_block1(handle, now)
        return True

    def _send_block1(self, handle: RequestHandle, now: float) -> None:
        body = handle.body
        base = handle.message
        assert body is not None and base is not None
        szx = handle.body_szx
        size = block_size(szx)
        offset = handle.body_offset
        num = offset // size
        more = offset + size < len(body)
        block = base.copy(payload=body[offset : offset + size], block1=(num, more, szx))
        if num == 0:
            block.opt.size1 = len(body)
        else:
            block.opt.size1 = None
        self._transmit(handle, block, handle.token, now)

    def _start_block2(
        self, handle: RequestHandle, message: Message, now: float, sequence: int | None
    ) -> bool:
        """If ``message`` is block 0 of several, start fetching the rest (True)."""
        if not message.opt.get_option(BLOCK2):
            return False
        try:
            block2 = read_block(message, BLOCK2)
        except BadRequest:
            block2 = None
        if block2 is None or block2[0] != 0:
            if handle.state is _ACTIVE:
                self._fail(handle, now, CloseReason.BLOCKWISE, "response starts past block 0")
            return True
        _num, more, szx = block2
        if not more:
            return False
        size2 = message.opt.size2
        if size2 is not None and size2 > self.config.max_body_size:
            if handle.state is _ACTIVE:
                self._fail(handle, now, CloseReason.TOO_LARGE, f"Size2 {size2}")
            return True
        if len(message.payload) != block_size(szx):
            if handle.state is _ACTIVE:
                self._fail(handle, now, CloseReason.BLOCKWISE, "block 0 size mismatch")
            return True
        handle.b2_buffer = bytearray(message.payload)
        handle.b2_szx = min(szx, self._max_szx)
        handle.b2_etag = message.opt.etag
        handle.b2_first = message
        handle.b2_notification_seq = -1 if sequence is None else sequence
        if handle.state is _ACTIVE and sequence is not None:
            # The observation is established by this first block; notifications that overtake
            # the fetch are judged against its sequence number.
            handle.obs_seq = sequence
            handle.obs_time = now
        self._fetch_next_block(handle, now)
        return True

    def _fetch_next_block(self, handle: RequestHandle, now: float) -> None:
        base = handle.message
        buffer = handle.b2_buffer
        assert base is not None and buffer is not None
        ps = handle.peer_state
        szx = handle.b2_szx
        num = len(buffer) // block_size(szx)
        request = base.copy(
            payload=b"", observe=None, block1=None, size1=None, block2=(num, False, szx)
        )
        old = handle.b2_token
        if old is not None and ps.tokens.get(old) is handle:
            del ps.tokens[old]
        token = self._new_token(ps)
        handle.b2_token = token
        ps.tokens[token] = handle
        self._transmit(handle, request, token, now)

    def _on_block2_continuation(self, handle: RequestHandle, message: Message, now: float) -> None:
        buffer = handle.b2_buffer
        first = handle.b2_first
        if buffer is None or first is None:
            return
        self._timers.cancel(handle)
        try:
            block2 = read_block(message, BLOCK2)
        except BadRequest:
            block2 = None
        reason, detail = CloseReason.BLOCKWISE, ""
        if not is_success(message.code) or block2 is None:
            detail = f"block fetch answered {message.code}"
        else:
            num, more, szx = block2
            size = block_size(szx)
            if num * size != len(buffer) or (more and len(message.payload) != size):
                detail = f"unexpected block #{num}"
            elif message.opt.etag != handle.b2_etag:
                detail = "representation changed during transfer (ETag)"
            elif len(buffer) + len(message.payload) > self.config.max_body_size:
                reason, detail = CloseReason.TOO_LARGE, "body exceeds max_body_size"
            else:
                buffer += message.payload
                if more:
                    handle.b2_szx = min(szx, self._max_szx)
                    self._fetch_next_block(handle, now)
                    return
                sequence = handle.b2_notification_seq
                self._end_block2(handle)
                first.payload = bytes(buffer)
                first.opt.block2 = None
                first.opt.size2 = None
                observing = sequence >= 0
                self._deliver(handle, first, now, observing, sequence if observing else None)
                return
        self._end_block2(handle)
        if handle.state is _ACTIVE:
            self._fail(handle, now, reason, detail)
        else:  # a notification we could not complete: the next one will do
            self.stats.stale_notifications += 1

    def _end_block2(self, handle: RequestHandle) -> None:
        token = handle.b2_token
        ps = handle.peer_state
        if token is not None and ps.tokens.get(token) is handle and token != handle.token:
            del ps.tokens[token]
        handle.b2_token = None
        handle.b2_buffer = None
        handle.b2_first = None
        handle.b2_etag = None
        tx = handle.tx
        if tx is not None and tx.token == token:
            ps.in_flight.pop(tx.mid, None)
            self._timers.cancel(tx)
            handle.tx = None

    # ------------------------------------------------------------------ requests we send

    def _new_token(self, ps: PeerState) -> bytes:
        tokens = ps.tokens
        while True:
            token = self._rng.getrandbits(self._token_bits).to_bytes(self._token_length, "big")
            if token not in tokens:
                return token

    def _start_request(self, handle: RequestHandle, now: float) -> None:
        handle.state = _ACTIVE
        ps = handle.peer_state
        if handle.confirmable:
            handle.holds_slot = True
            ps.nstart_used += 1
        message = handle.message
        assert message is not None
        if len(message.payload) > self._max_block:
            handle.body = message.payload
            handle.body_szx = self._max_szx
            handle.body_offset = 0
            self._send_block1(handle, now)
            return
        if self._max_szx < 6 and message.code in (GET, FETCH) and not message.opt.block2:
            message.opt.block2 = (0, False, self._max_szx)  # early negotiation (RFC 7959 §2.4)
        self._transmit(handle, message, handle.token, now)

    def _transmit(self, handle: RequestHandle, message: Message, token: bytes, now: float) -> None:
        """Send one message of a request (the request itself, a Block1 block, a Block2 GET)."""
        ps = handle.peer_state
        mid = ps.allocate_mid()
        message.token = token
        message.mid = mid
        confirmable = handle.confirmable
        message.mtype = _T_CON if confirmable else _T_NON
        tx = Transmission(ps, mid, message.encode(), handle, confirmable, token)
        old = handle.tx
        if old is not None:
            ps.in_flight.pop(old.mid, None)
            self._timers.cancel(old)
        handle.tx = tx
        if confirmable:
            self._start_con(tx, now)
        else:
            ps.in_flight[mid] = tx
            self._timers.schedule(handle, now + self._response_timeout)
            self._out.append((tx.data, ps.peer))

    def _start_con(self, tx: Transmission, now: float) -> None:
        ps = tx.peer_state
        ps.in_flight[tx.mid] = tx
        timeout = self._ack_timeout
        if self._jitter:
            timeout *= 1.0 + self._jitter * self._rng.random()
        tx.timeout = timeout
        tx.retries = 0
        self._timers.schedule(tx, now + timeout)
        self._out.append((tx.data, ps.peer))

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

    def _renew_notification(
        self, observation: Observation, tx: Transmission, message: Message, now: float
    ) -> None:
        ps = tx.peer_state
        del ps.in_flight[tx.mid]
        if not is_success(message.code):
            message.opt.observe = None
            self._drop_observer(observation)
        else:
            observation.sequence = next_sequence(observation.sequence)
            message.opt.observe = observation.sequence
        szx = observation.szx if observation.szx is not None else self._max_szx
        payload = message.payload
        if len(payload) > block_size(szx):
            cache = Block2Cache(ps, observation.key, message, payload)
            self._blockwise.add(cache, now)
            message.payload = payload[: block_size(szx)]
            message.opt.block2 = (0, True, szx)
            message.opt.size2 = len(payload)
        message.token = observation.token
        message.mtype = _T_CON
        tx.mid = message.mid = ps.allocate_mid()
        tx.data = message.encode()
        ps.in_flight[tx.mid] = tx
        observation.last_con = now

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
                and owner.state is _OBSERVING
            ):
                self._end_block2(owner)  # a notification's fetch failed; the observation lives
                self.stats.stale_notifications += 1
                return
            if owner.state is _OBSERVING:
                return
            self._fail(
                owner, now, reason, "no acknowledgement" if reason is CloseReason.TIMEOUT else ""
            )
        elif isinstance(owner, Observation) and owner.tx is tx:
            owner.tx = None
            if owner.active:
                self._drop_observer(owner)
                self._events.append(ObserverRemoved(owner, reason))

    def _on_response_timeout(self, handle: RequestHandle, now: float) -> None:
        if handle.state is _ACTIVE:
            self._fail(handle, now, CloseReason.TIMEOUT, "no response")
        elif handle.state is _OBSERVING and handle.b2_buffer is not None:
            self._end_block2(handle)
            self.stats.stale_notifications += 1

    def _release_slot(self, handle: RequestHandle, now: float) -> None:
        if not handle.holds_slot:
            return
        handle.holds_slot = False
        ps = handle.peer_state
        ps.nstart_used -= 1
        queue = ps.queue
        while queue and ps.nstart_used < self._nstart:
            waiting = queue.popleft()
            if waiting.state is _QUEUED:
                self._start_request(waiting, now)

    def _finish(self, handle: RequestHandle, now: float) -> None:
        """Terminal bookkeeping for a request (the caller emits the event, if any)."""
        ps = handle.peer_state
        handle.state = _DONE
        if ps.tokens.get(handle.token) is handle:
            del ps.tokens[handle.token]
        if handle.b2_token is not None:
            self._end_block2(handle)
        tx = handle.tx
        if tx is not None:
            if ps.in_flight.get(tx.mid) is tx:
                del ps.in_flight[tx.mid]
            self._timers.cancel(tx)
            handle.tx = None
        self._timers.cancel(handle)
        handle.body = None
        handle.message = None
        self._release_slot(handle, now)

    def _fail(self, handle: RequestHandle, now: float, reason: CloseReason, detail: str) -> None:
        self._finish(handle, now)
        self._events.append(RequestFailed(handle, reason, detail))

    # ------------------------------------------------------------------ misc

    def _send_rst(self, peer: Hashable, mid: int) -> bytes:
        data = empty(RST, mid)
        self._out.append((data, peer))
        self.stats.rsts_sent += 1
        return data

    def _malformed(
        self,
        data: bytes,
        peer: Hashable,
        why: str,
        mtype: int | None = None,
        mid: int | None = None,
    ) -> None:
        """Count and drop; a CON whose header still parses is rejected with RST (§4.2)."""
        self.stats.malformed += 1
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("dropping malformed datagram from %r: %s", peer, why)
        if mtype is None:
            header = peek_header(data)
            if header is not None:
                mtype, mid = header
        if mtype == CON and mid is not None:
            self._send_rst(peer, mid)

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
