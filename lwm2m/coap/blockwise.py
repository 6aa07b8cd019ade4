"""Block-wise transfer (RFC 7959) state and helpers, used by the endpoint transparently.

The endpoint owns the protocol decisions (when to answer 2.31, when to fetch the next block);
this module holds the state objects and the pure arithmetic, so that both stay small:

* :class:`Block1Assembly` — a request body arriving in Block1 blocks (we are the server).
* :class:`Block2Cache` — a large response we are serving block by block (we are the server):
  later blocks are answered from it without bothering the application.
* :class:`BlockwiseRegistry` — the global FIFO that expires both and enforces one cap across
  all peers, so that abandoned transfers cannot accumulate.

Transfers are keyed per peer by :func:`request_key`: the method and every option except the
block-wise, size and Observe options — RFC 7959 §2.4 and §2.5 match blocks of one body by the
request's options, and Request-Tag (RFC 9175) is an ordinary option and so part of the key.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from aiocoap import Message

from lwm2m.coap.errors import BadRequest
from lwm2m.coap.messages import BLOCK1, BLOCK2, OBSERVE, SIZE1, SIZE2

if TYPE_CHECKING:
    from lwm2m.coap.peer import PeerState

_NOT_IN_KEY = frozenset({BLOCK1, BLOCK2, SIZE1, SIZE2, OBSERVE})


def block_size(szx: int) -> int:
    return 1 << (szx + 4)


def read_block(message: Message, number: int) -> tuple[int, bool, int] | None:
    """``(num, more, szx)`` of the Block1/Block2 option ``number``, or None if absent.

    Raises :class:`BadRequest` for szx 7 (BERT, RFC 8323: not defined over UDP).
    """
    options = message.opt.get_option(number)
    if not options:
        return None
    value = options[0].value
    if value.size_exponent == 7:
        raise BadRequest("block size exponent 7 (BERT) is not valid over UDP")
    return value.block_number, bool(value.more), value.size_exponent


def request_key(message: Message) -> tuple[object, ...]:
    """What identifies the body a block belongs to: method plus the other options."""
    return (
        int(message.code),
        *(
            (int(o.number), o.encode())
            for o in message.opt.option_list()
            if o.number not in _NOT_IN_KEY
        ),
    )


def slice_block(payload: bytes, num: int, szx: int) -> tuple[bytes, bool] | None:
    """Block ``num`` of ``payload`` at size ``szx`` and whether more follow; None when the
    block starts beyond the end (RFC 7959 §2.2: the server answers 4.02 Bad Option... we use
    4.00, as aiocoap does, since the option is well-formed but out of range)."""
    size = 1 << (szx + 4)
    start = num * size
    if start >= len(payload) and not (start == 0 and not payload):
        return None
    end = start + size
    return payload[start:end], end < len(payload)


class _Expiring:
    __slots__ = ("expires", "key", "peer_state", "queued")

    def __init__(self, peer_state: PeerState, key: tuple[object, ...]) -> None:
        self.peer_state = peer_state
        self.key = key
        self.expires = 0.0
        #: ``expires`` as it was when the state took its place in the FIFO.
        self.queued = 0.0


class Block1Assembly(_Expiring):
    """A request body being received block by block."""

    __slots__ = ("buffer", "szx")

    def __init__(self, peer_state: PeerState, key: tuple[object, ...], szx: int) -> None:
        super().__init__(peer_state, key)
        self.buffer = bytearray()
        self.szx = szx


class Block2Cache(_Expiring):
    """A large response being served: the full payload and the response to copy per block."""

    __slots__ = ("payload", "response")

    def __init__(
        self, peer_state: PeerState, key: tuple[object, ...], response: Message, payload: bytes
    ) -> None:
        super().__init__(peer_state, key)
        self.response = response
        self.payload = payload


class BlockwiseRegistry:
    """Expiry and the global cap for :class:`Block1Assembly` and :class:`Block2Cache`.

    A state that makes progress gets a later ``expires`` but keeps its place in the FIFO; when
    it reaches the head still alive and touched, it is re-queued at the tail. Replaced or
    removed states are skipped when they reach the head. So the head always bounds the next
    expiry, and each state costs O(1) amortised. Under the cap the head is evicted.

    The FIFO exists only while it holds states (an empty ``deque`` costs ~760 bytes; most
    endpoints never serve a block-wise transfer). ``started`` is set when it goes from empty to
    non-empty — the only way the next expiry can move earlier.
    """

    __slots__ = ("_fifo", "cap", "evicted", "lifetime", "started")

    def __init__(self, lifetime: float, cap: int) -> None:
        self._fifo: deque[Block1Assembly | Block2Cache] | None = None
        self.lifetime = lifetime
        self.cap = cap
        self.evicted = 0
        self.started = False

    def __len__(self) -> int:
        return len(self._fifo) if self._fifo else 0

    def add(self, state: Block1Assembly | Block2Cache, now: float) -> None:
        """Register a new state (replacing any with the same key at the same peer)."""
        state.expires = state.queued = now + self.lifetime
        if isinstance(state, Block1Assembly):
            state.peer_state.block1[state.key] = state
        else:
            state.peer_state.block2[state.key] = state
        fifo = self._fifo
        if fifo is None:
            fifo = self._fifo = deque()
        if not fifo:
            self.started = True
        fifo.append(state)
        while len(fifo) > self.cap:
            head = fifo.popleft()
            if _is_live(head):
                _drop(head)
                self.evicted += 1

    def touch(self, state: Block1Assembly | Block2Cache, now: float) -> None:
        state.expires = now + self.lifetime

    @staticmethod
    def remove(state: Block1Assembly | Block2Cache) -> None:
        _drop(state)

    def next_expiry(self) -> float | None:
        """When the head may expire (clears ``started``)."""
        self.started = False
        fifo = self._fifo
        return fifo[0].queued if fifo else None

    def expire(self, now: float) -> None:
        fifo = self._fifo
        if fifo is None:
            return
        while fifo:
            head = fifo[0]
            if not _is_live(head):
                fifo.popleft()
            elif head.expires <= now:
                fifo.popleft()
                _drop(head)
            elif head.expires > head.queued:
                fifo.popleft()
                head.queued = head.expires
                fifo.append(head)
            else:
                break
        if not fifo:
            self._fifo = None


def _is_live(state: Block1Assembly | Block2Cache) -> bool:
    if isinstance(state, Block1Assembly):
        return state.peer_state.block1.get(state.key) is state
    return state.peer_state.block2.get(state.key) is state


def _drop(state: Block1Assembly | Block2Cache) -> None:
    if isinstance(state, Block1Assembly):
        if state.peer_state.block1.get(state.key) is state:
            del state.peer_state.block1[state.key]
    elif state.peer_state.block2.get(state.key) is state:
        del state.peer_state.block2[state.key]
