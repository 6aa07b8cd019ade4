"""Engines, connection settings and the :class:`Tx` handle repositories work through.

Two backends, chosen by URL:

* SQLite (the default, ``sqlite:///{data_dir}/fleetloop.db``): WAL journal so readers never
  block the single writer; ``synchronous=FULL`` by default, so a committed transaction survives
  power loss and not only a process crash. FULL costs one fsync per commit -- affordable because
  the group-commit batcher (:mod:`lwm2m.store.batcher`) commits hundreds of writes per
  transaction. ``busy_timeout`` makes a second process wait for the write lock instead of
  failing at once. pysqlite's own transaction handling is switched off (it cannot do
  SAVEPOINTs and begins lazily); the store emits ``BEGIN`` / ``BEGIN IMMEDIATE`` itself, the
  latter for write transactions so that two writers queue on the lock up front rather than
  deadlock when both try to upgrade a read lock.
* PostgreSQL (``postgresql+psycopg://user:pw@host/db``; ``postgresql://`` is accepted and means
  psycopg 3): a bounded connection pool with pre-ping, so a database restart costs one failed
  batch rather than a stuck server; ``connect_timeout`` so an unreachable host fails in seconds.
  A schema other than ``public`` is chosen in the URL:
  ``...?options=-csearch_path%3Dregion_eu``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import Delete, Engine, Insert, Select, Update, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, make_url
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from lwm2m.store.errors import StoreError, redact_url, unavailable

DEFAULT_DB_NAME = "fleetloop.db"

WRITE_OPTION = "fleetloop_write"
"""Execution option marking a connection whose transactions will write (SQLite: IMMEDIATE)."""


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Group-commit parameters (see :mod:`lwm2m.store.batcher` for how they interact).

    ``max_delay`` is how long the writer lingers after the first write of a batch arrives,
    waiting for more to share the commit. The default ``0`` is pure group commit: the writer
    commits whatever is queued at once, and writes arriving during that commit form the next
    batch, so batches grow with the load by themselves. Measured (``docs/STORE.md``), lingering
    only added latency and, for devices waiting on their acknowledgement, cut throughput; it
    can still pay on a disk with slow flushes under open-loop load. ``max_batch`` caps a batch
    so one transaction stays short. ``max_pending`` bounds the queue: beyond it submissions
    fail with :class:`~lwm2m.store.errors.StoreOverloaded` instead of growing memory without
    limit.
    """

    max_batch: int = 512
    max_delay: float = 0.0
    max_pending: int = 100_000


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Tunables of :meth:`lwm2m.store.Store.open`; the defaults suit one DM server process."""

    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_ms: int = 5000
    pg_pool_size: int = 6
    pg_max_overflow: int = 4
    pg_connect_timeout_s: int = 5
    read_threads: int = 4
    batch: BatchSettings = field(default_factory=BatchSettings)
    psk_cache_size: int = 100_000
    psk_cache_ttl: float = 300.0
    psk_cache_negative_ttl: float = 10.0


def resolve_url(url: str | None, data_dir: Path | str | None) -> str:
    """The effective URL: ``url`` as given (driver normalised) or SQLite under ``data_dir``."""
    if url is None:
        if data_dir is None:
            raise StoreError("no database URL and no data directory: give one of the two")
        path = Path(data_dir).expanduser().resolve() / DEFAULT_DB_NAME
        return f"sqlite:///{path}"
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as err:
        raise StoreError(f"invalid database URL {redact_url(url)!r}: {err}") from err
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        if parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise StoreError(
                f"unsupported PostgreSQL driver {driver!r} in {redact_url(url)}; "
                "use postgresql+psycopg://user:password@host:5432/database"
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        if parsed.drivername != "sqlite":
            raise StoreError(f"unsupported SQLite driver {driver!r}; use sqlite:///path/to/db")
        if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
            raise StoreError(
                "an in-memory SQLite database cannot be shared by the store's writer and "
                "reader threads; use a file (e.g. under a temporary directory)"
            )
    else:
        raise StoreError(
            f"unsupported database {backend!r} in {redact_url(url)}; use sqlite:///path or "
            "postgresql+psycopg://user:password@host:5432/database"
        )
    return parsed.render_as_string(hide_password=False)


def create_store_engine(url: str, settings: StoreSettings) -> Engine:
    """An engine for ``url`` (already resolved) configured as the module docstring says."""
    parsed: URL = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, settings)
    return create_engine(
        parsed,
        pool_size=settings.pg_pool_size,
        max_overflow=settings.pg_max_overflow,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.pg_connect_timeout_s,
            "application_name": "fleetloop",
        },
    )


def _sqlite_engine(url: URL, settings: StoreSettings) -> Engine:
    if url.database:
        try:
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise unavailable(url.render_as_string(), err) from err
    engine = create_engine(
        url,
        connect_args={
            "check_same_thread": False,  # the pool hands a connection to one thread at a time
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
        },
        pool_size=settings.read_threads + 2,
        max_overflow=4,
    )
    synchronous = settings.sqlite_synchronous
    busy = settings.sqlite_busy_timeout_ms

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # the store issues BEGIN itself (see docstring)
        cur = dbapi_conn.cursor()
        try:
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite at {url.database} refused WAL mode (got {mode!r}); "
                    "put the data directory on a local filesystem"
                )
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute(f"PRAGMA busy_timeout={int(busy)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute("PRAGMA cache_size=-16384")  # 16 MiB page cache per connection
            cur.execute("PRAGMA journal_size_limit=67108864")  # trim the WAL file to 64 MiB
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writes = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


class Tx:
    """One open database transaction, as repositories see it.

    Wraps a SQLAlchemy Core connection and adds two things the batcher needs: whether the
    current operation has written anything (an operation that fails before writing can fail
    alone without rolling back the rest of its batch) and hooks to run only after the commit
    (cache invalidation must not happen for a write that was rolled back).
    """

    __slots__ = ("_conn", "_hooks", "_read_only", "_wrote", "dialect", "memo")

    def __init__(self, conn: Connection, *, read_only: bool = False) -> None:
        self._conn = conn
        self.dialect: str = conn.dialect.name
        self._read_only = read_only
        self._wrote = False
        self._hooks: list[Callable[[], None]] = []
        #: Per-transaction scratch space for repositories (e.g. the audit log's head while
        #: this transaction holds the append lock); gone with the transaction, so a rollback
        #: or a retry starts from what the database says.
        self.memo: dict[str, Any] = {}

    def execute(
        self, statement: Executable, params: Sequence[dict[str, Any]] | dict[str, Any] | None = None
    ) -> CursorResult[Any]:
        """Execute a Core statement; a list of parameter dicts runs it as an executemany."""
        is_select = isinstance(statement, Select)
        if self._read_only and not is_select:
            raise StoreError("write attempted in a read-only transaction (use Store.write)")
        result = self._conn.execute(statement, params)
        if not is_select:
            if isinstance(statement, Update | Delete) and not result.returns_rows:
                # rowcount is exact for plain UPDATE/DELETE (SQLite reports 0 under RETURNING)
                self._wrote = self._wrote or result.rowcount != 0
            else:
                self._wrote = True  # inserts, DDL and anything opaque count as writes
        return result

    def executemany_direct(
        self, statement: Update | Delete | Insert, rows: Sequence[dict[str, Any]]
    ) -> int:
        """Run a fixed write statement over many parameter dicts on the driver's own cursor;
        returns the rows it changed (summed over ``rows``).

        Why: for a group commit of Updates or De-registers, SQLAlchemy's per-row parameter
        processing (``construct_params``, bind processors) cost as much CPU as the database
        (docs/BENCHMARKS.md, issue 13). Here the statement is compiled once per dialect and
        the rows go to the DBAPI ``executemany`` as they are, so only use it for columns
        whose Python values the driver takes without conversion (str, int, float, bool,
        None) -- the registration columns. Errors come back as SQLAlchemy's ``DBAPIError``
        (what the batcher's failure isolation expects), and a failed call counts as a write
        (part of it may have run), so the batcher rolls back.
        """
        if self._read_only:
            raise StoreError("write attempted in a read-only transaction (use Store.write)")
        if not rows:
            return 0
        sql, order = _compiled(statement, self._conn.dialect)
        params: Sequence[Any] = (
            [tuple(row[name] for name in order) for row in rows] if order is not None else rows
        )
        return self._executemany(statement, sql, params)

    def executemany_tuples(
        self,
        statement: Update | Delete | Insert,
        names: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
    ) -> int:
        """:meth:`executemany_direct` with each row a tuple of the values of ``names``: on a
        positional driver whose placeholders come in that order (SQLite, the telemetry
        statements) the tuples go to the driver as they are, without a dict per row and its
        conversion back (issue 13: per-value CPU of the notification path)."""
        if self._read_only:
            raise StoreError("write attempted in a read-only transaction (use Store.write)")
        if not rows:
            return 0
        sql, order = _compiled(statement, self._conn.dialect)
        params: Sequence[Any]
        if order is None:
            params = [dict(zip(names, row, strict=True)) for row in rows]
        elif order == names:
            params = rows
        else:
            at = [names.index(name) for name in order]
            params = [tuple(row[i] for i in at) for row in rows]
        return self._executemany(statement, sql, params)

    def _executemany(
        self, statement: Update | Delete | Insert, sql: str, params: Sequence[Any]
    ) -> int:
        dialect = self._conn.dialect
        dbapi_conn = self._conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            cursor.executemany(sql, params)
            count = int(cursor.rowcount)
        except dialect.loaded_dbapi.Error as err:
            self._wrote = True
            raise sa_exc.DBAPIError.instance(
                sql,
                params,
                err,
                dialect.loaded_dbapi.Error,
                connection_invalidated=dialect.is_disconnect(err, dbapi_conn, cursor),
                dialect=dialect,
            ) from err
        finally:
            cursor.close()
        if isinstance(statement, Insert) or count != 0:
            self._wrote = True
        return count

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once this transaction has committed (never if it rolls back)."""
        self._hooks.append(hook)

    # -- used by the store and the batcher ------------------------------------------------------
    def _mark(self) -> tuple[bool, int]:
        state = (self._wrote, len(self._hooks))
        self._wrote = False
        return state

    def _restore(self, mark: tuple[bool, int], *, keep_hooks: bool) -> bool:
        """End one operation: return whether it wrote; drop its hooks unless ``keep_hooks``."""
        wrote = self._wrote
        self._wrote = mark[0] or wrote
        if not keep_hooks:
            del self._hooks[mark[1] :]
        return wrote

    def _take_hooks(self) -> list[Callable[[], None]]:
        hooks, self._hooks = self._hooks, []
        return hooks


_COMPILED: dict[tuple[int, str], tuple[ClauseElement, str, tuple[str, ...] | None]] = {}


def _compiled(statement: ClauseElement, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
    """``statement``'s SQL for ``dialect`` and, for positional drivers (SQLite's ``?``), the
    parameter names in placeholder order; cached (the statements are module constants)."""
    key = (id(statement), dialect.name)
    hit = _COMPILED.get(key)
    if hit is None or hit[0] is not statement:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        hit = _COMPILED[key] = (statement, str(compiled), order)
    return hit[1], hit[2]
