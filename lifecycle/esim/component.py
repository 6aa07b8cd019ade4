"""The esim dimension, applied through the eIM: desired ``{"iccid": ...}`` -> an enable PSMO
with rollbackFlag on the device's eUICC -> verified by the eUICC's signed result.

The LwM2M reconciler cannot apply it (the eUICC is reached over ESipa, not over the device's
CoAP session), so :class:`EsimComponent` registers as the reconciler's *external applier* for
:attr:`~lifecycle.state.dimensions.Dimension.ESIM`: it is told when desired values change and
whenever the eIM accepts a result or a notification from an eUICC, and it then judges the
device (:func:`judge`, pure) and records the verdict through the state observer, so the status
hooks -- and the campaign engine behind them -- see ``applied`` / ``failed`` like for any
other dimension:

* **applied**: the eIM's profile table shows the desired ICCID enabled *and confirmed* -- the
  signed result of the enable reached the eIM (which, with rollbackFlag, it can only do over the
  new profile's connectivity);
* **failed**: the signed result carries ``rollbackResult`` (the IPA could not reach the eIM
  over the new profile in time and the eUICC fell back to the previous one), an enable result
  other than ok, or a signed package error; the reason names which;
* otherwise pending: the package waits in the EID's queue (the IPA polls for it).

Each desired generation gets at most one package, tagged with its generation in the package's
actor (``state:esim:g<N>``): a restart finds it again instead of queueing another, and a
rolled-back generation is not retried until an operator (or a campaign's revert) sets a new
value. Work is batched: one read transaction per batch of devices, one write for the packages.

The component also applies :attr:`~lifecycle.state.dimensions.Dimension.ESIM_DOWNLOAD` -- the
first phase of a carrier switch (:func:`judge_download`): the profile is *present* on the
eUICC (listProfileInfo where the eIM knows no profile, then a ProfileDownloadTrigger relayed
to the SM-DP+), **applied** once the eUICC's signed installation result (or its signed
profile list) shows the ICCID; nothing is enabled by it. Its packages carry the actor
``state:esim_download:g<N>``.

**A fallback profile is always kept.** Where the eIM knows the eUICC's profiles and none
carries the fallback attribute, the enable's package sets it on the profile enabled now first
(setFallbackAttribute, then enable with rollbackFlag, in one signed package): whatever the new
profile does, the eUICC keeps a profile to fall back to. The download phase of a campaign
always lists the profiles first, so a campaign's enable always knows them; a bare ``esim``
desired value on an eUICC the eIM knows nothing of keeps the one-package listProfileInfo +
enable (the rollbackFlag still returns it to the profile it ran). Nothing the state layer or
a campaign sends disables or deletes a profile, and :func:`check_fallback` refuses an
operator's disable/delete of the fallback profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from lifecycle.esim.carrier import (
    SMCC,
    SMNC,
    CarrierVerdict,
    expected_plmns,
    has_connectivity_object,
    judge_carrier,
    not_checked,
    served_plmn,
)
from lifecycle.state.component import StateComponent
from lifecycle.state.dimensions import (
    Desired,
    Dimension,
    Policy,
    Reported,
    Status,
    satisfies,
    status,
)
from lifecycle.state.tables import DESIRED
from lwm2m.codec.errors import CodecError
from lwm2m.model import Path
from lwm2m.server import LwM2MServer
from lwm2m.server.errors import ServerError
from lwm2m.store import Tx
from sgp32.asn1 import decode, decode_from_ipa, encode, encode_to_ipa
from sgp32.eim import Exchange, NotificationHandled, PackageRecord, PackageState, ResultAccepted
from sgp32.eim.core import DOWNLOAD_TRIGGER
from sgp32.eim.model import ProfileRecord, ProfileState
from sgp32.eim.sql import EimStore
from sgp32.es9plus import EuiccContext
from sgp32.esipa.relay import RELAYED, Es9Relay, TriggerOrigin
from sgp32.packages import Delete, Disable, Enable, ListProfileInfo, Psmo, SetFallbackAttribute

log = logging.getLogger("fleetloop.esim")

ACTOR_PREFIX = "state:esim:g"
"""Actor of the packages the state layer queues: ``state:esim:g<generation>``
(``state:esim_download:g<generation>`` for the download dimension)."""

#: The dimensions this component applies (it is the reconciler's external applier of each).
APPLIED = (Dimension.ESIM, Dimension.ESIM_DOWNLOAD)

ENABLE_RESULT = {
    0: "ok",
    1: "iccidOrAidNotFound",
    2: "profileNotInDisabledState",
    3: "disallowedByPolicy",
    5: "catBusy",
    6: "undefinedError",
    7: "commandError",
}
PACKAGE_ERROR = {
    3: "invalidEid",
    4: "replayError",
    6: "counterValueOutOfRange",
    127: "undefinedError",
}
BATCH = 200
INVALID_EIM_TRANSACTION_ID = 52


def package_actor(generation: int, dimension: Dimension = Dimension.ESIM) -> str:
    if dimension is Dimension.ESIM_DOWNLOAD:
        return f"state:esim_download:g{generation}"
    return f"{ACTOR_PREFIX}{generation}"


class FallbackError(ValueError):
    """An operation would leave an eUICC without its fallback profile; the message names the
    device and the fix (the API answers 409)."""


def check_fallback(
    device: str, profiles: Sequence[ProfileRecord], operations: Sequence[Psmo]
) -> None:
    """Refuse a disable or delete of the profile that carries the fallback attribute: the
    fallback is what an enable with rollbackFlag, or the eUICC on its own, returns to when a
    profile loses connectivity -- without it a bad profile strands the device for good."""
    fallback = {p.iccid for p in profiles if p.fallback}
    for op in operations:
        if isinstance(op, Disable | Delete) and op.iccid in fallback:
            verb = "delete" if isinstance(op, Delete) else "disable"
            raise FallbackError(
                f"{device}: profile {op.iccid} is the eUICC's fallback profile; refusing to "
                f"{verb} it. Set the fallback attribute on another profile first "
                f"(`fleetloop esim fallback {device} ICCID`), then {verb} this one"
            )


@dataclass(frozen=True)
class Verdict:
    """What to do for one device: the reported value to record (None: nothing known), the
    failure reason of the current generation (None: not failed), whether to queue the enable
    now, and a one-line note for logs and the audit."""

    reported: dict[str, Any] | None
    failure: str | None = None
    queue: bool = False
    download: str | None = None
    """Queue a ProfileDownloadTrigger with this activation code (the profile is missing)."""
    list_profiles: bool = False
    """Queue listProfileInfo alone (before deciding whether a download is needed)."""
    note: str = ""
    fallback: str | None = None
    """With ``queue``: set the fallback attribute on this (the enabled) profile first -- no
    profile carries it yet."""


def smdp_notification(name: str, body: Any) -> str | None:
    """The SM-DP+ address of a HandleNotification carrying a ProfileInstallationResult (the
    eUICC addresses those to the SM-DP+ of the download), else None."""
    if name != "handleNotificationEsipa" or body[0] != "pendingNotification":
        return None
    kind, value = body[1]
    if kind != "profileInstallationResult":
        return None
    address = value["profileInstallationResultData"]["notificationMetadata"]["notificationAddress"]
    return str(address)


def reported_download(profiles: Sequence[ProfileRecord]) -> dict[str, Any] | None:
    """The esim_download reported value: the ICCIDs present on the eUICC as the eIM knows
    them (None: it knows no profile yet)."""
    if not profiles:
        return None
    return {"iccids": sorted({p.iccid for p in profiles})}


def judge_download(
    want: Desired | None,
    current: Reported | None,
    eid: str | None,
    profiles: Sequence[ProfileRecord],
    packages: Sequence[PackageRecord],
) -> Verdict:
    """The verdict of the download phase for one device (module docstring): applied once
    the profile is present; otherwise the profile list, then the download trigger."""
    reported = reported_download(profiles)
    if want is None or want.policy is not Policy.ENFORCE:
        return Verdict(reported)
    if reported is not None and satisfies(Dimension.ESIM_DOWNLOAD, want.value, reported):
        return Verdict(reported, note=f"profile {want.value['iccid']} is on the eUICC")
    if current is not None and current.failed_generation == want.generation:
        return Verdict(reported, note="failed earlier: waits for a new desired value")
    if eid is None:
        return Verdict(reported, failure=NO_EUICC)
    code = str(want.value["activation_code"])
    return _download_phase(reported, profiles, packages, want, code)


NO_EUICC = (
    "no eUICC is linked to this device: import its eUICC with the endpoint "
    "(`fleetloop esim import ... --endpoint EP`)"
)


def reported_of(profiles: Sequence[ProfileRecord]) -> dict[str, Any] | None:
    """The esim reported value from the eIM's profile table: the enabled profile."""
    for p in profiles:
        if p.state in (ProfileState.ENABLED, ProfileState.PENDING):
            value: dict[str, Any] = {"iccid": p.iccid, "state": p.state.value}
            if p.carrier:
                value["carrier"] = p.carrier
            if p.fallback:
                value["fallback"] = True
            return value
    return None


