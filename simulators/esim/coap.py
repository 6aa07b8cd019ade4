"""The simulated IPA over the ESipa CoAP binding (``POST /gsma/rsp2/asn1`` on the DM server's
CoAP socket), with aiocoap as the client: Block1 for a large request, Block2 for a large
answer, both done by the client library as a device's CoAP stack would
(``early_block2_szx`` asks for small answer blocks, to have Block2 with small messages)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiocoap import POST, Context, Message
from aiocoap.numbers.codes import Code

from simulators.esim.https import EsipaError, HttpsIpa
from simulators.esim.ipa import SimIpa


class CoapIpa(HttpsIpa):
    """One simulated device's IPA talking to the eIM at ``coap://host:port``."""

    def __init__(
        self,
        ipa: SimIpa,
        context: Context,
        base_uri: str,
        clock: Callable[[], float] = time.time,
        early_block2_szx: int | None = None,
    ) -> None:
        self.ipa = ipa
        self.context = context
        self.url = base_uri.rstrip("/") + "/gsma/rsp2/asn1"
        self.clock = clock
        self.early_block2_szx = early_block2_szx
        self.codes: list[Code] = []

    async def _post(self, sent: bytes) -> bytes | None:
        request = Message(code=POST, uri=self.url, payload=sent)
        request.opt.content_format = 42
        if self.early_block2_szx is not None:  # ask for small answer blocks (RFC 7959 2.4)
            request.opt.block2 = (0, False, self.early_block2_szx)
        response = await self.context.request(request).response
        self.codes.append(response.code)
        if response.code != Code.CHANGED:
            raise EsipaError(f"eIM answered {response.code}: {response.payload[:200]!r}")
        return response.payload or None
