"""Everything the core keeps about one peer.

One object per peer, found with one dict lookup per datagram; every per-message lookup after
that is a dict keyed by Message ID or token, never a scan. A peer's state is freed when it has
been idle for an exchange lifetime and holds nothing long-lived (see ``endpoint`` housekeeping):
by then every dedup entry has expired and our Message IDs may safely start over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lwm2m.coap.blockwise import Block1Assembly, Block2Cache
    from lwm2m.coap.exchange import Observation, Received, RequestHandle, Transmission


class PeerState:
    __slots__ = (
        "alive",
        "block1",
        "block2",
        "dedup",
        "in_flight",
        "last_active",
        "next_mid",
        "non_notifications",
        "nstart_used",
        "observers",
        "peer",
        "queue",
        "tokens",
    )

    def __init__(self, peer: Hashable, first_mid: int, now: float) -> None:
        self.peer = peer
        #: Message IDs the peer sent us, still within their lifetime.
        self.dedup: dict[int, Received] = {}
        #: Next Message ID we use towards this peer (16 bit, wraps).
        self.next_mid = first_mid
        #: Our messages awaiting ACK/RST (CON), or a response (NON request), by Message ID.
        self.in_flight: dict[int, Transmission] = {}
        #: Requests we sent that may still receive a response or notification, by token.
        self.tokens: dict[bytes, RequestHandle] = {}
        #: NSTART bookkeeping: requests holding a slot, and those waiting for one (a deque
        #: costs ~760 bytes even when empty, so it exists only while something waits).
        self.nstart_used = 0
        self.queue: deque[RequestHandle] | None = None
        #: Observers of our resources, by token; and last NON notification MID -> observer.
        self.observers: dict[bytes, Observation] = {}
        self.non_notifications: dict[int, Observation] = {}
        #: Block-wise state: uploads being received, large responses being served.
        self.block1: dict[tuple[object, ...], Block1Assembly] = {}
        self.block2: dict[tuple[object, ...], Block2Cache] = {}
        self.last_active = now
        #: False once the endpoint dropped this state (forgotten or evicted); handles that still
        #: point here must not re-insert it.
        self.alive = True

    def enqueue(self, handle: RequestHandle) -> None:
        """Wait for an NSTART slot."""
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        queue.append(handle)

    def allocate_mid(self) -> int:
        mid = self.next_mid
        self.next_mid = (mid + 1) & 0xFFFF
        return mid

    def holds_state(self) -> bool:
        """True while something other than expiring dedup entries lives here."""
        return bool(
            self.in_flight
            or self.tokens
            or self.queue
            or self.observers
            or self.block1
            or self.block2
            or self.nstart_used
        )
