"""Queue mode: requests waiting for a sleeping device (pure parts).

A queue-mode device (``b=UQ`` in 1.0, ``Q`` from 1.1) listens only briefly after it sent
something. The server keeps requests for it in a per-device FIFO, persisted in the store's
``QueueRepository`` so they survive a restart, and sends them one by one right after the
device's next Register / Update / Send has been answered. Each request has a deadline; one
that is still waiting then ends ``expired`` (the caller gets ``QUEUED_EXPIRED``).

:class:`QueuedEntry` is the in-memory side of one queued row: the operation to send and the
future of the caller waiting for it (None for rows loaded from the store after a restart,
whose outcome is only recorded). :func:`outcome_state` maps an operation's result to the
row's final state.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lwm2m.server.operations import AnyOperation
from lwm2m.server.results import OperationResult, OperationStatus
from lwm2m.store import QueueState

#: Results after which the device demonstrably received the request.
_ANSWERED = frozenset(
    {OperationStatus.SUCCESS, OperationStatus.DEVICE_ERROR, OperationStatus.BAD_RESPONSE}
)


class QueuedEntry:
    """One request waiting in a device's queue."""

    __slots__ = ("deadline", "future", "operation", "request_id", "timeout")

    def __init__(
        self,
        request_id: int,
        operation: AnyOperation,
        deadline: float,
        timeout: float,
        future: asyncio.Future[Any] | None,
    ) -> None:
        self.request_id = request_id
        self.operation = operation
        #: Unix time after which the request is no longer sent.
        self.deadline = deadline
        #: How long to wait for the answer once sent.
        self.timeout = timeout
        self.future = future

    def resolve(self, result: OperationResult) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_result(result)


def outcome_state(result: OperationResult) -> QueueState:
    """``answered`` when the device replied (even with an error), else ``timeout``."""
    return QueueState.ANSWERED if result.status in _ANSWERED else QueueState.TIMEOUT


def is_awake(queue_mode: bool, last_seen: float, now: float, awake_time: float) -> bool:
    """Whether a request can go to the device now (always, outside queue mode)."""
    return not queue_mode or now - last_seen < awake_time


__all__ = ["QueuedEntry", "is_awake", "outcome_state"]
