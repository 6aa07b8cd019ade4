"""The eIM core: register eUICCs, queue signed packages, answer the IPA (sans-IO).

`Eim` holds only configuration; every call takes the `Ledger` of the caller's transaction and
`now`, so the store binding can run one ESipa exchange - read the queue, bump a counter, match
a result, update profiles, audit - as one database transaction, and tests can run it in memory.

Refusals of what an IPA sends are typed outcomes (`ResultRefused` with a `Refusal`), recorded
and audited, and answered with the ESipa error code SGP.32 has for them; garbage that does not
decode raises `CodecError` (the binding answers HTTP 400).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgp32.asn1 import EsipaMessage, decode, decode_from_ipa, encode, encode_to_ipa
from sgp32.certificates import verify_euicc_chain
from sgp32.eim.associations import (
    apply_eco_results,
    check_delete,
    check_move,
    move,
    raise_own_counter,
)
from sgp32.eim.config import EimDeployment
from sgp32.eim.ledger import Ledger
from sgp32.eim.model import (
    EuiccRecord,
    NoPackage,
    NotificationHandled,
    Outcome,
    PackageDelivered,
    PackageRecord,
    PackageState,
    ProfileRecord,
    ProfileState,
    Refusal,
    ResultAccepted,
    ResultDuplicate,
    ResultRecord,
    ResultRefused,
    UnsignedReason,
)
from sgp32.eim.profiles import apply_notification, apply_results
from sgp32.errors import (
    EuiccConflict,
    InvalidIdentifier,
    SignatureInvalid,
    UnknownEuicc,
)
from sgp32.identifiers import check_activation_code, eid_from_bytes, iccid_from_bytes
from sgp32.notifications import verify_other_notification
from sgp32.packages import DeleteEim, Eco, ListProfileInfo, Psmo
from sgp32.signing import (
    NO_ASSOCIATION_TOKEN,
    sign_euicc_package,
    verify_euicc_package_result,
    verify_raw,
)

DEVICE_ACTOR = "eim"
"""Audit actor of what the IPA/eUICC did (operators appear under their own name)."""

DOWNLOAD_TRIGGER = "profileDownloadTrigger"
"""The operation name of a queued ProfileDownloadTrigger (not a PSMO: never signed)."""
IPA_DATA_REQUEST = "ipaEuiccDataRequest"
"""The operation name of a queued IpaEuiccDataRequest (not signed either)."""
IPA_DATA_TAGS = bytes.fromhex("BF20BF22A8A9")
"""The IpaEuiccData the eIM asks for: euiccInfo1, euiccInfo2, ipaCapabilities, deviceInfo --
what it needs to generate ctxParams1 and expand compact download messages."""

# ESipa error codes (SGP.32 6.3)
NO_PACKAGE, EID_NOT_FOUND, INVALID_EID, MISSING_EID, UNDEFINED = 1, 2, 3, 4, 127
REPLAY_ERROR = 4
"""EuiccPackageErrorCode replayError: the eUICC saw this counterValue already."""
UNSIGNED_ERROR = "euiccPackageErrorUnsigned"
IPA_PACKAGE_ERROR = {1: "invalidPackageFormat", 2: "unknownPackage", 127: "undefinedError"}
"""EimPackageResultErrorCode: the IPA could not process an eIM package."""


@dataclass(frozen=True)
class Exchange:
    """The answer to one IPA message: the DER to send back (`None`: an empty answer, HTTP 204)
    and what happened."""

    reply: bytes | None
    outcomes: tuple[Outcome, ...]


def jsonable(value: Any) -> Any:
    """asn1tools values as JSON data: bytes -> hex, tuples -> lists."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def operation_json(op: Psmo | Eco) -> dict[str, Any]:
    """A PSMO/eCO as JSON data: its ASN.1 alternative name and its fields."""
    fields = {k: jsonable(v) for k, v in dataclasses.asdict(op).items()}
    return {"op": op.to_asn1()[0], **fields}


@functools.lru_cache(maxsize=4096)
def _public_key(certificate_der: bytes) -> ec.EllipticCurvePublicKey:
    key = x509.load_der_x509_certificate(certificate_der).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # the chain check made sure at import
    return key


def _ended_unsigned(package: PackageRecord) -> bool:
    """Failed on the eUICC's unsigned error only: a signed result for it still counts (the
    unsigned error proved nothing -- anyone on the path could have sent it)."""
    result = package.result or {}
    return package.state == PackageState.FAILED and result.get("kind") == UNSIGNED_ERROR


@functools.lru_cache(maxsize=4096)
def _subject_eid(certificate_der: bytes) -> str:
    """The EID in an eUICC certificate's subject serialNumber ("" if none): parsed once per
    certificate, not per notification."""
    try:
        subject = x509.load_der_x509_certificate(certificate_der).subject
    except ValueError:
        return ""
    serials = subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(serials[0].value) if serials else ""


def _store_profiles(
    ledger: Ledger, eid: str, before: Sequence[ProfileRecord], after: Sequence[ProfileRecord]
) -> None:
    """Write the EID's profiles only when they changed (a notification or result often
    confirms what the eIM already recorded: no DELETE and INSERT for nothing)."""
    if list(before) != list(after):
        ledger.replace_profiles(eid, after)


