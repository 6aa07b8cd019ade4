"""The registration interface and Send, as a mixin of :class:`~lwm2m.server.LwM2MServer`.

What a device sends the server: Register, Update, De-register (``/rd``) and Send (``/dp``).
Parsing is pure (:mod:`lwm2m.server.registration`), the identity check too
(:mod:`lwm2m.server.security`); this module runs them, writes through the store and answers.
Register, Update and De-register wait for the store: the group commit holding the change calls
them back (``GroupCommitBatcher.submit_row_then``) and only then do they answer, so nothing
acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import RequestReceived
from lwm2m.coap.messages import new_message
from lwm2m.codec import CodecError
from lwm2m.model import ModelError, ObjectModel
from lwm2m.server.config import ServerConfig
from lwm2m.server.events import (
    Deregistered,
    Registered,
    RegistrationRefused,
    SendReceived,
    ServerEvent,
    Updated,
)
from lwm2m.server.ingress_limits import IngestMeter, RefusalLog, refusal_kind, shown
from lwm2m.server.observations import newest_content, timestamped_values
from lwm2m.server.operations import decode_report, is_multi_format
from lwm2m.server.queue import QueuedEntry
from lwm2m.server.registration import (
    DeregisterRequest,
    LifetimeRules,
    Refusal,
    RegisterRequest,
    SendRequest,
    UpdateRequest,
    code_text,
    parse_bare_update,
    parse_request,
)
from lwm2m.server.resources import ResourceServing
from lwm2m.server.security import (
    IdentityRefused,
    audit_line,
    check_certificate,
    check_nosec,
    check_psk,
    describe,
    psk_text,
    stored_identity,
)
from lwm2m.server.state import Channel, Device, store_address
from lwm2m.server.subscription import EventSubscription
from lwm2m.store import (
    EndpointSecurity,
    NewRegistration,
    NotFound,
    Registration,
    RegistrationUpdate,
    ReportedValue,
    Source,
    Store,
    StoreError,
    Tx,
)
from lwm2m.store import Identity as StoredIdentity
from lwm2m.store.registrations import applied
from lwm2m.transport import CertificateIdentity, Peer, PskIdentity

logger = logging.getLogger("lwm2m.server")
audit = logging.getLogger("lwm2m.server.audit")


@dataclass(frozen=True, slots=True)
class _RecordCheck:
    """An identity check that needs only the endpoint's security record: a group commit of
    Registers fetches all their records in one query (see ``_register_rows``)."""

    check: Callable[[EndpointSecurity | None], IdentityRefused | None]


_IdentityRule = IdentityRefused | _RecordCheck | Callable[[Tx], IdentityRefused | None] | None
_RegisterRow = tuple[NewRegistration, _IdentityRule, float]

#: The changes of an empty Update from the registration's own address (the common Update: a
#: lifetime refresh), shared instead of built per Update.
_NO_CHANGES = RegistrationUpdate()
_NOSEC = StoredIdentity.nosec()


def _same_identity(peer: Peer, device: Device) -> bool:
    """Whether ``peer`` speaks for ``device``'s registration with the identity it registered
    with (``stored_identity(peer) == registration.identity``, with the common plain-CoAP case
    decided without building anything: it runs for every Update and De-register)."""
    registered = device.registration.identity
    if peer.identity is None:
        return registered is _NOSEC or registered == _NOSEC
    return stored_identity(peer) == registered


class RegistrationInterface(ResourceServing):
    """Handles requests devices send; the runtime provides the state and helpers below."""

    config: ServerConfig
    store: Store
    model: ObjectModel
    stats: dict[str, int]
    #: Refusal log lines, rate-limited per source and kind; made on first use.
    _refusal_log: RefusalLog | None = None
    #: Per-device ingest budget of Sends and notifications; made on first use.
    _ingest_meter: IngestMeter | None = None
    #: Answers of commit callbacks wait in the cores for one flush (``_hold_answers``).
    _answers_held: bool = False
    _channels: list[Channel]
    _loop: asyncio.AbstractEventLoop
    _wall: Callable[[], float]
    _lifetimes: LifetimeRules
    _by_endpoint: dict[str, Device]
    _by_id: dict[str, Device]
    _by_peer: dict[Peer, Device]
    _queued_in_store: set[str]
    _running: bool
    _subscribers: set[EventSubscription]

    if TYPE_CHECKING:

        def _spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...

        def _index(self, device: Device) -> None: ...

        def _drop(
            self, device: Device, reason: str, *, keep_queue: bool, rows_gone: bool = False
        ) -> None: ...

        def _arm_expiry(self, device: Device) -> None: ...

        def _emit(self, event: ServerEvent) -> None: ...

        def _wake(self, device: Device) -> None: ...

        def _record(self, values: list[ReportedValue]) -> None: ...

    def _on_device_request(self, channel: Channel, event: RequestReceived) -> None:
        message = event.message
        peer = cast(Peer, event.peer)
        known = self._by_peer.get(peer)
        if known is not None:
            known.last_seen = self._loop.time()
        if self._resources is not None and self._serves(message):
            self._answer_resource(channel, event)  # e.g. a firmware image (resources.py)
            return
        parsed = parse_bare_update(message) or parse_request(
            message, allowed_versions=self.config.allowed_versions, lifetimes=self._lifetimes
        )
        if isinstance(parsed, Refusal):
            path = tuple(message.opt.uri_path)
            if path[:1] == ("rd",):
                endpoint = next((q[3:] for q in message.opt.uri_query if q.startswith("ep=")), None)
                self._refused(endpoint, peer, parsed.reason, parsed.code, audited=False)
            self._respond(channel, event, parsed.code, parsed.reason)
        elif isinstance(parsed, RegisterRequest):
            self._register(channel, event, parsed)
        elif isinstance(parsed, UpdateRequest):
            self._update(channel, event, parsed)
        elif isinstance(parsed, DeregisterRequest):
            self._deregister(channel, event, parsed)
        elif isinstance(parsed, SendRequest):
            self._on_send(channel, event, parsed, known)

    def _respond(
        self,
        channel: Channel,
        event: RequestReceived,
        code: Code,
        reason: str = "",
        location: tuple[str, ...] = (),
    ) -> None:
        if event.request.responded:
            return
        response = new_message(code, reason.encode("utf-8") if reason else b"")
        if location:
            response.opt.location_path = location
        channel.core.respond(event.request, response, channel.now())
        if not self._answers_held:  # else _send_held_answers sends it
            channel.flush()

    def _refused(
        self, endpoint: str | None, peer: Peer, reason: str, code: Code, *, audited: bool
    ) -> None:
        self.stats["refused"] += 1
        text = code_text(code)
        # Rate-limited per source and kind, the attacker's text cut (issue 14 item 2).
        refusals = self._refusal_log
        if refusals is None:
            refusals = self._refusal_log = RefusalLog()
        now, source, kind = self._loop.time(), str(peer.address[0]), refusal_kind(text, reason)
        short = endpoint if endpoint is None else endpoint[:64]
        if audited:
            line = audit_line("registration_refused", short, peer, reason[:200], text)
            refusals.log(audit, logging.WARNING, now, source, kind, "%s", line)
        else:
            refusals.log(
                logger, logging.INFO, now, source, kind, "refused %s from %s: %s %s",
                shown(endpoint), peer, text, reason[:200],
            )  # fmt: skip
        self._emit(
            RegistrationRefused(
                endpoint=endpoint,
                reason=reason,
                identity=describe(peer),
                code=text,
                address=str(peer).split(" ")[0],
            )
        )

    # -- security -------------------------------------------------------------------------------
    def _identity_rule(self, endpoint: str, peer: Peer) -> _IdentityRule:
        """The identity check: decided now (a PSK found in the in-memory snapshot), a check
        of the endpoint's security record, or (PSK without a complete snapshot) a function of
        a transaction. A Register runs it inside its own write (one transaction instead of a
        read and a write), where the records of a whole group commit are read in one query;
        Update and De-register run it as a read."""
        identity = peer.identity
        store = self.store
        if isinstance(identity, PskIdentity):
            text = psk_text(identity)
            cache = store.security_cache
            if cache.complete:
                return check_psk(endpoint, text, cache.lookup(text))
            return lambda tx: check_psk(
                endpoint, text, store.security.find_by_psk_identity(tx, text)
            )
        nosec_default = self.config.nosec_by_default

        def check(record: EndpointSecurity | None) -> IdentityRefused | None:
            if isinstance(identity, CertificateIdentity):
                return check_certificate(endpoint, identity, record)
            return check_nosec(endpoint, record, nosec_by_default=nosec_default)

        return _RecordCheck(check)

    async def _check_identity(self, endpoint: str, peer: Peer) -> IdentityRefused | None:
        rule = self._identity_rule(endpoint, peer)
        if rule is None or isinstance(rule, IdentityRefused):
            return rule
        if isinstance(rule, _RecordCheck):
            store = self.store
            return await store.read(lambda tx: rule.check(store.security.get(tx, endpoint)))
        return await self.store.read(rule)

    def _register_rows(
        self, tx: Tx, rows: list[_RegisterRow]
    ) -> list[tuple[Registration, Registration | None] | IdentityRefused]:
        """The group commit's Registers in one go: their security records in one query, then
        :meth:`RegistrationRepository.register_many` for those the check let through."""
        store = self.store
        wanted = [new.endpoint for new, rule, _ in rows if isinstance(rule, _RecordCheck)]
        records = store.security.get_many(tx, wanted) if wanted else {}
        results: list[Any] = []
        accepted: list[tuple[NewRegistration, float]] = []
        slots: list[int] = []
        for new, rule, now in rows:
            if isinstance(rule, _RecordCheck):
                refused = rule.check(records.get(new.endpoint))
            elif isinstance(rule, IdentityRefused):
                refused = rule
            elif rule is not None:
                refused = rule(tx)
            else:
                refused = None
            if refused is not None:
                results.append(refused)  # nothing written for it
                continue
            slots.append(len(results))
            results.append(refused)  # placeholder, filled below
            accepted.append((new, now))
        for slot, outcome in zip(
            slots, store.registrations.register_many(tx, accepted), strict=True
        ):
            results[slot] = outcome
        return results

    async def _identity_ok(
        self, channel: Channel, event: RequestReceived, endpoint: str, peer: Peer
    ) -> bool:
        try:
            refused = await self._check_identity(endpoint, peer)
        except StoreError as exc:
            self._respond(channel, event, Code.SERVICE_UNAVAILABLE, f"store unavailable: {exc}")
            return False
        if refused is None:
            return True
        self._refuse_identity(channel, event, endpoint, peer, refused)
        return False

    def _refuse_identity(
        self,
        channel: Channel,
        event: RequestReceived,
        endpoint: str,
        peer: Peer,
        refused: IdentityRefused,
    ) -> None:
        self._refused(endpoint, peer, refused.reason, Code.FORBIDDEN, audited=True)
        self._respond(channel, event, Code.FORBIDDEN, refused.reason)

    def _after_commit(self, then: Callable[[bool, Any], None]) -> Callable[[bool, Any], None]:
        """``then`` wrapped to run once the store's group commit holding the write resolved:
        ``then(True, result)`` or ``then(False, error)`` (``GroupCommitBatcher.submit_row_then``).

        Why a callback and not a task (or a future) per request: a task (creation, first step,
        wake-up) was a tenth of an Update's server CPU, and a future with its done-callback a
        few µs more (issue 13). The order is the same: commits resolve in submission order and
        their callbacks run in that order. A server that stopped meanwhile answers nothing (as
        the cancelled task did)."""

        def done(ok: bool, value: Any) -> None:
            if not self._running:
                return
            if not self._answers_held:
                self._hold_answers()
            try:
                then(ok, value)
            except Exception:
                logger.exception("server task failed")

        return done

    def _hold_answers(self) -> None:
        """Queue the answers of this group commit's callbacks in the CoAP cores and send them
        together right after (one flush per socket on the loop's next turn), rather than one
        flush per answer: a flush runs the shell's whole pass (events, datagrams, timer), and
        the ~50 callbacks of a commit run back to back in one loop callback (issue 13)."""
        self._answers_held = True
        self._loop.call_soon(self._send_held_answers)

    def _send_held_answers(self) -> None:
        if not self._answers_held:  # sent already (the server stopping)
            return
        self._answers_held = False
        for channel in self._channels:
            channel.flush()

    def _register(self, channel: Channel, event: RequestReceived, request: RegisterRequest) -> None:
        peer = cast(Peer, event.peer)
        rule = self._identity_rule(request.endpoint, peer)
        if isinstance(rule, IdentityRefused):
            self._refuse_identity(channel, event, request.endpoint, peer, rule)
            return
        new = NewRegistration(
            endpoint=request.endpoint,
            lifetime=request.lifetime,
            address=store_address(peer),
            identity=stored_identity(peer),
            lwm2m_version=request.lwm2m_version,
            binding=request.binding,
            queue_mode=request.queue_mode,
            sms_number=request.sms_number,
            root_path=request.objects.root,
            object_links=request.object_links,
            supported_formats=request.objects.content_formats,
        )
        row: _RegisterRow = (new, rule, self._wall())
        try:
            self.store.batcher.submit_row_then(
                self._register_rows,
                row,
                self._after_commit(
                    lambda ok, value: self._registered(channel, event, request, peer, ok, value)
                ),
            )
        except StoreError as exc:
            self._register_failed(channel, event, request, exc)

    def _register_failed(
        self, channel: Channel, event: RequestReceived, request: RegisterRequest, exc: Exception
    ) -> None:
        logger.warning("Register of %s not stored: %s", request.endpoint, exc)
        self._respond(channel, event, Code.SERVICE_UNAVAILABLE, "store unavailable; retry")

    def _registered(
        self,
        channel: Channel,
        event: RequestReceived,
        request: RegisterRequest,
        peer: Peer,
        ok: bool,
        value: Any,
    ) -> None:
        """The Register's row committed (or failed): index the device and answer."""
        if not ok:
            if not isinstance(value, StoreError):
                raise value
            self._register_failed(channel, event, request, value)
            return
        outcome: tuple[Registration, Registration | None] | IdentityRefused = value
        if isinstance(outcome, IdentityRefused):
            self._refuse_identity(channel, event, request.endpoint, peer, outcome)
            return
        reg, replaced = outcome
        old = self._by_endpoint.get(request.endpoint)
        queue: list[QueuedEntry] = []
        check_store = False
        if old is not None:
            queue, old.queue = old.queue, []
            check_store = old.check_store_queue
            self._drop(old, "replaced by a new Register", keep_queue=True, rows_gone=True)
        device = Device(reg, channel, peer, self._loop.time())
        device.queue = queue
        # The store's queue is read only when it may hold rows nobody in memory holds: no
        # read per Register (it was a reader-thread round trip each, ~1 ms of CPU in a storm).
        queued_in_store = self._queued_in_store
        if request.endpoint in queued_in_store:
            queued_in_store.discard(request.endpoint)
            check_store = True
        device.check_store_queue = check_store or (old is None and replaced is not None)
        self._index(device)
        self._arm_expiry(device)
        self.stats["registrations"] += 1
        self._respond(channel, event, Code.CREATED, location=("rd", reg.id))
        self._emit(Registered(reg.endpoint, reg, replaced))
        self._wake(device)

    def _update(self, channel: Channel, event: RequestReceived, request: UpdateRequest) -> None:
        peer = cast(Peer, event.peer)
        device = self._by_id.get(request.registration_id)
        if device is None:
            self._respond(channel, event, Code.NOT_FOUND, "unknown registration; register again")
            return
        if not _same_identity(peer, device):
            self._spawn(self._update_checked(channel, event, request, device, peer))
            return
        self._submit_update(channel, event, request, device, peer)

    async def _update_checked(
        self,
        channel: Channel,
        event: RequestReceived,
        request: UpdateRequest,
        device: Device,
        peer: Peer,
    ) -> None:
        """An Update from another identity than the registration's: check it first (a read)."""
        if await self._identity_ok(channel, event, device.endpoint, peer):
            self._submit_update(channel, event, request, device, peer)

    def _submit_update(
        self,
        channel: Channel,
        event: RequestReceived,
        request: UpdateRequest,
        device: Device,
        peer: Peer,
    ) -> None:
        changes = (
            _NO_CHANGES
            if request.is_empty
            and request.binding_queue is None
            and (peer is device.peer or peer == device.peer)  # the transport reuses its Peers
            else self._changes(request, device, peer)
        )
        # Every Update, the empty one too, is committed before its 2.04 (group-committed with
        # the other Updates of the batch, one executemany, no read): docs/BENCHMARKS.md,
        # issue 13. The store applied ``changes`` to its row; the same goes to our copy below.
        now = self._wall()
        try:
            self.store.batcher.submit_row_then(
                self.store.registrations.apply_updates,
                (request.registration_id, changes, now),
                self._after_commit(
                    lambda ok, value: self._updated(
                        channel, event, request, device, peer, changes, now, ok, value
                    )
                ),
            )
        except StoreError as exc:
            self._update_failed(channel, event, request, device, exc)

    @staticmethod
    def _changes(request: UpdateRequest, device: Device, peer: Peer) -> RegistrationUpdate:
        return RegistrationUpdate(
            lifetime=request.lifetime,
            binding=request.binding,
            queue_mode=request.queue_mode(device.registration.lwm2m_version),
            sms_number=request.sms_number,
            object_links=request.object_links,
            supported_formats=(
                request.objects.content_formats
                if request.objects is not None and request.objects.content_formats
                else None
            ),
            address=store_address(peer) if peer != device.peer else None,
        )

    def _update_failed(
        self,
        channel: Channel,
        event: RequestReceived,
        request: UpdateRequest,
        device: Device,
        exc: BaseException,
    ) -> None:
        if isinstance(exc, NotFound):
            if self._by_id.get(request.registration_id) is device:
                self._drop(device, "expired", keep_queue=False)
            self._respond(channel, event, Code.NOT_FOUND, str(exc))
            return
        if not isinstance(exc, StoreError):
            raise exc
        logger.warning("Update of %s not stored: %s", device.endpoint, exc)
        self._respond(channel, event, Code.SERVICE_UNAVAILABLE, "store unavailable; retry")

    def _updated(
        self,
        channel: Channel,
        event: RequestReceived,
        request: UpdateRequest,
        device: Device,
        peer: Peer,
        changes: RegistrationUpdate,
        now: float,
        ok: bool,
        value: Any,
    ) -> None:
        """The Update committed (or failed): apply it to the in-memory copy and answer."""
        if not ok:
            self._update_failed(channel, event, request, device, value)
            return
        endpoint = device.endpoint
        if self._by_id.get(request.registration_id) is not device:
            self._respond(channel, event, Code.NOT_FOUND, "registration replaced; register again")
            return
        # Commits resolve in submission order, so this copy has every earlier Update applied,
        # as the stored row had when this one ran.
        previous = device.registration
        reg = applied(previous, changes, now)
        device.registration = reg
        if peer != device.peer:  # NAT rebinding, a new DTLS session, or the first contact
            if device.peer is not None and self._by_peer.get(device.peer) is device:
                del self._by_peer[device.peer]
            device.peer = peer
            self._by_peer[peer] = device
        device.channel = channel
        device.last_seen = self._loop.time()
        self._arm_expiry(device)
        self.stats["updates"] += 1
        self._respond(channel, event, Code.CHANGED)
        if self._subscribers:  # no event object nobody reads
            self._emit(Updated(endpoint, reg, previous))
        self._wake(device)

    def _deregister(
        self, channel: Channel, event: RequestReceived, request: DeregisterRequest
    ) -> None:
        peer = cast(Peer, event.peer)
        device = self._by_id.get(request.registration_id)
        if device is None:
            self._respond(channel, event, Code.NOT_FOUND, "unknown registration")
            return
        if not _same_identity(peer, device):
            self._spawn(self._deregister_checked(channel, event, request, device, peer))
            return
        self._submit_deregister(channel, event, request, device)

    async def _deregister_checked(
        self,
        channel: Channel,
        event: RequestReceived,
        request: DeregisterRequest,
        device: Device,
        peer: Peer,
    ) -> None:
        """A De-register from another identity than the registration's: check it first."""
        if await self._identity_ok(channel, event, device.endpoint, peer):
            self._submit_deregister(channel, event, request, device)

    def _submit_deregister(
        self, channel: Channel, event: RequestReceived, request: DeregisterRequest, device: Device
    ) -> None:
        try:
            self.store.batcher.submit_row_then(
                self._remove_rows,
                request.registration_id,
                self._after_commit(
                    lambda ok, value: self._deregistered(channel, event, request, device, ok, value)
                ),
            )
        except StoreError as exc:
            self._deregister_failed(channel, event, device, exc)

    def _deregister_failed(
        self, channel: Channel, event: RequestReceived, device: Device, exc: BaseException
    ) -> None:
        if not isinstance(exc, StoreError):
            raise exc
        logger.warning("De-register of %s not stored: %s", device.endpoint, exc)
        self._respond(channel, event, Code.SERVICE_UNAVAILABLE, "store unavailable; retry")

    def _deregistered(
        self,
        channel: Channel,
        event: RequestReceived,
        request: DeregisterRequest,
        device: Device,
        ok: bool,
        value: Any,
    ) -> None:
        """The De-register committed (or failed): forget the device and answer."""
        if not ok:
            self._deregister_failed(channel, event, device, value)
            return
        if self._by_id.get(request.registration_id) is device:
            self._drop(device, "de-registered", keep_queue=False, rows_gone=True)
        self._respond(channel, event, Code.DELETED)
        if self._subscribers:  # no event object nobody reads
            self._emit(Deregistered(device.endpoint, device.registration))

    def _remove_rows(self, tx: Tx, registration_ids: list[str]) -> list[None]:
        """The group commit's De-registers in two statements (one result per row)."""
        self.store.registrations.remove_many(tx, registration_ids)
        return [None] * len(registration_ids)

    def _ingest_wait(self, endpoint: str, size: int) -> float | None:
        """None if ``endpoint`` may have another Send/notification of ``size`` bytes stored
        now, else the seconds until it may (``ServerConfig.ingress.device_ingest``)."""
        meter = self._ingest_meter
        if meter is None:
            meter = self._ingest_meter = IngestMeter(self.config.ingress.device_ingest)
        return meter.wait(endpoint, self._loop.time(), size)

    # -- Send -----------------------------------------------------------------------------------
    def _on_send(
        self,
        channel: Channel,
        event: RequestReceived,
        request: SendRequest,
        device: Device | None,
    ) -> None:
        if device is None:
            self._respond(
                channel, event, Code.NOT_FOUND, "no registration from this address; register"
            )
            return
        reg = device.registration
        wait = self._ingest_wait(reg.endpoint, len(request.payload))
        if wait is not None:  # issue 14 item 3: RFC 8516, retry after Max-Age
            self.stats["throttled_sends"] = self.stats.get("throttled_sends", 0) + 1
            throttled = Message(
                code=Code.TOO_MANY_REQUESTS,
                payload=b"this device's ingest budget is spent; retry after Max-Age seconds",
            )
            throttled.opt.max_age = max(1, math.ceil(wait))
            channel.core.respond(event.request, throttled, channel.now())
            channel.flush()
            return
        if reg.lwm2m_version == "1.0":
            self._respond(channel, event, Code.METHOD_NOT_ALLOWED, "Send needs LwM2M 1.1 or later")
            return
        fmt = request.content_format
        if fmt is None or not is_multi_format(fmt):
            self._respond(
                channel,
                event,
                Code.UNSUPPORTED_CONTENT_FORMAT,
                "Send needs SenML JSON/CBOR or LwM2M JSON/CBOR",
            )
            return
        now = self._wall()
        try:
            groups = decode_report(fmt, request.payload, self.model, now)
        except (CodecError, ModelError) as exc:
            self._respond(channel, event, Code.BAD_REQUEST, f"undecodable Send: {exc}")
            return
        self.stats["sends"] += 1
        # The 2.04 says "stored": a device deletes the readings it buffered once they are
        # acknowledged, so the answer waits for the COMMIT holding them (a kill -9 between an
        # early answer and the commit lost them: tests/integration/test_send_durability.py).
        values = timestamped_values(reg.endpoint, groups, now, Source.SEND)
        then = self._after_commit(lambda ok, error: self._send_stored(channel, event, ok, error))
        try:
            self.store.record_then(values, then)
        except StoreError as exc:
            self._send_stored(channel, event, False, exc)
            return
        self._emit(SendReceived(reg.endpoint, newest_content(groups), tuple(groups)))
        self._wake(device)

    def _send_stored(
        self, channel: Channel, event: RequestReceived, ok: bool, error: object
    ) -> None:
        """Answer a Send once its readings are committed (or could not be)."""
        if ok:
            self._respond(channel, event, Code.CHANGED)
            return
        logger.warning("Send not stored: %s", error)
        self._respond(channel, event, Code.SERVICE_UNAVAILABLE, "store unavailable; retry")


__all__ = ["RegistrationInterface"]
