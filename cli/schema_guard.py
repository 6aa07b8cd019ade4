"""Keep the database's schema in place while ``serve`` runs (issue 14 item 15).

A database dropped and recreated under a running server (an operator's mistake, a restore of
an empty backup, a new PostgreSQL instance behind the same address) used to leave the server
answering 500 "lacks the store's tables" to the API and 5.03 to devices until a restart. The
guard probes the ``schema_version`` rows once a second (one indexed read); when a layer's row
or the table is gone it runs every layer's idempotent ``create_schema`` again -- the same
"create missing + upgrade" a start does -- and the server serves again. While the store is
unreachable or being recreated, :attr:`ready` is False and ``GET /ready`` answers 503.

What recreation cannot bring back is data: registrations, identities and credentials that were
in the dropped database are gone; devices re-register when the server answers their Updates
with 4.04, and credentials must be set again (from the operator's source of truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from sqlalchemy import select

from lwm2m.store import SchemaMismatch, Store, StoreError, Tx
from lwm2m.store.tables import SCHEMA_VERSION_TABLE

log = logging.getLogger("fleetloop.serve.schema")

CHECK_INTERVAL = 1.0


class SchemaGuard:
    """Probe the schema every ``interval`` seconds; recreate it when it is missing."""

    def __init__(
        self,
        store: Store,
        components: Sequence[str],
        recreate: Callable[[], None],
        *,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self._store = store
        self._components = frozenset(components)
        self._recreate = recreate
        self._interval = interval
        self._ready = True
        self._reason = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.recoveries = 0

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def reason(self) -> str:
        return self._reason

    def check_soon(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="schema-guard")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> bool:
        """One probe (and a recreation when needed); returns whether the store is ready."""
        try:
            found = await self._store.read(self._recorded)
            missing = self._components - found
        except SchemaMismatch:
            missing = self._components
        except StoreError as err:
            self._not_ready(f"store unreachable: {err}")
            return False
        if not missing:
            self._set_ready()
            return True
        self._not_ready(f"the database lacks the schema of {', '.join(sorted(missing))}")
        log.error(
            "the database lost its schema; recreating it",
            extra={"missing": sorted(missing), "database": self._store.url},
        )
        try:
            await asyncio.to_thread(self._recreate)
        except StoreError as err:
            self._not_ready(f"recreating the schema failed: {err}")
            return False
        self.recoveries += 1
        log.warning(
            "schema recreated; data that was in the dropped database is gone",
            extra={"database": self._store.url},
        )
        self._set_ready()
        return True

    @staticmethod
    def _recorded(tx: Tx) -> frozenset[str]:
        c = SCHEMA_VERSION_TABLE.c
        return frozenset(str(r) for r in tx.execute(select(c.component)).scalars())

    def _not_ready(self, reason: str) -> None:
        if self._ready or reason != self._reason:
            log.warning("not ready", extra={"reason": reason})
        self._ready, self._reason = False, reason

    def _set_ready(self) -> None:
        if not self._ready:
            log.info("ready again")
        self._ready, self._reason = True, ""

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.check()
            except Exception:  # never let the guard die: it is what brings the server back
                log.exception("schema check failed")


def recreate_all(store: Store) -> None:
    """Every layer's ``create_schema``, in start-up order (each is idempotent)."""
    from bootstrap.repository import create_schema as create_bootstrap_schema
    from lifecycle.schema import create_schema as create_lifecycle_schema

    store.create_schema()
    create_bootstrap_schema(store)
    create_lifecycle_schema(store)


def components() -> tuple[str, ...]:
    """The ``schema_version`` rows a complete database has."""
    from bootstrap.tables import SCHEMA_COMPONENT as BOOTSTRAP
    from lifecycle.tables import SCHEMA_COMPONENT as LIFECYCLE
    from lwm2m.store.tables import SCHEMA_COMPONENT as STORE

    return (STORE, BOOTSTRAP, LIFECYCLE)


def guard_for(store: Store, *, interval: float = CHECK_INTERVAL) -> SchemaGuard:
    """The guard ``serve`` runs: all three layers' schemas, recreated together."""
    return SchemaGuard(store, components(), lambda: recreate_all(store), interval=interval)
