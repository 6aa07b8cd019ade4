"""The eIM's ES9+ relay for indirect profile download (SGP.32 3.2.3): the I/O shell around
:mod:`sgp32.es9plus`.

The IPA's InitiateAuthentication / AuthenticateClient / GetBoundProfilePackage / CancelSession
arrive over ESipa; the relay makes the ES9+ call to the SM-DP+ (HTTPS, JSON; the SM-DP+'s TLS
certificate checked against the configured CA bundle) and answers the IPA with the ESipa form
of the SM-DP+'s answer. The SM-DP+ of a session is the one InitiateAuthentication named; later
calls of the same transactionId go to it. Sessions live in a
:class:`~sgp32.eim.sessions.RelaySessions` -- in serve the store's ``eim_download_session``,
written before the IPA gets the answer, so a download survives a restart of the eIM; they end
`SESSION_TTL` seconds after their last step. An SM-DP+ that cannot be reached or answers
garbage gets the IPA the function's undefinedError, and the reason is logged.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sgp32.asn1 import decode, decode_from_eim, encode, encode_to_ipa
from sgp32.eim.sessions import SESSION_TTL, DownloadSession, MemorySessions, RelaySessions, Step
from sgp32.es9plus import (
    ES9_HEADERS,
    ES9_PATH,
    UNDEFINED,
    Es9Error,
    EuiccContext,
    answer_for,
    b64,
    ctx_params1_for,
    euicc_info1_of,
    expand_authenticate_response,
    expand_cancel_session_response,
    expand_prepare_download_response,
    json_body,
    minimizes_esipa_bytes,
    notification_accepted,
    request_for,
    smdp_address_of,
    smdp_oid_of,
    without_transaction_id,
)

log = logging.getLogger("fleetloop.sgp32.relay")
__all__ = ["RELAYED", "SESSION_TTL", "Es9Relay", "RelayedCall", "TriggerOrigin"]

RELAYED = frozenset(
    {
        "initiateAuthenticationRequestEsipa",
        "authenticateClientRequestEsipa",
        "getBoundProfilePackageRequestEsipa",
        "cancelSessionRequestEsipa",
    }
)
_ERRORS = {
    "initiateAuthentication": (
        "initiateAuthenticationResponseEsipa",
        "initiateAuthenticationErrorEsipa",
    ),
    "authenticateClient": ("authenticateClientResponseEsipa", "authenticateClientErrorEsipa"),
    "getBoundProfilePackage": (
        "getBoundProfilePackageResponseEsipa",
        "getBoundProfilePackageErrorEsipa",
    ),
    "cancelSession": ("cancelSessionResponseEsipa", "cancelSessionError"),
}


@dataclass
class RelayedCall:
    """What one relayed call did (for the audit and tests)."""

    function: str
    smdp_address: str | None
    failure: str | None


@dataclass(frozen=True)
class TriggerOrigin:
    """The ProfileDownloadTrigger an InitiateAuthentication answers (its eimTransactionId)."""

    eim_transaction_id: bytes
    eid: str
    activation_code: str | None


_NEXT = {
    "initiateAuthentication": Step.AUTHENTICATE,
    "authenticateClient": Step.BOUND_PACKAGE,
    "getBoundProfilePackage": Step.INSTALLING,
    "cancelSession": Step.CANCELLED,
}


class Es9Relay:
    """ES9+ towards SM-DP+s on behalf of IPAs. `tls`: the context that checks SM-DP+
    certificates (the CA bundle); `sessions`: where sessions are kept (default: memory)."""

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        sessions: RelaySessions | None = None,
        context: Callable[[str], Awaitable[EuiccContext | None]] | None = None,
    ) -> None:
        #: What the eIM knows of an EID's eUICC (certificates, IpaEuiccData): for generating
        #: ctxParams1 and expanding compact messages. None: neither is done.
        self.context = context
        self._client = httpx.AsyncClient(verify=tls if tls is not None else True, timeout=timeout)
        self.sessions: RelaySessions = sessions if sessions is not None else MemorySessions()
        self._clock = clock
        self.calls: list[RelayedCall] = []

    async def aclose(self) -> None:
        await self._client.aclose()

    async def relay(self, name: str, body: Any, origin: TriggerOrigin | None = None) -> bytes:
        """The ESipa answer (DER) to a relayed message from the IPA. `origin`: the download
        trigger an InitiateAuthentication names (kept with the session)."""
        now = self._clock()
        session = None
        if isinstance(body, dict) and "transactionId" in body:
            session = await self.sessions.find(body["transactionId"], now)
        try:
            body = await self._expanded(name, body, session, origin)
            request = request_for(name, body)
        except Es9Error as exc:
            log.warning("ES9+ relay refused the request", extra={"reason": str(exc)})
            self.calls.append(RelayedCall(_function_of(name), None, str(exc)))
            return _error(_function_of(name))
        address = request.smdp_address or (session.smdp_address if session else None)
        if address is None:
            self.calls.append(RelayedCall(request.function, None, "unknown transactionId"))
            return _error(request.function)
        url = f"https://{address}{ES9_PATH}{request.function}"
        try:
            response = await self._client.post(
                url, content=json_body(request.body), headers=ES9_HEADERS
            )
            if response.status_code != 200:  # ES9+ answers every outcome with 200 + header
                raise Es9Error(f"ES9+ {request.function}: HTTP {response.status_code}")
            answer, failure = answer_for(request.function, response.json())
        except (httpx.HTTPError, ValueError, Es9Error) as exc:
            log.warning("ES9+ call failed", extra={"smdp": address, "function": request.function})
            self.calls.append(RelayedCall(request.function, address, str(exc)))
            return _error(request.function)
        step = _NEXT[request.function] if failure is None else Step.FAILED
        if request.function == "initiateAuthentication" and failure is None:
            ok = decode_from_eim(answer).body[1]
            signed1 = ok["serverSigned1"]
            ctx = None
            if origin is not None and self.context is not None:
                ctx = ctx_params1_for(origin.activation_code, await self.context(origin.eid))
            if ctx is not None:  # the eIM's ctxParams1: the IPA may leave it out later
                ok["ctxParams1"] = ctx
                answer = encode_to_ipa(
                    "initiateAuthenticationResponseEsipa", ("initiateAuthenticationOkEsipa", ok)
                )
            # committed before the IPA can take the next step
            await self.sessions.open(
                DownloadSession(
                    transaction_id=signed1["transactionId"],
                    smdp_address=address,
                    step=step,
                    created_at=now,
                    updated_at=now,
                    eim_transaction_id=origin.eim_transaction_id if origin else None,
                    eid=origin.eid if origin else None,
                    activation_code=origin.activation_code if origin else None,
                    server_address=signed1["serverAddress"],
                    server_challenge=signed1["serverChallenge"],
                    ctx_params1=encode("CtxParams1", ctx) if ctx is not None else None,
                    smdp_oid=smdp_oid_of(encode("Certificate", ok["serverCertificate"])),
                )
            )
        elif session is not None and request.transaction_id is not None:
            otpk = None
            if request.function == "authenticateClient" and failure is None:
                # a later compactEuiccSigned2 may leave out the otPK the SM-DP+ asked to reuse
                otpk = decode_from_eim(answer).body[1]["smdpSigned2"].get("bppEuiccOtpk")
            await self.sessions.advance(request.transaction_id, step, now, bpp_euicc_otpk=otpk)
        self.calls.append(RelayedCall(request.function, address, failure))
        eid = origin.eid if origin is not None else session.eid if session is not None else None
        if failure is None and eid is not None and await self._minimizes(eid):
            answer = without_transaction_id(answer)
        return answer

    async def _minimizes(self, eid: str) -> bool:
        """Whether this EID's IPA declared minimizeEsipaBytes (lean answers for it)."""
        return self.context is not None and minimizes_esipa_bytes(await self.context(eid))

    async def _expanded(
        self,
        name: str,
        body: Any,
        session: DownloadSession | None,
        origin: TriggerOrigin | None = None,
    ) -> Any:
        """A compact eUICC answer (SGP.32 minimizeEsipaBytes: AuthenticateServerResponse,
        PrepareDownloadResponse, CancelSessionResponse) expanded to the SGP.22 form the SM-DP+
        takes, from what the session knows; an InitiateAuthentication without smdpAddress or
        euiccInfo1 (optional in ESipa, mandatory in ES9+) completed from the trigger's
        activation code and the eUICC's IpaEuiccData; everything else as it came."""
        if name == "initiateAuthenticationRequestEsipa":
            body = dict(body)
            if "smdpAddress" not in body and origin is not None:
                address = smdp_address_of(origin.activation_code)
                if address is not None:
                    body["smdpAddress"] = address
            if "euiccInfo1" not in body and origin is not None and self.context is not None:
                info1 = euicc_info1_of(await self.context(origin.eid))
                if info1 is not None:
                    body["euiccInfo1"] = info1
            return body
        if name == "getBoundProfilePackageRequestEsipa":
            kind, value = body["prepareDownloadResponse"]
            if kind != "compactDownloadResponseOk":
                return body
            if session is None:
                raise Es9Error("compact PrepareDownloadResponse for an unknown transactionId")
            full = expand_prepare_download_response(
                value,
                transaction_id=session.transaction_id,
                bpp_euicc_otpk=session.bpp_euicc_otpk,
            )
            return {**body, "prepareDownloadResponse": full}
        if name == "cancelSessionRequestEsipa":
            kind, value = body["cancelSessionResponse"]
            if kind != "compactCancelSessionResponseOk":
                return body
            if session is None:
                raise Es9Error("compact CancelSessionResponse for an unknown transactionId")
            full = expand_cancel_session_response(
                value, transaction_id=session.transaction_id, smdp_oid=session.smdp_oid
            )
            return {**body, "cancelSessionResponse": full}
        if name != "authenticateClientRequestEsipa":
            return body
        kind, value = body["authenticateServerResponse"]
        if kind != "compactAuthenticateResponseOk":
            return body
        if session is None:
            raise Es9Error("compact AuthenticateServerResponse for an unknown transactionId")
        context = None
        if session.eid is not None and self.context is not None:
            context = await self.context(session.eid)
        ctx = decode("CtxParams1", session.ctx_params1) if session.ctx_params1 else None
        expanded = expand_authenticate_response(
            value,
            transaction_id=session.transaction_id,
            server_address=session.server_address,
            server_challenge=session.server_challenge,
            ctx_params1=ctx,
            context=context,
        )
        return {**body, "authenticateServerResponse": expanded}

    async def notify(self, smdp_address: str, pending_notification_der: bytes) -> bool:
        """ES9+ handleNotification: a notification the eUICC addressed to an SM-DP+ (the
        installation result of an indirect download), forwarded as it is. True when the SM-DP+
        took it."""
        url = f"https://{smdp_address}{ES9_PATH}handleNotification"
        body = {"pendingNotification": b64(pending_notification_der)}
        try:
            response = await self._client.post(url, content=json_body(body), headers=ES9_HEADERS)
        except httpx.HTTPError as exc:
            log.warning("ES9+ handleNotification failed", extra={"smdp": smdp_address})
            self.calls.append(RelayedCall("handleNotification", smdp_address, str(exc)))
            return False
        refused = notification_accepted(response.status_code, response.content)
        self.calls.append(RelayedCall("handleNotification", smdp_address, refused))
        return refused is None


def _function_of(name: str) -> str:
    return {
        "initiateAuthenticationRequestEsipa": "initiateAuthentication",
        "authenticateClientRequestEsipa": "authenticateClient",
        "getBoundProfilePackageRequestEsipa": "getBoundProfilePackage",
        "cancelSessionRequestEsipa": "cancelSession",
    }[name]


def _error(function: str) -> bytes:
    message, alternative = _ERRORS[function]
    return encode_to_ipa(message, (alternative, UNDEFINED))
