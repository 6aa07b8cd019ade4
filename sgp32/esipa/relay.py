"""The eIM's ES9+ relay for indirect profile download (SGP.32 3.2.3): the I/O shell around
:mod:`sgp32.es9plus`.

The IPA's InitiateAuthentication / AuthenticateClient / GetBoundProfilePackage / CancelSession
arrive over ESipa; the relay makes the ES9+ call to the SM-DP+ (HTTPS, JSON; the SM-DP+'s TLS
certificate checked against the configured CA bundle) and answers the IPA with the ESipa form
of the SM-DP+'s answer. The SM-DP+ of a session is the one InitiateAuthentication named; later
calls of the same transactionId go to it (kept in memory for `SESSION_TTL` seconds: a download
that outlives a restart starts again, as SGP.22 allows). An SM-DP+ that cannot be reached or
answers garbage gets the IPA the function's undefinedError, and the reason is logged.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sgp32.asn1 import encode_to_ipa
from sgp32.es9plus import (
    ADMIN_PROTOCOL,
    ES9_PATH,
    UNDEFINED,
    Es9Error,
    answer_for,
    b64,
    request_for,
)

log = logging.getLogger("fleetloop.sgp32.relay")
SESSION_TTL = 600.0

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


class Es9Relay:
    """ES9+ towards SM-DP+s on behalf of IPAs. `tls`: the context that checks SM-DP+
    certificates (the CA bundle); `scheme` is https except in tests of the plumbing."""

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = httpx.AsyncClient(verify=tls if tls is not None else True, timeout=timeout)
        self._sessions: dict[bytes, tuple[str, float]] = {}
        self._clock = clock
        self.calls: list[RelayedCall] = []

    async def aclose(self) -> None:
        await self._client.aclose()

    def _address(self, transaction_id: bytes | None) -> str | None:
        now = self._clock()
        for tid, (_, at) in list(self._sessions.items()):
            if now - at > SESSION_TTL:
                del self._sessions[tid]
        if transaction_id is None:
            return None
        found = self._sessions.get(transaction_id)
        return found[0] if found else None

    async def relay(self, name: str, body: Any) -> bytes:
        """The ESipa answer (DER) to a relayed message from the IPA."""
        try:
            request = request_for(name, body)
        except Es9Error as exc:
            log.warning("ES9+ relay refused the request", extra={"reason": str(exc)})
            return _error(_function_of(name))
        address = request.smdp_address or self._address(request.transaction_id)
        if address is None:
            self.calls.append(RelayedCall(request.function, None, "unknown transactionId"))
            return _error(request.function)
        url = f"https://{address}{ES9_PATH}{request.function}"
        try:
            response = await self._client.post(
                url,
                json=request.body,
                headers={"X-Admin-Protocol": ADMIN_PROTOCOL},
            )
            answer, failure = answer_for(request.function, response.json())
        except (httpx.HTTPError, ValueError, Es9Error) as exc:
            log.warning("ES9+ call failed", extra={"smdp": address, "function": request.function})
            self.calls.append(RelayedCall(request.function, address, str(exc)))
            return _error(request.function)
        if request.function == "initiateAuthentication" and failure is None:
            tid_text = response.json().get("transactionId")
            if isinstance(tid_text, str):
                self._sessions[bytes.fromhex(tid_text)] = (address, self._clock())
        self.calls.append(RelayedCall(request.function, address, failure))
        return answer

    async def notify(self, smdp_address: str, pending_notification_der: bytes) -> bool:
        """ES9+ handleNotification: a notification the eUICC addressed to an SM-DP+ (the
        installation result of an indirect download), forwarded as it is. True when the SM-DP+
        took it."""
        url = f"https://{smdp_address}{ES9_PATH}handleNotification"
        body = {"pendingNotification": b64(pending_notification_der)}
        try:
            response = await self._client.post(
                url, json=body, headers={"X-Admin-Protocol": ADMIN_PROTOCOL}
            )
            ok = response.status_code in (200, 204)
        except httpx.HTTPError as exc:
            log.warning("ES9+ handleNotification failed", extra={"smdp": smdp_address})
            self.calls.append(RelayedCall("handleNotification", smdp_address, str(exc)))
            return False
        self.calls.append(
            RelayedCall("handleNotification", smdp_address, None if ok else "refused")
        )
        return ok


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
