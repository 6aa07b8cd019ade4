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
    __slots__ = ("_con", "_non", "cap", "con_lifetime", "evicted", "non_lifetime")

    def __init__(self, con_lifetime: float, non_lifetime: float, cap: int) -> None:
        self._con: deque[Received] = deque()
        self._non: deque[Received] = deque()
        self.con_lifetime = con_lifetime
        self.non_lifetime = non_lifetime
        self.cap = cap
        #: Records dropped by the cap before their lifetime (a duplicate arriving after that
        #: would be processed again: the cap trades memory against that risk under overload).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._con) + len(self._non)

    def add(self, record: Received, confirmable: bool, now: float) -> None:
        """Remember ``record`` in its peer's table; evict the oldest record over the cap."""
        if confirmable:
            record.expires = now + self.con_lifetime
            self._con.append(record)
        else:
            record.expires = now + self.non_lifetime
            self._non.append(record)
        record.peer_state.dedup[record.mid] = record
        if len(self._con) + len(self._non) > self.cap:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        con, non = self._con, self._non
        if not non or (
            con and con[0].expires - self.con_lifetime <= non[0].expires - self.non_lifetime
        ):
            record = con.popleft()
        else:
            record = non.popleft()
        table = record.peer_state.dedup
        if table.get(record.mid) is record:
            del table[record.mid]
            self.evicted += 1

    def next_expiry(self) -> float | None:
        con, non = self._con, self._non
        if con and non:
            return min(con[0].expires, non[0].expires)
        if con:
            return con[0].expires
        if non:
            return non[0].expires
        return None

    def expire(self, now: float) -> None:
        for fifo in (self._con, self._non):
            while fifo and fifo[0].expires <= now:
                record = fifo.popleft()
                table = record.peer_state.dedup
                if table.get(record.mid) is record:
                    del table[record.mid]
