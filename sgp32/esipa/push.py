"""eIM-initiated ESipa over CoAP (SGP.32 ESipa.TransferEimPackage): push a queued package to
an IPA that declared it takes one, instead of waiting for its next poll.

Who gets pushes: an eUICC linked to a device registered with the DM server -- over plain CoAP
or over CoAPs (DTLS) -- without object 3443 (those get theirs through /3443/0/2), whose IPA
declared ``ipaInjectCoaps`` in ``IpaCapabilities.ipaSupportedProtocols`` (bit 3) in the last
IpaEuiccData it sent. Everyone else keeps polling -- nothing changes for them. How the push
travels: ``POST /gsma/rsp2/asn1`` with the TransferEimPackageRequest as the body (Content-Format
42, as for the pull binding), sent by the DM server itself in the device's own session
(:meth:`lwm2m.server.LwM2MServer.coap_request`): from the server's CoAP socket to the address
the device registered (or last updated) from, or inside the device's DTLS session -- the IPA
shares the device's CoAP stack, as on the CoAP pull binding. So the push crosses the device's
NAT binding (the same 5-tuple its Updates keep open) and works for CoAPs devices.

What comes back (TransferEimPackageResponse):

* ``eimPackageReceived``: the IPA runs the package; the result comes with ProvideEimPackageResult
  as for a polled one (an enable's result has to travel over the new profile anyway).
* ``euiccPackageResult`` / ``ePRAndNotifications`` / ``ipaEuiccDataResponse``: the result at
  once. It carries no EID, but the push knows whom it asked: it becomes the ProvideEimPackageResult
  of that EID and goes through the same handler as every ESipa message (signature, match,
  audit, the esim dimension). The eIM's acknowledgement (eimAcknowledgements with the result's
  seqNumber) is pushed back as a TransferEimPackageRequest, so the IPA can forget the result;
  if that push is lost the IPA delivers the result again by ProvideEimPackageResult and the
  eIM records a duplicate. Then the next queued package is pushed the same way.
* ``eimPackageError``: the IPA could not take the package: recorded like the IPA's
  eimPackageResultResponseError for the pushed package's eimTransactionId (the package fails).
* no answer, an error code, garbage: logged; the package stays open and the IPA's next poll
  gets it (the push only marked it delivered).

Pushes start when something is queued for the eUICC (``EsimComponent.on_queued``), when its
device registers (`on_registered`) and when a queue-mode device wakes up or a device's
address changes (`on_updated`); a queue-mode device that is asleep is not pushed to. One push
at a time per EID. A device whose DTLS session the server lost (a restart) cannot be reached
until it reconnects: that push counts as no answer, and the IPA's next poll gets the package.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiocoap.numbers.codes import Code

from lwm2m.codec.link import LinkFormatError, parse_links
from lwm2m.server import LwM2MServer, Registered, Response, ServerError, Updated
from sgp32.asn1 import decode, decode_from_eim, decode_from_ipa, encode_to_eim, encode_to_ipa
from sgp32.eim.core import Exchange
from sgp32.eim.sql import EimStore
from sgp32.errors import Sgp32Error
from sgp32.esipa.coap import ESIPA_SEGMENTS
from sgp32.identifiers import eid_to_bytes

log = logging.getLogger("fleetloop.sgp32.esipa.push")

IPA_INJECT_COAPS = 3
"""IpaCapabilities.ipaSupportedProtocols bit: the IPA takes eIM-initiated ESipa over CoAP(s)."""
CONTENT_FORMAT = 42
ESIM_OBJECT = 3443
MAX_PUSHES = 16
"""Packages pushed back to back to one EID before leaving the rest to its polls."""
IN_FLIGHT = 64
"""Devices pushed to at the same time (each waits up to `timeout` for its answer)."""

Handler = Callable[[bytes, float], Awaitable[Exchange]]
_RESULTS = frozenset({"euiccPackageResult", "ePRAndNotifications", "ipaEuiccDataResponse"})


class Transmit(Protocol):
    """Sends one push to a registered endpoint and returns the IPA's response (None: no
    answer in time, or no way to reach the device now)."""

    async def post(self, endpoint: str, payload: bytes, timeout: float) -> Response | None: ...


class ServerTransmit:
    """Pushes through the DM server, in the device's own session (plain CoAP from the
    server's socket, or its DTLS session): :meth:`LwM2MServer.coap_request`."""

    def __init__(self, server: LwM2MServer) -> None:
        self.server = server

    async def post(self, endpoint: str, payload: bytes, timeout: float) -> Response | None:
        try:
            return await self.server.coap_request(
                endpoint,
                Code.POST,
                ESIPA_SEGMENTS,
                payload,
                content_format=CONTENT_FORMAT,
                timeout=timeout,
            )
        except ServerError as exc:  # RequestTimeout, NoResponse, UnknownEndpoint (gone)
            log.info("CoAP push not delivered", extra={"endpoint": endpoint, "reason": str(exc)})
            return None


