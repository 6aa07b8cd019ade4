"""ESipa through LwM2M object 3443 (eSIM IoT), for devices managed only over LwM2M.

The IPA puts its ESipa message (DER) in /3443/0/3; the eIM observes that resource, runs the
message through the same handler as the HTTPS and CoAP bindings (``EsimComponent.handle``),
writes its answer, if any, to /3443/0/2 and executes /3443/0/4 to clear /3443/0/3 -- the
IPA's signal that it may put its next message there (objects/builtin/esim.py).

The eIM also pushes (SGP.32 ESipa.TransferEimPackage, eIM-initiated): when something is queued
for an eUICC whose device is observed here, its next open package is marked delivered and
written to /3443/0/2 as a TransferEimPackageRequest, so the IPA need not poll for it; the IPA
answers in /3443/0/3 (TransferEimPackageResponse eimPackageReceived) and delivers the result
with ProvideEimPackageResult as usual. A push the device does not take changes nothing: the
IPA's next poll gets the same package.

One exchange at a time per device (a lock per endpoint): the answer to one message is written
before the next is read. A device registering with /3443 in its object links is observed; a
notification that carries an empty /3443/0/3 (cleared) is ignored. An answer the device does
not take (the IPA busy: 5.03) is tried again after 1, 2, 4 s while the IPA still holds the
same message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from lifecycle.esim.component import EsimComponent
from lifecycle.service import LifecycleService
from lwm2m.codec.link import parse_links
from lwm2m.model import Node, Path, SingleResource, Value
from lwm2m.server import LwM2MServer, Notification, Registered
from sgp32.errors import Sgp32Error

log = logging.getLogger("fleetloop.esim.object3443")

ESIM_OBJECT = 3443
EIM_MESSAGE = Path.of(ESIM_OBJECT, 0, 2)
IPA_MESSAGE = Path.of(ESIM_OBJECT, 0, 3)
CLEAR = Path.of(ESIM_OBJECT, 0, 4)
RETRY_SECONDS = 1.0
MAX_ATTEMPTS = 4


def _ipa_message(content: Mapping[Path, Node]) -> bytes | None:
    for path, node in content.items():
        if path == IPA_MESSAGE and isinstance(node, SingleResource):
            value = node.value.value
            if isinstance(value, bytes | bytearray) and value:
                return bytes(value)
    return None


class Object3443Binding:
    """The eIM's side of object 3443 on one DM server (module docstring)."""

    def __init__(
        self,
        server: LwM2MServer,
        component: EsimComponent,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        self.server = server
        self.component = component
        self.clock = clock
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._observed: set[str] = set()
        self.exchanges = 0
        self.pushes = 0

    def install(self, service: LifecycleService) -> None:
        service.on(Registered, self._registered)
        service.on(Notification, self._notification)
        self.component.on_queued.append(self._queued)

    def _queued(self, eids: list[str]) -> None:
        if self._observed:
            self._spawn(self._push_many(eids))

    async def _push_many(self, eids: list[str]) -> None:
        eims = self.component.eims
        linked = await eims.store.read(lambda tx: eims.ledger(tx).endpoints(eids))
        for eid, endpoint in linked.items():
            if endpoint in self._observed:
                await self._push(endpoint, eid)

    async def _push(self, endpoint: str, eid: str) -> None:
        lock = self._locks.setdefault(endpoint, asyncio.Lock())
        async with lock:
            request = await self.component.eims.push_next(eid, self.clock())
            if request is None:
                return
            node = SingleResource(EIM_MESSAGE.ids[2], Value.opaque(request))
            written = await self.server.write(endpoint, EIM_MESSAGE, node, timeout=self.timeout)
            if written.ok:
                self.pushes += 1
            else:  # the IPA polls for it
                log.info("push to /3443/0/2 not taken", extra={"endpoint": endpoint})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _registered(self, event: Registered) -> None:
        links = event.registration.object_links
        if any(
            link.path is not None and link.path.object_id == ESIM_OBJECT
            for link in parse_links(links)
        ):
            self._spawn(self._observe(event.endpoint))

    async def _observe(self, endpoint: str) -> None:
        result = await self.server.observe(endpoint, IPA_MESSAGE, timeout=self.timeout)
        if not result.ok:
            log.warning("cannot observe /3443/0/3", extra={"endpoint": endpoint})
            return
        self._observed.add(endpoint)
        message = _ipa_message(result.content)
        if message is not None:
            await self._exchange(endpoint, message)

    async def _notification(self, event: Notification) -> None:
        message = _ipa_message(event.content)
        if message is not None:
            self._spawn(self._exchange(event.endpoint, message))

    async def _retry(self, endpoint: str, message: bytes, attempt: int) -> None:
        """The answer could not be written: once the pause is over, run the message again if
        the IPA still holds it (the eIM's exchange is idempotent: the same package again, a
        result again is a duplicate)."""
        await asyncio.sleep(RETRY_SECONDS * 2 ** (attempt - 1))
        read = await self.server.read(endpoint, IPA_MESSAGE, timeout=self.timeout)
        held = _ipa_message({IPA_MESSAGE: read.content}) if read.content is not None else None
        if read.ok and held == message:
            await self._exchange(endpoint, message, attempt)

    async def _exchange(self, endpoint: str, message: bytes, attempt: int = 0) -> None:
        lock = self._locks.setdefault(endpoint, asyncio.Lock())
        async with lock:
            try:
                exchange = await self.component.handle(message, self.clock())
            except Sgp32Error as exc:
                log.warning(
                    "not an ESipa message in /3443/0/3",
                    extra={"endpoint": endpoint, "reason": str(exc)},
                )
                exchange = None
            if exchange is not None and exchange.reply is not None:
                node = SingleResource(EIM_MESSAGE.ids[2], Value.opaque(exchange.reply))
                written = await self.server.write(endpoint, EIM_MESSAGE, node, timeout=self.timeout)
                if not written.ok:
                    log.warning(
                        "cannot write /3443/0/2",
                        extra={"endpoint": endpoint, "attempt": attempt + 1},
                    )
                    if attempt + 1 < MAX_ATTEMPTS:
                        self._spawn(self._retry(endpoint, message, attempt + 1))
                    return
            cleared = await self.server.execute(endpoint, CLEAR, timeout=self.timeout)
            if cleared.ok:
                self.exchanges += 1
