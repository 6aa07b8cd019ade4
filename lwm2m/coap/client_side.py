"""The client half of an endpoint: requests we send and observations we hold.

Sending (tokens, NSTART queueing, Block1 upload), matching responses (token and Message ID,
RFC 7252 §5.3.2), reassembling Block2 responses and notifications, and following observations
(freshness, final notifications, cancel and deregistration).
"""

from __future__ import annotations

from collections.abc import Hashable

from aiocoap import Message

from lwm2m.coap.blockwise import block_size, read_block
from lwm2m.coap.errors import BadRequest, LocalProtocolError
from lwm2m.coap.events import (
    CloseReason,
    NotificationReceived,
    ObservationCancelled,
    RequestFailed,
    ResponseReceived,
)
from lwm2m.coap.exchange import Received, RequestHandle, Transmission
from lwm2m.coap.messages import (
    ACK,
    BLOCK1,
    BLOCK2,
    CON,
    CONTINUE,
    FETCH,
    GET,
    OBSERVE,
    REQUEST_ENTITY_TOO_LARGE,
    empty,
    is_success,
    option_int,
)
from lwm2m.coap.observe import is_fresh
from lwm2m.coap.peer import PeerState
from lwm2m.coap.state import ACTIVE, DONE, OBSERVING, QUEUED, T_CON, T_NON, EndpointState


