"""The :class:`Store` facade: one object the server opens, uses and closes.

Repositories are synchronous and take a :class:`~lwm2m.store.engine.Tx`; the store decides
where that transaction runs:

* ``await store.write(op)`` -- on the group-commit writer thread, together with other writes;
  returns ``op``'s result once it is committed (durable: safe to acknowledge to the device).
* ``store.write_nowait(op)`` / ``store.record(values)`` -- the same queue, nobody waits; for
  telemetry, whose loss on a crash is bounded by the flush interval (``docs/STORE.md``).
* ``await store.read(op)`` -- on a small reader thread pool, in its own read-only transaction;
  sees everything whose ``write`` has returned.
* ``with store.transaction() as tx`` -- synchronous, on the calling thread: for start-up,
  the CLI, tests and tools. Never from the event loop on a hot path.

Composing repository calls in one ``op`` makes them atomic::

    reg, replaced = await store.write(lambda tx: store.registrations.register(tx, new, now))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine, select, text
from sqlalchemy import exc as sa_exc

from lwm2m.store.audit import AuditLog
from lwm2m.store.batcher import GroupCommitBatcher, Op
from lwm2m.store.domain import EndpointSecurity, ReportedValue, new_registration_id
from lwm2m.store.engine import (
    WRITE_OPTION,
    StoreSettings,
    Tx,
    create_store_engine,
    resolve_url,
)
from lwm2m.store.errors import SchemaMismatch, StoreError, redact_url, translate
from lwm2m.store.observations import ObservationRepository
from lwm2m.store.queue import QueueRepository
from lwm2m.store.registrations import RegistrationRepository
from lwm2m.store.security import PskKeyStore, SecurityCache, SecurityRepository
from lwm2m.store.tables import METADATA, SCHEMA_COMPONENT, SCHEMA_VERSION, SCHEMA_VERSION_TABLE
from lwm2m.store.telemetry import TelemetryRepository

T = TypeVar("T")

_SCHEMA_LOCK_KEY = 0x666C_6565_746C  # pg_advisory_xact_lock key: concurrent starts queue up
_OLDEST_MIGRATABLE = 1  # v1 -> v2 creates the audit tables; nothing older was ever released


class Store:
    """Engine, repositories, group-commit writer and reader pool for one database."""

    def __init__(
        self,
        engine: Engine,
        url: str,
        settings: StoreSettings,
        *,
        id_factory: Callable[[], str] = new_registration_id,
        cache_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Use :meth:`open`; this wires an already-created engine."""
        self._engine = engine
        self._url = url
        self.settings = settings
        self.registrations = RegistrationRepository(id_factory)
        self.observations = ObservationRepository()
        self.telemetry = TelemetryRepository()
        self.queue = QueueRepository()
        self.audit = AuditLog()
        self.security_cache = SecurityCache(
            self._load_psk,
            load_all=self._load_all_psk,
            max_entries=settings.psk_cache_size,
            ttl=settings.psk_cache_ttl,
            negative_ttl=settings.psk_cache_negative_ttl,
            clock=cache_clock,
        )
        self.security = SecurityRepository(self.security_cache)
        self.batcher = GroupCommitBatcher(engine, url, settings.batch)
        self._readers = ThreadPoolExecutor(
            max_workers=settings.read_threads, thread_name_prefix="fleetloop-store-reader"
        )
        self._closed = False

    # -- opening and schema ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str | None = None,
        data_dir: Path | str | None = None,
        *,
        settings: StoreSettings | None = None,
        id_factory: Callable[[], str] = new_registration_id,
        cache_clock: Callable[[], float] = time.monotonic,
    ) -> Store:
        """Open the database at ``url``, or ``sqlite:///{data_dir}/fleetloop.db`` without one.

        Connects once to fail early: an unreachable database raises
        :class:`~lwm2m.store.errors.StoreUnavailable` naming the URL (password hidden).
        Does not create tables; call :meth:`create_schema`.
        """
        settings = settings or StoreSettings()
        resolved = resolve_url(url, data_dir)
        engine = create_store_engine(resolved, settings)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as err:
            engine.dispose()
            if isinstance(err, StoreError):
                raise
            if isinstance(err, sa_exc.SQLAlchemyError):
                raise translate(err, resolved) from err
            raise
        return cls(engine, resolved, settings, id_factory=id_factory, cache_clock=cache_clock)

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return redact_url(self._url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def create_schema(self, now: float | None = None) -> None:
        """Create missing tables and record the schema version (idempotent).

        Upgrades an older database in place (v1 -> v2: the audit tables). Raises
        :class:`~lwm2m.store.errors.SchemaMismatch` when the database was written by a newer
        fleetloop.
        """
        stamp = time.time() if now is None else now
        v = SCHEMA_VERSION_TABLE.c
        with self.transaction() as tx:
            if self.dialect == "postgresql":
                tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            METADATA.create_all(tx._conn)
            found = tx.execute(
                select(v.version).where(v.component == SCHEMA_COMPONENT)
            ).scalar_one_or_none()
            if found is None:
                tx.execute(
                    SCHEMA_VERSION_TABLE.insert(),
                    {"component": SCHEMA_COMPONENT, "version": SCHEMA_VERSION, "updated_at": stamp},
                )
            elif found > SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"database {self.url} has store schema v{found}, newer than this fleetloop "
                    f"(v{SCHEMA_VERSION}); upgrade fleetloop or use another database"
                )
            elif found < _OLDEST_MIGRATABLE:
                raise SchemaMismatch(
                    f"database {self.url} has store schema v{found} and this fleetloop needs "
                    f"v{SCHEMA_VERSION}, but no migration from v{found} exists"
                )
            elif found < SCHEMA_VERSION:
                # v1 -> v2 added tables only (the audit log; see tables.SCHEMA_VERSION), which
                # create_all above has just made: recording the new version is the migration.
                tx.execute(
                    SCHEMA_VERSION_TABLE.update()
                    .where(v.component == SCHEMA_COMPONENT)
                    .values(version=SCHEMA_VERSION, updated_at=stamp)
                )

    def schema_version(self) -> int | None:
        """The store schema version recorded in the database, or ``None`` before creation."""
        v = SCHEMA_VERSION_TABLE.c
        try:
            return self._read_sync(
                lambda tx: tx.execute(
                    select(v.version).where(v.component == SCHEMA_COMPONENT)
                ).scalar_one_or_none()
            )
        except SchemaMismatch:
            return None

    # -- synchronous transactions ---------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction on the calling thread; commits when the block ends cleanly."""
        self._check_open()
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                tx = Tx(conn)
                with conn.begin():
                    yield tx
        except sa_exc.SQLAlchemyError as err:
            raise translate(err, self._url) from err
        for hook in tx._take_hooks():
            hook()

    def read_sync(self, op: Callable[[Tx], T]) -> T:
        """Run ``op`` in a read-only transaction on the calling thread."""
        self._check_open()
        return self._read_sync(op)

    def _read_sync(self, op: Callable[[Tx], T]) -> T:
        try:
            with self._engine.connect() as conn, conn.begin():
                return op(Tx(conn, read_only=True))
        except sa_exc.SQLAlchemyError as err:
            raise translate(err, self._url) from err

    # -- asynchronous access (from the event loop) ----------------------------------------------
    async def write(self, op: Op[T]) -> T:
        """Run ``op`` in the next group commit; return its result once committed."""
        return await self.batcher.submit(op)

    def write_nowait(self, op: Op[Any]) -> None:
        """Queue ``op`` without waiting; a failure is logged and counted, not raised."""
        self.batcher.submit_nowait(op)

    def record(
        self, values: Iterable[ReportedValue], *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue reported values (merged with others into one bulk insert per batch).

        Fire-and-forget by default; ``wait=True`` returns a future resolved at commit.
        """
        return self.batcher.submit_bulk(self.telemetry.append, values, wait=wait)

    def record_then(
        self, values: Iterable[ReportedValue], then: Callable[[bool, Any], None]
    ) -> None:
        """Queue reported values; ``then(ok, None | error)`` runs on this loop after the commit
        holding them (``GroupCommitBatcher.submit_bulk_then``)."""
        self.batcher.submit_bulk_then(self.telemetry.append, values, then)

    async def read(self, op: Callable[[Tx], T]) -> T:
        """Run ``op`` in a read-only transaction on a reader thread."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_sync, op)

    async def flush(self) -> None:
        """Wait until every write queued so far is committed."""
        await self.batcher.flush()

    # -- security fast path ---------------------------------------------------------------------
    def psk_store(self) -> PskKeyStore:
        """The PSK key store for the DTLS transport (``lookup(identity: bytes)``), cached."""
        return self.security_cache.psk_store()

    async def refresh_security_cache(self) -> bool:
        """Load all PSK records into memory (on a reader thread); see :class:`SecurityCache`.

        Call once at start-up, before accepting handshakes, and then every
        ``settings.psk_cache_ttl`` seconds to pick up other processes' changes. Returns
        whether the cache now answers from memory alone (False: the fleet has more PSK
        records than ``settings.psk_cache_size``; lookups then fall back to the database).
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.security_cache.refresh)

    def _load_psk(self, identity: str) -> EndpointSecurity | None:
        return self._read_sync(lambda tx: self.security.find_by_psk_identity(tx, identity))

    def _load_all_psk(self) -> list[EndpointSecurity]:
        return self._read_sync(self.security.all_with_psk)

    # -- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        """Commit queued writes, stop the threads, release connections (idempotent).

        From a coroutine prefer :meth:`aclose`, which does not block the event loop while the
        last batch commits.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.batcher.close()
        finally:
            self._readers.shutdown(wait=True)
            self._engine.dispose()

    async def aclose(self) -> None:
        """:meth:`close` on a worker thread, so pending futures still resolve on this loop."""
        await asyncio.to_thread(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store for {self.url} is closed")

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url})"
