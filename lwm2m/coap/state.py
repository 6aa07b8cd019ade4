"""State shared by both halves of the endpoint, and the helpers both use.

:class:`EndpointState` owns every data structure of an endpoint (peers, the timer heap, the
dedup table, the empty-ACK FIFO, the event queue, the outgoing list); the server half
(:mod:`lwm2m.coap.server_side`) and the client half (:mod:`lwm2m.coap.client_side`) are mixins
over it, and :class:`lwm2m.coap.endpoint.CoapEndpoint` joins them with the transport contract.
The split is for reading only: there is one object per endpoint and no indirection on the hot
path.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable

from aiocoap.numbers.types import Type

from lwm2m.coap.blockwise import BlockwiseRegistry
from lwm2m.coap.dedup import DedupTable
from lwm2m.coap.events import Event
from lwm2m.coap.exchange import IncomingRequest, RequestState, Transmission
from lwm2m.coap.messages import CON, RST, empty, peek_header
from lwm2m.coap.params import EndpointConfig
from lwm2m.coap.peer import PeerState
from lwm2m.coap.rng import RandomSource
from lwm2m.coap.timers import TimerHeap

_log = logging.getLogger(__name__)

T_CON, T_NON, T_ACK = Type.CON, Type.NON, Type.ACK
QUEUED, ACTIVE, OBSERVING, DONE = (
    RequestState.QUEUED,
    RequestState.ACTIVE,
    RequestState.OBSERVING,
    RequestState.DONE,
)
#: A peer's ``last_active`` is refreshed (and the peer moved to the back of the idle order) at
#: most this often, so the hot path rarely pays for the re-insertion.
TOUCH_GRANULARITY = 1.0


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


#: Shared by every endpoint created without a configuration (it is frozen): a fleet of
#: simulated devices should not hold one copy each.
_DEFAULT_CONFIG = EndpointConfig()


class EndpointState:
    """The data of one endpoint; see :class:`lwm2m.coap.endpoint.CoapEndpoint`."""

    def __init__(self, *, rng: RandomSource, config: EndpointConfig | None = None) -> None:
        cfg = config if config is not None else _DEFAULT_CONFIG
        tp = cfg.transmission
        self.config = cfg
        self.stats = Stats()
        self._rng = rng
        self._peers: dict[Hashable, PeerState] = {}
        # The event queue and the empty-ACK FIFO exist only while in use and are released by
        # housekeeping once empty: an empty deque costs ~760 bytes, and a simulated device owns
        # an endpoint that is idle almost all the time.
        self._events: deque[Event] | None = None
        self._out: list[tuple[bytes, Hashable]] = []
        self._timers = TimerHeap()
        self._ack_fifo: deque[IncomingRequest] | None = None
        self._dedup = DedupTable(tp.exchange_lifetime, tp.non_lifetime, cfg.max_dedup_entries)
        self._blockwise = BlockwiseRegistry(cfg.blockwise_lifetime, cfg.max_blockwise_states)
        self._next_housekeeping = float("-inf")
        #: Cached housekeeping deadline (see ``CoapEndpoint.get_timer``); recomputed when
        #: ``_chores_dirty`` or a table reports it ``started``.
        self._chores_at: float | None = None
        self._chores_dirty = True
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

    def _new_peer(self, peer: Hashable, now: float) -> PeerState:
        ps = PeerState(peer, self._rng.getrandbits(16), now)
        if not self._peers:
            self._chores_dirty = True  # the idle-peer deadline appears
        self._peers[peer] = ps
        return ps

    def _emit(self, event: Event) -> None:
        events = self._events
        if events is None:
            events = self._events = deque()
        events.append(event)

    def _touch(self, ps: PeerState, now: float) -> None:
        """Mark activity: the peer moves to the back of the idle order."""
        ps.last_active = now
        if ps.alive:
            peers = self._peers
            del peers[ps.peer]
            peers[ps.peer] = ps

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

    def _on_acknowledged(self, tx: Transmission, now: float) -> None:
        """An ACK for one of our CONs (implemented by the endpoint, which knows both halves)."""
        raise NotImplementedError
