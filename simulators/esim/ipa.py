"""A simulated IPA (IPAe in the device) in front of a `SimEuicc`, sans-IO.

It decides what to send next (`outgoing`), takes the eIM's answer (`incoming`) and runs one
timer: the rollback deadline. Connectivity is bound to the enabled profile: the IPA reaches the
eIM only when the network serves the enabled profile's carrier. After an enable with
rollbackFlag, the result has to reach the eIM over the *new* profile; if that is impossible
until `rollback_after` seconds have passed, the eUICC rolls back and the re-signed result
(enable ok + rollback ok) goes out over the old profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sgp32.asn1 import decode_from_eim, encode_to_eim
from sgp32.identifiers import eid_to_bytes
from sgp32.packages import bit_string
from simulators.esim.download import Es10bDownload
from simulators.esim.euicc import Result, SimEuicc


@dataclass
class _PendingResult:
    result: Any
    seq_number: int | None
    sent_over_rollback_profile: bool = False
    kind: str = "euiccPackageResult"


@dataclass
class _Download:
    """An indirect profile download under way (SGP.32 3.2.3): the trigger and the next step."""

    eim_transaction_id: bytes | None
    smdp_address: str
    matching_id: str
    step: str = "initiate"  # initiate -> authenticate -> bpp (-> cancel)
    transaction_id: bytes | None = None
    body: Any = None
    ctx_params1: Any = None
    """The ctxParams1 the eIM generated (InitiateAuthenticationOkEsipa), if any."""


@dataclass
class SimIpa:
    euicc: SimEuicc
    served_carriers: set[str]
    rollback_after: float = 30.0
    pending: list[_PendingResult] = field(default_factory=list)
    awaiting_since: float | None = None
    last_get_answer: str | None = None
    refused: list[Result] = field(default_factory=list)
    """Results the eUICC gave for packages it refused (for tests and logs)."""
    downloader: Es10bDownload | None = None
    """The eUICC's ES10b download functions; None: a download trigger is answered with an
    error (the device cannot download)."""
    download: _Download | None = None
    ipa_features: tuple[int, ...] = (1,)
    """IpaCapabilities.ipaFeatures it reports (1 indirectRspServerCommunication, 3
    eimCtxParams1Generation, 5 minimizeEsipaBytes)."""
    ipa_protocols: tuple[int, ...] = ()
    """IpaCapabilities.ipaSupportedProtocols it reports (0 ipaRetrieveHttps, 1
    ipaRetrieveCoaps, 2 ipaInjectHttps, 3 ipaInjectCoaps); empty: the field is left out."""

    pushed_transactions: set[bytes] = field(default_factory=set)
    """eimTransactionIds of the packages pushed to it (one pushed and then polled runs once;
    a polled package offered again still goes to the eUICC, which refuses the replay)."""
    pushes: int = 0
    """TransferEimPackageRequests the eIM pushed (for tests)."""
    sent_forms: list[str] = field(default_factory=list)
    """The AuthenticateServerResponse / PrepareDownloadResponse / CancelSessionResponse
    alternatives it sent (for tests)."""
    answers_with_transaction_id: list[bool] = field(default_factory=list)
    """Per relayed ok answer: did it carry the optional transactionId (an eIM leaves it out
    for an IPA with minimizeEsipaBytes)."""
    cancel: tuple[str, int] | None = None
    """Cancel the next download (ES10b.CancelSession, then ESipa CancelSession) with this
    reason instead of taking the step after this answer: ("authenticate", 3) after the
    AuthenticateClient answer (pprNotAllowed), ("bpp", 5) after the bound profile package
    (loadBppExecutionError). One-shot."""

    @property
    def compact(self) -> bool:
        return 5 in self.ipa_features

    @property
    def connected(self) -> bool:
        profile = self.euicc.enabled
        return profile is not None and profile.carrier in self.served_carriers

    def timer(self) -> float | None:
        """When `handle_timer` must run next (the rollback deadline), if ever."""
        if self.awaiting_since is None:
            return None
        return self.awaiting_since + self.rollback_after

    def handle_timer(self, now: float) -> None:
        deadline = self.timer()
        if deadline is None or now < deadline or self.connected or not self.euicc.can_roll_back:
            return
        rolled = self.euicc.rollback()
        self.awaiting_since = None
        self.pending = [
            _PendingResult(rolled, p.seq_number, True) if p.seq_number == _seq(rolled) else p
            for p in self.pending
        ]

    def outgoing(self, now: float) -> bytes | None:
        """The next message for the eIM, or None while there is no connectivity."""
        self.handle_timer(now)
        if not self.connected:
            return None
        eid = eid_to_bytes(self.euicc.eid)
        if self.pending:
            first = self.pending[0]
            body = {"eidValue": eid, "eimPackageResult": (first.kind, first.result)}
            return encode_to_eim("provideEimPackageResult", body)
        if self.download is not None:
            return self._download_message(self.download)
        if self.euicc.notifications:
            seq = min(self.euicc.notifications)
            note = self.euicc.notifications[seq]
            return encode_to_eim("handleNotificationEsipa", ("pendingNotification", note))
        return encode_to_eim("getEimPackageRequest", {"eidValue": eid})

    def incoming(self, sent: bytes, answer: bytes | None, now: float) -> None:
        """The eIM's answer (None: an empty 204) to the message `sent`."""
        tag = sent[:2]
        if tag == b"\xbf\x3d":  # handleNotification: 204 means the eIM has it
            seq = min(self.euicc.notifications)
            self.euicc.remove_notification(seq)
            return
        if answer is None:
            return
        message = decode_from_eim(answer)
        if message.name == "getEimPackageResponse":
            self._package(message.body, now)
        elif message.name == "provideEimPackageResultResponse":
            self._acknowledged(message.body)
        elif self.download is not None:
            self._download_answer(self.download, message.name, message.body)

    def pushed(self, data: bytes, now: float, with_result: bool = False) -> bytes:
        """A TransferEimPackageRequest the eIM pushed: the package is run like a polled one;
        the answer is the TransferEimPackageResponse. Its result goes out with
        ProvideEimPackageResult (answer eimPackageReceived) -- or, `with_result` and when the
        IPA can answer at once, in the TransferEimPackageResponse itself (euiccPackageResult,
        ipaEuiccDataResponse); a signed result stays pending until the eIM acknowledges its
        seqNumber (an eimAcknowledgements push, or the answer to a later
        ProvideEimPackageResult). An eimAcknowledgements push is such an acknowledgement."""
        message = decode_from_eim(data)
        if message.name != "transferEimPackageRequest":
            return encode_to_eim("transferEimPackageResponse", ("eimPackageError", 1))
        self.pushes += 1
        kind, value = message.body
        if kind == "eimAcknowledgements":
            for seq in value:
                self._acknowledge_seq(seq)
            return encode_to_eim("transferEimPackageResponse", ("eimPackageReceived", None))
        before = len(self.pending)
        self._package(message.body, now)
        tid = _transaction_of(kind, value)
        if tid is not None:
            self.pushed_transactions.add(tid)
        if with_result and self.connected and len(self.pending) == before + 1:
            entry = self.pending[-1]
            if entry.kind in ("euiccPackageResult", "ipaEuiccDataResponse"):
                if entry.seq_number is None:  # nothing to acknowledge it by: delivered now
                    self.pending.pop()
                return encode_to_eim("transferEimPackageResponse", (entry.kind, entry.result))
        return encode_to_eim("transferEimPackageResponse", ("eimPackageReceived", None))

    def _acknowledge_seq(self, seq: int) -> None:
        for entry in list(self.pending):
            if entry.seq_number == seq:
                self.pending.remove(entry)
                if not entry.sent_over_rollback_profile and self.euicc.can_roll_back:
                    self.euicc.confirm()  # the result reached the eIM over the new profile
                    self.awaiting_since = None

    # ---- indirect profile download (the eIM relays ES9+) -----------------------------------

    def _trigger(self, value: dict[str, Any]) -> None:
        tid = value.get("eimTransactionId")
        kind, data = value.get("profileDownloadData", ("", None))
        parts = str(data).split("$") if kind == "activationCode" else []
        if self.downloader is None or len(parts) < 3:
            self._download_failed(tid)
            return
        self.download = _Download(tid, parts[1], parts[2])

    def _download_failed(self, tid: bytes | None, reason: int = 127) -> None:
        result: dict[str, Any] = {
            "profileDownloadTriggerResultData": (
                "profileDownloadError",
                {"profileDownloadErrorReason": reason},
            )
        }
        if tid is not None:
            result["eimTransactionId"] = tid
        self.download = None
        self.pending.append(_PendingResult(result, None, kind="profileDownloadTriggerResult"))

    def _download_message(self, d: _Download) -> bytes:
        assert self.downloader is not None
        if d.step == "initiate":
            body: dict[str, Any] = {
                "euiccChallenge": self.downloader.get_challenge(),
                "smdpAddress": d.smdp_address,
                "euiccInfo1": self.downloader.euicc_info1(),
            }
            if d.eim_transaction_id is not None:
                body["eimTransactionId"] = d.eim_transaction_id
            return encode_to_eim("initiateAuthenticationRequestEsipa", body)
        if d.step == "authenticate":
            response = self.downloader.authenticate_server(
                d.body, d.matching_id, d.ctx_params1, compact=self.compact
            )
            self.sent_forms.append(response[0])
            return encode_to_eim(
                "authenticateClientRequestEsipa",
                {"transactionId": d.transaction_id, "authenticateServerResponse": response},
            )
        if d.step == "cancel":
            cancelled = self.downloader.cancel_session(d.body, compact=self.compact)
            self.sent_forms.append(cancelled[0])
            return encode_to_eim(
                "cancelSessionRequestEsipa",
                {"transactionId": d.transaction_id, "cancelSessionResponse": cancelled},
            )
        response = self.downloader.prepare_download(d.body, compact=self.compact)
        self.sent_forms.append(response[0])
        return encode_to_eim(
            "getBoundProfilePackageRequestEsipa",
            {"transactionId": d.transaction_id, "prepareDownloadResponse": response},
        )

    def _download_answer(self, d: _Download, name: str, body: tuple[str, Any]) -> None:
        kind, value = body
        if kind.endswith("ErrorEsipa") or name == "cancelSessionResponseEsipa":
            self._download_failed(d.eim_transaction_id)
            return
        self.answers_with_transaction_id.append("transactionId" in value)
        step = {
            "authenticateClientResponseEsipa": "authenticate",
            "getBoundProfilePackageResponseEsipa": "bpp",
        }.get(name)
        if self.cancel is not None and self.cancel[0] == step:
            d.step, d.body = "cancel", self.cancel[1]
            self.cancel = None
            return
        if name == "initiateAuthenticationResponseEsipa":
            d.transaction_id = value["serverSigned1"]["transactionId"]
            d.step, d.body = "authenticate", value
            d.ctx_params1 = value.get("ctxParams1")
        elif name == "authenticateClientResponseEsipa":
            d.step, d.body = "bpp", value
        elif name == "getBoundProfilePackageResponseEsipa":
            assert self.downloader is not None
            pir = self.downloader.load_bound_profile_package(value["boundProfilePackage"])
            # the same signed result, as a notification for the SM-DP+ (sent after the result)
            seq = pir["profileInstallationResultData"]["notificationMetadata"]["seqNumber"]
            self.euicc.notifications[seq] = ("profileInstallationResult", pir)
            result: dict[str, Any] = {
                "profileDownloadTriggerResultData": ("profileInstallationResult", pir)
            }
            if d.eim_transaction_id is not None:
                result["eimTransactionId"] = d.eim_transaction_id
            self.download = None
            self.pending.append(_PendingResult(result, None, kind="profileDownloadTriggerResult"))

    def _package(self, body: tuple[str, Any], now: float) -> None:
        kind, value = body
        self.last_get_answer = kind if kind != "eimPackageError" else f"eimPackageError:{value}"
        tid = _transaction_of(kind, value)
        if tid is not None and tid in self.pushed_transactions:
            return  # pushed and then polled: run once (its result is on its way)
        if kind == "profileDownloadTriggerRequest":
            self._trigger(value)
            return
        if kind == "ipaEuiccDataRequest":
            self.pending.append(
                _PendingResult(self._ipa_euicc_data(value), None, kind="ipaEuiccDataResponse")
            )
            return
        if kind != "euiccPackageRequest":
            return
        result = self.euicc.load_package(value)
        if result[0] != "euiccPackageResultSigned":
            self.refused.append(result)
        self.pending.append(_PendingResult(result, _seq(result)))
        if self.euicc.can_roll_back:
            self.awaiting_since = now

    def _ipa_euicc_data(self, request: dict[str, Any]) -> tuple[str, Any]:
        """IpaEuiccDataResponse: EUICCInfo2 (with the extCardResource of now), DeviceInfo and
        IpaCapabilities -- the subset of the request's tagList it has (without ES10b download
        functions only the IpaCapabilities; an error when none of what was asked is there)."""
        tid = request.get("eimTransactionId")
        tags = request["tagList"]
        data: dict[str, Any] = {}
        if b"\xbf\x22" in tags and self.downloader is not None:
            data["euiccInfo2"] = self.downloader._euicc_info2()
        if b"\xa8" in tags:
            capabilities: dict[str, Any] = {"ipaFeatures": bit_string(self.ipa_features)}
            if self.ipa_protocols:
                capabilities["ipaSupportedProtocols"] = bit_string(self.ipa_protocols)
            data["ipaCapabilities"] = capabilities
        if b"\xa9" in tags and self.downloader is not None:
            data["deviceInfo"] = self.downloader.device_info()
        if not data:
            error: dict[str, Any] = {"ipaEuiccDataErrorCode": 127}
            if tid is not None:
                error["eimTransactionId"] = tid
            return ("ipaEuiccDataResponseError", error)
        if tid is not None:
            data["eimTransactionId"] = tid
        return ("ipaEuiccData", data)

    def _acknowledged(self, body: tuple[str, Any]) -> None:
        kind, _ = body
        if kind == "provideEimPackageResultError":
            return  # keep it: the eIM did not take it
        done = self.pending.pop(0)
        if not done.sent_over_rollback_profile and self.euicc.can_roll_back:
            self.euicc.confirm()  # the result went out over the new profile
            self.awaiting_since = None


def _transaction_of(kind: str, value: Any) -> bytes | None:
    if kind == "euiccPackageRequest":
        tid: bytes | None = value["euiccPackageSigned"].get("eimTransactionId")
        return tid
    if kind in ("profileDownloadTriggerRequest", "ipaEuiccDataRequest"):
        found: bytes | None = value.get("eimTransactionId")
        return found
    return None


def _seq(result: Result) -> int | None:
    kind, body = result
    if kind == "euiccPackageResultSigned":
        seq: int = body["euiccPackageResultDataSigned"]["seqNumber"]
        return seq
    return None
