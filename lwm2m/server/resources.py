"""Plain resources the DM server serves to devices on its own sockets (``GET /<prefix>/...``),
block-wise -- for a firmware image a device pulls from the server it is registered with.

The LwM2M layer knows nothing of what is served: a higher layer registers a **provider** per
first path segment (:meth:`ResourceServing.serve_resource`). For each GET under that prefix
the provider gets a :class:`ResourceRequest` (path, asked block, the endpoint when the source
address is a registered device) and returns a :class:`ServedResource` (the whole body and its
ETag) or None (4.04). It may return an awaitable instead when it must load the body first;
the CoAP core acknowledges the request meanwhile and the answer goes out separately.

Block2 is cut here, per request, from the provider's bytes: no per-peer Block2 cache, so a
device that resumes with block N after a reconnect simply gets block N, every block reaches
the provider (which counts progress), and a thousand devices downloading one image share its
single copy. Answering a block is a dictionary lookup, a slice and a send -- it never waits
for the database, so downloads do not stall registrations on the same socket.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import RequestReceived
from lwm2m.server.state import Channel, Device
from lwm2m.transport import Peer

logger = logging.getLogger("lwm2m.server")

OCTET_STREAM = 42


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """One GET of a served resource: ``block`` and ``szx`` are the Block2 block asked for
    (block 0 at the server's largest size when the request had no Block2 option)."""

    path: tuple[str, ...]
    block: int
    szx: int
    endpoint: str | None
    address: str
    #: "GET", or "POST" for a prefix served with ``methods={"POST"}`` (then ``payload`` is
    #: the request body, reassembled from its Block1 blocks by the CoAP core).
    method: str = "GET"
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class ServedResource:
    """What a provider serves: the whole body (sliced into blocks here) and its ETag."""

    payload: bytes
    etag: bytes | None = None
    content_format: int = OCTET_STREAM
    #: The response code; None: 2.05 Content (GET) or 2.04 Changed (POST).
    code: int | None = None


ResourceProvider = Callable[
    [ResourceRequest], ServedResource | Awaitable[ServedResource | None] | None
]


class ResourceServing:
    """Mixin of :class:`~lwm2m.server.LwM2MServer`: the provider registry and the answering."""

    _resources: dict[str, ResourceProvider] | None = None
    _resource_methods: dict[str, frozenset[str]] | None = None
    _by_peer: dict[Peer, Device]
    stats: dict[str, int]

    if TYPE_CHECKING:

        def _spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...

    def serve_resource(
        self,
        prefix: str,
        provider: ResourceProvider | None,
        *,
        methods: frozenset[str] = frozenset({"GET"}),
    ) -> None:
        """Serve ``GET /<prefix>/...`` from ``provider`` (None: stop serving ``prefix``).

        ``methods={"POST"}`` serves POST instead (an RPC-style endpoint such as SGP.32 ESipa's
        ``/gsma/rsp2/asn1``): the provider gets the body, and its answer goes out whole through
        the CoAP core (Block2 cut and cached there, so a POST is never run twice for one
        answer). ``prefix`` must not be an LwM2M interface path (``rd``, ``bs``, ``dp``)."""
        if not prefix or "/" in prefix or prefix in ("rd", "bs", "dp"):
            raise ValueError(f"{prefix!r} cannot be a served resource prefix")
        if not methods or not methods <= {"GET", "POST"}:
            raise ValueError(f"served resources answer GET or POST, not {sorted(methods)}")
        if self._resources is None:
            self._resources = {}
        if self._resource_methods is None:
            self._resource_methods = {}
        if provider is None:
            self._resources.pop(prefix, None)
            self._resource_methods.pop(prefix, None)
        else:
            self._resources[prefix] = provider
            self._resource_methods[prefix] = methods

    def _serves(self, message: Message) -> bool:
        """Whether ``message`` is a GET of a served resource (checked before the LwM2M
        interfaces; cheap when nothing is served)."""
        resources = self._resources
        if not resources or message.code not in (Code.GET, Code.POST):
            return False
        path = message.opt.uri_path
        if not path or path[0] not in resources:
            return False
        methods = (self._resource_methods or {}).get(path[0], frozenset({"GET"}))
        return ("GET" if message.code == Code.GET else "POST") in methods

    def _answer_resource(self, channel: Channel, event: RequestReceived) -> None:
        message = event.message
        path = tuple(message.opt.uri_path)
        assert self._resources is not None
        provider = self._resources[path[0]]
        request = event.request
        max_szx = channel.core.config.max_block_szx
        num, szx = request.block2 if request.block2 is not None else (0, max_szx)
        peer = cast(Peer, event.peer)
        device = self._by_peer.get(peer)
        asked = ResourceRequest(
            path=path,
            block=num,
            szx=min(szx, max_szx),
            endpoint=device.endpoint if device is not None else None,
            address=str(peer).split(" ")[0],
            method="GET" if message.code == Code.GET else "POST",
            payload=message.payload if message.code == Code.POST else b"",
        )
        try:
            found = provider(asked)
        except Exception:  # a provider bug must not take the socket's dispatch down
            logger.exception("resource provider for /%s failed", path[0])
            self._send_resource(channel, event, asked, None, failed=True)
            return
        if inspect.isawaitable(found):
            self._spawn(self._answer_later(channel, event, asked, found))
            return
        self._send_resource(channel, event, asked, found)

    async def _answer_later(
        self,
        channel: Channel,
        event: RequestReceived,
        asked: ResourceRequest,
        pending: Awaitable[ServedResource | None],
    ) -> None:
        try:
            found = await pending
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("resource provider for /%s failed", asked.path[0])
            self._send_resource(channel, event, asked, None, failed=True)
            return
        self._send_resource(channel, event, asked, found)

    def _send_resource(
        self,
        channel: Channel,
        event: RequestReceived,
        asked: ResourceRequest,
        found: ServedResource | None,
        *,
        failed: bool = False,
    ) -> None:
        request = event.request
        if request.responded:
            return
        now = channel.now()
        core = channel.core
        if found is None:
            code = Code.INTERNAL_SERVER_ERROR if failed else Code.NOT_FOUND
            core.respond_slice(request, Message(code=code), now)
            channel.flush()
            return
        if asked.method == "POST":
            answer = Message(code=Code(found.code) if found.code else Code.CHANGED)
            answer.payload = found.payload
            if found.payload:
                answer.opt.content_format = found.content_format
            core.respond(request, answer, now)  # any size: the core cuts and caches Block2
            self.stats["resource_posts"] = self.stats.get("resource_posts", 0) + 1
            channel.flush()
            return
        payload = found.payload
        size = 1 << (asked.szx + 4)
        start = asked.block * size
        reply = Message(code=Code.CONTENT)
        reply.opt.content_format = found.content_format
        if found.etag is not None:
            reply.opt.etag = found.etag
        if start >= len(payload) and not (start == 0 and not payload):
            bad = Message(code=Code.BAD_OPTION, payload=b"Block2 beyond the end of the resource")
            core.respond_slice(request, bad, now)
        elif asked.block == 0 and len(payload) <= size and request.block2 is None:
            reply.payload = payload
            core.respond_slice(request, reply, now)
        else:
            end = start + size
            reply.payload = payload[start:end]
            reply.opt.block2 = (asked.block, end < len(payload), asked.szx)
            if asked.block == 0:
                reply.opt.size2 = len(payload)
            core.respond_slice(request, reply, now)
        self.stats["resource_blocks"] = self.stats.get("resource_blocks", 0) + 1
        channel.flush()


__all__ = ["ResourceProvider", "ResourceRequest", "ResourceServing", "ServedResource"]