def judge(
    want: Desired | None,
    current: Reported | None,
    eid: str | None,
    profiles: Sequence[ProfileRecord],
    packages: Sequence[PackageRecord],
) -> Verdict:
    """The verdict for one device (module docstring). ``packages``: the EID's packages."""
    reported = reported_of(profiles)
    if want is None or want.policy is not Policy.ENFORCE:
        return Verdict(reported)
    if reported is not None and satisfies(Dimension.ESIM, want.value, reported):
        return Verdict(reported, note="enabled and confirmed by the eUICC's signed result")
    if current is not None and current.failed_generation == want.generation:
        return Verdict(reported, note="failed earlier: waits for a new desired value")
    if eid is None:
        return Verdict(reported, failure=NO_EUICC)
    iccid = want.value["iccid"]
    tagged = [
        p
        for p in packages
        if p.actor == package_actor(want.generation)
        and any(op.get("op") == "enable" and op.get("iccid") == iccid for op in p.operations)
    ]
    if not tagged:
        code = want.value.get("activation_code")
        if code is not None and iccid not in {p.iccid for p in profiles}:
            return _download_phase(reported, profiles, packages, want, str(code))
        fallback = None
        if not any(p.fallback for p in profiles):
            enabled = [p.iccid for p in profiles if p.state is ProfileState.ENABLED]
            fallback = enabled[0] if enabled and enabled[0] != iccid else None
        return Verdict(
            reported,
            queue=True,
            fallback=fallback,
            note=f"enable {iccid} with rollbackFlag queued"
            + (f" (fallback attribute set on {fallback} first)" if fallback else ""),
        )
    package = max(tagged, key=lambda p: p.counter_value)
    if package.state in (PackageState.QUEUED, PackageState.DELIVERED):
        return Verdict(reported, note=f"package {package.counter_value} {package.state.value}")
    result = package.result or {}
    if package.state is PackageState.FAILED and result.get("ipa_error"):
        return Verdict(
            reported,
            failure=f"the IPA could not process the package (eimPackageResultErrorCode "
            f"{result['ipa_error']}); the eUICC never saw it",
        )
    if package.state is PackageState.FAILED and result.get("reason") and result.get("message"):
        # An unsigned refusal the eIM ended with a typed reason (the eUICC does not know or
        # accept this eIM): its message names the EID and what to do.
        return Verdict(reported, failure=f"the eUICC refused the package: {result['message']}")
    if package.state is PackageState.FAILED:
        code = result.get("error_code")
        name = PACKAGE_ERROR.get(code, str(code)) if isinstance(code, int) else str(code)
        return Verdict(
            reported, failure=f"the eUICC refused the package (euiccPackageErrorCode {name})"
        )
    answers = [(k, v) for k, v in result.get("results", [])]
    if any(k == "rollbackResult" for k, _ in answers):
        back = reported.get("iccid") if reported else "the previous profile"
        return Verdict(
            reported,
            failure=f"rolled back: profile {iccid} could not reach the eIM in time, the eUICC "
            f"fell back to {back}",
        )
    for kind, value in answers:
        if kind == "enableResult" and value != 0:
            name = ENABLE_RESULT.get(value, str(value))
            return Verdict(reported, failure=f"enable {iccid} refused by the eUICC: {name}")
    return Verdict(reported, note="enable ok; waiting for the profile state to confirm it")


