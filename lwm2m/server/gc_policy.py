"""The cyclic garbage collector's policy for a server process (issue 13).

CPython runs a young-generation collection every 700 allocations of container objects
(threshold 0, counted net of some deallocations) and promotes what survives it. A DM server
allocates a few dozen such objects per request (the CoAP message, the request record, the
future of its group commit, the callback, the new in-memory registration), and about 200
requests are in flight at any time, waiting for their commit: every young collection found
them alive and promoted them. Promoted objects are what triggers a full collection (once they
exceed a quarter of the long-lived heap), and a full collection walks every object of the
process: the registrations, the observations, SQLAlchemy's and aiocoap's module state.
``benchmarks/bench_server.py`` measured it (gc callbacks, thread CPU): 556 young, 52 middle
and 4 full collections during 20 000 Updates, 22 µs of the Update's CPU; one full collection
(85 ms) landing in the 2 000 De-registers added 42 µs to each, the "loop part that doubles in
some runs" of docs/BENCHMARKS.md.

With threshold 0 at :data:`YOUNG_THRESHOLD` a young collection runs about 30 times less often
(every ~36 Updates before): the objects of requests answered meanwhile were freed by reference
counting, only the requests in flight at that moment are promoted, so far fewer objects reach
the old generation and full collections become rare. Reference cycles are still collected,
only in larger batches.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("lwm2m.server")

#: Net container allocations between two young-generation collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


def tune_collector(young: int = YOUNG_THRESHOLD) -> bool:
    """Raise the young generation's threshold to ``young``; True if it changed.

    Idempotent and never lowers a threshold the embedding process set higher; a process that
    disabled the collector (``gc.disable()`` or a threshold of 0) keeps it that way."""
    threshold0, threshold1, threshold2 = gc.get_threshold()
    if not gc.isenabled() or threshold0 == 0 or threshold0 >= young:
        return False
    gc.set_threshold(young, threshold1, threshold2)
    logger.debug("gc threshold 0: %d -> %d", threshold0, young)
    return True


#: The young threshold when survivors are frozen (:func:`hold_survivors`). Promotion then
#: never leads to a collection of the old heap, which was the reason for 20 000, so the only
#: effect of the threshold left is the length of each young pause: at 100 000 devices 21-28 ms
#: of CPU at 20 000, 3.8 ms at 5 000, for the same GC CPU per Update (≈ 2.3 µs; bench_memory,
#: docs/BENCHMARKS.md).
FROZEN_YOUNG_THRESHOLD = 5_000

_holders = 0


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` entry: after a young collection, move its survivors (and whatever
    else is tracked) to the permanent generation, which no collection walks."""
    if phase == "stop" and info["generation"] == 0:
        gc.freeze()


def hold_survivors() -> None:
    """Freeze what survives each young collection, until :func:`release_survivors`.

    Why (issue 13, ``benchmarks/bench_memory.py`` with 100 000 devices observed, 2.7 million
    tracked objects): survivors of young collections (the requests waiting for their
    commit, the CoAP deduplication records kept 247 s) are promoted into the old
    generations, and once they reach a quarter of the old heap CPython collects the whole
    heap: one such collection took 2.0 s of CPU (5.3 s of wall clock on the loaded machine)
    in a 60 s Update run, the event loop stood still, the socket overflowed (102 000
    datagrams dropped) and the Update p99 became 19 s. The middle generation's collections
    (130 ms of CPU each) came from the same survivors. Frozen, they are never walked again;
    they are still freed by reference counting when they die, and the server's own paths
    make almost no reference cycles (34 cyclic objects in a whole ``bench_server`` run), so
    what this keeps is the rare cycle that became garbage after it was frozen, until the
    server stops (:func:`release_survivors` unfreezes everything). Young collections still
    run and still collect the cycles that die young.

    Counted: several servers in one process share the one callback."""
    global _holders
    if _holders == 0:
        gc.callbacks.append(_freeze_survivors)
    _holders += 1


def release_survivors() -> None:
    """Undo one :func:`hold_survivors`; the last one removes the callback and unfreezes."""
    global _holders
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0:
        if _freeze_survivors in gc.callbacks:
            gc.callbacks.remove(_freeze_survivors)
        gc.unfreeze()


__all__ = [
    "FROZEN_YOUNG_THRESHOLD",
    "YOUNG_THRESHOLD",
    "hold_survivors",
    "release_survivors",
    "tune_collector",
]
