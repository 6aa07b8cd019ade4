"""The simulated IPA over the ESipa HTTPS ASN.1 binding (asyncio + httpx): the I/O shell
around the sans-IO `SimIpa`."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import httpx

from simulators.esim.ipa import SimIpa

ESIPA_PATH = "/gsma/rsp2/asn1"
HEADERS = {"content-type": "application/x-gsma-rsp-asn1", "x-admin-protocol": "gsma/rsp/v2.1.0"}


class EsipaError(RuntimeError):
    """The eIM answered with something other than 200/204 (status and body in the text)."""


class HttpsIpa:
    """One simulated device's IPA talking to an eIM at `base_url`."""

    def __init__(
        self,
        ipa: SimIpa,
        client: httpx.AsyncClient,
        base_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ipa = ipa
        self.client = client
        self.url = base_url.rstrip("/") + ESIPA_PATH
        self.clock = clock

    async def exchange(self, now: float | None = None) -> bool:
        """One message to the eIM and its answer; False when the IPA has no connectivity."""
        now = self.clock() if now is None else now
        sent = self.ipa.outgoing(now)
        if sent is None:
            return False
        self.ipa.incoming(sent, await self._post(sent), now)
        return True

    async def _post(self, sent: bytes) -> bytes | None:
        """One ESipa message over the binding; the answer (None: empty)."""
        response = await self.client.post(self.url, content=sent, headers=HEADERS)
        if response.status_code not in (200, 204):
            raise EsipaError(f"eIM answered {response.status_code}: {response.text.strip()}")
        return response.content if response.status_code == 200 else None

    async def settle(self, now: float | None = None, limit: int = 50) -> int:
        """Exchanges until the eIM has no package and nothing is left to send."""
        self.ipa.last_get_answer = None
        for count in range(1, limit + 1):
            if not await self.exchange(now):
                return count - 1
            idle = (
                not self.ipa.pending
                and not self.ipa.euicc.notifications
                and self.ipa.download is None
            )
            if self.ipa.last_get_answer == "eimPackageError:1" and idle:
                return count
        raise EsipaError(f"EID {self.ipa.euicc.eid}: no quiet state after {limit} exchanges")


def client_for(ca: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """An HTTP/1.1 keep-alive client trusting `ca` (None: plain HTTP on loopback)."""
    return httpx.AsyncClient(verify=ca if ca is not None else True, timeout=10.0)
