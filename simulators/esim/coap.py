"""The simulated IPA over the ESipa CoAP binding (``POST /gsma/rsp2/asn1`` on the DM server's
CoAP socket). `CoapIpa`: aiocoap as the client -- Block1 for a large request, Block2 for a
large answer, both done by the client library as a device's CoAP stack would
(``early_block2_szx`` asks for small answer blocks, to have Block2 with small messages).
`CoapDeviceIpa`: the device and its IPA on one socket of the repository's CoAP core, which
also takes the eIM's pushes (SGP.32 ipaInjectCoaps)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiocoap import POST, Context, Message
from aiocoap.numbers.codes import Code

from sgp32.asn1 import encode_to_eim
from sgp32.esipa.coap import ESIPA_SEGMENTS
from sgp32.esipa.coap_socket import Address, CoapSocket
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


class CoapDeviceIpa(HttpsIpa):
    """A device whose one CoAP stack (the repository's core on one UDP socket) carries both
    its LwM2M registration and its IPA: it registers with the DM server, polls the eIM at
    ``POST /gsma/rsp2/asn1`` on the same server, and serves ``POST /gsma/rsp2/asn1`` for the
    eIM's pushes (TransferEimPackageRequest, answered with the result when it can be given at
    once). The eIM pushes only to an IPA that declared ipaInjectCoaps: set
    ``SimIpa.ipa_protocols`` (e.g. ``(1, 3)``) before the eIM asks for its IpaEuiccData."""

    def __init__(self, ipa: SimIpa, server: Address, clock: Callable[[], float] = time.time):
        self.ipa = ipa
        self.server = server
        self.clock = clock
        self.socket = CoapSocket(self._serve)
        self.location: tuple[str, ...] = ()
        self.pushed: list[bytes] = []
        self.busy_pushes = 0
        """Pushes to refuse with 5.03 (the IPA busy) before taking one, for tests."""
        self.push_garbage: bytes | None = None
        """Answer pushes 2.04 with these bytes (not a TransferEimPackageResponse), for tests."""
        self.push_error: int | None = None
        """Answer pushes with TransferEimPackageResponse eimPackageError(code) instead of
        running them (e.g. 1 invalidPackageFormat), for tests."""

    async def open(self, host: str = "127.0.0.1") -> Address:
        return await self.socket.open(host, 0)

    def close(self) -> None:
        self.socket.close()

    async def register(self, endpoint: str, lifetime: int = 300, binding: str = "U") -> Message:
        """LwM2M Register from the IPA's socket (``binding`` "UQ": queue mode)."""
        message = Message(
            code=POST,
            uri_path=("rd",),
            uri_query=(f"ep={endpoint}", f"lt={lifetime}", "lwm2m=1.1", f"b={binding}"),
            payload=b"</1/0>,</3/0>",
        )
        message.opt.content_format = 40
        response = await self.socket.request(self.server, message, 10.0)
        self.location = tuple(response.opt.location_path)
        return response

    async def update(self) -> Message:
        """LwM2M registration Update (a queue-mode device waking up)."""
        return await self.socket.request(
            self.server, Message(code=POST, uri_path=self.location), 10.0
        )

    async def _post(self, sent: bytes) -> bytes | None:
        message = Message(code=POST, uri_path=ESIPA_SEGMENTS, payload=sent)
        message.opt.content_format = 42
        response = await self.socket.request(self.server, message, 10.0)
        if response.code != Code.CHANGED:
            raise EsipaError(f"eIM answered {response.code}: {response.payload[:200]!r}")
        return bytes(response.payload) or None

    def _serve(self, request: Message, peer: Address) -> Message | None:
        if tuple(request.opt.uri_path) != ESIPA_SEGMENTS:
            return None
        if request.code != POST:
            return Message(code=Code.METHOD_NOT_ALLOWED)
        self.pushed.append(bytes(request.payload))
        if self.busy_pushes > 0:
            self.busy_pushes -= 1
            return Message(code=Code.SERVICE_UNAVAILABLE, payload=b"the IPA is busy")
        if self.push_garbage is not None:
            return Message(code=Code.CHANGED, payload=self.push_garbage)
        if self.push_error is not None:
            refused = encode_to_eim(
                "transferEimPackageResponse", ("eimPackageError", self.push_error)
            )
            return Message(code=Code.CHANGED, payload=refused)
        answer = self.ipa.pushed(bytes(request.payload), self.clock(), with_result=True)
        reply = Message(code=Code.CHANGED, payload=answer)
        reply.opt.content_format = 42
        return reply
