"""A simulated eUICC: profiles, associated eIMs, and the checks ES10b.LoadEuiccPackage makes.

Sans-IO and deterministic given its keys. What it refuses, and how (SGP.32 v1.2 5.9.1):

- an eimId it is not associated with, or an eIM signature that does not verify: an *unsigned*
  error (EuiccPackageErrorUnsigned) - the eUICC cannot know who sent it, so it signs nothing;
- another EID: signed `invalidEid`; a counterValue not above the last one it accepted from that
  eIM: signed `replayError`; above the range: signed `counterValueOutOfRange`.

An enable with rollbackFlag keeps a rollback point until the result is confirmed delivered;
`rollback()` re-enables the previous profile and re-signs the result with `rollbackResult ok`
appended (the shape of the reference vector `enable-ok-rolledback`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.asn1 import encode
from sgp32.errors import SignatureInvalid
from sgp32.identifiers import eid_to_bytes, iccid_from_bytes, iccid_to_bytes
from sgp32.notifications import DELETE, DISABLE, ENABLE, sign_other_notification
from sgp32.signing import NO_ASSOCIATION_TOKEN, sign_euicc_package_result, verify_euicc_package

MAX_COUNTER = 0x7FFFFF
INVALID_EID, REPLAY_ERROR, COUNTER_OUT_OF_RANGE = 3, 4, 6
OK, NOT_FOUND, WRONG_STATE, NO_FALLBACK, UNDEFINED = 0, 1, 2, 2, 127
NOTIFICATION_ADDRESS = "eim.invalid"


@dataclass
class SimProfile:
    iccid: str
    carrier: str
    enabled: bool = False
    fallback: bool = False


@dataclass
class EimAssociation:
    """An eIM the eUICC trusts: its key, the last counterValue accepted, the token."""

    eim_id: str
    public_key: ec.EllipticCurvePublicKey
    counter_value: int = 0
    association_token: int = NO_ASSOCIATION_TOKEN


@dataclass
class _RollbackPoint:
    previous: str | None
    target: str
    seq_number: int
    data: dict[str, Any]
    association_token: int


Result = tuple[str, dict[str, Any]]


@dataclass
class SimEuicc:
    eid: str
    key: ec.EllipticCurvePrivateKey
    certificate_der: bytes
    eum_certificate_der: bytes
    profiles: dict[str, SimProfile]
    eims: dict[str, EimAssociation] = field(default_factory=dict)
    seq_number: int = 0
    notifications: dict[int, tuple[str, Any]] = field(default_factory=dict)
    rollback_point: _RollbackPoint | None = None

    @property
    def enabled(self) -> SimProfile | None:
        return next((p for p in self.profiles.values() if p.enabled), None)

    def _next_seq(self) -> int:
        self.seq_number += 1
        return self.seq_number

    def _notify(self, event: int, iccid: str) -> None:
        seq = self._next_seq()
        self.notifications[seq] = sign_other_notification(
            self.key,
            seq_number=seq,
            event=event,
            iccid=iccid,
            address=NOTIFICATION_ADDRESS,
            euicc_certificate_der=self.certificate_der,
            eum_certificate_der=self.eum_certificate_der,
        )

    # ---- ES10b.LoadEuiccPackage -----------------------------------------------------------------

    def load_package(self, request: dict[str, Any]) -> Result:
        signed = request["euiccPackageSigned"]
        eim_id, tid = signed["eimId"], signed.get("eimTransactionId")
        association = self.eims.get(eim_id)
        unsigned: dict[str, Any] = {"eimId": eim_id}
        if tid is not None:
            unsigned["eimTransactionId"] = tid
        if association is None:
            return ("euiccPackageErrorUnsigned", unsigned)
        try:
            verify_euicc_package(request, association.public_key, association.association_token)
        except SignatureInvalid:
            return ("euiccPackageErrorUnsigned", unsigned)
        counter = signed["counterValue"]
        if signed["eidValue"] != eid_to_bytes(self.eid):
            return self._error(association, counter, tid, INVALID_EID)
        if counter <= association.counter_value:
            return self._error(association, counter, tid, REPLAY_ERROR)
        if counter > MAX_COUNTER:
            return self._error(association, counter, tid, COUNTER_OUT_OF_RANGE)
        association.counter_value = counter
        self.rollback_point = None  # a new package ends the chance to roll back the last one
        kind, operations = signed["euiccPackage"]
        results = [self._execute(op, kind) for op in operations]
        data: dict[str, Any] = {"eimId": eim_id, "counterValue": counter}
        if tid is not None:
            data["eimTransactionId"] = tid
        data["seqNumber"] = self._next_seq()
        data["euiccResult"] = results
        if self.rollback_point is not None:
            self.rollback_point.seq_number = data["seqNumber"]
            self.rollback_point.data = data
            self.rollback_point.association_token = association.association_token
        return sign_euicc_package_result(
            self.key, "euiccPackageResultSigned", data, association.association_token
        )

    def _error(
        self, association: EimAssociation, counter: int, tid: bytes | None, code: int
    ) -> Result:
        data: dict[str, Any] = {"eimId": association.eim_id, "counterValue": counter}
        if tid is not None:
            data["eimTransactionId"] = tid
        data["euiccPackageErrorCode"] = code
        return sign_euicc_package_result(
            self.key, "euiccPackageErrorSigned", data, association.association_token
        )

    def _execute(self, op: tuple[str, Any], kind: str) -> tuple[str, Any]:
        name, body = op
        iccid = (
            iccid_from_bytes(body["iccid"]) if isinstance(body, dict) and "iccid" in body else None
        )
        profile = self.profiles.get(iccid) if iccid is not None else None
        if name == "enable":
            if profile is None:
                return ("enableResult", NOT_FOUND)
            if profile.enabled:
                return ("enableResult", WRONG_STATE)
            previous = self.enabled
            if previous is not None:
                previous.enabled = False
                self._notify(DISABLE, previous.iccid)
            profile.enabled = True
            self._notify(ENABLE, profile.iccid)
            if "rollbackFlag" in body:
                self.rollback_point = _RollbackPoint(
                    previous.iccid if previous else None, profile.iccid, 0, {}, 0
                )
            return ("enableResult", OK)
        if name == "disable":
            if profile is None:
                return ("disableResult", NOT_FOUND)
            if not profile.enabled:
                return ("disableResult", WRONG_STATE)
            profile.enabled = False
            self._notify(DISABLE, profile.iccid)
            return ("disableResult", OK)
        if name == "delete":
            if profile is None:
                return ("deleteResult", NOT_FOUND)
            if profile.enabled:
                return ("deleteResult", WRONG_STATE)
            del self.profiles[profile.iccid]
            self._notify(DELETE, profile.iccid)
            return ("deleteResult", OK)
        if name == "listProfileInfo":
            return ("listProfileInfoResult", ("profileInfoListOk", self._profile_info()))
        if name == "setFallbackAttribute":
            if profile is None:
                return ("setFallbackAttributeResult", NOT_FOUND)
            for other in self.profiles.values():
                other.fallback = other is profile
            return ("setFallbackAttributeResult", OK)
        if name == "unsetFallbackAttribute":
            if not any(p.fallback for p in self.profiles.values()):
                return ("unsetFallbackAttributeResult", NO_FALLBACK)
            for other in self.profiles.values():
                other.fallback = False
            return ("unsetFallbackAttributeResult", OK)
        if name == "getRAT":
            return ("getRATResult", [])
        if name == "configureImmediateEnable":
            return ("configureImmediateEnableResult", OK)
        if name == "setDefaultDpAddress":
            return ("setDefaultDpAddressResult", {"setDefaultDpAddressResult": OK})
        if name == "listEim":
            return ("listEimResult", ("eimIdList", [{"eimId": e} for e in sorted(self.eims)]))
        if name == "deleteEim":
            return ("deleteEimResult", OK if self.eims.pop(body["eimId"], None) else 1)
        if name == "addEim":
            return ("addEimResult", self._add_eim(body))
        if name == "updateEim":
            return ("updateEimResult", self._update_eim(body))
        return ("processingTerminated", 2)  # unknownOrDamagedCommand

    def _eim_key(self, body: dict[str, Any]) -> ec.EllipticCurvePublicKey | None:
        kind, value = body.get("eimPublicKeyData", (None, None))
        if kind == "eimPublicKey":
            key = serialization.load_der_public_key(encode("SubjectPublicKeyInfo", value))
        elif kind == "eimCertificate":
            key = x509.load_der_x509_certificate(encode("Certificate", value)).public_key()
        else:
            return None
        return key if isinstance(key, ec.EllipticCurvePublicKey) else None

    def _add_eim(self, body: dict[str, Any]) -> tuple[str, int]:
        """eCO addEim: a new associated eIM with its key and counter; an associationToken
        of -1 asks the eUICC to make one (returned instead of the result code)."""
        eim_id = body["eimId"]
        if eim_id in self.eims:
            return ("addEimResultCode", 2)  # associatedEimAlreadyExists
        key = self._eim_key(body)
        if key is None:
            return ("addEimResultCode", 7)  # commandError: no usable eIM key
        counter = body.get("counterValue", 0)
        if not 0 <= counter <= MAX_COUNTER:
            return ("addEimResultCode", 6)  # counterValueOutOfRange
        token = body.get("associationToken", NO_ASSOCIATION_TOKEN)
        made = token == -1
        if made:
            token = 1 + max((a.association_token for a in self.eims.values()), default=0)
        self.eims[eim_id] = EimAssociation(eim_id, key, counter, token)
        return ("associationToken", token) if made else ("addEimResultCode", OK)

    def _update_eim(self, body: dict[str, Any]) -> int:
        association = self.eims.get(body["eimId"])
        if association is None:
            return 1  # eimNotFound
        key = self._eim_key(body)
        if key is not None:
            association.public_key = key
        counter = body.get("counterValue")
        if counter is not None:
            if not 0 <= counter <= MAX_COUNTER:
                return 6  # counterValueOutOfRange
            association.counter_value = counter
        return OK

    def _profile_info(self) -> list[dict[str, Any]]:
        infos = []
        for p in sorted(self.profiles.values(), key=lambda p: p.iccid):
            info: dict[str, Any] = {
                "iccid": iccid_to_bytes(p.iccid),
                "profileState": 1 if p.enabled else 0,
                "serviceProviderName": p.carrier,
            }
            if p.fallback:
                info["fallbackAttribute"] = True
            infos.append(info)
        return infos

    # ---- rollback, confirmation, notifications ---------------------------------------------------

    @property
    def can_roll_back(self) -> bool:
        return self.rollback_point is not None

    def rollback(self) -> Result:
        """ES10b ProfileRollback: back to the previous profile; the package's result is
        re-signed with `rollbackResult ok` appended."""
        point = self.rollback_point
        if point is None:
            raise RuntimeError(f"eUICC {self.eid}: nothing to roll back")
        self.rollback_point = None
        target = self.profiles[point.target]
        target.enabled = False
        for seq, (_, body) in list(self.notifications.items()):  # the enable never happened
            if body["tbsOtherNotification"].get("iccid") == iccid_to_bytes(point.target):
                del self.notifications[seq]
        if point.previous is not None:
            self.profiles[point.previous].enabled = True
            self._notify(ENABLE, point.previous)
        data = dict(point.data)
        data["euiccResult"] = [*point.data["euiccResult"], ("rollbackResult", OK)]
        return sign_euicc_package_result(
            self.key, "euiccPackageResultSigned", data, point.association_token
        )

    def confirm(self) -> None:
        """The eIM acknowledged the result over the new profile: no rollback any more."""
        self.rollback_point = None

    def remove_notification(self, seq_number: int) -> None:
        self.notifications.pop(seq_number, None)
