"""The asyncio runtime: sockets, CoAP cores, the store and the pure LwM2M logic glued together.

Shape (docs/SERVER.md has the rules):

* One :class:`~lwm2m.coap.CoapEndpoint` per socket (plain UDP, DTLS), each driven by a
  :class:`~lwm2m.transport.coap_shell.CoapShell`; every CoAP event of every device arrives in
  :meth:`LwM2MServer._on_coap_event`. There is no task per device: a Register/Update/
  De-register is answered from a callback the store's group commit runs once the batch
  holding its row committed (``GroupCommitBatcher.submit_row_then``); everything else is
  handled inline.
* Registrations live in memory (dicts by endpoint, by id and by transport peer), written
  through the store's group-commit batcher, and are loaded back at start, so devices that
  Update after a restart are still known. The 2.01 to a Register goes out only once its batch
  committed: nothing acknowledged is lost.
* One wall-clock timer heap for lifetime expiry and queue deadlines, one asyncio timer armed
  at its head.
* Operations are :mod:`lwm2m.server.operations` objects; an outgoing request waits on a future
  keyed by the core's request handle, resolved by the response event or failure event, with
  one loop timer for the caller's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code
from sqlalchemy import delete, select

from lwm2m.coap import (
    CloseReason,
    Event,
    NotificationReceived,
    ObservationCancelled,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.codec import CodecError
from lwm2m.model import (
    ModelError,
    Node,
    ObjectModel,
    Path,
)
from lwm2m.server.api import DeviceManagementApi
from lwm2m.server.config import ServerConfig
from lwm2m.server.errors import (
    InvalidRequest,
    NoResponse,
    RequestTimeout,
    ServerNotRunning,
    UnknownEndpoint,
    UnknownObservation,
)
from lwm2m.server.events import (
    Expired,
    Notification,
    ObservationEnded,
    QueueStateChanged,
    Removed,
    ServerEvent,
)
from lwm2m.server.gc_policy import (
    FROZEN_YOUNG_THRESHOLD,
    hold_survivors,
    release_survivors,
    tune_collector,
)
from lwm2m.server.ingress_limits import install_block1_admission
from lwm2m.server.notification_decode import decode_notification
from lwm2m.server.observations import (
    ObservationState,
    leaf_values,
)
from lwm2m.server.operations import (
    AnyOperation,
    Observe,
    ObserveComposite,
    QueuedRequestUnreadable,
    Read,
    Response,
    from_queued,
)
from lwm2m.server.queue import QueuedEntry, is_awake, outcome_state
from lwm2m.server.registrar import RegistrationInterface
from lwm2m.server.registration import (
    LifetimeRules,
)
from lwm2m.server.results import (
    CompositeReadResult,
    ObservationInfo,
    ObserveResult,
    OperationResult,
    OperationStatus,
    ReadResult,
)
from lwm2m.server.state import (
    Channel,
    Device,
    Failure,
    Outcome,
    Pending,
    udp_peer,
)
from lwm2m.server.subscription import EventSubscription
from lwm2m.store import (
    Conflict,
    NotFound,
    QueuedRequest,
    QueueState,
    Registration,
    ReportedValue,
    Source,
    Store,
    StoreError,
    Tx,
)
from lwm2m.store import Observation as StoredObservation
from lwm2m.store.dtls_sessions import StoreDtlsSessions
from lwm2m.store.tables import OBSERVATION, QUEUED_REQUEST
from lwm2m.transport import (
    Address,
    DtlsServer,
    DtlsServerConfig,
    Peer,
    UdpTransport,
)

logger = logging.getLogger("lwm2m.server")

#: How often the server expires stale queued requests (the PSK snapshot is refreshed every
#: ``StoreSettings.psk_cache_ttl``, to pick up credentials other processes wrote).
HOUSEKEEPING_INTERVAL = 60.0

_FAILURE_STATUS = {
    CloseReason.TIMEOUT: OperationStatus.TIMEOUT,
    CloseReason.RESET: OperationStatus.UNREACHABLE,
    CloseReason.TOO_LARGE: OperationStatus.BAD_RESPONSE,
    CloseReason.BLOCKWISE: OperationStatus.BAD_RESPONSE,
    CloseReason.PEER_FORGOTTEN: OperationStatus.UNREACHABLE,
    CloseReason.ENDED_BY_PEER: OperationStatus.BAD_RESPONSE,
    CloseReason.DEREGISTERED: OperationStatus.CANCELLED,
    CloseReason.REPLACED: OperationStatus.CANCELLED,
}


class LwM2MServer(RegistrationInterface, DeviceManagementApi):
    """The device-management server: see the :mod:`lwm2m.server` docstring for the API."""

    def __init__(self, config: ServerConfig, store: Store, model: ObjectModel) -> None:
        """Use :meth:`start`."""
        self.config = config
        self.store = store
        self.model = model
        self._loop = asyncio.get_running_loop()
        self._wall: Callable[[], float] = time.time
        self._lifetimes = LifetimeRules(
            config.min_lifetime, config.max_lifetime, config.default_lifetime
        )
        self._channels: list[Channel] = []
        self._udp: Channel | None = None
        self._dtls: Channel | None = None
        self._by_endpoint: dict[str, Device] = {}
        self._by_id: dict[str, Device] = {}
        self._by_peer: dict[Peer, Device] = {}
        #: Endpoints that may have pending queued requests in the store which no in-memory
        #: device holds: found at start, or left by a registration dropped before it loaded
        #: them. Only a Register of one of these reads the store's queue; every other Register
        #: knows there is nothing (queue rows are written for registered devices only).
        self._queued_in_store: set[str] = set()
        self._pending: dict[RequestHandle, Pending] = {}
        self._observations: dict[str, ObservationState] = {}
        self._obs_by_handle: dict[RequestHandle, ObservationState] = {}
        self._subscribers: set[EventSubscription] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        self._psk_refreshed = self._wall()
        self._running = False
        #: Counters for operators and tests (never reset).
        self.stats: dict[str, int] = {
            "registrations": 0,
            "updates": 0,
            "refused": 0,
            "notifications": 0,
            "undecodable_notifications": 0,
            "sends": 0,
        }

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    async def start(
        cls, config: ServerConfig, store: Store, model: ObjectModel | None = None
    ) -> LwM2MServer:
        """Load registrations from ``store``, bind the sockets and start serving.

        ``model`` defaults to ``objects.BUILTIN_MODEL``. The store stays the caller's: stop
        the server before closing it.
        """
        if model is None:
            from objects import BUILTIN_MODEL

            model = BUILTIN_MODEL
        self = cls(config, store, model)
        if config.nosec_by_default:
            logger.warning(
                "plain CoAP registrations are accepted from every endpoint without a security "
                "record (allow_nosec_globally); use secure_only=True in production"
            )
        await store.refresh_security_cache()
        await self._load()
        try:
            if config.coap_port is not None:
                channel = Channel(self._on_coap_event, False, config)
                udp = await UdpTransport.create(
                    channel.shell,
                    config.coap_host,
                    config.coap_port,
                    receive_buffer=config.socket_receive_buffer,
                )
                channel.transport = udp
                channel.shell.attach(udp)
                self._udp = channel
                self._channels.append(channel)
            if config.coaps_port is not None:
                channel = Channel(self._on_coap_event, True, config)
                dtls = await DtlsServer.create(
                    channel.shell,
                    DtlsServerConfig(
                        psk_store=store.psk_store(),
                        x509=config.x509,
                        session_store=StoreDtlsSessions(store),  # sessions survive restarts
                    ),
                    config.coaps_host,
                    config.coaps_port,
                    on_session_closed=channel.shell.session_closed,
                    receive_buffer=config.socket_receive_buffer,
                )
                channel.transport = dtls
                channel.shell.attach(dtls)
                self._dtls = channel
                self._channels.append(channel)
        except BaseException:
            for channel in self._channels:
                channel.shell.close()
            raise
        install_block1_admission(
            [(c.core, c.secure) for c in self._channels],
            config.ingress,
            self._by_peer,
            nosec_by_default=config.nosec_by_default,
        )
        if self._udp is not None:
            for device in self._by_endpoint.values():
                if device.channel is None and not device.registration.secure:
                    device.channel = self._udp
                    device.peer = udp_peer(device.registration.address)
                    self._by_peer[device.peer] = device
        self._running = True
        if config.freeze_gc_survivors:
            hold_survivors()  # no collection walks the whole heap (gc_policy.py)
            tune_collector(FROZEN_YOUNG_THRESHOLD)  # short young pauses
        else:
            tune_collector()  # fewer cyclic-GC passes per request (lwm2m/server/gc_policy.py)
        self._arm_timer()
        self._housekeeping = self._loop.call_later(HOUSEKEEPING_INTERVAL, self._on_housekeeping)
        logger.info(
            "LwM2M server on coap %s, coaps %s; %d registrations loaded",
            self.coap_address,
            self.coaps_address,
            len(self._by_endpoint),
        )
        return self

    async def _load(self) -> None:
        """Registrations back into memory; forget what cannot survive a restart."""
        store = self.store
        now = self._wall()

        def load(tx: Tx) -> tuple[list[Registration], set[str]]:
            found: list[Registration] = []
            after: str | None = None
            while True:
                page = store.registrations.list_page(tx, after=after, limit=1000)
                found.extend(page.items)
                if page.next_after is None:
                    break
                after = page.next_after
            pending = {
                str(row[0])
                for row in tx.execute(
                    select(QUEUED_REQUEST.c.endpoint)
                    .where(QUEUED_REQUEST.c.state == QueueState.PENDING.value)
                    .distinct()
                )
            }
            return found, pending

        def cleanup(tx: Tx) -> list[Registration]:
            # Observations cannot survive: the CoAP core that knew their tokens is gone, and
            # their next notification is answered RST (which ends them on the device too).
            tx.execute(delete(OBSERVATION))
            store.queue.abandon_sent(tx, now)
            expired: list[Registration] = []
            while batch := store.registrations.expire(tx, now):
                expired.extend(batch)
            return expired

        expired = await store.write(cleanup)
        registrations, pending = await store.read(load)
        loop_now = self._loop.time()
        self._queued_in_store = pending - {reg.endpoint for reg in registrations}
        for reg in registrations:
            device = Device(reg, None, None, loop_now - self.config.queue_awake_time)
            device.check_store_queue = reg.endpoint in pending
            self._index(device)
            self._arm_expiry(device)
        if expired:
            logger.info("%d registrations expired while the server was down", len(expired))

    async def stop(self) -> None:
        """Stop serving: waiting operations end ``SERVER_STOPPED``, sockets close,
        subscriptions end, queued writes are committed. The store stays open."""
        if not self._running:
            return
        self._running = False
        if self.config.freeze_gc_survivors:
            release_survivors()
        for handle in (self._timer, self._housekeeping):
            if handle is not None:
                handle.cancel()
        self._timer = self._housekeeping = None
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_result(
                    Failure(OperationStatus.SERVER_STOPPED, "the server stopped")
                )
        self._pending.clear()
        for device in self._by_endpoint.values():
            for entry in device.queue:
                entry.resolve(
                    OperationResult(OperationStatus.SERVER_STOPPED, None, "the server stopped")
                )
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._send_held_answers()  # committed writes' answers still waiting for their flush
        for channel in self._channels:
            channel.shell.close()
        for channel in self._channels:
            transport = channel.transport
            wait = getattr(transport, "wait_closed", None)
            if wait is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(wait(), 2.0)
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers.clear()
        with contextlib.suppress(StoreError):
            await self.store.flush()

    def _check_running(self) -> None:
        if not self._running:
            raise ServerNotRunning("the LwM2M server is stopped; start it with LwM2MServer.start")

    @property
    def handler_errors(self) -> int:
        """Exceptions the server's own event handling raised (logged; should stay 0)."""
        return sum(channel.shell.handler_errors for channel in self._channels)

    @property
    def coap_address(self) -> Address | None:
        """The bound plain-CoAP address (the real port when configured with 0)."""
        channel = self._udp
        return channel.transport.local_address if channel and channel.transport else None

    @property
    def coaps_address(self) -> Address | None:
        """The bound DTLS address, or None when DTLS is disabled."""
        channel = self._dtls
        return channel.transport.local_address if channel and channel.transport else None

    # -- registrations --------------------------------------------------------------------------
    def registrations(self) -> list[Registration]:
        """Every current registration (from memory), in endpoint order."""
        return [self._by_endpoint[ep].registration for ep in sorted(self._by_endpoint)]

    def registration(self, endpoint: str) -> Registration | None:
        device = self._by_endpoint.get(endpoint)
        return device.registration if device is not None else None

    async def remove(self, endpoint: str, *, actor: str = "") -> Registration | None:
        """Remove ``endpoint``'s registration as an operator asks (a stale device that will
        not de-register itself): its observations and pending requests end, queued requests
        are cancelled, and the row is deleted -- committed before this returns, so a removal
        that was acknowledged survives a crash. Returns the removed registration, or None
        when the endpoint is not registered. A device that is in fact alive gets 4.04 on its
        next Update and registers again (LwM2M 1.1 Core 6.2.2)."""
        device = self._by_endpoint.get(endpoint)
        if device is None:
            return None
        registration = device.registration
        await self.store.write(lambda tx: self.store.registrations.remove(tx, registration.id))
        if self._by_endpoint.get(endpoint) is device:
            self._drop(device, "removed by an operator", keep_queue=False, rows_gone=True)
        self._emit(Removed(endpoint, registration, actor))
        return registration

    def is_awake(self, endpoint: str) -> bool:
        """Whether a request to ``endpoint`` would go out now (not wait in its queue)."""
        device = self._device(endpoint)
        return self._awake(device)

    def _awake(self, device: Device) -> bool:
        return is_awake(
            device.registration.queue_mode,
            device.last_seen,
            self._loop.time(),
            self.config.queue_awake_time,
        )

    def _device(self, endpoint: str) -> Device:
        self._check_running()
        device = self._by_endpoint.get(endpoint)
        if device is None:
            raise UnknownEndpoint(endpoint)
        return device

    def _index(self, device: Device) -> None:
        self._by_endpoint[device.endpoint] = device
        self._by_id[device.registration.id] = device
        if device.peer is not None:
            self._by_peer[device.peer] = device

    def _unindex(self, device: Device) -> None:
        if self._by_endpoint.get(device.endpoint) is device:
            del self._by_endpoint[device.endpoint]
        if self._by_id.get(device.registration.id) is device:
            del self._by_id[device.registration.id]
        if device.peer is not None and self._by_peer.get(device.peer) is device:
            del self._by_peer[device.peer]

    def _drop(
        self, device: Device, reason: str, *, keep_queue: bool, rows_gone: bool = False
    ) -> None:
        """Forget a registration's runtime state: observations end (passively: the device's
        next notification gets RST), requests on the wire end ``DEREGISTERED``, and queued
        requests are cancelled unless the endpoint registered again (``keep_queue``).

        ``rows_gone``: the store deleted the registration's observation rows with the
        registration (De-register, replacement, expiry, removal), so none is deleted one by
        one (that was a read and a delete per observation on the writer: issue 13)."""
        self._unindex(device)
        channel = device.channel
        for obs in list(device.observations.values()):
            self._end_observation(obs, reason, forget=True, store_row=not rows_gone)
        for handle in list(device.inflight):
            pending = self._pending.pop(handle, None)
            if channel is not None:
                channel.core.cancel_request(handle, channel.now())
            if pending is not None and not pending.future.done():
                pending.future.set_result(
                    Failure(OperationStatus.DEREGISTERED, f"registration ended: {reason}")
                )
        device.inflight.clear()
        if not keep_queue and device.check_store_queue:
            self._queued_in_store.add(device.endpoint)  # rows it never loaded stay pending
        if not keep_queue and device.queue:
            now = self._wall()
            entries = list(device.queue)
            device.queue.clear()

            def cancel_all(tx: Tx) -> None:
                for entry in entries:
                    self._cancel_row(tx, entry.request_id, now)

            self._store_nowait(cancel_all)
            for entry in entries:
                entry.resolve(
                    OperationResult(
                        OperationStatus.DEREGISTERED,
                        None,
                        f"registration ended ({reason}) before the device woke up",
                        queued=True,
                        queued_request_id=entry.request_id,
                    )
                )
                self._emit(
                    QueueStateChanged(
                        device.endpoint,
                        entry.request_id,
                        entry.operation.name,
                        QueueState.CANCELLED,
                    )
                )
        if channel is not None and not self._answers_held:  # else flushed with the answers
            channel.flush()

    def _cancel_row(self, tx: Tx, request_id: int, now: float) -> None:
        row = self.store.queue.get(tx, request_id)
        if row is not None and not row.state.final:
            self.store.queue.cancel(tx, request_id, now)

    # -- CoAP events ----------------------------------------------------------------------------
    def _on_coap_event(self, channel: Channel, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._on_device_request(channel, event)
        elif isinstance(event, ResponseReceived):
            pending = self._pending.pop(event.request, None)
            if pending is None:
                return
            device = pending.device
            device.last_seen = self._loop.time()
            device.inflight.pop(event.request, None)
            if not pending.future.done():
                pending.future.set_result((Response.from_message(event.message), event.observing))
            elif event.observing:  # the caller gave up meanwhile: do not leave it observing
                channel.core.cancel_request(event.request, channel.now())
        elif isinstance(event, NotificationReceived):
            if not self._on_notification(channel, event) and event.ack is not None:
                channel.core.acknowledge(event.ack, channel.now())
        elif isinstance(event, RequestFailed):
            pending = self._pending.pop(event.request, None)
            if pending is None:
                return
            pending.device.inflight.pop(event.request, None)
            status = _FAILURE_STATUS.get(event.reason, OperationStatus.UNREACHABLE)
            detail = event.detail or event.reason.value
            if not pending.future.done():
                pending.future.set_result(Failure(status, f"request failed: {detail}"))
        elif isinstance(event, ObservationCancelled):
            obs = self._obs_by_handle.get(event.request)
            if obs is not None:
                self._end_observation(obs, f"ended: {event.reason.value}", forget=False)

    # -- Register / Update / De-register --------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("server task failed", exc_info=task.exception())

    # -- notifications and observations ---------------------------------------------------------
    def _on_notification(self, channel: Channel, event: NotificationReceived) -> bool:
        """Ingest a notification. True: its CON ACK (``event.ack``) is taken care of -- sent
        once the values are committed, since a device discards what is acknowledged (the
        caller acknowledges at once otherwise: nothing to store, or nothing storing helps)."""
        obs = self._obs_by_handle.get(event.request)
        if obs is None:
            return False
        device: Device = obs.device
        device.last_seen = self._loop.time()
        response = Response.from_message(event.message)
        if not response.success:
            return False  # a final error notification; ObservationCancelled follows
        if self._ingest_wait(device.endpoint, len(event.message.payload)) is not None:
            self.stats["throttled_notifications"] = self.stats.get("throttled_notifications", 0) + 1
            return False  # over its ingest budget (issue 14 item 3): acknowledged, not stored
        try:
            content, _, values, at = decode_notification(
                device.endpoint,
                response,
                obs.paths,
                self.model,
                composite=obs.composite,
                accept=obs.content_format,
                now=self._wall(),
                source=Source.NOTIFY,
            )
        except (CodecError, ModelError) as exc:
            self.stats["undecodable_notifications"] += 1
            logger.debug("undecodable notification from %s: %s", device.endpoint, exc)
            return False
        obs.notifications += 1
        self.stats["notifications"] += 1
        held = event.ack is not None and bool(values)
        if held:
            ack = event.ack
            then = self._after_commit(lambda ok, _: self._stored(channel, ack, ok))
            try:
                self.store.record_then(values, then)
            except StoreError as exc:  # not acknowledged: the device sends it again
                logger.warning("notification of %s not stored: %s", device.endpoint, exc)
        else:
            self._record(values)
        if self._subscribers:  # no event object nobody reads
            self._emit(Notification(device.endpoint, obs.id, obs.paths, content, at))
        return held

    def _stored(self, channel: Channel, ack: object, ok: bool) -> None:
        """A held notification's values are committed: acknowledge it (not when the commit
        failed: the device retransmits, and the retransmission is stored again). The ACK goes
        out with the commit's other answers (``_after_commit``)."""
        if ok:
            channel.core.acknowledge(ack, channel.now())

    def _add_observation(
        self,
        device: Device,
        handle: RequestHandle,
        op: Observe | ObserveComposite,
        content_format: int | None,
    ) -> ObservationState:
        obs = ObservationState(
            handle.token.hex(),
            device,
            handle,
            op.paths,
            op.composite,
            content_format,
            self._wall(),
        )
        self._observations[obs.id] = obs
        self._obs_by_handle[handle] = obs
        device.observations[obs.id] = obs
        stored = StoredObservation(
            token=handle.token,
            registration_id=device.registration.id,
            endpoint=device.endpoint,
            paths=op.paths,
            composite=op.composite,
            content_format=content_format,
            created_at=obs.created_at,
        )
        try:  # consecutive adds share one call (one executemany): a fleet being observed
            self.store.batcher.submit_row_nowait(self._add_observation_rows, stored)
        except StoreError as exc:
            logger.warning("store write dropped: %s", exc)
        return obs

    def _add_observation_rows(
        self, tx: Tx, rows: list[StoredObservation]
    ) -> list[StoredObservation | Conflict | ValueError | None]:
        """``observations.add_many``, where a registration replaced meanwhile is no failure:
        the device registered again between its Observe answer and this commit, the old
        registration's observations end in memory when the new one is applied, so there is
        nothing to keep. (It was the fuzz run's one store error, "a fire-and-forget write
        failed: registration ... is unknown".)"""
        results = self.store.observations.add_many(tx, rows)
        return [None if isinstance(r, NotFound) else r for r in results]

    def _end_observation(
        self, obs: ObservationState, reason: str, *, forget: bool, store_row: bool = True
    ) -> None:
        if self._observations.pop(obs.id, None) is None:
            return
        self._obs_by_handle.pop(obs.handle, None)
        device: Device = obs.device
        device.observations.pop(obs.id, None)
        if forget and device.channel is not None:
            device.channel.core.cancel_request(obs.handle, device.channel.now())
        if store_row:
            token = obs.handle.token
            self._store_nowait(lambda tx: self._remove_observation_row(tx, token))
        if self._subscribers:
            self._emit(ObservationEnded(device.endpoint, obs.id, reason))

    def _remove_observation_row(self, tx: Tx, token: bytes) -> None:
        if self.store.observations.get(tx, token) is not None:
            self.store.observations.remove(tx, token)

    def observations(self, endpoint: str | None = None) -> list[ObservationInfo]:
        """Active observations (of one endpoint, or all)."""
        if endpoint is not None:
            device = self._by_endpoint.get(endpoint)
            found = list(device.observations.values()) if device is not None else []
        else:
            found = list(self._observations.values())
        return [obs.info(obs.device.endpoint) for obs in found]

    async def cancel_observation(
        self, observation_id: str, *, active: bool = True, timeout: float | None = None
    ) -> OperationResult:
        """End an observation. ``active``: send GET Observe=1 (RFC 7641 §3.6) and report the
        device's answer; passive: forget it now, the device's next notification gets RST."""
        self._check_running()
        obs = self._observations.get(observation_id)
        if obs is None:
            raise UnknownObservation(observation_id)
        device: Device = obs.device
        channel = device.channel
        handle = obs.handle
        self._end_observation(obs, "cancelled", forget=not active)
        if not active or channel is None:
            if channel is not None:
                channel.flush()
            return OperationResult(OperationStatus.SUCCESS, None, "forgotten; RST follows")
        cancel = channel.core.cancel_observation(handle, channel.now(), deregister=True)
        if cancel is None:
            channel.flush()
            return OperationResult(OperationStatus.SUCCESS, None, "forgotten; RST follows")
        outcome = await self._await_handle(device, channel, cancel, timeout)
        if isinstance(outcome, Failure):
            return OperationResult(outcome.status, None, outcome.reason)
        response = outcome[0]
        if response.success:
            return OperationResult(OperationStatus.SUCCESS, response.code_text)
        return OperationResult(OperationStatus.DEVICE_ERROR, response.code_text, response.reason())

    # -- sending operations ---------------------------------------------------------------------
    async def _await_handle(
        self,
        device: Device,
        channel: Channel,
        handle: RequestHandle,
        timeout: float | None,
    ) -> Outcome:
        future: asyncio.Future[Outcome] = self._loop.create_future()
        pending = Pending(device, future)
        self._pending[handle] = pending
        device.inflight[handle] = None
        channel.flush()
        wait = timeout if timeout is not None else self.config.request_timeout
        pending.timer = self._loop.call_later(wait, self._on_request_timeout, handle, wait)
        try:
            return await future
        except asyncio.CancelledError:
            self._pending.pop(handle, None)
            device.inflight.pop(handle, None)
            channel.core.cancel_request(handle, channel.now())
            channel.flush()
            raise
        finally:
            pending.timer.cancel()

    def _on_request_timeout(self, handle: RequestHandle, waited: float) -> None:
        pending = self._pending.pop(handle, None)
        if pending is None:
            return
        device = pending.device
        device.inflight.pop(handle, None)
        channel = device.channel
        if channel is not None:
            channel.core.cancel_request(handle, channel.now())
            channel.flush()
        if not pending.future.done():
            pending.future.set_result(
                Failure(OperationStatus.TIMEOUT, f"no answer within {waited:g} s")
            )

    async def _transmit(
        self, device: Device, op: AnyOperation, timeout: float | None
    ) -> tuple[OperationResult, Response | None]:
        """Send ``op`` now and interpret the outcome."""
        channel, peer = device.channel, device.peer
        if channel is None or peer is None:
            return (
                op.failed(
                    OperationStatus.UNREACHABLE,
                    "no session with the device since the server restarted; it must "
                    "reconnect (DTLS) and Update first",
                ),
                None,
            )
        message = op.request().to_message(device.root)
        handle = channel.core.send_request(peer, message, channel.now())
        outcome = await self._await_handle(device, channel, handle, timeout)
        if isinstance(outcome, Failure):
            return op.failed(outcome.status, outcome.reason), None
        response, observing = outcome
        result = op.interpret(response, self.model)
        if isinstance(op, Observe | ObserveComposite) and isinstance(result, ObserveResult):
            if result.ok and observing and self._by_endpoint.get(device.endpoint) is device:
                obs = self._add_observation(device, handle, op, result.content_format)
                result = replace(result, observation_id=obs.id)
            elif observing:
                channel.core.cancel_request(handle, channel.now())
                channel.flush()
            elif result.ok:
                result = replace(result, reason="the device answered without observing")
        if result.ok and self.config.record_reads:
            self._record_read(device, op, result)
        return result, response

    async def coap_request(
        self,
        endpoint: str,
        method: int | str,
        uri_path: Sequence[str],
        payload: bytes = b"",
        *,
        content_format: int | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one non-LwM2M CoAP request to a registered device and return its response.

        For applications that share the device's CoAP stack (SGP.32 ESipa's eIM push to
        ``POST /gsma/rsp2/asn1``): the request goes over the channel the registration came in
        on -- plain CoAP from the server's CoAP socket, or the device's DTLS session -- to the
        address it registered (or last updated) from, so it crosses the device's NAT binding
        and its CoAPs session like any DM request. ``uri_path`` is used as given (segments,
        e.g. ``("gsma", "rsp2", "asn1")``), not under the device's alternate root path.
        ``method`` is a CoAP request code (``Code.POST``, 2) or its name (``"POST"``). Bodies
        larger than a block go Block1 and large answers are fetched Block2 by the CoAP core,
        retransmitted as confirmable requests are.

        Sent now, never queued: a queue-mode device that is asleep will not answer (check
        :meth:`is_awake` first). Returns the response whatever its code (``Response.code``,
        ``content_format``, ``payload``; ``success`` for 2.xx). Raises
        :class:`~lwm2m.server.errors.UnknownEndpoint` (not registered),
        :class:`~lwm2m.server.errors.InvalidRequest` (not a request method),
        :class:`~lwm2m.server.errors.RequestTimeout` (no answer in ``timeout`` seconds,
        default ``ServerConfig.request_timeout``) and
        :class:`~lwm2m.server.errors.NoResponse` (no session, RST, registration ended,
        server stopped)."""
        code = _request_code(method)
        device = self._device(endpoint)
        channel, peer = device.channel, device.peer
        if channel is None or peer is None:
            raise NoResponse(
                endpoint,
                OperationStatus.UNREACHABLE.value,
                "no session with the device since the server restarted; it must reconnect "
                "(DTLS) and Update first",
            )
        message = Message(code=code, payload=payload)
        if uri_path:
            message.opt.uri_path = tuple(uri_path)
        if content_format is not None:
            message.opt.content_format = content_format
        handle = channel.core.send_request(peer, message, channel.now())
        outcome = await self._await_handle(device, channel, handle, timeout)
        if isinstance(outcome, Failure):
            if outcome.status is OperationStatus.TIMEOUT:
                raise RequestTimeout(endpoint, outcome.status.value, outcome.reason)
            raise NoResponse(endpoint, outcome.status.value, outcome.reason)
        return outcome[0]

    def _record_read(self, device: Device, op: AnyOperation, result: OperationResult) -> None:
        content: Mapping[Path, Node] = {}
        if isinstance(result, ReadResult) and result.content is not None and isinstance(op, Read):
            content = {op.path: result.content}
        elif isinstance(result, CompositeReadResult | ObserveResult):
            content = result.content
        if content:
            now = self._wall()
            source = Source.NOTIFY if isinstance(result, ObserveResult) else Source.READ
            self._record(leaf_values(device.endpoint, content, now, source))

    async def _run(
        self,
        endpoint: str,
        op: AnyOperation,
        timeout: float | None,
        queue_deadline: float | None,
    ) -> OperationResult:
        device = self._device(endpoint)
        if self._awake(device):
            result, _ = await self._transmit(device, op, timeout)
            return result
        return await self._enqueue(device, op, timeout, queue_deadline)

    # -- queue mode -----------------------------------------------------------------------------
    async def _enqueue(
        self,
        device: Device,
        op: AnyOperation,
        timeout: float | None,
        queue_deadline: float | None,
    ) -> OperationResult:
        if len(device.queue) >= self.config.max_queued_per_device:
            raise InvalidRequest(
                f"{device.endpoint} already has {len(device.queue)} requests queued while "
                "asleep; wait for it to wake up or cancel some"
            )
        now = self._wall()
        deadline = now + (
            queue_deadline if queue_deadline is not None else self.config.queue_deadline
        )
        store = self.store
        row = await store.write(
            lambda tx: store.queue.enqueue(tx, op.to_queued(device.endpoint, deadline), now)
        )
        future: asyncio.Future[OperationResult] = self._loop.create_future()
        entry = QueuedEntry(
            row.id,
            op,
            deadline,
            timeout if timeout is not None else self.config.request_timeout,
            future,
        )
        current = self._by_endpoint.get(device.endpoint)
        if current is None:
            await store.write(lambda tx: self._cancel_row(tx, row.id, now))
            return op.failed(
                OperationStatus.DEREGISTERED,
                "the registration ended while the request was being queued",
            )
        current.queue.append(entry)
        self._push(deadline, "queue", (device.endpoint, entry))
        self._emit(QueueStateChanged(device.endpoint, row.id, op.name, QueueState.PENDING))
        if self._awake(current):  # woke up while the enqueue committed
            self._wake(current)
        try:
            result = await future
        except asyncio.CancelledError:
            self._cancel_entry(device.endpoint, entry)
            raise
        return result

    def _cancel_entry(self, endpoint: str, entry: QueuedEntry) -> bool:
        device = self._by_endpoint.get(endpoint)
        if device is None or entry not in device.queue:
            return False
        device.queue.remove(entry)
        now = self._wall()
        self._store_nowait(lambda tx: self._cancel_row(tx, entry.request_id, now))
        entry.resolve(
            entry.operation.failed(
                OperationStatus.CANCELLED,
                "cancelled while queued",
                queued=True,
                queued_request_id=entry.request_id,
            )
        )
        self._emit(
            QueueStateChanged(
                endpoint, entry.request_id, entry.operation.name, QueueState.CANCELLED
            )
        )
        return True

    def _wake(self, device: Device) -> None:
        """The device just talked to us: send what waits for it (after our answer went out)."""
        if device.draining or not (device.queue or device.check_store_queue):
            return
        device.draining = True
        self._spawn(self._drain(device))

    async def _drain(self, device: Device) -> None:
        try:
            if device.check_store_queue:
                device.check_store_queue = False
                await self._load_queue(device)
            while device.queue and self._by_endpoint.get(device.endpoint) is device:
                if not self._awake(device):
                    break
                entry = device.queue.pop(0)
                now = self._wall()
                if entry.deadline <= now:
                    self._expire_entry(device.endpoint, entry, now)
                    continue
                await self._deliver(device, entry)
        finally:
            device.draining = False

    async def _load_queue(self, device: Device) -> None:
        """Queued rows this process does not hold (written before a restart)."""
        store = self.store
        now = self._wall()
        try:
            rows = await store.read(lambda tx: store.queue.pending(tx, device.endpoint, now))
        except StoreError as exc:
            logger.warning("could not load the queue of %s: %s", device.endpoint, exc)
            return
        known = {entry.request_id for entry in device.queue}
        loaded: list[QueuedEntry] = []
        for row in rows:
            if row.id in known:
                continue
            try:
                op = from_queued(row)
            except (QueuedRequestUnreadable, ModelError, UnicodeDecodeError) as exc:
                logger.warning("dropping queued request %d: %s", row.id, exc)
                row_id = row.id
                self._store_nowait(lambda tx, i=row_id: self._cancel_row(tx, i, now))  # type: ignore[misc]
                continue
            deadline = row.deadline if row.deadline is not None else now + 1e9
            entry = QueuedEntry(row.id, op, deadline, self.config.request_timeout, None)
            loaded.append(entry)
            self._push(deadline, "queue", (device.endpoint, entry))
        merged = sorted([*loaded, *device.queue], key=lambda e: e.request_id)
        device.queue = merged

    async def _deliver(self, device: Device, entry: QueuedEntry) -> None:
        endpoint, op, request_id = device.endpoint, entry.operation, entry.request_id
        sent_at = self._wall()
        store = self.store
        self._store_nowait(lambda tx: store.queue.mark_sent(tx, request_id, sent_at))
        self._emit(QueueStateChanged(endpoint, request_id, op.name, QueueState.SENT))
        result, response = await self._transmit(device, op, entry.timeout)
        state = outcome_state(result)
        done_at = self._wall()
        if state is QueueState.ANSWERED and response is not None:
            code, payload = response.code_text, response.payload or None
            self._store_nowait(
                lambda tx: store.queue.mark_answered(
                    tx, request_id, done_at, code=code, payload=payload
                )
            )
        else:
            self._store_nowait(lambda tx: store.queue.mark_timeout(tx, request_id, done_at))
        self._emit(QueueStateChanged(endpoint, request_id, op.name, state, result.code))
        entry.resolve(replace(result, queued=True, queued_request_id=request_id))

    def _expire_entry(self, endpoint: str, entry: QueuedEntry, now: float) -> None:
        store = self.store
        request_id = entry.request_id

        def expire(tx: Tx) -> None:
            row = store.queue.get(tx, request_id)
            if row is not None and row.state is QueueState.PENDING:
                store.queue.expire(tx, now)

        self._store_nowait(expire)
        entry.resolve(
            entry.operation.failed(
                OperationStatus.QUEUED_EXPIRED,
                "the device did not wake up before the request's deadline",
                queued=True,
                queued_request_id=request_id,
            )
        )
        self._emit(
            QueueStateChanged(endpoint, request_id, entry.operation.name, QueueState.EXPIRED)
        )

    async def queued_requests(
        self, endpoint: str, *, include_finished: bool = False
    ) -> list[QueuedRequest]:
        """The endpoint's queued requests from the store (pending and sent, or all)."""
        self._check_running()
        store = self.store
        states = None if include_finished else (QueueState.PENDING, QueueState.SENT)
        return await store.read(lambda tx: store.queue.for_endpoint(tx, endpoint, states=states))

    async def cancel_queued(self, request_id: int) -> bool:
        """Cancel a pending queued request; False when it is no longer pending."""
        self._check_running()
        for device in self._by_endpoint.values():
            for entry in device.queue:
                if entry.request_id == request_id:
                    return self._cancel_entry(device.endpoint, entry)
        store = self.store
        now = self._wall()

        def cancel(tx: Tx) -> bool:
            row = store.queue.get(tx, request_id)
            if row is None or row.state is not QueueState.PENDING:
                return False
            store.queue.cancel(tx, request_id, now)
            return True

        return await store.write(cancel)

    # -- timers ---------------------------------------------------------------------------------
    def _push(self, when: float, kind: str, key: Any) -> int:
        seq = next(self._seq)
        heapq.heappush(self._heap, (when, seq, kind, key))
        if self._running:
            self._arm_timer()
        return seq

    def _arm_expiry(self, device: Device) -> None:
        """Keep one timer entry per registration, at or before its expiry.

        Why not one entry per Update: an Update moves the expiry later, and an entry per
        Update stayed in the heap until the *old* expiry (a day for most devices), so the
        heap grew by every Update (≈ 100 B each: 1.8 GB an hour at 5 000 Updates/s, issue
        13). Now an Update that extends the lifetime pushes nothing; the entry, when it
        fires early, pushes the one for the new expiry. Only a shorter lifetime pushes an
        earlier entry, which takes over (the later one is ignored when it fires)."""
        when = device.registration.expires_at
        if device.expiry_seq is not None and device.expiry_at <= when:
            return
        device.expiry_at = when
        device.expiry_seq = self._push(when, "reg", device.registration.id)

    def _arm_timer(self) -> None:
        if not self._heap or not self._running:
            return
        when = self._heap[0][0]
        if self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        delay = max(0.0, when - self._wall())
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._wall()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, kind, key = heapq.heappop(heap)
            if kind == "reg":
                device = self._by_id.get(key)
                if device is None or device.expiry_seq != seq:
                    continue  # gone, or superseded by an earlier entry (see _arm_expiry)
                device.expiry_seq = None
                if device.registration.expires_at <= now:
                    self._expire(device, now)
                else:  # extended by Updates since this entry was pushed
                    self._arm_expiry(device)
            else:
                endpoint, entry = key
                device = self._by_endpoint.get(endpoint)
                if device is not None and entry in device.queue:
                    device.queue.remove(entry)
                    self._expire_entry(endpoint, entry, now)
        self._arm_timer()

    def _expire(self, device: Device, now: float) -> None:
        reg = device.registration
        self._drop(device, "lifetime expired", keep_queue=False)
        store = self.store

        def remove(tx: Tx) -> None:
            current = store.registrations.get(tx, reg.id)
            if current is not None and current.is_expired(now):
                store.registrations.remove(tx, reg.id)

        self._store_nowait(remove)
        self._emit(Expired(reg.endpoint, reg))

    def _on_housekeeping(self) -> None:
        if not self._running:
            return
        self._spawn(self._housekeep())
        self._housekeeping = self._loop.call_later(HOUSEKEEPING_INTERVAL, self._on_housekeeping)

    async def _housekeep(self) -> None:
        store = self.store
        now = self._wall()
        try:
            if now - self._psk_refreshed >= store.settings.psk_cache_ttl:
                self._psk_refreshed = now
                await store.refresh_security_cache()
            await store.write(lambda tx: store.queue.expire(tx, now))
        except StoreError as exc:
            logger.warning("housekeeping failed: %s", exc)

    # -- store helpers --------------------------------------------------------------------------
    def _store_nowait(self, op: Callable[[Tx], Any]) -> None:
        try:
            self.store.write_nowait(op)
        except StoreError as exc:
            logger.warning("store write dropped: %s", exc)

    def _record(self, values: list[ReportedValue]) -> None:
        if not values:
            return
        try:
            self.store.record(values)
        except StoreError as exc:
            logger.warning("telemetry dropped (%d values): %s", len(values), exc)

    # -- events ---------------------------------------------------------------------------------
    def subscribe(self) -> EventSubscription:
        """A new event stream; close it with ``aclose()``."""
        subscription = EventSubscription(self.config.subscriber_buffer, self._subscribers.discard)
        self._subscribers.add(subscription)
        return subscription

    def _emit(self, event: ServerEvent) -> None:
        for subscription in self._subscribers:
            subscription.publish(event)

    async def last_values(self, endpoint: str) -> dict[Path, ReportedValue]:
        """The latest reported value of every path of ``endpoint`` (from the store)."""
        self._check_running()
        store = self.store
        values = await store.read(lambda tx: store.telemetry.latest(tx, endpoint))
        return {v.path: v for v in values}


def _request_code(method: int | str) -> Code:
    """A CoAP request method (``Code.POST``, 2, ``"POST"``) as a :class:`Code`."""
    try:
        code = Code[method.upper()] if isinstance(method, str) else Code(method)
    except (KeyError, ValueError):
        raise InvalidRequest(f"{method!r} is not a CoAP method") from None
    if not code.is_request():
        raise InvalidRequest(f"{method!r} is not a CoAP request method (GET, POST, ...)")
    return code