def _first_op(package: PackageRecord) -> str | None:
    return str(package.operations[0].get("op")) if package.operations else None


def _download_phase(
    reported: dict[str, Any] | None,
    profiles: Sequence[ProfileRecord],
    packages: Sequence[PackageRecord],
    want: Desired,
    code: str,
) -> Verdict:
    """The profile is not on the eUICC as far as the eIM knows: learn the profile list first
    (when the eIM knows none), then download it (ProfileDownloadTrigger, relayed to the
    SM-DP+); the enable follows once the installation result is in."""
    tag = package_actor(want.generation, want.dimension)
    mine = [p for p in packages if p.actor == tag]
    if not profiles:
        listing = [
            p for p in mine if p.operations and p.operations[0].get("op") == "listProfileInfo"
        ]
        if not listing:
            return Verdict(reported, list_profiles=True, note="listProfileInfo queued")
        if listing[-1].state in (PackageState.QUEUED, PackageState.DELIVERED):
            return Verdict(reported, note="waiting for the profile list")
    downloads = [p for p in mine if _first_op(p) == DOWNLOAD_TRIGGER]
    if not downloads:
        return Verdict(reported, download=code, note=f"download of {want.value['iccid']} queued")
    trigger = max(downloads, key=lambda p: p.counter_value)
    if trigger.state in (PackageState.QUEUED, PackageState.DELIVERED):
        return Verdict(reported, note=f"download {trigger.counter_value} {trigger.state.value}")
    result = trigger.result or {}
    if trigger.state is PackageState.FAILED:
        return Verdict(
            reported,
            failure=f"download of {want.value['iccid']} failed: {result.get('results')}",
        )
    return Verdict(
        reported,
        failure=f"the download installed {result.get('iccid')}, not {want.value['iccid']}: "
        "check the activation code",
    )


