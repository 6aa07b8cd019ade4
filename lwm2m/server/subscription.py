"""Event fan-out: one bounded buffer per subscriber, never back-pressure on the server.

A slow consumer (an HTTP client streaming events over a bad link) must not stall the CoAP
loop or grow memory without bound, so each subscription keeps at most ``maxlen`` events and
drops the *oldest* when full, counting what it dropped (:attr:`EventSubscription.dropped`)
so the consumer can tell it missed some and resynchronise from the store.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType

from lwm2m.server.events import ServerEvent


class EventSubscription:
    """An async iterator of :data:`~lwm2m.server.events.ServerEvent`.

    ``async for event in server.subscribe(): ...``; end it with :meth:`aclose` (or ``async
    with``), after which iteration stops. Iteration also stops when the server stops.
    """

    def __init__(self, maxlen: int, on_close: Callable[[EventSubscription], None]) -> None:
        self._buffer: deque[ServerEvent] = deque()
        self._maxlen = maxlen
        self._on_close = on_close
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: Events dropped because the buffer was full (oldest first).
        self.dropped = 0

    # -- producer side (the server) -----------------------------------------------------------
    def publish(self, event: ServerEvent) -> None:
        if self._closed:
            return
        buffer = self._buffer
        if len(buffer) >= self._maxlen:
            buffer.popleft()
            self.dropped += 1
        buffer.append(event)
        self._wake()

    def end(self) -> None:
        """The server stopped: deliver what is buffered, then stop iterating."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer side ------------------------------------------------------------------------
    def pending(self) -> int:
        """Events buffered and not yet consumed."""
        return len(self._buffer)

    def get_nowait(self) -> ServerEvent | None:
        """The next buffered event, or None."""
        return self._buffer.popleft() if self._buffer else None

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> ServerEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """Unsubscribe; buffered events are discarded."""
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)
        self._buffer.clear()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
