"""Serving repository images to devices over the DM server's own CoAP and CoAPs sockets.

:class:`FirmwareServing` registers itself as the provider of ``/fw/<id>`` on the LwM2M
server (:meth:`lwm2m.server.resources.ResourceServing.serve_resource`); the LwM2M layer cuts
the Block2 blocks. Why it is shaped like this:

* **No database read per block.** Image bytes sit in an in-memory LRU (bounded in bytes);
  answering a block is a dictionary lookup and a slice of that one shared copy, however many
  devices download it. Only the first request for an image not in memory loads it (one load
  per image however many devices ask at once: the others wait on the same future).
* **Quarantine** is checked on block 0 -- a *new* download -- against image metadata at most
  :data:`METADATA_TTL` seconds old (an operator's quarantine through the API refreshes it at
  once); a download under way may finish its later blocks.
* **Progress** per (endpoint, image): blocks and bytes served, the last block, done or not
  (:meth:`FirmwareServing.progress`, ``GET /v1/firmware/progress``). A device that is not
  registered from its address (a plain fetch) is counted by address.
* **Push** reads the same cache (:meth:`FirmwareServing.content`): the reconciler writes the
  bytes of the image with a given SHA-256 to /5/0/0.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from lifecycle.artifacts.firmware import SERVE_PREFIX, FirmwareImage, FirmwareRepository
from lwm2m.server import LwM2MServer
from lwm2m.server.resources import ResourceRequest, ServedResource
from lwm2m.store import Store

METADATA_TTL = 5.0
"""Seconds an image's metadata (its quarantine flag) is trusted before block 0 re-reads it."""
MAX_PROGRESS = 100_000
"""Progress entries kept (the oldest are forgotten first)."""


@dataclass(slots=True)
class DownloadProgress:
    """How far one device (or address) got with one image."""

    who: str
    image: str
    size: int
    blocks: int = 0
    bytes: int = 0
    last_block: int = -1
    done: bool = False
    started_at: float = 0.0
    updated_at: float = 0.0

    @property
    def percent(self) -> float:
        return 100.0 if self.done else min(99.9, 100.0 * self.bytes / max(1, self.size))


class _Cached:
    __slots__ = ("checked", "image", "resource")

    def __init__(self, image: FirmwareImage, content: bytes, checked: float) -> None:
        self.image = image
        self.resource = ServedResource(content, image.etag)
        self.checked = checked


