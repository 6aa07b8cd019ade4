"""Group-commit write-behind: many writes, one transaction, one fsync.

Why: a commit costs a disk flush (SQLite ``synchronous=FULL``; PostgreSQL's WAL flush) and a
round trip; a server that committed every Register and every notification on its own would be
bounded by the disk's flush rate and would block its event loop on each. Instead:

* The event loop calls :meth:`GroupCommitBatcher.submit` (or ``submit_nowait`` /
  ``submit_bulk``); that only appends to a queue -- it never touches the database.
* One writer thread takes everything queued (up to ``max_batch``; optionally lingering
  ``max_delay`` after the first item for more), runs the operations in submission order inside
  ONE transaction and commits it. Whatever arrives during that commit is the next batch, so
  under load batches grow by themselves and the commit rate, not the write rate, is bounded
  by the disk.
* Only after the commit returns are the submitters' futures resolved (on their loop, with one
  ``call_soon_threadsafe`` per batch). So ``await batcher.submit(op)`` returning means the write
  is durable, and the server may acknowledge the device. Fire-and-forget writes skip the
  future; what they risk is spelled out in ``docs/STORE.md``.

Failure isolation, without a SAVEPOINT per operation (savepoints cost ~40 % of the throughput,
measured): an operation that raises *before it wrote anything* (the repositories check, then
write, so NotFound and state conflicts are raised this way) fails alone and the batch goes on.
An operation that raises after writing, or with a database error, makes the writer roll the
transaction back and run the batch again without it -- its submitter gets the error, the others
are unaffected. An error of the transaction as a whole (the commit fails, the connection drops,
the database is locked) goes to exactly the submitters of that batch; the writer opens a fresh
connection for the next batch and carries on.

Ordering: one writer, batches in submission order, operations in a batch in submission order.
Bulk rows (``submit_bulk``) for the same writer function are merged into one call at the place
of the first of them, so e.g. all telemetry rows of a batch become one ``executemany``.
``submit_row`` is the ordered kind with a result per row: consecutive submissions for the same
writer (nothing else queued between them) become one call, which returns one result per row;
a Register storm thus costs a few statements per group commit instead of a few per device.

Operations must be functions of the transaction only (they may be run twice if a neighbour in
the batch forces a retry); side effects belong in :meth:`Tx.after_commit`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from lwm2m.store.engine import WRITE_OPTION, BatchSettings, Tx
from lwm2m.store.errors import StoreError, StoreOverloaded, redact_url, translate

log = logging.getLogger("lwm2m.store")

T = TypeVar("T")
R = TypeVar("R")

Op = Callable[[Tx], T]
"""A write operation: runs inside the batch transaction, returns its result."""

BulkWriter = Callable[[Tx, list[R]], None]
"""Writes many rows at once; rows submitted for the same writer in one batch are merged."""

RowWriter = Callable[[Tx, list[R]], list[Any]]
"""Writes many rows at once and returns one result per row, in order (see ``submit_row``); a
result that is an exception instance fails that row's submitter alone (nothing may have been
written for it)."""


@dataclass(slots=True)
class BatcherStats:
    """Counters, written by the writer thread only (reads from elsewhere are approximate)."""

    batches: int = 0
    items: int = 0
    failed_items: int = 0
    failed_batches: int = 0
    retries: int = 0
    lost_unawaited: int = 0
    max_batch_seen: int = 0


#: What a row's outcome goes to: a future, or a function called with ``(ok, value)``.
_Waiter = asyncio.Future[Any] | Callable[[bool, Any], None]


class _Item:
    __slots__ = ("bulk", "future", "loop", "op", "per_row", "rows")

    def __init__(
        self,
        op: Op[Any] | None,
        future: _Waiter | None,
        loop: asyncio.AbstractEventLoop | None,
        bulk: BulkWriter[Any] | RowWriter[Any] | None = None,
        rows: Sequence[Any] = (),
        per_row: bool = False,
    ) -> None:
        self.op = op
        self.future = future
        self.loop = loop
        self.bulk = bulk
        self.rows = rows
        self.per_row = per_row


@dataclass(slots=True)
class _Unit:
    """One call inside the transaction: a single operation or a merged bulk write."""

    items: list[_Item]
    op: Op[Any] | None = None
    bulk: BulkWriter[Any] | RowWriter[Any] | None = None
    rows: list[Any] = field(default_factory=list)
    per_row: bool = False

    def run(self, tx: Tx) -> Any:
        if self.bulk is not None:
            results = self.bulk(tx, self.rows)
            if self.per_row and (not isinstance(results, list) or len(results) != len(self.rows)):
                raise TypeError(f"{self.bulk!r} must return one result per row")
            return results if self.per_row else None
        assert self.op is not None
        return self.op(tx)

    def outcomes(self, ok: bool, value: Any) -> list[tuple[_Item, bool, Any]]:
        """What each submitter gets: the unit's outcome, or its own row's result."""
        if not (ok and self.per_row):
            return [(item, ok, value) for item in self.items]
        return [
            (item, not isinstance(result, BaseException), result)
            for item, result in zip(self.items, value, strict=True)
        ]


@dataclass(slots=True)
class _Done:
    outcomes: list[tuple[bool, Any]]


@dataclass(slots=True)
class _Excluded:
    index: int
    error: BaseException


@dataclass(slots=True)
class _Failed:
    error: BaseException


_IDLE_WAIT = 0.05
"""How long queued writes wait for the event loop to publish them before the writer takes
them anyway (the loop that would have published them stopped): see ``_publish``."""


def _noop(_tx: Tx) -> None:
    return None


def _is_connection_error(err: BaseException) -> bool:
    """Errors of the transaction or connection as a whole, not of one operation."""
    if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
        return True
    return isinstance(
        err, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
    )


class GroupCommitBatcher:
    """Queue of write operations committed in groups by one writer thread.

    ``submit*`` must be called on an asyncio event loop's thread; everything touching the
    database happens on the writer thread, started lazily by the first submission.
    """

    def __init__(
        self,
        engine: Engine,
        url: str,
        settings: BatchSettings | None = None,
        *,
        name: str = "fleetloop-store-writer",
    ) -> None:
        self._engine = engine
        self._url = url
        self._settings = settings or BatchSettings()
        if self._settings.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._name = name
        #: A plain lock under the condition: submitters take it with ``with self._lock``,
        #: which is C code, where ``with self._cond`` runs two Python-level methods per
        #: submission (a few percent of an Update's CPU, issue 13).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: deque[_Item] = deque()
        self._closing = False
        #: How many of the oldest queued writes the writer may take (see ``_publish``).
        self._published = 0
        self._publish_scheduled = False
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self.stats = BatcherStats()

    @property
    def settings(self) -> BatchSettings:
        return self._settings

    @property
    def pending(self) -> int:
        """Writes queued and not yet taken into a batch."""
        return len(self._pending)

    # -- submission (event-loop thread) ---------------------------------------------------------
    def submit(self, op: Op[T]) -> asyncio.Future[T]:
        """Queue ``op``; the future resolves to its result once the batch holding it committed.

        Cancelling the future does not retract the write (it may already be committed).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Item(op, future, loop))
        return future

    def submit_nowait(self, op: Op[Any]) -> None:
        """Queue ``op`` with nobody waiting: a failure is logged and counted, not raised."""
        self._enqueue(_Item(op, None, None))

    def submit_bulk(
        self, writer: BulkWriter[R], rows: Iterable[R], *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue ``rows`` for ``writer``; with ``wait`` a future that resolves after the commit."""
        if wait:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._enqueue(_Item(None, future, loop, writer, list(rows)))
            return future
        self._enqueue(_Item(None, None, None, writer, list(rows)))
        return None

    def submit_bulk_then(
        self, writer: BulkWriter[R], rows: Iterable[R], then: Callable[[bool, Any], None]
    ) -> None:
        """:meth:`submit_bulk` told through ``then(ok, None | error)`` once the batch holding
        the rows committed (or failed), like :meth:`submit_row_then`: what an answer that may
        only go out after the commit (a Send's 2.04, a notification's ACK) waits for."""
        self._enqueue(_Item(None, then, asyncio.get_running_loop(), writer, list(rows)))

    def submit_row(self, writer: RowWriter[R], row: R) -> asyncio.Future[Any]:
        """Queue one ``row`` for ``writer``; the future resolves to this row's result once
        the batch holding it committed. Consecutive rows for the same writer share one call
        (never moved past other writes, unlike ``submit_bulk``), so ``writer`` sees them in
        submission order and can resolve conflicts among them (e.g. one endpoint registering
        twice)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(_Item(None, future, loop, writer, (row,), per_row=True))
        return future

    def submit_row_then(
        self, writer: RowWriter[R], row: R, then: Callable[[bool, Any], None]
    ) -> None:
        """:meth:`submit_row` with a function instead of a future: once the batch holding the
        row committed (or failed), ``then(True, result)`` or ``then(False, error)`` runs on
        the submitting loop, in submission order. Why: a future, its done-callback and the
        loop handle that runs it were a few µs of each Update's CPU (issue 13); the results of
        a batch already arrive in one ``call_soon_threadsafe``. An exception ``then`` raises
        is logged, and the rows after it are still told."""
        self._enqueue(_Item(None, then, asyncio.get_running_loop(), writer, (row,), True))

    def submit_row_nowait(self, writer: RowWriter[R], row: R) -> None:
        """:meth:`submit_row` with nobody waiting: consecutive rows share one call, in order;
        a row whose result is an exception is logged and counted like a failed
        :meth:`submit_nowait`."""
        self._enqueue(_Item(None, None, None, writer, (row,), per_row=True))

    async def flush(self) -> None:
        """Return once everything submitted before this call has been committed (or failed)."""
        await self.submit(_noop)

    def _enqueue(self, item: _Item) -> None:
        with self._lock:
            if self._closing:
                raise StoreError(f"the store for {redact_url(self._url)} is closed")
            if len(self._pending) >= self._settings.max_pending:
                raise StoreOverloaded(
                    f"{len(self._pending)} writes are waiting for {redact_url(self._url)}; the "
                    "database is slower than the incoming load -- retry later, or raise "
                    "BatchSettings.max_pending / move to a faster database"
                )
            self._pending.append(item)
            n = len(self._pending)
            if n - self._published >= self._settings.max_batch:
                self._published = n
                self._cond.notify()
            elif not self._publish_scheduled:
                try:
                    asyncio.get_running_loop().call_soon(self._publish)
                    self._publish_scheduled = True
                except RuntimeError:  # no loop running: hand it over at once
                    self._published = n
                    self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _publish(self) -> None:
        """Let the writer take what the event loop queued during its current turn.

        Why not each write as it comes: the loop submits while it reads a burst of
        datagrams, and every receive releases the GIL. A writer back from its last commit
        then took the one or two writes queued so far and committed them: a commit (and an
        fsync) per few requests, which cost more CPU per request than the statements it ran
        (issue 13: Updates per commit fell from ~55 to ~25). Published at the end of the
        loop's turn, the burst goes into one batch. Order is unchanged (one queue); the writer
        also takes unpublished writes after ``_IDLE_WAIT`` s, should the loop that scheduled
        this call stop first."""
        with self._lock:
            self._publish_scheduled = False
            if self._published < len(self._pending):
                self._published = len(self._pending)
                self._cond.notify()

    # -- shutdown -------------------------------------------------------------------------------
    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking writes, commit everything queued, stop the writer thread.

        Callable from any thread (including the loop's: it blocks it until the queue drained).
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                raise StoreError(
                    f"the store's writer did not finish within {timeout} s; "
                    f"{len(self._pending)} writes were not committed"
                )

    @property
    def closed(self) -> bool:
        return self._closing

    # -- writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                try:
                    self._execute(batch)
                except Exception as err:  # a bug in the batcher itself; keep the thread alive
                    log.exception("store writer: unexpected error; failing a batch")
                    self._deliver([(item, False, err) for item in batch])
        finally:
            self._drop_connection()

    def _next_batch(self) -> list[_Item] | None:
        settings = self._settings
        with self._cond:
            while not self._published:
                if self._closing or (self._pending and not self._cond.wait(_IDLE_WAIT)):
                    self._published = len(self._pending)  # closing, or never published
                    if not self._pending:
                        return None
                elif not self._pending:
                    self._cond.wait(_IDLE_WAIT)  # timed: a write queued meanwhile whose
                    # loop stops before it publishes is taken at the next pass
            if settings.max_delay > 0 and not self._closing:
                deadline = time.monotonic() + settings.max_delay
                while self._published < settings.max_batch and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                    self._published = len(self._pending)  # lingering: take what came
            n = min(self._published, settings.max_batch)
            self._published -= n
            return [self._pending.popleft() for _ in range(n)]

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self._engine.connect()
            conn.execution_options(**{WRITE_OPTION: True})
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # the connection is already broken; nothing more to do
                log.debug("store writer: error while dropping a broken connection", exc_info=True)

    @staticmethod
    def _plan(batch: list[_Item]) -> list[_Unit]:
        units: list[_Unit] = []
        merged: dict[BulkWriter[Any] | RowWriter[Any], _Unit] = {}
        for item in batch:
            if item.bulk is None:
                units.append(_Unit([item], op=item.op))
                continue
            if item.per_row:
                last = units[-1] if units else None
                if last is None or not last.per_row or last.bulk != item.bulk:  # bound methods
                    last = _Unit([], bulk=item.bulk, per_row=True)
                    units.append(last)
                last.items.append(item)
                last.rows.extend(item.rows)
                continue
            unit = merged.get(item.bulk)
            if unit is None:
                unit = merged[item.bulk] = _Unit([], bulk=item.bulk)
                units.append(unit)
            unit.items.append(item)
            unit.rows.extend(item.rows)
        return units

    def _execute(self, batch: list[_Item]) -> None:
        units = self._plan(batch)
        results: list[tuple[_Item, bool, Any]] = []
        while units:
            outcome = self._attempt(units)
            if isinstance(outcome, _Done):
                for unit, (ok, value) in zip(units, outcome.outcomes, strict=True):
                    results.extend(unit.outcomes(ok, value))
                self.stats.batches += 1
                self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(batch))
                break
            if isinstance(outcome, _Excluded):
                unit = units.pop(outcome.index)
                results.extend((item, False, outcome.error) for item in unit.items)
                self.stats.retries += 1
                continue
            results.extend((item, False, outcome.error) for unit in units for item in unit.items)
            self.stats.failed_batches += 1
            break
        self._deliver(results)

    def _attempt(self, units: list[_Unit]) -> _Done | _Excluded | _Failed:
        try:
            conn = self._connection()
            tx = Tx(conn)
            trans = conn.begin()
        except Exception as err:
            self._drop_connection()
            return _Failed(err)
        outcomes: list[tuple[bool, Any]] = []
        try:
            for index, unit in enumerate(units):
                mark = tx._mark()
                try:
                    value = unit.run(tx)
                except Exception as err:
                    wrote = tx._restore(mark, keep_hooks=False)
                    if _is_connection_error(err):
                        raise
                    if wrote or isinstance(err, sa_exc.SQLAlchemyError):
                        trans.rollback()
                        return _Excluded(index, err)
                    outcomes.append((False, err))
                else:
                    tx._restore(mark, keep_hooks=True)
                    outcomes.append((True, value))
            trans.commit()
        except Exception as err:
            try:
                if trans.is_active:
                    trans.rollback()
            except Exception:
                log.debug("store writer: rollback after a failed batch failed", exc_info=True)
            self._drop_connection()
            return _Failed(err)
        for hook in tx._take_hooks():
            try:
                hook()
            except Exception:
                log.exception("store writer: an after-commit hook failed")
        return _Done(outcomes)

    def _deliver(self, results: list[tuple[_Item, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, bool, Any]]] = {}
        for item, ok, value in results:
            if ok:
                self.stats.items += 1
            else:
                self.stats.failed_items += 1
                if isinstance(value, sa_exc.SQLAlchemyError):
                    value = translate(value, self._url)
            if item.future is None or item.loop is None:
                if not ok:
                    self.stats.lost_unawaited += 1
                    log.error("store: a fire-and-forget write failed: %s", value)
                continue
            by_loop.setdefault(item.loop, []).append((item.future, ok, value))
        for loop, entries in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, entries)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                log.warning("store: %d write results had no running loop to go to", len(entries))


def _resolve(entries: list[tuple[_Waiter, bool, Any]]) -> None:
    for future, ok, value in entries:
        if not isinstance(future, asyncio.Future):
            try:
                future(ok, value)
            except Exception:
                log.exception("store: a write's result callback failed")
            continue
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
