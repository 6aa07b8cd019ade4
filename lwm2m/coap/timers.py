"""One timer heap for every retransmission and response timeout of an endpoint.

Entries are ``(deadline, seq, target)``; the target remembers the ``seq`` of its one live entry
in ``timer_seq``, so cancelling or re-arming is O(1): the old entry just becomes stale and is
skipped when it reaches the top. Stale entries are counted and the heap is rebuilt when they
outnumber live ones, so a burst of quickly acknowledged CONs cannot leave the heap bloated.
Fixed-delay timers (empty ACKs, dedup expiry) do not use the heap: their deadlines arrive in
insertion order, so the endpoint keeps them in FIFO deques instead (O(1), no allocation).
"""

from __future__ import annotations

import heapq
from typing import Protocol


class Timed(Protocol):
    """Anything the heap can fire: it records the sequence number of its live entry."""

    timer_seq: int


class TimerHeap:
    __slots__ = ("_heap", "_seq", "_stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = 0
        self._stale = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, target: Timed, deadline: float) -> None:
        """Arm (or re-arm) ``target`` to fire at ``deadline``; a previous entry goes stale."""
        if target.timer_seq:
            self._stale += 1
        self._seq += 1
        target.timer_seq = self._seq
        heapq.heappush(self._heap, (deadline, self._seq, target))

    def cancel(self, target: Timed) -> None:
        if target.timer_seq:
            target.timer_seq = 0
            self._stale += 1
            if self._stale > 1024 and self._stale * 2 > len(self._heap):
                self._compact()

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, seq, target = heap[0]
            if target.timer_seq == seq:
                return deadline
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def pop_due(self, now: float) -> Timed | None:
        """The next live target whose deadline is <= now (disarmed), or None."""
        heap = self._heap
        while heap:
            deadline, seq, target = heap[0]
            if target.timer_seq != seq:
                heapq.heappop(heap)
                self._stale -= 1
                continue
            if deadline > now:
                return None
            heapq.heappop(heap)
            target.timer_seq = 0
            return target
        return None

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[2].timer_seq == e[1]]
        heapq.heapify(self._heap)
        self._stale = 0
