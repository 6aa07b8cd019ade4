"""Campaign and audit events for the global ``GET /v1/events`` stream.

The DM server's own events (registrations, notifications, ...) come from
:meth:`lwm2m.server.LwM2MServer.subscribe`. Two more sources feed the same stream:

* **Campaigns.** The campaign engine publishes its progress (``progress``, ``wave``,
  ``state``, ``revert``, ``quarantine``) to every :meth:`CampaignComponent.subscribe`
  iterator once the tick's transaction committed -- the same publish point the per-campaign
  stream ``/v1/campaigns/{id}/events`` reads. The global stream subscribes there too and sends
  each as ``campaign_<type>`` (``campaign_wave``, ``campaign_state``, ...).
* **Audit.** Every audit append commits in the transaction of the change it records, from
  whichever process made it (the server, a bootstrap server beside it, the CLI writing to the
  store). :class:`AuditTail` therefore follows the committed log itself: while at least one
  stream wants audit events it reads the records after the last one it saw, every
  ``interval`` seconds (one indexed query per interval, shared by all streams), and hands each
  to every subscriber as an ``audit`` event. The head is read before a subscriber's ``ready``,
  so no record committed after ``ready`` is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any

from lwm2m.store import AuditRecord, Store, StoreError

log = logging.getLogger("fleetloop.api.events")

QUEUE_LIMIT = 1000
"""Events a subscriber may have waiting; beyond it they are dropped (and counted)."""

CAMPAIGN_TYPES = ("progress", "wave", "state", "revert", "quarantine")
"""What the campaign engine publishes; the stream names them ``campaign_<type>``."""


class AuditSubscription:
    """One stream's view of the audit tail: new records, and how many it lost."""

    def __init__(self, tail: AuditTail) -> None:
        self.tail = tail
        self.queue: asyncio.Queue[AuditRecord] = asyncio.Queue()
        self.dropped = 0

    def put(self, record: AuditRecord) -> None:
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.dropped += 1
            return
        self.queue.put_nowait(record)

    async def get(self) -> AuditRecord:
        return await self.queue.get()

    def close(self) -> None:
        self.tail.unsubscribe(self)


class AuditTail:
    """Follows the committed audit log for the streams that want audit events (module doc)."""

    def __init__(self, store: Store, *, interval: float = 0.5, page: int = 500) -> None:
        self.store = store
        self.interval = interval
        self.page = page
        self._subscribers: set[AuditSubscription] = set()
        self._after: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    async def _head(self) -> int:
        def read(tx: Any) -> int:
            record = self.store.audit.head(tx)
            return 0 if record is None else record.seq

        return await self.store.read(read)

    async def subscribe(self) -> AuditSubscription:
        """A new subscriber; records committed from now on reach it."""
        if self._task is None or self._task.done():
            self._after = await self._head()
        subscription = AuditSubscription(self)
        self._subscribers.add(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="audit-tail")
        return subscription

    def unsubscribe(self, subscription: AuditSubscription) -> None:
        self._subscribers.discard(subscription)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._subscribers.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _list(self, tx: Any, *, after: int) -> list[AuditRecord]:
        return self.store.audit.list(tx, after=after, limit=self.page)

    async def _run(self) -> None:
        while self._subscribers:
            await asyncio.sleep(self.interval)
            after = self._after or 0
            try:
                records = await self.store.read(partial(self._list, after=after))
            except StoreError as err:  # the store is briefly away: try again next interval
                log.warning("audit tail: %s", err)
                continue
            self.polls += 1
            for record in records:
                for subscription in list(self._subscribers):
                    subscription.put(record)
            if records:
                self._after = records[-1].seq


__all__ = ["CAMPAIGN_TYPES", "AuditSubscription", "AuditTail"]