class EsimComponent:
    """The eIM in serve: wraps the ESipa handler and applies the esim dimension (module
    docstring). ``state`` None: the eIM runs without the state layer (tests of the binding)."""

    def __init__(
        self,
        eims: EimStore,
        state: StateComponent | None = None,
        clock: Callable[[], float] = time.time,
        relay: Es9Relay | None = None,
        server: LwM2MServer | None = None,
    ) -> None:
        self.eims = eims
        self.state = state
        #: The DM server the carrier check reads /4/0 from (default: the reconciler's).
        self.server = server if server is not None or state is None else state.reconciler.server
        #: Seconds the carrier check waits for the device's answer to its Read of /4/0.
        self.carrier_timeout = 30.0
        #: The ES9+ relay of indirect profile downloads (None: refused as unsupported).
        self.relay = relay
        if relay is not None and relay.context is None:
            relay.context = self.euicc_context
        self.clock = clock
        self._endpoints: set[str] = set()
        self._eids: set[str] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Coroutines to run on stop (the object 3443 binding's tasks).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        #: Told the EIDs something was queued for (the object 3443 binding pushes it).
        self.on_queued: list[Callable[[list[str]], None]] = []
        self.stats = {"queued": 0, "applied": 0, "failed": 0, "judged": 0, "carrier": 0}

    # -- wiring ----------------------------------------------------------------------------
    def attach(self) -> None:
        """Become the reconciler's external applier for esim and start the worker; every
        enforced esim desired value is judged once (a restart may have missed results)."""
        if self.state is not None:
            for dimension in APPLIED:
                self.state.reconciler.external[dimension] = self
        self._task = asyncio.create_task(self._run(), name="esim-applier")

    async def stop(self) -> None:
        for stop in self.on_stop:
            await stop()
        if self.relay is not None:
            await self.relay.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def handle(self, data: bytes, now: float) -> Exchange:
        """The ESipa handler: an indirect-download message goes to the ES9+ relay; anything
        else is the eIM's exchange, after which the device it concerns is judged again when a
        result or notification was accepted."""
        if self.relay is not None:
            message = decode_from_ipa(data)  # garbage: CodecError, the binding answers 400
            if message.name in RELAYED:
                refused, origin = await self._trigger_of(message.name, message.body)
                if refused is not None:
                    return Exchange(refused, ())
                answer = await self.relay.relay(message.name, message.body, origin)
                return Exchange(answer, ())
            address = smdp_notification(message.name, message.body)
            if address is not None:  # an installation result for the SM-DP+: forwarded
                pending = encode("PendingNotification", message.body[1])
                await self.relay.notify(address, pending)
                return Exchange(None, ())
        exchange = await self.eims.handle(data, now)
        for outcome in exchange.outcomes:
            if isinstance(outcome, ResultAccepted | NotificationHandled) and outcome.eid:
                self._eids.add(outcome.eid)
                self._wakeup.set()
        return exchange

    async def _trigger_of(self, name: str, body: Any) -> tuple[bytes | None, TriggerOrigin | None]:
        """The download trigger an InitiateAuthentication names (kept with the relay's session),
        or -- an eimTransactionId that is no open download trigger of this eIM -- the ESipa
        error invalidEimTransactionId (SGP.32 6.3), not relayed."""
        if name != "initiateAuthenticationRequestEsipa" or "eimTransactionId" not in body:
            return None, None
        tid = body["eimTransactionId"]
        eims = self.eims
        found = await eims.store.read(lambda tx: eims.ledger(tx).open_download_trigger(tid))
        if found is not None:
            code = found.operations[0].get("activation_code") if found.operations else None
            return None, TriggerOrigin(tid, found.eid, str(code) if code is not None else None)
        refused = encode_to_ipa(
            "initiateAuthenticationResponseEsipa",
            ("initiateAuthenticationErrorEsipa", INVALID_EIM_TRANSACTION_ID),
        )
        return refused, None

    async def euicc_context(self, eid: str) -> EuiccContext | None:
        """The eUICC's certificates and last IpaEuiccData, for the relay (ctxParams1, compact
        messages)."""
        eims = self.eims

        def read(tx: Tx) -> EuiccContext | None:
            ledger = eims.ledger(tx)
            record = ledger.euicc(eid)
            if record is None:
                return None
            der = ledger.ipa_data(eid)
            return EuiccContext(
                record.euicc_certificate,
                record.eum_certificate,
                decode("IpaEuiccData", der) if der is not None else None,
            )

        return await eims.store.read(read)

    def desired_changed(self, endpoints: list[str]) -> None:
        self._endpoints.update(endpoints)
        self._wakeup.set()

    def touch(self, eids: Iterable[str]) -> None:
        """Judge these eUICCs' devices again (after an operator queued something for them)
        and tell the push bindings."""
        listed = sorted(set(eids))
        self._eids.update(listed)
        self._wakeup.set()
        self._queued(listed)

    def _queued(self, eids: list[str]) -> None:
        for listener in self.on_queued:
            try:
                listener(eids)
            except Exception:
                log.exception("esim: a push listener failed")

    @property
    def idle(self) -> bool:
        return not self._endpoints and not self._eids

    # -- the carrier check ------------------------------------------------------------------
    async def check_carrier(self, endpoint: str, value: Mapping[str, Any]) -> CarrierVerdict:
        """After the eUICC's signed enable result the device registered (or updated) with the
        DM server: its serving network (/4/0/10 SMCC, /4/0/9 SMNC) -- as it reported them
        (an observation, a Send) since that registration, else read from it now -- compared
        with the ``plmns`` of the desired esim ``value`` (:func:`~lifecycle.esim.carrier.
        judge_carrier`); audited as ``esim.carrier``. Never raises: a device that cannot be
        asked is "carrier not checked" with the reason."""
        iccid = str(value.get("iccid", "?"))
        expected = expected_plmns(value)
        verdict: CarrierVerdict
        registration = self.server.registration(endpoint) if self.server is not None else None
        if not expected or self.server is None or registration is None:
            has4 = registration is not None and has_connectivity_object(registration.object_links)
            verdict = judge_carrier(endpoint, iccid, expected, has_object4=has4, plmn=None)
            if expected and (self.server is None or registration is None):
                verdict = not_checked(f"{endpoint} is not registered any more", expected)
        elif not has_connectivity_object(registration.object_links):
            verdict = judge_carrier(endpoint, iccid, expected, has_object4=False, plmn=None)
        else:
            since = max(registration.registered_at, registration.updated_at)
            plmn, source = await self._reported_plmn(endpoint, since), "reported"
            error = None
            if plmn is None:
                (plmn, error), source = await self._read_plmn(endpoint), "read"
            verdict = judge_carrier(
                endpoint, iccid, expected, has_object4=True, plmn=plmn, error=error
            )
            verdict = replace(verdict, source=source if plmn is not None else "")
        self.stats["carrier"] += 1
        await self._audit_carrier(endpoint, iccid, verdict)
        return verdict

    async def _reported_plmn(self, endpoint: str, since: float) -> tuple[int, int] | None:
        """SMCC and SMNC as the device reported them (observation, Send) at or after
        ``since``; None where either is older or missing."""
        store = self.eims.store
        prefix = Path.parse("/4/0")
        found = await store.read(lambda tx: store.telemetry.latest(tx, endpoint, prefix))
        fresh = {
            v.path.ids[-1]: v.value.value
            for v in found
            if v.path.level == 3 and v.path.ids[-1] in (SMCC, SMNC) and v.at >= since
        }
        mcc, mnc = fresh.get(SMCC), fresh.get(SMNC)
        if isinstance(mcc, int) and isinstance(mnc, int):
            return mcc, mnc
        return None

    async def _read_plmn(self, endpoint: str) -> tuple[tuple[int, int] | None, str | None]:
        assert self.server is not None
        try:
            found = await self.server.read(
                endpoint, "/4/0", timeout=self.carrier_timeout, queue_deadline=self.carrier_timeout
            )
        except (ServerError, CodecError, ValueError) as err:  # not registered any more
            return None, f"the read of /4/0 failed: {err}"
        if not found.ok:
            what = found.code or found.status.value
            return (
                None,
                f"the read of /4/0 failed ({what}{': ' + found.reason if found.reason else ''})",
            )
        return served_plmn(found.content), None

    async def _audit_carrier(self, endpoint: str, iccid: str, verdict: CarrierVerdict) -> None:
        store = self.eims.store
        outcome = "ok" if verdict.ok else "failed"
        detail = {"iccid": iccid, **verdict.json()}

        def write(tx: Tx) -> None:
            store.audit.append(
                tx,
                actor="system:eim",
                action="esim.carrier",
                subject=f"device:{endpoint}",
                now=self.clock(),
                endpoints=[endpoint],
                detail=detail,
                outcome=outcome,
            )

        try:
            await store.write(write)
        except Exception:  # the verdict stands; the log says the audit did not
            log.exception("esim: cannot audit the carrier check", extra={"endpoint": endpoint})

    # -- the worker ------------------------------------------------------------------------
    async def _run(self) -> None:
        if self.state is not None:
            try:
                await self._sweep()
            except Exception:
                log.exception("esim: the start-up sweep failed")
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._endpoints or self._eids:
                try:
                    await self._batch()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("esim: a batch failed; retrying in a second")
                    await asyncio.sleep(1.0)

    async def _sweep(self) -> None:
        def read(tx: Tx) -> list[str]:
            rows = tx.execute(
                select(DESIRED.c.endpoint).where(
                    DESIRED.c.dimension.in_([d.value for d in APPLIED]),
                    DESIRED.c.policy == Policy.ENFORCE.value,
                )
            )
            return [str(r.endpoint) for r in rows]

        self._endpoints.update(await self.eims.store.read(read))
        self._wakeup.set()

    async def _batch(self) -> None:
        endpoints = sorted(self._endpoints)[:BATCH]
        self._endpoints.difference_update(endpoints)
        eids = sorted(self._eids)[:BATCH]
        self._eids.difference_update(eids)
        try:
            await self._judge(endpoints, eids)
        except BaseException:
            self._endpoints.update(endpoints)  # judged again after the pause (a batch is
            self._eids.update(eids)  # idempotent: packages are found again by their tag)
            raise

    async def _judge(self, endpoints: list[str], eids: list[str]) -> None:
        eims = self.eims

        def read(tx: Tx) -> dict[str, tuple[str | None, list[ProfileRecord], list[PackageRecord]]]:
            ledger = eims.ledger(tx)
            by_eid = {e: ep for e, ep in ledger.endpoints(eids).items()}
            wanted = dict.fromkeys([*endpoints, *by_eid.values()])
            out: dict[str, tuple[str | None, list[ProfileRecord], list[PackageRecord]]] = {}
            for endpoint in wanted:
                eid = ledger.eid_of(endpoint)
                if eid is None:
                    out[endpoint] = (None, [], [])
                else:
                    out[endpoint] = (eid, ledger.profiles(eid), ledger.packages(eid))
            return out

        found = await eims.store.read(read)
        if self.state is None:
            return
        observer = self.state.observer
        verdicts: list[tuple[str, Dimension, Desired | None, str | None, Verdict]] = []
        for endpoint, (eid, profiles, packages) in found.items():
            desired, reported = await observer.state(endpoint)
            want = desired.get(Dimension.ESIM)
            verdict = judge(want, reported.get(Dimension.ESIM), eid, profiles, packages)
            verdicts.append((endpoint, Dimension.ESIM, want, eid, verdict))
            staged = desired.get(Dimension.ESIM_DOWNLOAD)
            if staged is not None:  # reported only where a download is wanted
                current = reported.get(Dimension.ESIM_DOWNLOAD)
                found_v = judge_download(staged, current, eid, profiles, packages)
                verdicts.append((endpoint, Dimension.ESIM_DOWNLOAD, staged, eid, found_v))
            self.stats["judged"] += 1
        extra = [
            (eid, want, v)
            for _, _, want, eid, v in verdicts
            if (v.download or v.list_profiles) and eid is not None and want is not None
        ]
        if extra:
            await self._queue_other(extra)
        known = {
            eid: bool(profiles) and all(p.carrier for p in profiles)
            for eid, profiles, _ in found.values()
        }
        to_queue = [
            (eid, want, known.get(eid, False), v.fallback)
            for _, _, want, eid, v in verdicts
            if v.queue and eid is not None and want is not None
        ]
        if to_queue:
            await self._queue(to_queue)
        await asyncio.gather(*(self._record(*item) for item in verdicts))

    async def _queue_other(self, items: list[tuple[str, Desired, Verdict]]) -> None:
        """The download phase's packages: listProfileInfo alone, or the download trigger."""
        eims, now = self.eims, self.clock()

        def write(tx: Tx) -> None:
            ledger = eims.ledger(tx)
            for eid, want, verdict in items:
                actor = package_actor(want.generation, want.dimension)
                if verdict.download is not None:
                    eims.eim.queue_download(ledger, eid, verdict.download, now=now, actor=actor)
                else:
                    eims.eim.queue(ledger, eid, [ListProfileInfo()], now=now, actor=actor)

        await eims.store.write(write)
        self.stats["queued"] += len(items)
        self._queued([eid for eid, _, _ in items])

    async def _queue(self, items: list[tuple[str, Desired, bool, str | None]]) -> None:
        """One package per device: the enable with rollbackFlag, preceded by listProfileInfo
        while the eIM does not know every profile's carrier (the answer, taken before the
        enable, names them -- the profile the device falls back to, and one just downloaded,
        included), and by setFallbackAttribute on the enabled profile where no profile carries
        the fallback attribute (module docstring)."""
        eims, now = self.eims, self.clock()

        def write(tx: Tx) -> None:
            ledger = eims.ledger(tx)
            for eid, want, carriers_known, fallback in items:
                enable = Enable(str(want.value["iccid"]), rollback=True)
                operations: list[Psmo] = [] if carriers_known else [ListProfileInfo()]
                if fallback is not None:
                    operations.append(SetFallbackAttribute(fallback))
                operations.append(enable)
                eims.eim.queue(
                    ledger, eid, operations, now=now, actor=package_actor(want.generation)
                )

        await eims.store.write(write)
        self.stats["queued"] += len(items)
        self._queued([item[0] for item in items])

    async def _record(
        self,
        endpoint: str,
        dimension: Dimension,
        want: Desired | None,
        eid: str | None,
        verdict: Verdict,
    ) -> None:
        assert self.state is not None
        observer = self.state.observer
        values: dict[Dimension, Any] = {}
        if verdict.reported is not None:
            values[dimension] = verdict.reported
        failures = {dimension: verdict.failure} if verdict.failure and want else None
        if not values and not failures:
            return
        _, reported = await observer.state(endpoint)
        before = reported.get(dimension)
        newly_applied = (
            want is not None
            and verdict.reported is not None
            and status(want, Reported(dimension, verdict.reported, want.generation))
            is Status.APPLIED
            and (before is None or before.observed_generation != want.generation)
        )
        audit = None
        if failures or newly_applied:
            store = self.eims.store
            outcome = "failed" if failures else "ok"
            detail = {
                "eid": eid,
                "generation": want.generation if want else None,
                "iccid": want.value.get("iccid") if want else None,
                "reported": verdict.reported,
                "reason": verdict.failure or verdict.note,
            }

            def audit(tx: Tx, now: float) -> None:
                store.audit.append(
                    tx,
                    actor="system:eim",
                    action=f"state.{dimension.value}",
                    subject=f"device:{endpoint}",
                    now=now,
                    endpoints=[endpoint],
                    detail=detail,
                    outcome=outcome,
                )

        done = await observer.record(
            endpoint, values, "esim", failures=failures, audit=audit, reschedule=False
        )
        for item in done:
            if item.after is not item.before:
                if item.after is Status.APPLIED:
                    self.stats["applied"] += 1
                elif item.after is Status.FAILED:
                    self.stats["failed"] += 1
