"""The randomness the core needs, injected (the core imports no ``random``).

Message IDs start at a random value per peer, tokens are random, and the initial
retransmission timeout is jittered by ACK_RANDOM_FACTOR. Production passes
``random.SystemRandom()`` (tokens guard against off-path response spoofing, RFC 7252 §5.3.1);
tests pass a seeded ``random.Random`` so every run replays the same schedule.
"""

from __future__ import annotations

from typing import Protocol


class RandomSource(Protocol):
    """What the core uses of a ``random.Random``: uniform floats and random bits."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...
