"""Which tenant a device belongs to: the one lookup every tenant check goes through.

The inventory (``lc_device.tenant``) is the authority; a device the inventory does not hold
yet, or holds without a tenant (imported but never registered, an inventory still being
filled) falls back to its factory identity (``bs_identity.tenant``). A device in neither has
no tenant: only all-tenant operators see it.

Lookups are cached for :attr:`TenantDirectory.ttl` seconds, because a tenant-scoped operator's
list of 1 000 registrations or its event stream would otherwise cost a query per device per
request. A move of a device to another tenant therefore shows after at most ``ttl`` seconds
(or at once when the mover calls :meth:`TenantDirectory.forget`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from sqlalchemy import select

from bootstrap.tables import IDENTITY
from lifecycle.tables import DEVICE
from lwm2m.store import Store, Tx

_CHUNK = 500


class TenantDirectory:
    """endpoint -> tenant (or None), briefly cached (module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 200_000,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.max_entries = max_entries
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def tenant(self, endpoint: str) -> str | None:
        return (await self.tenants([endpoint]))[endpoint]

    async def tenants(self, endpoints: Iterable[str]) -> dict[str, str | None]:
        """The tenant of each endpoint (None: no tenant known)."""
        now = self.clock()
        found: dict[str, str | None] = {}
        missing: list[str] = []
        for endpoint in dict.fromkeys(endpoints):
            cached = self._cache.get(endpoint)
            if cached is not None and now - cached[1] <= self.ttl:
                found[endpoint] = cached[0]
            else:
                missing.append(endpoint)
        if missing:
            loaded = await self.store.read(lambda tx: _lookup(tx, missing))
            if len(self._cache) + len(loaded) > self.max_entries:
                self._cache.clear()
            for endpoint, tenant in loaded.items():
                self._cache[endpoint] = (tenant, now)
            found.update(loaded)
        return found

    def forget(self, endpoint: str | None = None) -> None:
        """Drop one endpoint (or all) from the cache, after a move between tenants."""
        if endpoint is None:
            self._cache.clear()
        else:
            self._cache.pop(endpoint, None)


def _lookup(tx: Tx, endpoints: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = dict.fromkeys(endpoints)
    unknown: list[str] = []
    for start in range(0, len(endpoints), _CHUNK):
        chunk = endpoints[start : start + _CHUNK]
        rows = tx.execute(
            select(DEVICE.c.endpoint, DEVICE.c.tenant).where(DEVICE.c.endpoint.in_(chunk))
        ).all()
        seen = {row.endpoint: row.tenant for row in rows}
        out.update(seen)
        unknown.extend(e for e in chunk if seen.get(e) is None)
    for start in range(0, len(unknown), _CHUNK):
        chunk = unknown[start : start + _CHUNK]
        rows = tx.execute(
            select(IDENTITY.c.endpoint, IDENTITY.c.tenant).where(IDENTITY.c.endpoint.in_(chunk))
        ).all()
        out.update({row.endpoint: row.tenant for row in rows})
    return out


__all__ = ["TenantDirectory"]
