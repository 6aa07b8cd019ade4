"""Message-ID deduplication bookkeeping across all peers (RFC 7252 §4.5).

Each peer keeps ``dedup: dict[mid, Received]``; this table owns their expiry and the global
cap. All CON records live EXCHANGE_LIFETIME and all NON records NON_LIFETIME, so within each
kind expiry order is arrival order: two FIFO deques replace a heap, and expiring or evicting
costs O(1) per record. A record that was replaced (its Message ID re-used after expiry, or its
peer forgotten) is recognised at the head because its peer's dict no longer points to it.
"""

from __future__ import annotations

from collections import deque

from lwm2m.coap.exchange import Received


class DedupTable:
    """The two expiry FIFOs and the cap. Each FIFO exists only while it holds records: an
    empty ``deque`` still costs ~760 bytes, and a simulated device owns an endpoint that is
    idle almost all the time.

    ``started`` is set when a FIFO goes from empty to non-empty — the only way the next expiry
    can move earlier — so the endpoint recomputes its housekeeping deadline only then.
    """

    __slots__ = ("_con", "_non", "cap", "con_lifetime", "evicted", "non_lifetime", "started")

    def __init__(self, con_lifetime: float, non_lifetime: float, cap: int) -> None:
        self._con: deque[Received] | None = None
        self._non: deque[Received] | None = None
        self.con_lifetime = con_lifetime
        self.non_lifetime = non_lifetime
        self.cap = cap
        #: Records dropped by the cap before their lifetime (a duplicate arriving after that
        #: would be processed again: the cap trades memory against that risk under overload).
        self.evicted = 0
        self.started = False

    def __len__(self) -> int:
        con, non = self._con, self._non
        return (len(con) if con else 0) + (len(non) if non else 0)

    def add(self, record: Received, confirmable: bool, now: float) -> None:
        """Remember ``record`` in its peer's table; evict the oldest record over the cap."""
        if confirmable:
            record.expires = now + self.con_lifetime
            fifo, other = self._con, self._non
            if fifo is None:
                fifo = self._con = deque()
        else:
            record.expires = now + self.non_lifetime
            fifo, other = self._non, self._con
            if fifo is None:
                fifo = self._non = deque()
        if not fifo:
            self.started = True
        fifo.append(record)
        record.peer_state.dedup[record.mid] = record
        if len(fifo) + (len(other) if other else 0) > self.cap:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        con, non = self._con, self._non
        if not non or (
            con and con[0].expires - self.con_lifetime <= non[0].expires - self.non_lifetime
        ):
            assert con
            record = con.popleft()
        else:
            record = non.popleft()
        table = record.peer_state.dedup
        if table.get(record.mid) is record:
            del table[record.mid]
            self.evicted += 1

    def next_expiry(self) -> float | None:
        """The earliest expiry (clears ``started``)."""
        self.started = False
        con, non = self._con, self._non
        if con and non:
            return min(con[0].expires, non[0].expires)
        if con:
            return con[0].expires
        if non:
            return non[0].expires
        return None

    def expire(self, now: float) -> None:
        """Drop expired records; an emptied FIFO is released."""
        con = self._con
        if con is not None:
            _expire(con, now)
            if not con:
                self._con = None
        non = self._non
        if non is not None:
            _expire(non, now)
            if not non:
                self._non = None


def _expire(fifo: deque[Received], now: float) -> None:
    while fifo and fifo[0].expires <= now:
        record = fifo.popleft()
        table = record.peer_state.dedup
        if table.get(record.mid) is record:
            del table[record.mid]
