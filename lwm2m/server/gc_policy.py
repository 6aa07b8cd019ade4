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


__all__ = ["YOUNG_THRESHOLD", "tune_collector"]