class ClientSide(EndpointState):
    """Requests this endpoint originates (the LwM2M server commanding devices)."""

    #: The held ACK of the CON notification being processed (defer_notification_acks), until
    #: it is handed out with its NotificationReceived.
    _receipt: Received | None = None

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
            ps.enqueue(handle)
        else:
            self._start_request(handle, now)
        return handle

    def cancel_request(self, request: RequestHandle, now: float) -> None:
        """Stop a request (or forget an observation): no more retransmissions, no events.

        A response or notification that still arrives for it is answered with RST, which also
        ends an observation at the peer (RFC 7641 §3.6). Idempotent.
        """
        if request.state is not DONE:
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
        if request.state is not DONE:
            self._finish(request, now)
        if not deregister or base is None:
            return None
        # A FETCH is identified by its body too (RFC 8132 §2.3.1): its deregistration repeats
        # it, or the observed server cannot tell which observation (Observe-Composite) ends.
        payload = base.payload if base.code == FETCH else b""
        message = base.copy(payload=payload, observe=1, block1=None, block2=None, size1=None)
        handle = RequestHandle(ps, message, token, confirmable)
        ps.tokens[token] = handle
        if confirmable and ps.nstart_used >= self._nstart:
            ps.enqueue(handle)
        else:
            self._start_request(handle, now)
        return handle

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
        deferred = (
            mtype == CON
            and self.config.defer_notification_acks
            and handle.state is OBSERVING
            and token != handle.b2_token
        )
        if mtype == CON and not deferred:
            record.reply = data = empty(ACK, mid)
            self._out.append((data, ps.peer))
        tx = handle.tx
        if tx is not None and tx.token == token:
            # A separate response also acknowledges the request (§5.2.2).
            ps.in_flight.pop(tx.mid, None)
            self._timers.cancel(tx)
            handle.tx = None
        if not deferred:
            self._on_response_to(handle, message, now)
            return
        self._receipt = record
        try:
            self._on_response_to(handle, message, now)
        finally:
            if self._receipt is not None:  # not handed to the application: acknowledge now
                self._receipt = None
                self.acknowledge(record, now)

    def acknowledge(self, receipt: object, now: float) -> None:
        """Send the ACK held for a notification (``NotificationReceived.ack``); a receipt
        already acknowledged is ignored. A retransmission that arrives later gets the same ACK
        again from the deduplication record."""
        if not isinstance(receipt, Received) or receipt.reply is not None:
            return
        receipt.reply = data = empty(ACK, receipt.mid)
        self._out.append((data, receipt.peer_state.peer))

    def _on_response_to(self, handle: RequestHandle, message: Message, now: float) -> None:
        """A response (or notification) matched to ``handle`` by token."""
        token = message.token
        if handle.b2_token is not None and token == handle.b2_token:
            self._on_block2_continuation(handle, message, now)
            return
        if handle.state is OBSERVING:
            self._on_notification(handle, message, now)
            return
        if handle.state is not ACTIVE:
            return
        self._timers.cancel(handle)
        code = message.code
        if code == REQUEST_ENTITY_TOO_LARGE and self._retry_smaller(handle, message, now):
            return
        if handle.body is not None:
            if code == CONTINUE and self._continue_upload(handle, message, now):
                return
            handle.body = None
        observing = handle.observe and is_success(code) and message.opt.observe is not None
        sequence = message.opt.observe if observing else None
        if handle.b2_buffer is not None:
            self._end_block2(handle)  # a newer response overtook the one being fetched
        if self._start_block2(handle, message, now, sequence):
            return
        self._deliver(handle, message, now, observing, sequence)

    def _on_notification(self, handle: RequestHandle, message: Message, now: float) -> None:
        sequence = option_int(message, OBSERVE)  # message.opt.observe, without its property
        if sequence is None or not is_success(message.code):
            self._emit(NotificationReceived(handle, message, None))
            self._finish(handle, now)
            self._emit(ObservationCancelled(handle, CloseReason.ENDED_BY_PEER))
            return
        if not is_fresh(handle.obs_seq, handle.obs_time, sequence, now):
            self.stats.stale_notifications += 1
            return
        handle.obs_seq = sequence
        handle.obs_time = now
        if handle.b2_buffer is not None:
            self._end_block2(handle)  # the notification being completed is outdated now
        if self._start_block2(handle, message, now, sequence):
            return
        receipt, self._receipt = self._receipt, None
        self._emit(NotificationReceived(handle, message, sequence, receipt))

    def _deliver(
        self,
        handle: RequestHandle,
        message: Message,
        now: float,
        observing: bool,
        sequence: int | None,
    ) -> None:
        """Hand a complete response or notification to the application."""
        if handle.state is OBSERVING:
            self._emit(NotificationReceived(handle, message, sequence))
        elif observing:
            assert sequence is not None
            handle.state = OBSERVING
            handle.obs_seq = sequence
            handle.obs_time = now
            self._release_slot(handle, now)
            self._emit(ResponseReceived(handle, message, True))
        else:
            self._finish(handle, now)
            self._emit(ResponseReceived(handle, message, False))

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

    def _retry_smaller(self, handle: RequestHandle, message: Message, now: float) -> bool:
        """4.13 with a Block1 option to the first block (or to a whole body): the server says
        which block size it can take, so start the upload over in that size (RFC 7959 §2.9.3).
        The size only ever shrinks, so this cannot loop."""
        base = handle.message
        if base is None or handle.body_offset != 0:
            return False
        try:
            block1 = read_block(message, BLOCK1)
        except BadRequest:
            return False
        body = handle.body if handle.body is not None else base.payload
        if block1 is None or len(body) <= block_size(block1[2]):
            return False
        if handle.body is not None and block1[2] >= handle.body_szx:
            return False
        handle.body = body
        handle.body_szx = block1[2]
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
        """If ``message`` is block 0 of several, start fetching the rest (True).

        A request that itself asked for a later block (the application fetching blocks by
        hand) gets that block as its response, untouched.
        """
        if not message.opt.get_option(BLOCK2):
            return False
        base = handle.message
        asked = base.opt.block2 if base is not None and handle.state is ACTIVE else None
        if asked is not None and asked.block_number > 0:
            return False
        try:
            block2 = read_block(message, BLOCK2)
        except BadRequest:
            block2 = None
        if block2 is None or block2[0] != 0:
            if handle.state is ACTIVE:
                self._fail(handle, now, CloseReason.BLOCKWISE, "response starts past block 0")
            return True
        _num, more, szx = block2
        if not more:
            return False
        size2 = message.opt.size2
        if size2 is not None and size2 > self.config.max_body_size:
            if handle.state is ACTIVE:
                self._fail(handle, now, CloseReason.TOO_LARGE, f"Size2 {size2}")
            return True
        if len(message.payload) != block_size(szx):
            if handle.state is ACTIVE:
                self._fail(handle, now, CloseReason.BLOCKWISE, "block 0 size mismatch")
            return True
        handle.b2_buffer = bytearray(message.payload)
        handle.b2_szx = min(szx, self._max_szx)
        handle.b2_etag = message.opt.etag
        handle.b2_first = message
        handle.b2_notification_seq = -1 if sequence is None else sequence
        if handle.state is ACTIVE and sequence is not None:
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
        if handle.state is ACTIVE:
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

    def _new_token(self, ps: PeerState) -> bytes:
        tokens = ps.tokens
        while True:
            token = self._rng.getrandbits(self._token_bits).to_bytes(self._token_length, "big")
            if token not in tokens:
                return token

    def _start_request(self, handle: RequestHandle, now: float) -> None:
        handle.state = ACTIVE
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
        message.mtype = T_CON if confirmable else T_NON
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

    def _release_slot(self, handle: RequestHandle, now: float) -> None:
        if not handle.holds_slot:
            return
        handle.holds_slot = False
        ps = handle.peer_state
        ps.nstart_used -= 1
        queue = ps.queue
        while queue and ps.nstart_used < self._nstart:
            waiting = queue.popleft()
            if waiting.state is QUEUED:
                self._start_request(waiting, now)
        if queue is not None and not queue and ps.queue is queue:
            ps.queue = None

    def _finish(self, handle: RequestHandle, now: float) -> None:
        """Terminal bookkeeping for a request (the caller emits the event, if any)."""
        ps = handle.peer_state
        handle.state = DONE
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
        self._emit(RequestFailed(handle, reason, detail))
