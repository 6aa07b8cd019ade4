"""The ESipa CoAP binding: ``POST /gsma/rsp2/asn1`` on the DM server's own CoAP and CoAPs
sockets (SGP.32 6.2), for IPAs that speak CoAP rather than HTTPS.

A thin provider for :meth:`lwm2m.server.LwM2MServer.serve_resource` (``methods={"POST"}``):
the CoAP core reassembles a Block1 request body, the provider hands it to the same
``handle(body, now)`` as the HTTPS binding (``EsimComponent.handle`` in serve: one committed
transaction per exchange, or the ES9+ relay), and the answer goes back whole -- the core cuts
it into Block2 blocks and keeps them, so a large answer (a bound profile package) is never
computed twice. 2.04 with the DER (no payload when the eIM has nothing to say, HTTPS's 204);
4.00 with a one-line reason for what is not an ESipa message; 4.04 for other paths under
``/gsma``; 5.00 when the exchange itself failed.

Content-Format: 42 (application/octet-stream) -- there is no CoAP number registered for
``application/x-gsma-rsp-asn1``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from lwm2m.server.resources import OCTET_STREAM, ResourceRequest, ServedResource
from sgp32.eim.core import Exchange
from sgp32.errors import CodecError, EimError

ESIPA_SEGMENTS = ("gsma", "rsp2", "asn1")
PREFIX = ESIPA_SEGMENTS[0]
METHODS = frozenset({"POST"})
BAD_REQUEST, INTERNAL_SERVER_ERROR = 0x80, 0xA0  # 4.00, 5.00
TEXT_PLAIN = 0
log = logging.getLogger("fleetloop.sgp32.esipa")

Handler = Callable[[bytes, float], Awaitable[Exchange]]


def esipa_provider(
    handle: Handler, clock: Callable[[], float] = time.time
) -> Callable[[ResourceRequest], asyncio.Future[ServedResource | None] | None]:
    """The provider to register: ``server.serve_resource(PREFIX, provider, methods=METHODS)``."""

    async def exchange(body: bytes) -> ServedResource | None:
        try:
            answer = await handle(body, clock())
        except (CodecError, EimError) as exc:
            reason = f"not an ESipa message: {exc}".encode()[:512]
            return ServedResource(reason, content_format=TEXT_PLAIN, code=BAD_REQUEST)
        except Exception:
            log.exception("ESipa exchange over CoAP failed")
            return ServedResource(
                b"the eIM could not process the message; retry later",
                content_format=TEXT_PLAIN,
                code=INTERNAL_SERVER_ERROR,
            )
        return ServedResource(answer.reply or b"", content_format=OCTET_STREAM)

    def provide(request: ResourceRequest) -> asyncio.Future[ServedResource | None] | None:
        if request.path != ESIPA_SEGMENTS or request.method != "POST":
            return None
        return asyncio.ensure_future(exchange(request.payload))

    return provide
