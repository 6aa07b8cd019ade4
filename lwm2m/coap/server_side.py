"""The server half of an endpoint: requests peers send us, and observers of our resources.

Receiving (dedup, Block1 reassembly, Block2 from cache, Observe registration and
deregistration), answering (piggybacked, empty ACK then separate, NON), and notifying
(sequence numbers, CON every so often, replacing a notification still in flight).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap.blockwise import (
    Block1Assembly,
    Block2Cache,
    block_size,
    read_block,
    request_key,
    slice_block,
)
from lwm2m.coap.errors import (
    BadRequest,
    LocalProtocolError,
    RemoteProtocolError,
    RequestEntityIncomplete,
    RequestEntityTooLarge,
)
from lwm2m.coap.events import CloseReason, ObserverRemoved, RequestReceived
from lwm2m.coap.exchange import IncomingRequest, Observation, Transmission
from lwm2m.coap.messages import (
    ACK,
    BLOCK1,
    BLOCK2,
    FETCH,
    GET,
    empty,
    encode,
    is_response,
    is_success,
    scan_request_options,
)
from lwm2m.coap.observe import must_confirm, next_sequence
from lwm2m.coap.peer import PeerState
from lwm2m.coap.state import T_ACK, T_CON, T_NON, EndpointState

_log = logging.getLogger(__name__)


class ServerSide(EndpointState):
    """Requests this endpoint answers (a device being commanded, the server being registered
    with), and the observers of its resources."""

    #: Admission of Block1 bodies, set by the application (issue 14 item 1: the DM server must
    #: not buffer for a peer that may not register). Called for every block before anything is
    #: buffered, with the peer's state, the block's request, the transfer it continues (None
    #: for block 0) and the bytes it adds; an error it returns is the answer and the transfer
    #: is dropped. None: only ``EndpointConfig.max_body_size`` applies.
    block1_guard: (
        Callable[[PeerState, Message, Block1Assembly | None, int], RemoteProtocolError | None]
        | None
    ) = None

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

    def respond_slice(self, request: IncomingRequest, message: Message, now: float) -> None:
        """Answer ``request`` with one block the application cut itself (``message`` carries
        its Block2 option and at most one block of payload): no Block2 cache is kept, so every
        later block reaches the application again -- for a resource served from a shared
        in-memory copy whose per-block progress the application counts (a firmware image).
        """
        if request.responded:
            raise LocalProtocolError(f"{request!r} has already been answered")
        if not is_response(message.code):
            raise LocalProtocolError(f"{message.code} is not a response code")
        message.opt.observe = None
        self._send_response(request, message, None, now)

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

    def _on_request(self, ps: PeerState, message: Message, confirmable: bool, now: float) -> None:
        mid = message.mid
        record = ps.dedup.get(mid)
        if record is not None and record.expires > now:
            self.stats.duplicates += 1
            if confirmable:
                reply = record.reply
                if reply is None and isinstance(record, IncomingRequest):
                    # Still unanswered: the peer's ACK_TIMEOUT ran out before our answer, so
                    # acknowledge now (§4.5: ACK each duplicate) and answer separately. Without
                    # this it retransmits again and again while the server is busy (issue 13).
                    record.acked = True
                    record.reply = reply = empty(ACK, mid)
                    self.stats.empty_acks_sent += 1
                if reply is not None:
                    self._out.append((reply, ps.peer))
            return
        request = IncomingRequest(ps, mid, message.token, confirmable)
        self._dedup.add(request, confirmable, now)
        request.message = message
        try:
            if scan_request_options(message) and not self._prepare_special_request(
                ps, request, message, now
            ):
                return
        except RemoteProtocolError as exc:
            self._reject_request(request, exc, now)
            return
        events = self._events
        if events is None:
            events = self._events = deque()
        events.append(RequestReceived(ps.peer, request, message))
        if confirmable:
            request.ack_deadline = now + self._empty_ack_delay
            fifo = self._ack_fifo
            if fifo is None:
                fifo = self._ack_fifo = deque()
            fifo.append(request)

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
        guard = self.block1_guard
        if guard is not None:
            if num == 0 and assembly is not None:  # a restarted transfer replaces the old one
                self._blockwise.remove(assembly)
                assembly = None
            refusal = guard(ps, message, assembly, len(payload))
            if refusal is not None:
                if assembly is not None:
                    self._blockwise.remove(assembly)
                raise refusal
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
            self._emit(ObserverRemoved(observation, CloseReason.DEREGISTERED))

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
            self._emit(ObserverRemoved(old, CloseReason.REPLACED))
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
            message.mtype = T_ACK
            message.mid = request.mid
            data = encode(message)
            request.reply = data
            self._out.append((data, ps.peer))
            return
        mid = ps.allocate_mid()
        message.mid = mid
        if request.confirmable:
            message.mtype = T_CON
            tx = Transmission(ps, mid, encode(message), observation, True, request.token)
            if observation is not None:
                observation.tx = tx
                observation.since_con = 0
            self._start_con(tx, now)
        else:
            message.mtype = T_NON
            self._out.append((encode(message), ps.peer))

    def _emit_notification(
        self, observation: Observation, message: Message, now: float, confirmable: bool | None
    ) -> None:
        ps = observation.peer_state
        final = self._prepare_notification(observation, message, now)
        if confirmable is None:
            cfg = self.config
            confirmable = final or must_confirm(
                observation.since_con,
                observation.last_con,
                now,
                cfg.notification_con_every,
                cfg.notification_con_interval,
            )
        mid = ps.allocate_mid()
        message.mid = mid
        if confirmable:
            message.mtype = T_CON
            owner = None if final else observation
            tx = Transmission(ps, mid, message.encode(), owner, True, observation.token)
            observation.tx = None if final else tx
            observation.since_con = 0
            observation.last_con = now
            self._start_con(tx, now)
        else:
            message.mtype = T_NON
            observation.since_con += 1
            if observation.non_mid is not None:
                ps.non_notifications.pop(observation.non_mid, None)
            if not final:
                observation.non_mid = mid
                ps.non_notifications[mid] = observation
            self._out.append((message.encode(), ps.peer))

    def _renew_notification(
        self, observation: Observation, tx: Transmission, message: Message, now: float
    ) -> None:
        """Put a newer notification into a CON transmission in place of the old one."""
        ps = tx.peer_state
        del ps.in_flight[tx.mid]
        self._prepare_notification(observation, message, now)
        message.mtype = T_CON
        tx.mid = message.mid = ps.allocate_mid()
        tx.data = message.encode()
        ps.in_flight[tx.mid] = tx
        observation.last_con = now

    def _prepare_notification(self, observation: Observation, message: Message, now: float) -> bool:
        """Token, Observe value and block 0 of a notification; True if it is the final one
        (an error code: no Observe option, and the observer is removed)."""
        final = not is_success(message.code)
        if final:
            message.opt.observe = None
            self._drop_observer(observation)
        else:
            observation.sequence = next_sequence(observation.sequence)
            message.opt.observe = observation.sequence
        message.token = observation.token
        szx = observation.szx if observation.szx is not None else self._max_szx
        payload = message.payload
        if len(payload) > block_size(szx):
            # The observer fetches the rest with GETs that the cache answers (RFC 7959 §2.6).
            cache = Block2Cache(observation.peer_state, observation.key, message, payload)
            self._blockwise.add(cache, now)
            message.payload = payload[: block_size(szx)]
            message.opt.block2 = (0, True, szx)
            message.opt.size2 = len(payload)
        return final

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
