"""The sans-IO LwM2M client: registration, DM answers, notifications and Send on one CoAP
endpoint, driven by the ``now`` its caller passes in.

The client does not own its :class:`~lwm2m.coap.CoapEndpoint`: it is handed one and the peer
that is its server, sends requests and responses through it, and is fed the endpoint's events
(:meth:`handle_coap_event`). A single device wraps one endpoint
(:class:`~simulators.device.core.DeviceCore`); a large fleet may share an endpoint between
many clients, routing events by peer, because the client never drains the endpoint itself.

Driver contract (aioquic style, like the CoAP core)::

    client.handle_coap_event(event, now)   # every event of the endpoint that concerns us
    client.get_timer() -> float | None     # our own next deadline (the endpoint has its own)
    client.handle_timer(now)
    client.next_event() -> ClientEvent | None

Registration states: ``IDLE`` (not started, or waiting to retry), ``REGISTERING`` (Register in
flight), ``REGISTERED`` (an Update may be in flight), ``DEREGISTERING``, ``STOPPED``. Bootstrap
runs beside the client (:mod:`simulators.device.bootstrap`): it writes the Security and Server
instances through the store's local API, which is all registration reads. The client only asks
for it, with a ``BootstrapRequested`` event (Execute /1/x/9, or a registration sequence that
failed for good on a device with a bootstrap account).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Mapping
from enum import IntEnum

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import (
    CoapEndpoint,
    Event,
    IncomingRequest,
    Observation,
    ObserverRemoved,
    RandomSource,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.codec import TimestampedNodes, encode_timestamped
from lwm2m.model import Path
from simulators.device.bootstrap import bootstrap_on_failure
from simulators.device.config import ClientConfig
from simulators.device.content import composite_nodes, encode_composite, encode_node
from simulators.device.errors import DeviceError, MethodNotAllowed, NotFound
from simulators.device.events import (
    BootstrapRequested,
    ClientEvent,
    Deregistered,
    Notified,
    ObservationEnded,
    ObservationStarted,
    Rebooted,
    Registered,
    RegistrationFailed,
    SendCompleted,
    SendFailed,
    Sleeping,
    Updated,
    UpdateFailed,
    VersionFallback,
    Woke,
)
from simulators.device.formats import FormatProfile
from simulators.device.objects import ObjectStore
from simulators.device.observe import AttributeStore, Content, Watch, qualifies
from simulators.device.operations import ObserveSpec, handle
from simulators.device.registration import (
    BINDING,
    LIFETIME,
    SERVER_OBJECT,
    ServerAccount,
    binding_param,
    fallback_version,
    object_links,
    register_query,
    server_account,
    update_margin,
    version_key,
)


class ClientError(Exception):
    """The application asked for something the client cannot do now (a local error)."""


class State(IntEnum):
    IDLE = 0
    REGISTERING = 1
    REGISTERED = 2
    DEREGISTERING = 3
    STOPPED = 4


_REGISTER, _UPDATE, _DEREGISTER = 1, 2, 3
_INF = float("inf")


def _code(message: Message) -> str:
    return f"{message.code >> 5}.{message.code & 31:02d}"


class LwM2MClient:
    """One simulated LwM2M client towards one DM server (see the module docstring)."""

    __slots__ = (
        "_attempts",
        "_attributes",
        "_awake_until",
        "_events",
        "_links_hash",
        "_reboot_at",
        "_reboot_factory",
        "_reg",
        "_reg_binding",
        "_reg_flags",
        "_reg_kind",
        "_reg_lifetime",
        "_reg_sent_at",
        "_retry_at",
        "_scheduled",
        "_sends",
        "_seq",
        "_sequences",
        "_update_at",
        "_watches",
        "asleep",
        "config",
        "endpoint",
        "location",
        "lwm2m_version",
        "rng",
        "server",
        "state",
        "store",
    )

    def __init__(
        self,
        store: ObjectStore,
        endpoint: CoapEndpoint,
        server: Hashable,
        *,
        config: ClientConfig,
        rng: RandomSource,
    ) -> None:
        self.store = store
        self.endpoint = endpoint
        self.server = server
        self.config = config
        self.rng = rng
        self.state = State.IDLE
        self.lwm2m_version = config.lwm2m_version
        #: Location-Path of the current registration (None when not registered).
        self.location: tuple[str, ...] | None = None
        #: Queue mode: True while the device ignores incoming datagrams.
        self.asleep = False
        self._events: list[ClientEvent] | None = None
        self._reg: RequestHandle | None = None
        self._reg_kind = 0
        self._reg_sent_at = 0.0
        self._reg_lifetime = 0
        self._reg_binding = ""
        #: What the Update in flight carries: 1 lifetime, 2 binding, 4 object links.
        self._reg_flags = 0
        self._links_hash = 0
        self._update_at = _INF
        self._retry_at = _INF
        self._reboot_at = _INF
        self._reboot_factory = False
        self._awake_until = _INF
        self._attempts = 0
        self._sequences = 0
        self._watches: dict[Observation, Watch] | None = None
        self._attributes: AttributeStore | None = None
        self._sends: dict[RequestHandle, tuple[Path, ...]] | None = None
        self._scheduled: list[tuple[float, int, Callable[[float], None]]] | None = None
        self._seq = 0
        store.listener = self._on_change

    # ------------------------------------------------------------------ properties used by DM
    @property
    def profile(self) -> FormatProfile:
        return self.config.formats

    @property
    def attributes(self) -> AttributeStore:
        if self._attributes is None:
            self._attributes = AttributeStore()
        return self._attributes

    @property
    def registered(self) -> bool:
        return self.state is State.REGISTERED

    @property
    def observations(self) -> tuple[Watch, ...]:
        return tuple(self._watches.values()) if self._watches else ()

    # ------------------------------------------------------------------ driver contract
    def next_event(self) -> ClientEvent | None:
        events = self._events
        if not events:
            return None
        event = events.pop(0)
        if not events:
            self._events = None
        return event

    def _emit(self, event: ClientEvent) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    def get_timer(self) -> float | None:
        due = min(self._retry_at, self._reboot_at)
        if self._scheduled:
            due = min(due, self._scheduled[0][0])
        if self.state is State.REGISTERED and self._reg is None:
            due = min(due, self._update_at)
            if self.config.queue_mode and not self.asleep and not self._sends:
                due = min(due, self._awake_until)
        if self._watches and self.state is State.REGISTERED:
            self._refresh_watches()
            for watch in self._watches.values():
                deadline = watch.deadline()
                if deadline is not None and deadline < due:
                    due = deadline
        return None if due == _INF else due

    def handle_timer(self, now: float) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, action = heapq.heappop(self._scheduled)
            action(now)
        if not self._scheduled:
            self._scheduled = None
        if self._reboot_at <= now:
            self._do_reboot(now)
        if self._retry_at <= now and self.state is State.IDLE:
            self._retry_at = _INF
            self._register(now)
        if self.state is State.REGISTERED:
            if self._update_at <= now and self._reg is None:
                if self.asleep:
                    self._wake(now, "update")
                else:
                    self._update(now)
            self._notify_due(now)
            if (
                self.config.queue_mode
                and not self.asleep
                and self._awake_until <= now
                and self._reg is None
                and not self._sends
            ):
                self.asleep = True
                self._emit(Sleeping())

    def handle_coap_event(self, event: Event, now: float) -> None:
        """Process one endpoint event that concerns this client's server."""
        if isinstance(event, RequestReceived):
            self._on_request(event.request, event.message, event.peer, now)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.request, event.message, now)
        elif isinstance(event, RequestFailed):
            self._on_failure(event.request, f"{event.reason.value}: {event.detail}", now)
        elif isinstance(event, ObserverRemoved):
            watch = self._watches.pop(event.observation, None) if self._watches else None
            if watch is not None:
                self._emit(ObservationEnded(watch.paths, event.reason.value))

    # ------------------------------------------------------------------ application API
    def start(self, now: float) -> None:
        """Register (again, after :meth:`stop`)."""
        if self.state in (State.REGISTERING, State.REGISTERED):
            raise ClientError(f"already {self.state.name.lower()}")
        self.lwm2m_version = self.config.lwm2m_version
        self._attempts = self._sequences = 0
        self._register(now)

    def stop(self, now: float) -> None:
        """De-register (when registered), drop observations and stop retrying."""
        self._drop_watches(now, "stopped")
        self._retry_at = self._reboot_at = self._update_at = _INF
        if self.state is State.REGISTERED and self.location is not None:
            self._cancel_reg(now)
            self._send_reg(_DEREGISTER, Message(code=Code.DELETE, uri_path=self.location), now)
            self.state = State.DEREGISTERING
            if self.asleep:  # listen for the answer (no Update: we are de-registering)
                self._wake(now, "deregister")
            return
        self._cancel_reg(now)
        self.state = State.STOPPED
        self.location = None

    def trigger_update(self, now: float) -> None:
        """Send a Registration Update as soon as possible (Execute /1/x/8 does this)."""
        if self.state is State.REGISTERED:
            self._update_at = min(self._update_at, now)

    def request_bootstrap(self, now: float, reason: str) -> None:
        """Ask the driver for a bootstrap (after the current response went out)."""
        self._emit(BootstrapRequested(reason))

    def reboot(self, now: float, *, factory_reset: bool = False) -> None:
        """Restart after ``config.reboot_delay`` (the Execute's 2.04 goes out first)."""
        self._reboot_at = now + self.config.reboot_delay
        self._reboot_factory = factory_reset

    def schedule(self, when: float, action: Callable[[float], None]) -> None:
        self._seq += 1
        if self._scheduled is None:
            self._scheduled = []
        heapq.heappush(self._scheduled, (when, self._seq, action))

    def send(self, paths: Iterable[Path | str], now: float) -> None:
        """Send the current values at ``paths`` to the server (``POST /dp``, LwM2M 1.1+)."""
        wanted = tuple(Path.parse(p) if isinstance(p, str) else p for p in paths)
        if self.state is not State.REGISTERED:
            raise ClientError("Send needs a registration")
        if version_key(self.lwm2m_version) < (1, 1):
            raise ClientError(f"Send needs LwM2M 1.1; registered as {self.lwm2m_version}")
        if server_account(self.store).mute_send:
            raise ClientError("Mute Send (/1/x/23) is set")
        try:
            nodes = composite_nodes(self.store, wanted, now)
        except DeviceError as exc:
            raise ClientError(f"cannot read {wanted}: {exc}") from None
        cf = self.profile.send_format
        timestamped = [TimestampedNodes(self.store.wall_time(now), nodes)]
        payload = encode_timestamped(cf, timestamped, self.store.model)
        if self.asleep:
            self._wake(now, "send")
        message = Message(code=Code.POST, uri_path=("dp",), content_format=cf, payload=payload)
        handle = self.endpoint.send_request(self.server, message, now)
        if self._sends is None:
            self._sends = {}
        self._sends[handle] = wanted
        self._awake_until = now + self.config.awake_time

    def set(self, path: Path | str, value: object, now: float) -> None:
        """Change a value as the device itself would (notifies observers)."""
        self.store.set(path, value, now)

    # ------------------------------------------------------------------ registration
    def _account(self) -> ServerAccount:
        return server_account(self.store)

    def _send_reg(self, kind: int, message: Message, now: float) -> None:
        self._reg = self.endpoint.send_request(self.server, message, now)
        self._reg_kind = kind
        self._reg_sent_at = now
        self._awake_until = now + self.config.awake_time

    def _cancel_reg(self, now: float) -> None:
        if self._reg is not None:
            self.endpoint.cancel_request(self._reg, now)
            self._reg = None
            self._reg_kind = 0

    def _register(self, now: float) -> None:
        account = self._account()
        query = register_query(
            self.store.endpoint,
            account.lifetime,
            self.lwm2m_version,
            account.binding,
            self.config.queue_mode,
            self.profile,
        )
        links = object_links(self.store, self.profile)
        message = Message(
            code=Code.POST,
            uri_path=("rd",),
            uri_query=query,
            content_format=40,
            payload=links.encode(),
        )
        self._reg_lifetime = account.lifetime
        self._reg_binding = account.binding
        self._links_hash = hash(links)
        self.state = State.REGISTERING
        self._send_reg(_REGISTER, message, now)

    def _update(self, now: float) -> None:
        assert self.location is not None
        account = self._account()
        query = []
        flags = 0
        if account.lifetime != self._reg_lifetime:
            query.append(f"lt={account.lifetime}")
            flags |= 1
        if account.binding != self._reg_binding:
            binding = binding_param(account.binding, self.lwm2m_version, self.config.queue_mode)
            query.append(f"b={binding}")
            flags |= 2
        links = object_links(self.store, self.profile)
        message = Message(code=Code.POST, uri_path=self.location, uri_query=tuple(query))
        if hash(links) != self._links_hash:
            message.opt.content_format = 40
            message.payload = links.encode()
            flags |= 4
        self._reg_flags = flags
        self._reg_lifetime = account.lifetime
        self._reg_binding = account.binding
        self._links_hash = hash(links)
        self._update_at = _INF
        self._send_reg(_UPDATE, message, now)

    def _schedule_update(self) -> None:
        lifetime = self._reg_lifetime
        margin = self.config.update_margin
        if margin is None:
            margin = update_margin(lifetime, self.config.max_transmit_wait)
        self._update_at = self._reg_sent_at + max(lifetime - margin, 0.0)

    def _on_response(self, handle: RequestHandle, message: Message, now: float) -> None:
        self._awake_until = now + self.config.awake_time
        if self._sends and handle in self._sends:
            self._emit(SendCompleted(self._sends.pop(handle), _code(message)))
            return
        if handle is not self._reg:
            return
        kind, self._reg, self._reg_kind = self._reg_kind, None, 0
        code = message.code
        if kind == _REGISTER:
            if code == Code.CREATED and message.opt.location_path:
                self._registered(tuple(message.opt.location_path), now)
            elif code == Code.PRECONDITION_FAILED and (
                lower := fallback_version(self.lwm2m_version, self.config.fallback_versions)
            ):
                self._emit(VersionFallback(self.lwm2m_version, lower))
                self.lwm2m_version = lower
                self._register(now)
            else:
                reason = "no Location-Path" if code == Code.CREATED else "refused"
                self._registration_failed(_code(message), reason, now)
        elif kind == _UPDATE:
            if code == Code.CHANGED:
                flags = self._reg_flags
                self._emit(
                    Updated(
                        self._reg_lifetime if flags & 1 else None,
                        self._reg_binding if flags & 2 else None,
                        bool(flags & 4),
                    )
                )
                self._schedule_update()
                self._update_if_changed(now)
            else:
                self._emit(UpdateFailed(_code(message), "refused"))
                self._reregister(now)
        elif kind == _DEREGISTER:
            self._deregistered(True)

    def _on_failure(self, handle: RequestHandle, reason: str, now: float) -> None:
        if self._sends and handle in self._sends:
            self._emit(SendFailed(self._sends.pop(handle), reason))
            return
        if handle is not self._reg:
            return
        kind, self._reg, self._reg_kind = self._reg_kind, None, 0
        if kind == _REGISTER:
            self._registration_failed(None, reason, now)
        elif kind == _UPDATE:
            self._emit(UpdateFailed(None, reason))
            self._reregister(now)
        elif kind == _DEREGISTER:
            self._deregistered(False)

    def _registered(self, location: tuple[str, ...], now: float) -> None:
        self._drop_watches(now, "re-registered")
        self.location = location
        self.state = State.REGISTERED
        self._attempts = self._sequences = 0
        self._emit(Registered(location, self.lwm2m_version, self._reg_lifetime))
        self._schedule_update()
        self._update_if_changed(now)

    def _update_if_changed(self, now: float) -> None:
        """Something changed while a Register/Update was in flight: update again now."""
        account = self._account()
        if (
            account.lifetime != self._reg_lifetime
            or account.binding != self._reg_binding
            or hash(object_links(self.store, self.profile)) != self._links_hash
        ):
            self._update_at = now

    def _registration_failed(self, code: str | None, reason: str, now: float) -> None:
        self.state = State.IDLE
        self.location = None
        retry = self._next_retry(now)
        self._retry_at = _INF if retry is None else retry
        self._emit(RegistrationFailed(code, reason, retry))
        if retry is None:
            self.state = State.STOPPED
            if bootstrap_on_failure(self.store):
                self._emit(BootstrapRequested("registration failed"))

    def _next_retry(self, now: float) -> float | None:
        """TS 1.1 §6.2.1.1: Communication Retry Count attempts per sequence, the delay
        doubling from Communication Retry Timer; then Sequence Delay between sequences."""
        account = self._account()
        self._attempts += 1
        if self._attempts < account.retry_count:
            delay = account.retry_timer * (1 << (self._attempts - 1))
        else:
            self._attempts = 0
            self._sequences += 1
            if self._sequences >= account.sequence_retry_count:
                return None
            delay = account.sequence_delay
        jitter = self.config.retry_jitter
        if jitter:
            delay *= 1.0 + jitter * self.rng.random()
        return now + delay

    def _reregister(self, now: float) -> None:
        """The server lost or refused our registration: Register from scratch, now."""
        self.state = State.IDLE
        self.location = None
        self._update_at = _INF
        self._attempts = self._sequences = 0
        self._register(now)

    def _deregistered(self, acknowledged: bool) -> None:
        self.state = State.STOPPED
        self.location = None
        self._emit(Deregistered(acknowledged))

    def _do_reboot(self, now: float) -> None:
        factory = self._reboot_factory
        self._reboot_at = _INF
        self._reboot_factory = False
        self._cancel_reg(now)
        if self._sends:
            for handle in self._sends:
                self.endpoint.cancel_request(handle, now)
            self._sends = None
        self._drop_watches(now, "rebooted")
        if self._attributes is not None:
            self._attributes.clear()
        self._scheduled = None
        self.endpoint.forget_peer(self.server, now)
        if factory:
            self.store.reset()
        self.state = State.IDLE
        self.location = None
        self.asleep = False
        self._update_at = self._retry_at = _INF
        self._emit(Rebooted(factory))
        self.start(now)

    # ------------------------------------------------------------------ queue mode
    def _wake(self, now: float, reason: str) -> None:
        self.asleep = False
        self._awake_until = now + self.config.awake_time
        self._emit(Woke(reason))
        if self.state is State.REGISTERED and self._reg is None:
            self._update(now)

    # ------------------------------------------------------------------ serving the server
    def _on_request(
        self, request: IncomingRequest, message: Message, peer: Hashable, now: float
    ) -> None:
        if peer != self.server:
            self.endpoint.respond(request, Message(code=Code.UNAUTHORIZED), now)
            return
        self._awake_until = now + self.config.awake_time
        outcome = handle(self, message, now)
        observation = self.endpoint.respond(request, outcome.response, now)
        if observation is not None and outcome.observe is not None:
            self._watch(observation, outcome.observe, now)
        for event in outcome.events:
            self._emit(event)

    def _watch(self, observation: Observation, spec: ObserveSpec, now: float) -> None:
        watch = Watch(
            spec.paths,
            spec.content_format,
            spec.reply_format,
            spec.composite,
            spec.content,
            now,
            spec.extra,
        )
        if self._watches is None:
            self._watches = {}
        self._watches[observation] = watch
        self._emit(ObservationStarted(spec.paths, spec.composite))

    def _refresh_watches(self) -> None:
        if not self._watches:
            return
        account = None
        attributes = self.attributes
        for watch in self._watches.values():
            if watch.attributes_version != attributes.version:
                account = account or self._account()
                watch.refresh(attributes, account.default_pmin, account.default_pmax)

    def _drop_watches(self, now: float, reason: str) -> None:
        if not self._watches:
            return
        watches, self._watches = self._watches, None
        for observation, watch in watches.items():
            if observation.active:
                self.endpoint.remove_observer(observation, now)
            self._emit(ObservationEnded(watch.paths, reason))

    def _current(self, watch: Watch, now: float) -> Content:
        if watch.composite:
            return composite_nodes(self.store, watch.paths, now)
        return self.store.read(watch.paths[0], now)

    def _on_change(self, ids: tuple[int, ...], now: float) -> None:
        if ids[0] == SERVER_OBJECT:
            if len(ids) == 3 and ids[2] in (LIFETIME, BINDING):
                self.trigger_update(now)
            elif len(ids) == 3 and ids[2] in (2, 3) and self._attributes is not None:
                self._attributes.version += 1  # default pmin/pmax changed
        if len(ids) == 1:
            self.trigger_update(now)  # instances came or went: the object links changed
        if not self._watches or self.state is not State.REGISTERED:
            return
        self._refresh_watches()
        for watch in self._watches.values():
            if watch.changed_at is not None or not watch.touches(ids):
                continue
            try:
                current = self._current(watch, now)
            except (NotFound, MethodNotAllowed):
                watch.changed_at = now  # gone: the next notification says 4.04
                continue
            if qualifies(watch.effective, watch.last_content, current):
                watch.changed_at = now

    def _notify_due(self, now: float) -> None:
        if not self._watches:
            return
        self._refresh_watches()
        due = [
            (o, w)
            for o, w in self._watches.items()
            if (d := w.deadline()) is not None and d <= now and o.active
        ]
        if not due:
            return
        if self.asleep:
            self._wake(now, "notification")
        for observation, watch in due:
            self._notify(observation, watch, now)

    def _notify(self, observation: Observation, watch: Watch, now: float) -> None:
        try:
            content = self._current(watch, now)
            if isinstance(content, Mapping):
                payload = encode_composite(self.store, content, watch.content_format)
            else:
                payload = encode_node(self.store, content, watch.paths[0], watch.content_format)
        except DeviceError as exc:
            # The target is gone (or unreadable): a final error notification ends it.
            assert self._watches is not None
            del self._watches[observation]
            self.endpoint.send_notification(observation, Message(code=exc.code), now)
            self._emit(ObservationEnded(watch.paths, "target gone"))
            return
        message = Message(code=Code.CONTENT, content_format=watch.reply_format, payload=payload)
        self.endpoint.send_notification(observation, message, now)
        watch.reported(content, now)
        self._awake_until = now + self.config.awake_time
        self._emit(Notified(watch.paths, observation.sequence))


__all__ = ["ClientError", "LwM2MClient", "State"]