def injects_coap(ipa_data_der: bytes | None) -> bool:
    """Whether an IpaEuiccData says the IPA takes pushes over CoAP (ipaInjectCoaps)."""
    if ipa_data_der is None:
        return False
    try:
        data = decode("IpaEuiccData", ipa_data_der)
    except Sgp32Error:
        return False
    protocols = data.get("ipaCapabilities", {}).get("ipaSupportedProtocols")
    if protocols is None:
        return False
    bits, length = protocols
    return length > IPA_INJECT_COAPS and bool(bits[0] & (0x80 >> IPA_INJECT_COAPS))


@dataclass
class PushStats:
    pushed: int = 0
    received: int = 0
    results: int = 0
    refused: int = 0
    unanswered: int = 0


class CoapPush:
    """The eIM's CoAP push for the devices of one DM server (module docstring). `queued` is
    the listener for ``EsimComponent.on_queued``; `stop` for ``on_stop``."""

    def __init__(
        self,
        eims: EimStore,
        handle: Handler,
        server: LwM2MServer,
        transmit: Transmit | None = None,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        self.eims = eims
        self.handle = handle
        self.server = server
        self.transmit: Transmit = transmit if transmit is not None else ServerTransmit(server)
        self.clock = clock
        self.timeout = timeout
        self.stats = PushStats()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)

    def queued(self, eids: list[str]) -> None:
        self._spawn(self.push(eids))

    async def on_registered(self, event: Registered) -> None:
        """A device (re-)registered: what is open for its eUICC is pushed now, not on its
        next poll (the registration opens the session the push travels in)."""
        if _has_object_3443(event.registration.object_links):
            return  # never pushed to here: spare the registration a store read
        self._spawn(self._push_endpoint(event.endpoint))  # the lifecycle's handlers go on

    async def on_updated(self, event: Updated) -> None:
        """A queue-mode device woke up (its Update), or a device's address changed (NAT
        rebinding): what was queued while it could not be reached is pushed now."""
        registration = event.registration
        moved = registration.address != event.previous.address
        if not (registration.queue_mode or moved):
            return  # an always-on device at the same address got its pushes already
        if _has_object_3443(registration.object_links):
            return
        self._spawn(self._push_endpoint(event.endpoint))

    async def _push_endpoint(self, endpoint: str) -> None:
        eims = self.eims
        eid = await eims.store.read(lambda tx: eims.ledger(tx).eid_of(endpoint))
        if eid is not None:
            await self.push([eid])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        close = getattr(self.transmit, "close", None)
        if close is not None:
            close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def targets(self, eids: Sequence[str]) -> dict[str, str]:
        """EID -> the endpoint to push to, for the EIDs whose IPA takes CoAP pushes and whose
        device is registered (CoAP or CoAPs) and awake now."""
        eims = self.eims

        def read(tx: Any) -> dict[str, tuple[str, bytes | None]]:
            ledger = eims.ledger(tx)
            return {
                eid: (endpoint, ledger.ipa_data(eid))
                for eid, endpoint in ledger.endpoints(eids).items()
            }

        found: dict[str, str] = {}
        for eid, (endpoint, ipa_data) in (await eims.store.read(read)).items():
            registration = self.server.registration(endpoint)
            if registration is None or not injects_coap(ipa_data):
                continue
            if _has_object_3443(registration.object_links):
                continue  # the object 3443 binding pushes to it (/3443/0/2)
            if registration.queue_mode and not self._awake(endpoint):
                continue  # asleep: pushed when it wakes up (its Update, `on_updated`)
            found[eid] = endpoint
        return found

    def _awake(self, endpoint: str) -> bool:
        try:
            return self.server.is_awake(endpoint)
        except Exception:  # gone since the registration was read
            return False

    async def push(self, eids: Sequence[str]) -> None:
        """Push what is queued for `eids` to those that take pushes (others: nothing), up to
        `IN_FLIGHT` devices at a time: a device that does not answer holds up only its own."""

        async def one(eid: str, endpoint: str) -> None:
            async with self._in_flight:
                try:
                    await self._push(eid, endpoint)
                except Exception:  # one device's trouble must not stop the others' pushes
                    log.exception("CoAP push failed", extra={"eid": eid})

        targets = await self.targets(eids)
        await asyncio.gather(*(one(eid, endpoint) for eid, endpoint in targets.items()))

    async def _push(self, eid: str, endpoint: str) -> None:
        lock = self._locks.setdefault(eid, asyncio.Lock())
        async with lock:
            for _ in range(MAX_PUSHES):
                request = await self.eims.push_next(eid, self.clock())
                if request is None:
                    return
                self.stats.pushed += 1
                answer = await self.transmit.post(endpoint, request, self.timeout)
                if answer is None or answer.code != Code.CHANGED:
                    self.stats.unanswered += 1
                    code = "no answer" if answer is None else answer.code_text
                    log.info("CoAP push not taken; the IPA polls", extra={"eid": eid, "code": code})
                    return
                if not await self._answered(eid, endpoint, request, answer.payload):
                    return

    async def _answered(self, eid: str, endpoint: str, request: bytes, data: bytes) -> bool:
        """Act on the IPA's TransferEimPackageResponse; True: push the next package now."""
        try:
            message = decode_from_ipa(data)
        except Sgp32Error as exc:
            log.warning("CoAP push: the IPA's answer does not decode", extra={"reason": str(exc)})
            self.stats.refused += 1
            return False
        if message.name != "transferEimPackageResponse":
            self.stats.refused += 1
            return False
        kind, value = message.body
        if kind == "eimPackageReceived":
            self.stats.received += 1
            return False
        eid_value = eid_to_bytes(eid)
        if kind == "eimPackageError":
            error: dict[str, Any] = {"eimPackageResultErrorCode": value}
            tid = _transaction_id(request)
            if tid is not None:
                error["eimTransactionId"] = tid
            result: tuple[str, Any] = ("eimPackageResultResponseError", error)
        elif kind in _RESULTS:
            result = (kind, value)
        else:  # pragma: no cover - the CHOICE has no other alternative
            return False
        provided = encode_to_eim(
            "provideEimPackageResult", {"eidValue": eid_value, "eimPackageResult": result}
        )
        exchange = await self.handle(provided, self.clock())
        self.stats.results += 1
        reply = decode_from_eim(exchange.reply) if exchange.reply else None
        if reply is not None and reply.body[0] == "eimAcknowledgements" and reply.body[1]:
            ack = encode_to_ipa("transferEimPackageRequest", reply.body)
            answer = await self.transmit.post(endpoint, ack, self.timeout)
            if answer is None or answer.code != Code.CHANGED:
                return False  # the IPA sends the result again; the eIM acknowledges then
        return True


def _has_object_3443(links: str) -> bool:
    try:
        parsed = parse_links(links)
    except LinkFormatError:  # the DM server accepted it, so this does not happen
        return False
    return any(link.path is not None and link.path.object_id == ESIM_OBJECT for link in parsed)


def _transaction_id(request: bytes) -> bytes | None:
    """The eimTransactionId of a TransferEimPackageRequest the eIM made."""
    kind, value = decode_from_eim(request).body
    if kind == "euiccPackageRequest":
        found: bytes | None = value["euiccPackageSigned"].get("eimTransactionId")
        return found
    if kind in ("ipaEuiccDataRequest", "profileDownloadTriggerRequest"):
        other: bytes | None = value.get("eimTransactionId")
        return other
    return None