class FirmwareServing:
    """The ``/fw`` provider and the image cache (module docstring)."""

    def __init__(
        self,
        store: Store,
        repository: FirmwareRepository | None = None,
        *,
        cache_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.repository = repository or FirmwareRepository(store.audit)
        self.cache_bytes = cache_bytes
        self.clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cached_bytes = 0
        self._loading: dict[str, asyncio.Future[_Cached | None]] = {}
        self._progress: OrderedDict[tuple[str, str], DownloadProgress] = OrderedDict()
        #: ``{"coap": "coap://host:port", "coaps": ...}``: where devices reach the image
        #: endpoint (set by ``fleetloop serve`` from its bound sockets).
        self.base_uris: dict[str, str] = {}
        self.stats: dict[str, int] = {"blocks": 0, "loads": 0, "refused": 0, "not_found": 0}

    def install(self, server: LwM2MServer) -> None:
        """Serve ``/fw/<id>`` on ``server``'s sockets."""
        server.serve_resource(SERVE_PREFIX, self.provide)

    # -- the provider (called per block, on the event loop) ------------------------------------
    def provide(
        self, request: ResourceRequest
    ) -> ServedResource | asyncio.Future[ServedResource | None] | None:
        if len(request.path) != 2:
            self.stats["not_found"] += 1
            return None
        image_id = request.path[1].lower()
        cached = self._cache.get(image_id)
        now = self.clock()
        if cached is None or (request.block == 0 and now - cached.checked > METADATA_TTL):
            return asyncio.ensure_future(self._provide_later(image_id, request))
        self._cache.move_to_end(image_id)
        return self._serve(cached, request, now)

    async def _provide_later(
        self, image_id: str, request: ResourceRequest
    ) -> ServedResource | None:
        cached = await self._load(image_id, refresh=True)
        if cached is None:
            self.stats["not_found"] += 1
            return None
        return self._serve(cached, request, self.clock())

    def _serve(
        self, cached: _Cached, request: ResourceRequest, now: float
    ) -> ServedResource | None:
        image = cached.image
        if request.block == 0 and image.quarantined:
            self.stats["refused"] += 1
            return None  # 4.04: no new download of a quarantined image
        self.stats["blocks"] += 1
        who = request.endpoint or request.address
        key = (who, image.id)
        progress = self._progress.get(key)
        if progress is None or (request.block == 0 and progress.done):
            progress = DownloadProgress(who, image.id, image.size, started_at=now)
            self._progress[key] = progress
            if len(self._progress) > MAX_PROGRESS:
                self._progress.popitem(last=False)
        size = 1 << (request.szx + 4)
        start = request.block * size
        chunk = max(0, min(size, image.size - start))
        if request.block != progress.last_block:  # a retransmitted request is one block
            progress.blocks += 1
            progress.bytes += chunk
        progress.last_block = request.block
        progress.updated_at = now
        if start + size >= image.size:
            progress.done = True
            progress.bytes = image.size
        return cached.resource

    # -- loading -------------------------------------------------------------------------------
    async def _load(self, image_id: str, *, refresh: bool = False) -> _Cached | None:
        cached = self._cache.get(image_id)
        if cached is not None and not (refresh and self.clock() - cached.checked > METADATA_TTL):
            return cached
        pending = self._loading.get(image_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[image_id] = pending
            try:
                result = await self._read(image_id, cached)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters get it, nobody else needs to
                raise
            finally:
                self._loading.pop(image_id, None)
            pending.set_result(result)
            return result
        return await asyncio.shield(pending)

    async def _read(self, image_id: str, cached: _Cached | None) -> _Cached | None:
        repo = self.repository
        if cached is not None:  # only the metadata may have changed (quarantine)
            image = await self.store.read(lambda tx: repo.image(tx, image_id))
            if image is None:
                self.forget(image_id)
                return None
            cached.image = image
            cached.checked = self.clock()
            return cached

        def read(tx: object) -> tuple[FirmwareImage, bytes] | None:
            found = repo.image(tx, image_id)  # type: ignore[arg-type]
            if found is None or found.id != image_id:
                return None
            content = repo.content(tx, found.sha256)  # type: ignore[arg-type]
            return (found, content) if content is not None else None

        loaded = await self.store.read(read)
        if loaded is None:
            return None
        self.stats["loads"] += 1
        entry = _Cached(loaded[0], loaded[1], self.clock())
        self._remember(entry)
        return entry

    def _remember(self, entry: _Cached) -> None:
        old = self._cache.pop(entry.image.id, None)
        if old is not None:
            self._cached_bytes -= old.image.size
        self._cache[entry.image.id] = entry
        self._cached_bytes += entry.image.size
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.image.size

    def preload(self, image: FirmwareImage, content: bytes) -> None:
        """Put a just-published image in the cache (its first downloads need no read)."""
        self._remember(_Cached(image, content, self.clock()))

    def refresh(self, image: FirmwareImage) -> None:
        """The image's metadata changed (quarantine): use ``image`` from now on."""
        cached = self._cache.get(image.id)
        if cached is not None:
            cached.image = image
            cached.checked = self.clock()

    def forget(self, image_id: str) -> None:
        old = self._cache.pop(image_id, None)
        if old is not None:
            self._cached_bytes -= old.image.size

    # -- push and progress ---------------------------------------------------------------------
    async def content(self, sha256: str) -> bytes | None:
        """The bytes of the published, not quarantined image with ``sha256`` (push)."""
        entry = await self._load(sha256[:16], refresh=True)
        if entry is None or entry.image.sha256 != sha256 or entry.image.quarantined:
            return None
        return entry.resource.payload

    def progress(
        self, *, image: str | None = None, who: str | None = None
    ) -> list[DownloadProgress]:
        """Download progress per (endpoint or address, image), optionally filtered."""
        return [
            p
            for p in self._progress.values()
            if (image is None or p.image == image) and (who is None or p.who == who)
        ]


def base_uris(coap: dict[str, object] | None, coaps: dict[str, object] | None) -> dict[str, str]:
    """``{"coap": ..., "coaps": ...}`` base URIs of the image endpoint from the DM server's
    bound sockets (``{"host", "port"}``). A wildcard host is replaced by
    ``FLEETLOOP_FIRMWARE_HOST`` (the address devices reach the server at), else 127.0.0.1."""
    import os

    out: dict[str, str] = {}
    for scheme, bound in (("coap", coap), ("coaps", coaps)):
        if bound is None:
            continue
        host = str(bound["host"])
        if host in ("0.0.0.0", "::", ""):
            host = os.environ.get("FLEETLOOP_FIRMWARE_HOST", "127.0.0.1")
        text = f"[{host}]" if ":" in host else host
        out[scheme] = f"{scheme}://{text}:{bound['port']}"
    return out


__all__ = ["METADATA_TTL", "DownloadProgress", "FirmwareServing", "base_uris"]