def _when(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


class Eim:
    """The eIM of one deployment (one or several eIM identities, one set of trusted CIs)."""

    def __init__(
        self, deployment: EimDeployment, *, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.deployment = deployment
        self._random = random_bytes

    # ---- operator side ------------------------------------------------------------------------

    def register_euicc(
        self,
        ledger: Ledger,
        *,
        euicc_certificate: bytes,
        eum_certificate: bytes,
        now: float,
        actor: str,
        eid: str | None = None,
        eim_id: str | None = None,
        association_token: int = NO_ASSOCIATION_TOKEN,
        counter_value: int = 0,
        tenant: str | None = None,
    ) -> EuiccRecord:
        """Import an eUICC: its chain must verify to a configured CI at `now`. Importing the
        same certificate again is a no-op (the counter is kept: it never goes back)."""
        identity = self.deployment.identity(eim_id)
        verified = verify_euicc_chain(
            euicc_certificate, eum_certificate, self.deployment.trusted_cis, _when(now), eid
        )
        existing = ledger.euicc(verified.eid)
        if existing is not None:
            if existing.euicc_certificate != euicc_certificate:
                raise EuiccConflict(
                    f"EID {verified.eid} is already registered with another eUICC certificate"
                )
            if eim_id is not None and existing.eim_id != identity.eim_id:
                raise EuiccConflict(
                    f"EID {verified.eid} is bound to eIM {existing.eim_id!r}, not {eim_id!r}"
                )
            return existing
        record = EuiccRecord(
            eid=verified.eid,
            eim_id=identity.eim_id,
            euicc_certificate=euicc_certificate,
            eum_certificate=eum_certificate,
            association_token=association_token,
            counter_value=counter_value,
            registered_at=now,
            tenant=tenant,
        )
        ledger.add_euicc(record)
        ledger.audit(
            actor=actor,
            action="esim.euicc.register",
            eid=verified.eid,
            now=now,
            tenant=tenant,
            detail={
                "eim_id": identity.eim_id,
                "eum": verified.eum_certificate.subject.rfc4514_string(),
            },
        )
        return record

    def queue(
        self,
        ledger: Ledger,
        eid: str,
        operations: Sequence[Psmo | Eco],
        *,
        now: float,
        actor: str,
    ) -> PackageRecord:
        """Sign a package for `eid` with the next counterValue and put it on its queue."""
        euicc = ledger.lock_euicc(eid)
        if euicc is None:
            raise UnknownEuicc(f"EID {eid} is not registered with the eIM; import it first")
        check_delete(ledger, euicc, operations)
        counter = ledger.next_counter(eid, euicc.eim_id)
        transaction_id = counter.to_bytes(4, "big") + self._random(4)
        signed = sign_euicc_package(
            self.deployment.identity(euicc.eim_id),
            eid=eid,
            counter_value=counter,
            transaction_id=transaction_id,
            operations=operations,
            association_token=euicc.association_token,
        )
        package = PackageRecord(
            eid=eid,
            counter_value=counter,
            transaction_id=transaction_id,
            eim_id=euicc.eim_id,
            operations=tuple(operation_json(op) for op in operations),
            request_der=signed.der,
            state=PackageState.QUEUED,
            created_at=now,
            actor=actor,
        )
        ledger.add_package(package)
        raise_own_counter(ledger, euicc, operations, counter)
        ledger.audit(
            actor=actor,
            action="esim.package.queue",
            eid=eid,
            now=now,
            tenant=euicc.tenant,
            detail={
                "counter": counter,
                "transaction_id": transaction_id.hex(),
                "operations": list(package.operations),
            },
        )
        return package

    def queue_download(
        self,
        ledger: Ledger,
        eid: str,
        activation_code: str,
        *,
        now: float,
        actor: str,
    ) -> PackageRecord:
        """Put a ProfileDownloadTrigger (SGP.32 2.11.1.3) with an activation code on `eid`'s
        queue. It is not signed (it is no eUICC package) but it takes the next counterValue as
        its place in the queue -- the eUICC only needs counters to grow, gaps are fine -- and
        an eimTransactionId the result is matched on."""
        check_activation_code(activation_code)
        euicc = ledger.lock_euicc(eid)
        if euicc is None:
            raise UnknownEuicc(f"EID {eid} is not registered with the eIM; import it first")
        counter = ledger.next_counter(eid, euicc.eim_id)
        transaction_id = counter.to_bytes(4, "big") + self._random(4)
        der = encode(
            "ProfileDownloadTriggerRequest",
            {
                "profileDownloadData": ("activationCode", activation_code),
                "eimTransactionId": transaction_id,
            },
        )
        package = PackageRecord(
            eid=eid,
            counter_value=counter,
            transaction_id=transaction_id,
            eim_id=euicc.eim_id,
            operations=({"op": DOWNLOAD_TRIGGER, "activation_code": activation_code},),
            request_der=der,
            state=PackageState.QUEUED,
            created_at=now,
            actor=actor,
        )
        ledger.add_package(package)
        ledger.audit(
            actor=actor,
            action="esim.download.queue",
            eid=eid,
            now=now,
            tenant=euicc.tenant,
            detail={
                "counter": counter,
                "transaction_id": transaction_id.hex(),
                "activation_code": activation_code,
            },
        )
        return package

    def queue_ipa_data(
        self,
        ledger: Ledger,
        eid: str,
        *,
        now: float,
        actor: str,
        tag_list: bytes = IPA_DATA_TAGS,
    ) -> PackageRecord:
        """Put an IpaEuiccDataRequest (SGP.32 2.11.1.2) on `eid`'s queue: the IPA answers
        with IpaEuiccData (EUICCInfo2, DeviceInfo, IpaCapabilities...), kept per EID. Unsigned;
        like a download trigger it takes the next counterValue as its place in the queue."""
        euicc = ledger.lock_euicc(eid)
        if euicc is None:
            raise UnknownEuicc(f"EID {eid} is not registered with the eIM; import it first")
        counter = ledger.next_counter(eid, euicc.eim_id)
        transaction_id = counter.to_bytes(4, "big") + self._random(4)
        der = encode(
            "IpaEuiccDataRequest", {"tagList": tag_list, "eimTransactionId": transaction_id}
        )
        package = PackageRecord(
            eid=eid,
            counter_value=counter,
            transaction_id=transaction_id,
            eim_id=euicc.eim_id,
            operations=({"op": IPA_DATA_REQUEST, "tag_list": tag_list.hex().upper()},),
            request_der=der,
            state=PackageState.QUEUED,
            created_at=now,
            actor=actor,
        )
        ledger.add_package(package)
        ledger.audit(
            actor=actor,
            action="esim.package.queue",
            eid=eid,
            now=now,
            tenant=euicc.tenant,
            detail={
                "counter": counter,
                "transaction_id": transaction_id.hex(),
                "operations": list(package.operations),
            },
        )
        return package

    def move_euicc(
        self,
        ledger: Ledger,
        eid: str,
        eim_id: str,
        *,
        now: float,
        actor: str,
        delete_old: bool = False,
    ) -> tuple[EuiccRecord, PackageRecord | None]:
        """Bind `eid` to another eIM identity of this deployment, one the eUICC confirmed by
        its signed addEim result (docs/SGP32.md, "Moving an eUICC to another eIM"): from now
        on its packages carry that eimId, its counter and its associationToken. Refused
        (`UnknownEim`, `EimMoveRefused`) for an eIM not configured here or not confirmed, and
        while packages of the old eIM are open. `delete_old` queues deleteEim of the old eIM,
        signed by the new one, in the same transaction."""
        euicc = ledger.lock_euicc(eid)
        if euicc is None:
            raise UnknownEuicc(f"EID {eid} is not registered with the eIM; import it first")
        target = check_move(ledger, euicc, eim_id, list(self.deployment.identities))
        moved = move(ledger, euicc, target, now=now, actor=actor)
        package = None
        if delete_old:
            package = self.queue(ledger, eid, [DeleteEim(euicc.eim_id)], now=now, actor=actor)
            moved = ledger.euicc(eid) or moved
        return moved, package

    # ---- IPA side -----------------------------------------------------------------------------

    def handle(
        self, ledger: Ledger, data: bytes, now: float, *, message: EsipaMessage | None = None
    ) -> Exchange:
        """Answer one ESipa message from an IPA (dispatched by its outer tag). ``message``:
        `data` already decoded by the caller (decoding is a good part of an exchange's CPU)."""
        message = message if message is not None else decode_from_ipa(data)
        if message.name == "getEimPackageRequest":
            return self._get_package(ledger, message.body, now)
        if message.name == "provideEimPackageResult":
            return self._provide_result(ledger, message.body, now)
        if message.name == "handleNotificationEsipa":
            return self._handle_notification(ledger, message.body, now)
        if message.name == "transferEimPackageResponse" and message.body[0] in (
            "eimPackageReceived",
            "eimPackageError",
        ):
            # the IPA took (or could not take) a pushed package: its result, if any, comes
            # with ProvideEimPackageResult like a polled one's; the package stays open
            return Exchange(None, ())
        refused = ResultRefused(None, Refusal.UNSUPPORTED, f"{message.name} is not served here")
        return Exchange(None, (refused,))

    def quiet_poll(
        self, ledger: Ledger, data: bytes, *, message: EsipaMessage | None = None
    ) -> Exchange | None:
        """The answer to a GetEimPackageRequest that needs no write -- nothing queued for a
        known EID, or an EID error -- else None (the caller then runs :meth:`handle` in a
        write transaction). Most polls find nothing: this keeps them off the write path."""
        message = message if message is not None else decode_from_ipa(data)
        if message.name != "getEimPackageRequest" or "notifyStateChange" in message.body:
            return None
        euicc, code, refused, queued = self._euicc(ledger, message.body["eidValue"], polled=True)
        if euicc is None:
            assert refused is not None
            reply = encode_to_ipa("getEimPackageResponse", ("eimPackageError", code))
            return Exchange(reply, (refused,))
        if queued:
            return None
        reply = encode_to_ipa("getEimPackageResponse", ("eimPackageError", NO_PACKAGE))
        return Exchange(reply, (NoPackage(euicc.eid),))

    def _euicc(
        self, ledger: Ledger, eid_value: bytes | None, *, polled: bool = False
    ) -> tuple[EuiccRecord | None, int, ResultRefused | None, bool]:
        """The registered eUICC of an eidValue, or the ESipa error code and refusal; with
        `polled`, also whether a package of it is open (same lookup), else False."""
        if eid_value is None:
            refused = ResultRefused(None, Refusal.MISSING_EID, "no eidValue")
            return None, MISSING_EID, refused, False
        try:
            eid = eid_from_bytes(eid_value)
        except InvalidIdentifier as exc:
            return None, INVALID_EID, ResultRefused(None, Refusal.INVALID_EID, str(exc)), False
        euicc, queued = ledger.euicc_polled(eid) if polled else (ledger.euicc(eid), False)
        if euicc is None:
            message = f"EID {eid} is not registered with the eIM"
            return None, EID_NOT_FOUND, ResultRefused(eid, Refusal.UNKNOWN_EID, message), False
        return euicc, 0, None, queued

    def _get_package(self, ledger: Ledger, body: dict[str, Any], now: float) -> Exchange:
        euicc, code, refused, _ = self._euicc(ledger, body["eidValue"])
        if euicc is None:
            assert refused is not None
            return Exchange(
                encode_to_ipa("getEimPackageResponse", ("eimPackageError", code)), (refused,)
            )
        eid = euicc.eid
        if "notifyStateChange" in body:
            self._state_changed(ledger, euicc, body.get("stateChangeCause"), now)
        package = ledger.next_package(eid)
        if package is None:
            reply = encode_to_ipa("getEimPackageResponse", ("eimPackageError", NO_PACKAGE))
            return Exchange(reply, (NoPackage(eid),))
        reply = encode_to_ipa("getEimPackageResponse", self._deliver(ledger, euicc, package, now))
        return Exchange(
            reply, (PackageDelivered(eid, package.counter_value, package.transaction_id),)
        )

    def push_next(self, ledger: Ledger, eid: str, now: float) -> bytes | None:
        """The EID's next open package as a TransferEimPackageRequest (the eIM-initiated
        transfer, SGP.32 ESipa.TransferEimPackage), marked delivered like a polled one; None
        when nothing is queued. A push the IPA never gets costs nothing: it polls for the same
        package."""
        euicc = ledger.euicc(eid)
        package = ledger.next_package(eid) if euicc is not None else None
        if euicc is None or package is None:
            return None
        return encode_to_ipa(
            "transferEimPackageRequest", self._deliver(ledger, euicc, package, now, push=True)
        )

    def _deliver(
        self,
        ledger: Ledger,
        euicc: EuiccRecord,
        package: PackageRecord,
        now: float,
        push: bool = False,
    ) -> tuple[str, Any]:
        """Mark `package` delivered (audited once) and give its GetEimPackageResponse /
        TransferEimPackageRequest alternative."""
        eid = euicc.eid
        if package.state == PackageState.QUEUED:
            ledger.update_package(
                dataclasses.replace(package, state=PackageState.DELIVERED, delivered_at=now)
            )
            ledger.audit(
                actor=DEVICE_ACTOR,
                action="esim.package.deliver",
                eid=eid,
                now=now,
                tenant=euicc.tenant,
                detail={
                    "counter": package.counter_value,
                    "transaction_id": package.transaction_id.hex(),
                    "pushed": push,
                },
            )
        first = package.operations[0].get("op") if package.operations else None
        if first == DOWNLOAD_TRIGGER:
            return (
                "profileDownloadTriggerRequest",
                decode("ProfileDownloadTriggerRequest", package.request_der),
            )
        if first == IPA_DATA_REQUEST:
            return ("ipaEuiccDataRequest", decode("IpaEuiccDataRequest", package.request_der))
        return ("euiccPackageRequest", decode("EuiccPackageRequest", package.request_der))

    def _state_changed(
        self, ledger: Ledger, euicc: EuiccRecord, cause: int | None, now: float
    ) -> None:
        """The IPA says profile state changed without us (fallback, local, ...): audit it and
        ask the eUICC for its profile list, unless such a question is already queued."""
        ledger.audit(
            actor=DEVICE_ACTOR,
            action="esim.state_change",
            eid=euicc.eid,
            now=now,
            tenant=euicc.tenant,
            detail={"cause": cause},
        )
        pending = ledger.open_packages(euicc.eid)
        if not any(op["op"] == "listProfileInfo" for p in pending for op in p.operations):
            self.queue(ledger, euicc.eid, [ListProfileInfo()], now=now, actor=DEVICE_ACTOR)

    def _provide_result(self, ledger: Ledger, body: dict[str, Any], now: float) -> Exchange:
        def answer(value: tuple[str, Any]) -> bytes:
            return encode_to_ipa("provideEimPackageResultResponse", value)

        euicc, code, refused, _ = self._euicc(ledger, body.get("eidValue"))
        if euicc is None:
            assert refused is not None
            return Exchange(answer(("provideEimPackageResultError", code)), (refused,))
        kind, value = body["eimPackageResult"]
        notifications: list[tuple[str, Any]] = []
        if kind == "euiccPackageResult":
            epr = value
        elif kind == "ePRAndNotifications":
            epr = value["euiccPackageResult"]
            notifications = list(value["notificationList"])
        elif kind == "profileDownloadTriggerResult":
            done = self._download_result(ledger, euicc, value, now)
            return Exchange(answer(("emptyResponse", {})), (done,))
        elif kind == "ipaEuiccDataResponse":
            taken = self._ipa_data(ledger, euicc, value, now)
            return Exchange(answer(("emptyResponse", {})), (taken,))
        elif kind == "eimPackageResultResponseError":
            failed = self._package_error(ledger, euicc, value, now)
            return Exchange(answer(("emptyResponse", {})), (failed,))
        else:
            unsupported = self._refuse(
                ledger,
                euicc,
                now,
                Refusal.UNSUPPORTED,
                f"{kind} is not handled yet",
                None,
                b"",
            )
            return Exchange(answer(("emptyResponse", {})), (unsupported,))
        outcome, seq = self._accept_result(ledger, euicc, epr, now)
        outcomes: list[Outcome] = [outcome]
        for notification in notifications:
            outcomes.append(self._notification(ledger, notification, now))
        if isinstance(outcome, ResultRefused):
            return Exchange(answer(("provideEimPackageResultError", UNDEFINED)), tuple(outcomes))
        if seq is not None:
            return Exchange(answer(("eimAcknowledgements", [seq])), tuple(outcomes))
        return Exchange(answer(("emptyResponse", {})), tuple(outcomes))

    def _open_package(
        self,
        ledger: Ledger,
        euicc: EuiccRecord,
        now: float,
        tid: bytes | None,
        der: bytes,
        op: str | None,
        missing: str,
    ) -> PackageRecord | ResultRefused | ResultDuplicate:
        """The still-open package an IPA answer names by eimTransactionId (of operation ``op``
        when given); else the answer is refused with the message ``missing`` (no such package)
        or recorded as a duplicate (the package already ended)."""
        package = ledger.package(euicc.eid, tid) if tid is not None else None
        if package is None or (op is not None and package.operations[0].get("op") != op):
            return self._refuse(ledger, euicc, now, Refusal.UNKNOWN_PACKAGE, missing, tid, der)
        if package.state in (PackageState.DONE, PackageState.FAILED):
            ledger.add_result(
                ResultRecord(euicc.eid, now, "duplicate", tid, package.counter_value, der, {})
            )
            return ResultDuplicate(euicc.eid, package.transaction_id)
        return package

    def _refuse(
        self,
        ledger: Ledger,
        euicc: EuiccRecord,
        now: float,
        reason: Refusal,
        message: str,
        transaction_id: bytes | None,
        der: bytes,
        counter: int | None = None,
    ) -> ResultRefused:
        ledger.add_result(
            ResultRecord(
                euicc.eid, now, reason.value, transaction_id, counter, der, {"message": message}
            )
        )
        ledger.audit(
            actor=DEVICE_ACTOR,
            action="esim.result",
            eid=euicc.eid,
            now=now,
            tenant=euicc.tenant,
            outcome=reason.value,
            detail={
                "message": message,
                "transaction_id": transaction_id.hex() if transaction_id else None,
                "counter": counter,
            },
        )
        return ResultRefused(euicc.eid, reason, message)

    def _accept_result(
        self, ledger: Ledger, euicc: EuiccRecord, epr: tuple[str, Any], now: float
    ) -> tuple[Outcome, int | None]:
        """Verify, match on (EID, eimTransactionId), apply. Returns the outcome and the
        seqNumber to acknowledge."""
        der = encode("EuiccPackageResult", epr)
        eid = euicc.eid
        try:
            result = verify_euicc_package_result(
                epr, _public_key(euicc.euicc_certificate), self._token_for(ledger, euicc, epr)
            )
        except SignatureInvalid as exc:
            return self._refuse(
                ledger, euicc, now, Refusal.SIGNATURE_INVALID, str(exc), None, der
            ), None
        tid = result.transaction_id
        if not result.authenticated:
            return self._unsigned_error(ledger, euicc, result.eim_id, tid, der, now), None
        package = ledger.package(eid, tid) if tid is not None else None
        # a result for a package of the eIM the eUICC was bound to before a move is still
        # matched (the eUICC signed it with that eIM's token); any other eimId is refused
        signer = package.eim_id if package is not None else euicc.eim_id
        if result.eim_id != signer:
            message = f"result is for eIM {result.eim_id!r}, the package is {signer!r}'s"
            if package is None:
                message = f"result is for eIM {result.eim_id!r}, the eUICC is with {signer!r}"
            return self._refuse(ledger, euicc, now, Refusal.WRONG_EIM, message, tid, der), None
        if package is None:
            message = f"no package with eimTransactionId {tid.hex() if tid else None} for EID {eid}"
            refused = self._refuse(
                ledger, euicc, now, Refusal.UNKNOWN_PACKAGE, message, tid, der, result.counter_value
            )
            return refused, None
        assert tid is not None
        if result.counter_value != package.counter_value:
            message = (
                f"result counterValue {result.counter_value} does not match the package's "
                f"{package.counter_value} (eimTransactionId {tid.hex()})"
            )
            refused = self._refuse(
                ledger,
                euicc,
                now,
                Refusal.COUNTER_MISMATCH,
                message,
                tid,
                der,
                result.counter_value,
            )
            return refused, None
        ended_unsigned = _ended_unsigned(package)
        if package.state in (PackageState.DONE, PackageState.FAILED) and not ended_unsigned:
            assert package.result is not None
            same = package.result.get("der") == der.hex()
            if same or (
                result.kind == "euiccPackageErrorSigned" and result.error_code == REPLAY_ERROR
            ):
                # the same result again (the IPA missed our answer), or the eUICC, signed,
                # refusing a second copy of this package (pushed and then polled, or replayed):
                # the first result stands; acknowledged so the IPA does not retry
                self._duplicate(ledger, euicc, package, der, now, replay=not same)
                return ResultDuplicate(eid, tid), result.seq_number
            message = f"package {tid.hex()} already has a different result: replay refused"
            refused = self._refuse(
                ledger, euicc, now, Refusal.REPLAY, message, tid, der, package.counter_value
            )
            return refused, None
        signed_ok = result.kind == "euiccPackageResultSigned"
        state = PackageState.DONE if signed_ok else PackageState.FAILED
        summary = {
            "kind": result.kind,
            "results": jsonable(result.results),
            "error_code": result.error_code,
            "seq_number": result.seq_number,
            "der": der.hex(),
        }
        ledger.update_package(
            dataclasses.replace(package, state=state, result_at=now, result=summary)
        )
        changes: list[dict[str, Any]] = []
        if signed_ok:
            before = ledger.profiles(eid)
            after = apply_results(eid, before, package.operations, result.results, now)
            _store_profiles(ledger, eid, before, after)
            changes = apply_eco_results(ledger, euicc, package, result.results, now)
        detail = {k: v for k, v in summary.items() if k != "der"}
        if changes:
            detail["associations"] = changes
        if package.eim_id != euicc.eim_id:
            detail["eim_id"] = package.eim_id  # a package of the eIM before a move
        if ended_unsigned:
            detail["after_unsigned_error"] = True  # the signed result wins
        ledger.add_result(
            ResultRecord(eid, now, "accepted", tid, package.counter_value, der, detail)
        )
        ledger.audit(
            actor=DEVICE_ACTOR,
            action="esim.result",
            eid=eid,
            now=now,
            tenant=euicc.tenant,
            outcome="ok" if signed_ok else "error",
            detail={"counter": package.counter_value, "transaction_id": tid.hex(), **detail},
        )
        outcome = ResultAccepted(
            eid, package.counter_value, tid, result.kind, result.results, result.error_code, state
        )
        return outcome, result.seq_number

    def _unsigned_error(
        self,
        ledger: Ledger,
        euicc: EuiccRecord,
        eim_id: str,
        tid: bytes | None,
        der: bytes,
        now: float,
    ) -> Outcome:
        """euiccPackageErrorUnsigned (SGP.32 5.9.1: it has no error code, only the eimId and
        eimTransactionId): the eUICC does not know the eIM that signed the package, or that
        eIM's signature does not verify with the key and associationToken it holds. The same
        signed bytes get the same answer every time, so the package this names -- delivered,
        of the eIM named -- is failed with a typed reason (`UnsignedReason`) naming the EID and
        the fix, never delivered again. Unsigned, so it only ends a package, like the IPA's
        eimPackageResultResponseError: nothing is confirmed, no association changes, and a
        signed result arriving for that package later still replaces it. An error
        naming no delivered package (a replay of an answered one, another eIM) is recorded
        and audited as `unauthenticated`."""
        eid = euicc.eid
        if tid is not None:
            package = ledger.package(eid, tid)
        else:  # no eimTransactionId: only the one package of that eIM the IPA holds
            held = [
                p
                for p in ledger.open_packages(eid)
                if p.state == PackageState.DELIVERED and p.eim_id == eim_id
            ]
            package = held[0] if len(held) == 1 else None
        if package is None or package.state != PackageState.DELIVERED or package.eim_id != eim_id:
            message = (
                f"unsigned error from the eUICC for eIM {eim_id!r} (eimTransactionId "
                f"{tid.hex() if tid else None}) naming no delivered package: recorded, not trusted"
            )
            return self._refuse(ledger, euicc, now, Refusal.UNAUTHENTICATED, message, tid, der)
        known = ledger.association(eid, eim_id)
        if known is not None and not known.active:
            reason = UnsignedReason.EIM_DELETED
            why = f"the eUICC no longer knows eIM {eim_id!r} (its deleteEim was confirmed)"
        else:
            reason = UnsignedReason.EIM_NOT_ACCEPTED
            why = (
                f"the eUICC does not accept eIM {eim_id!r}'s signature (it does not know that "
                "eIM, or holds another key or associationToken for it)"
            )
        if eim_id != euicc.eim_id:
            fix = f"queue it again: it will be signed by the bound eIM {euicc.eim_id!r}"
        else:
            fix = (
                f"move the eUICC to an eIM it confirmed (`fleetloop esim eim move OTHER {eid}`; "
                f"`fleetloop esim show {eid}` lists them) or restore {eim_id!r} on it, then "
                "queue it again"
            )
        message = (
            f"EID {eid}: package #{package.counter_value} refused unsigned: {why}; redelivery "
            f"cannot change that, so it failed; {fix}"
        )
        summary: dict[str, Any] = {
            "kind": UNSIGNED_ERROR,
            "results": [],
            "error_code": None,
            "reason": reason.value,
            "message": message,
            "der": der.hex(),
        }
        extra = {"eim_id": eim_id} if eim_id != euicc.eim_id else None
        return self._fail(ledger, euicc, package, summary, "unsigned_error", der, now, extra)

    def _token_for(self, ledger: Ledger, euicc: EuiccRecord, epr: tuple[str, Any]) -> int:
        """The associationToken the eUICC signed this result with: that of the eIM the result
        names (the eIM bound now, or another the eUICC is associated with -- a package of the
        eIM before a move). Only selects the key to try: the signature decides."""
        body = epr[1]
        data = body.get("euiccPackageResultDataSigned") or body.get("euiccPackageErrorDataSigned")
        named = data.get("eimId") if isinstance(data, dict) else None
        if isinstance(named, str) and named != euicc.eim_id:
            other = ledger.association(euicc.eid, named)
            if other is not None:
                return other.association_token
        return euicc.association_token

    def _duplicate(
        self,
        ledger: Ledger,
        euicc: EuiccRecord,
        package: PackageRecord,
        der: bytes,
        now: float,
        *,
        replay: bool,
    ) -> None:
        """Record a result for an answered package; audited too when the package is of the
        eIM the eUICC was bound to before a move (nothing arriving late for the old eIM goes
        unseen: a replay of its package refused by the eUICC shows in the audit log)."""
        tid = package.transaction_id
        ledger.add_result(
            ResultRecord(euicc.eid, now, "duplicate", tid, package.counter_value, der, {})
        )
        if package.eim_id != euicc.eim_id:
            ledger.audit(
                actor=DEVICE_ACTOR,
                action="esim.result",
                eid=euicc.eid,
                now=now,
                tenant=euicc.tenant,
                outcome="duplicate",
                detail={
                    "counter": package.counter_value,
                    "transaction_id": tid.hex(),
                    "eim_id": package.eim_id,
                    "replay_error": replay,
                },
            )

    def _ipa_data(
        self, ledger: Ledger, euicc: EuiccRecord, value: tuple[str, Any], now: float
    ) -> Outcome:
        """The IPA's IpaEuiccDataResponse, matched on its eimTransactionId: IpaEuiccData is
        kept for the EID (the package done), an ipaEuiccDataResponseError fails it."""
        kind, data = value
        der = encode("IpaEuiccDataResponse", value)
        tid = data.get("eimTransactionId")
        package = self._open_package(
            ledger, euicc, now, tid, der, IPA_DATA_REQUEST,
            f"no IpaEuiccDataRequest with eimTransactionId {tid.hex() if tid else None}",
        )  # fmt: skip
        if not isinstance(package, PackageRecord):
            return package
        ok = kind == "ipaEuiccData"
        results: list[tuple[str, Any]]
        if ok:
            ledger.set_ipa_data(euicc.eid, encode("IpaEuiccData", data), now)
            results = [("ipaEuiccData", sorted(k for k in data if k != "eimTransactionId"))]
        else:
            results = [("ipaEuiccDataErrorCode", data["ipaEuiccDataErrorCode"])]
        summary: dict[str, Any] = {"kind": "ipaEuiccDataResponse", "results": jsonable(results)}
        state = PackageState.DONE if ok else PackageState.FAILED
        ledger.update_package(
            dataclasses.replace(
                package, state=state, result_at=now, result={**summary, "der": der.hex()}
            )
        )
        ledger.add_result(
            ResultRecord(euicc.eid, now, "accepted", tid, package.counter_value, der, summary)
        )
        ledger.audit(
            actor=DEVICE_ACTOR,
            action="esim.ipadata",
            eid=euicc.eid,
            now=now,
            tenant=euicc.tenant,
            outcome="ok" if ok else "error",
            detail={"counter": package.counter_value, **summary},
        )
        return ResultAccepted(
            euicc.eid,
            package.counter_value,
            package.transaction_id,
            "ipaEuiccDataResponse",
            tuple(results),
            None,
            state,
        )

    def _package_error(
        self, ledger: Ledger, euicc: EuiccRecord, value: dict[str, Any], now: float
    ) -> Outcome:
        """EimPackageResult eimPackageResultResponseError: the IPA could not process a package
        (invalidPackageFormat, unknownPackage, undefinedError), so it never reached the eUICC.
        Matched on the eimTransactionId, the package is failed (not delivered again: the IPA
        would only refuse it again); without a known eimTransactionId it is recorded as
        unknown_package. Unsigned: it can only end a package, never confirm anything."""
        der = encode("EimPackageResult", ("eimPackageResultResponseError", value))
        tid = value.get("eimTransactionId")
        code = value["eimPackageResultErrorCode"]
        package = self._open_package(
            ledger, euicc, now, tid, der, None,
            f"IPA error {IPA_PACKAGE_ERROR.get(code, code)} for no known package "
            f"(eimTransactionId {tid.hex() if tid else None})",
        )  # fmt: skip
        if not isinstance(package, PackageRecord):
            return package
        summary: dict[str, Any] = {
            "kind": "eimPackageResultResponseError",
            "results": [["eimPackageResultErrorCode", code]],
            "error_code": None,
            "ipa_error": IPA_PACKAGE_ERROR.get(code, str(code)),
            "der": der.hex(),
        }
        return self._fail(ledger, euicc, package, summary, "ipa_error", der, now)

    def _fail(
        self,
        ledger: Ledger,
        euicc: EuiccRecord,
        package: PackageRecord,
        summary: dict[str, Any],
        outcome: str,
        der: bytes,
        now: float,
        extra: dict[str, Any] | None = None,
    ) -> ResultAccepted:
        """End `package` as failed on an answer that proves nothing (unsigned: the IPA's
        eimPackageResultResponseError, the eUICC's euiccPackageErrorUnsigned): `summary` is
        its result, recorded under `outcome` (with `extra`) and audited as an error."""
        ledger.update_package(
            dataclasses.replace(package, state=PackageState.FAILED, result_at=now, result=summary)
        )
        detail = {k: v for k, v in summary.items() if k != "der"} | (extra or {})
        tid = package.transaction_id
        ledger.add_result(
            ResultRecord(euicc.eid, now, outcome, tid, package.counter_value, der, detail)
        )
        ledger.audit(
            actor=DEVICE_ACTOR,
            action="esim.result",
            eid=euicc.eid,
            now=now,
            tenant=euicc.tenant,
            outcome="error",
            detail={"counter": package.counter_value, "transaction_id": tid.hex(), **detail},
        )
        return ResultAccepted(
            euicc.eid,
            package.counter_value,
            tid,
            summary["kind"],
            tuple((r[0], r[1]) for r in summary["results"]),
            None,
            PackageState.FAILED,
        )

    def _download_result(
        self, ledger: Ledger, euicc: EuiccRecord, value: dict[str, Any], now: float
    ) -> Outcome:
        """The IPA's answer to a ProfileDownloadTrigger: a signed ProfileInstallationResult
        (verified with the eUICC's key; success adds the profile, disabled) or a download
        error. Matched on the trigger's eimTransactionId."""
        der = encode("ProfileDownloadTriggerResult", value)
        tid = value.get("eimTransactionId")
        package = self._open_package(
            ledger, euicc, now, tid, der, DOWNLOAD_TRIGGER,
            f"no download trigger with eimTransactionId {tid.hex() if tid else None}",
        )  # fmt: skip
        if not isinstance(package, PackageRecord):
            return package
        kind, data = value["profileDownloadTriggerResultData"]
        summary: dict[str, Any] = {"kind": "profileDownloadTriggerResult", "der": der.hex()}
        iccid = None
        if kind == "profileInstallationResult":
            pir = data["profileInstallationResultData"]
            try:
                verify_raw(
                    _public_key(euicc.euicc_certificate),
                    encode("ProfileInstallationResultData", pir),
                    data["euiccSignPIR"],
                    "euiccSignPIR",
                )
            except SignatureInvalid as exc:
                return self._refuse(
                    ledger, euicc, now, Refusal.SIGNATURE_INVALID, str(exc), tid, der
                )
            raw_iccid = pir["notificationMetadata"].get("iccid")
            iccid = iccid_from_bytes(raw_iccid) if raw_iccid is not None else None
            final, detail = pir["finalResult"]
            ok = final == "successResult"
            summary["results"] = [
                ["profileInstallationResult", "success" if ok else jsonable(detail)]
            ]
            summary["iccid"] = iccid
        else:
            ok = False
            summary["results"] = [["profileDownloadError", data["profileDownloadErrorReason"]]]
        state = PackageState.DONE if ok else PackageState.FAILED
        ledger.update_package(
            dataclasses.replace(package, state=state, result_at=now, result=summary)
        )
        if ok and iccid is not None:
            profiles = {p.iccid: p for p in ledger.profiles(euicc.eid)}
            if iccid not in profiles:
                profiles[iccid] = ProfileRecord(
                    euicc.eid, iccid, ProfileState.DISABLED, False, now, note="installed"
                )
            ledger.replace_profiles(euicc.eid, sorted(profiles.values(), key=lambda p: p.iccid))
        detail = {k: v for k, v in summary.items() if k != "der"}
        ledger.add_result(
            ResultRecord(euicc.eid, now, "accepted", tid, package.counter_value, der, detail)
        )
        ledger.audit(
            actor=DEVICE_ACTOR,
            action="esim.download.result",
            eid=euicc.eid,
            now=now,
            tenant=euicc.tenant,
            outcome="ok" if ok else "error",
            detail={"counter": package.counter_value, **detail},
        )
        return ResultAccepted(
            euicc.eid,
            package.counter_value,
            package.transaction_id,
            "profileDownloadTriggerResult",
            tuple((r[0], r[1]) for r in summary["results"]),
            None,
            state,
        )

    def _handle_notification(self, ledger: Ledger, body: tuple[str, Any], now: float) -> Exchange:
        kind, value = body
        if kind == "provideEimPackageResult":
            exchange = self._provide_result(ledger, value, now)
            return Exchange(None, exchange.outcomes)
        return Exchange(None, (self._notification(ledger, value, now),))

    def _notification(self, ledger: Ledger, pending: tuple[str, Any], now: float) -> Outcome:
        kind, body = pending
        if kind != "otherSignedNotification":
            return NotificationHandled(None, None, (), False, f"{kind} is not handled yet")
        certificate_der = encode("Certificate", body["euiccCertificate"])
        eid = _subject_eid(certificate_der)
        euicc = ledger.euicc(eid) if eid else None
        if euicc is None or euicc.euicc_certificate != certificate_der:
            return NotificationHandled(
                eid or None, None, (), False, "notification from an unregistered eUICC certificate"
            )
        try:
            notification = verify_other_notification(body, _public_key(euicc.euicc_certificate))
        except (SignatureInvalid, InvalidIdentifier) as exc:
            self._refuse(ledger, euicc, now, Refusal.SIGNATURE_INVALID, str(exc), None, b"")
            return NotificationHandled(eid, None, (), False, str(exc))
        awaiting = any(
            op["op"] == "enable" and op.get("rollback") and op.get("iccid") == notification.iccid
            for p in ledger.open_packages(eid)
            for op in p.operations
        )
        before = ledger.profiles(eid)
        _store_profiles(
            ledger, eid, before, apply_notification(eid, before, notification, awaiting, now)
        )
        ledger.audit(
            actor=DEVICE_ACTOR,
            action="esim.notification",
            eid=eid,
            now=now,
            tenant=euicc.tenant,
            detail={
                "seq_number": notification.seq_number,
                "events": list(notification.events),
                "iccid": notification.iccid,
            },
        )
        return NotificationHandled(eid, notification.iccid, notification.events, True)
