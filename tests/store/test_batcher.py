"""The group-commit writer: batching, per-submitter results, failure isolation, closing.

To make batch boundaries deterministic, several tests first submit a *gate*: an operation that
holds the writer thread until the test releases it. Everything submitted meanwhile queues up
and is taken as the next batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from lwm2m.model import Path, Value
from lwm2m.store import (
    Address,
    BatchSettings,
    Conflict,
    EndpointSecurity,
    Identity,
    NewRegistration,
    NotFound,
    PskCredential,
    Registration,
    RegistrationUpdate,
    ReportedValue,
    Store,
    StoreError,
    StoreOverloaded,
    StoreSettings,
    StoreUnavailable,
    Tx,
)
from lwm2m.store.tables import ENDPOINT_SECURITY
from tests.store.conftest import StoreTarget


class Gate:
    """An operation that blocks the writer thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, tx: Tx) -> None:
        self.entered.set()
        assert self.released.wait(10), "gate never released"

    async def close_behind_writer(self, store: Store) -> asyncio.Future[None]:
        """Submit the gate and return once the writer is stuck in it."""
        future = store.batcher.submit(self)
        await asyncio.to_thread(self.entered.wait, 10)
        return future


def new(endpoint: str) -> NewRegistration:
    return NewRegistration(endpoint, 300, Address("10.0.0.1", 5683), Identity.nosec())


def registering(store: Store, endpoint: str, now: float = 0.0) -> Callable[[Tx], Registration]:
    return lambda tx: store.registrations.register(tx, new(endpoint), now)[0]


def getting(store: Store, registration_id: str) -> Callable[[Tx], Registration | None]:
    return lambda tx: store.registrations.get(tx, registration_id)


def endpoints(store: Store) -> list[str]:
    return [r.endpoint for r in store.read_sync(lambda tx: store.registrations.list_page(tx)).items]


def test_concurrent_submitters_each_get_their_own_committed_write(store: Store) -> None:
    async def main() -> list[Registration]:
        gate = Gate()
        gated = await gate.close_behind_writer(store)

        async def device(i: int) -> Registration:
            reg: Registration = await store.write(registering(store, f"ep-{i:03d}"))
            return reg

        tasks = [asyncio.ensure_future(device(i)) for i in range(200)]
        await asyncio.sleep(0)  # let every task submit
        assert store.batcher.pending == 200
        gate.released.set()
        await gated
        return await asyncio.gather(*tasks)

    regs = asyncio.run(main())
    assert [r.endpoint for r in regs] == [f"ep-{i:03d}" for i in range(200)]
    assert store.batcher.stats.batches == 2  # the gate's, then all 200 in one transaction
    assert store.batcher.stats.max_batch_seen == 200
    with store.transaction() as tx:
        assert store.registrations.count(tx) == 200
        assert all(store.registrations.get(tx, r.id) == r for r in regs)


def test_without_a_gate_concurrent_writes_still_share_commits(store: Store) -> None:
    async def main() -> None:
        await asyncio.gather(*(store.write(registering(store, f"ep-{i}")) for i in range(300)))

    asyncio.run(main())
    stats = store.batcher.stats
    assert stats.items == 300
    assert stats.batches < 300 and stats.max_batch_seen > 1


def test_an_operation_failing_before_it_writes_fails_alone(store: Store) -> None:
    async def main() -> list[Any]:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        futures: list[asyncio.Future[Any]] = [
            store.batcher.submit(registering(store, "ep-a")),
            store.batcher.submit(
                lambda tx: store.registrations.update(tx, "unknown", RegistrationUpdate(), 1)
            ),
            store.batcher.submit(registering(store, "ep-b")),
        ]
        gate.released.set()
        await gated
        return await asyncio.gather(*futures, return_exceptions=True)

    a, failed, b = asyncio.run(main())
    assert isinstance(failed, NotFound)
    assert (a.endpoint, b.endpoint) == ("ep-a", "ep-b")
    assert endpoints(store) == ["ep-a", "ep-b"]
    assert store.batcher.stats.retries == 0  # nothing had to be rolled back


def test_an_operation_failing_after_it_wrote_is_rolled_back_alone(store: Store) -> None:
    def write_then_fail(tx: Tx) -> None:
        store.registrations.register(tx, new("ep-bad"), 0)
        raise RuntimeError("bug after a write")

    async def main() -> list[Any]:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        futures: list[asyncio.Future[Any]] = [
            store.batcher.submit(registering(store, "ep-a")),
            store.batcher.submit(write_then_fail),
            store.batcher.submit(registering(store, "ep-b")),
        ]
        gate.released.set()
        await gated
        return await asyncio.gather(*futures, return_exceptions=True)

    a, failed, b = asyncio.run(main())
    assert isinstance(failed, RuntimeError) and str(failed) == "bug after a write"
    assert (a.endpoint, b.endpoint) == ("ep-a", "ep-b")
    assert endpoints(store) == ["ep-a", "ep-b"]
    assert store.batcher.stats.retries == 1


def test_a_database_error_in_one_operation_is_reported_to_its_submitter_only(
    store: Store,
) -> None:
    row = {"endpoint": "ep-x", "allow_nosec": True, "updated_at": 0.0}

    def raw_insert(tx: Tx) -> None:  # bypasses the repository's checks on purpose
        tx.execute(ENDPOINT_SECURITY.insert(), row)

    async def main() -> list[Any]:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        futures: list[asyncio.Future[Any]] = [
            store.batcher.submit(raw_insert),
            store.batcher.submit(registering(store, "ep-a")),
            store.batcher.submit(raw_insert),  # duplicate primary key
            store.batcher.submit(registering(store, "ep-b")),
        ]
        gate.released.set()
        await gated
        return await asyncio.gather(*futures, return_exceptions=True)

    first, a, duplicate, b = asyncio.run(main())
    assert first is None
    assert isinstance(duplicate, Conflict)
    assert (a.endpoint, b.endpoint) == ("ep-a", "ep-b")
    assert endpoints(store) == ["ep-a", "ep-b"]
    assert store.read_sync(lambda tx: store.security.get(tx, "ep-x")) is not None


@contextmanager
def write_lock(target: StoreTarget) -> Iterator[None]:
    """Hold the database's write lock from outside the store (another process would)."""
    if target.backend == "sqlite":
        db = make_url(target.url).database
        assert db is not None
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with target.open() as other, other.transaction() as tx:
        tx.execute(text("LOCK TABLE registration IN ACCESS EXCLUSIVE MODE"))
        yield


def impatient(target: StoreTarget) -> StoreTarget:
    """The same database, but the store gives up waiting for a lock after 100 ms."""
    if target.backend == "sqlite":
        return target
    url = make_url(target.url)
    options = f"{url.query['options']} -clock_timeout=100"
    return replace(target, url=url.update_query_dict({"options": options}).render_as_string(False))


def test_a_failed_transaction_fails_exactly_its_batch_and_the_writer_recovers(
    target: StoreTarget,
) -> None:
    settings = StoreSettings(sqlite_busy_timeout_ms=100, batch=BatchSettings(max_delay=0.2))
    with impatient(target).open(settings=settings) as store:
        store.create_schema(now=0)

        async def main() -> None:
            await store.write(registering(store, "before"))
            with write_lock(target):
                batch = [store.batcher.submit(registering(store, f"ep-{i}")) for i in range(3)]
                outcomes = await asyncio.gather(*batch, return_exceptions=True)
            assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
            assert "unavailable" in str(outcomes[0])
            await store.write(registering(store, "after"))

        asyncio.run(main())
        assert store.batcher.stats.failed_batches == 1
        assert endpoints(store) == ["after", "before"]


def test_bulk_rows_of_a_batch_are_written_in_one_call(store: Store) -> None:
    calls: list[int] = []

    def writer(tx: Tx, rows: list[ReportedValue]) -> None:
        calls.append(len(rows))
        store.telemetry.append(tx, rows)

    def values(i: int) -> list[ReportedValue]:
        return [
            ReportedValue("ep-1", Path.of(3303, i, r), Value.float_(i + r / 10), at=i)
            for r in range(3)
        ]

    async def main() -> None:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        for i in range(49):
            store.batcher.submit_bulk(writer, values(i))
        last = store.batcher.submit_bulk(writer, values(49), wait=True)
        gate.released.set()
        await gated
        assert last is not None
        await last

    asyncio.run(main())
    assert calls == [150]
    assert len(store.read_sync(lambda tx: store.telemetry.latest(tx, "ep-1"))) == 150


def test_record_is_fire_and_forget_and_flush_waits_for_it(store: Store) -> None:
    async def main() -> list[ReportedValue]:
        for i in range(20):
            store.record([ReportedValue("ep-1", Path.of(3, 0, 9), Value.integer(i), at=i)])
        await store.flush()
        return await store.read(lambda tx: store.telemetry.history(tx, "ep-1", Path.of(3, 0, 9)))

    history = asyncio.run(main())
    assert [v.value.value for v in history] == list(range(20))


def test_operations_of_a_batch_run_in_submission_order(store: Store) -> None:
    def set_key(key: bytes) -> Any:
        sec = EndpointSecurity("ep-1", psk=PskCredential("id-1", key))
        return lambda tx: store.security.set(tx, sec, 0)

    async def main() -> None:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        futures = [store.batcher.submit(set_key(bytes([i]))) for i in range(10)]
        gate.released.set()
        await gated
        await asyncio.gather(*futures)

    asyncio.run(main())
    assert store.psk_store()["id-1"] == bytes([9])


def test_unawaited_failures_are_counted_and_logged_not_raised(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        store.write_nowait(lambda tx: store.registrations.remove(tx, "nope"))
        await store.flush()

    asyncio.run(main())
    assert store.batcher.stats.lost_unawaited == 1
    assert "fire-and-forget write failed" in caplog.text


def test_a_full_queue_refuses_writes_instead_of_growing(target: StoreTarget) -> None:
    settings = StoreSettings(batch=BatchSettings(max_pending=3))
    with target.open(settings=settings) as store:
        store.create_schema(now=0)

        async def main() -> None:
            gate = Gate()
            gated = await gate.close_behind_writer(store)
            queued = [store.batcher.submit(registering(store, f"ep-{i}")) for i in range(3)]
            with pytest.raises(StoreOverloaded, match="slower than the incoming load"):
                store.batcher.submit(registering(store, "ep-3"))
            gate.released.set()
            await gated
            await asyncio.gather(*queued)

        asyncio.run(main())
        assert endpoints(store) == ["ep-0", "ep-1", "ep-2"]


def test_cancelling_a_waiter_does_not_retract_its_write(store: Store) -> None:
    async def main() -> None:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        future = store.batcher.submit(registering(store, "ep-1"))
        future.cancel()
        gate.released.set()
        await gated
        await store.flush()

    asyncio.run(main())
    assert endpoints(store) == ["ep-1"]


def test_close_commits_everything_still_queued(target: StoreTarget) -> None:
    store = target.open()
    store.create_schema(now=0)

    async def main() -> None:
        gate = Gate()
        await gate.close_behind_writer(store)
        for i in range(100):
            store.write_nowait(registering(store, f"ep-{i:03d}"))
        store.record([ReportedValue("ep-000", Path.of(3, 0, 9), Value.integer(1), at=1)])
        gate.released.set()
        store.close()  # blocks until the queue is drained
        with pytest.raises(StoreError, match="closed"):
            await store.write(registering(store, "late"))

    asyncio.run(main())
    with target.open() as reopened, reopened.transaction() as tx:
        assert reopened.registrations.count(tx) == 100
        assert len(reopened.telemetry.latest(tx, "ep-000")) == 1


def test_aclose_lets_pending_waiters_finish(store: Store) -> None:
    async def main() -> Registration:
        future = store.batcher.submit(registering(store, "ep-1"))
        await store.aclose()
        return await future

    assert asyncio.run(main()).endpoint == "ep-1"


def test_reads_see_every_awaited_write(store: Store) -> None:
    async def main() -> None:
        for i in range(20):
            reg = await store.write(registering(store, f"ep-{i}"))
            assert await store.read(getting(store, reg.id)) == reg

    asyncio.run(main())


def test_a_read_cannot_write(store: Store) -> None:
    async def main() -> None:
        await store.read(registering(store, "ep-1"))

    with pytest.raises(StoreError, match="read-only"):
        asyncio.run(main())


def test_consecutive_rows_share_one_call_in_order_and_each_submitter_gets_its_own_result(
    store: Store,
) -> None:
    """submit_row: rows queued back to back become one writer call (one call per run of
    rows: a plain write between them splits it, so nothing is reordered); an exception
    instance returned for a row fails that submitter alone."""
    calls: list[list[str]] = []

    def register_rows(tx: Tx, rows: list[str]) -> list[Any]:
        calls.append(list(rows))
        out: list[Any] = []
        for endpoint in rows:
            if endpoint == "refused":
                out.append(Conflict("refused on purpose"))
            else:
                out.append(store.registrations.register(tx, new(endpoint), 0.0)[0].endpoint)
        return out

    async def main() -> list[Any]:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        batcher = store.batcher
        futures: list[asyncio.Future[Any]] = [
            batcher.submit_row(register_rows, "a"),
            batcher.submit_row(register_rows, "refused"),
            batcher.submit_row(register_rows, "b"),
            batcher.submit(registering(store, "between")),
            batcher.submit_row(register_rows, "c"),
        ]
        gate.released.set()
        await gated
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(main())
    assert calls == [["a", "refused", "b"], ["c"]]
    assert results[0] == "a" and results[2] == "b" and results[4] == "c"
    assert isinstance(results[1], Conflict)
    assert isinstance(results[3], Registration) and results[3].endpoint == "between"
    assert sorted(endpoints(store)) == ["a", "b", "between", "c"]
    assert store.batcher.stats.failed_items == 1


def test_rows_nobody_waits_for_share_one_call_and_a_failed_row_is_counted(store: Store) -> None:
    """submit_row_nowait: like submit_row (one call per run of rows, in order), and a row whose
    result is an exception is counted as a lost fire-and-forget write, not raised."""
    calls: list[list[str]] = []

    def register_rows(tx: Tx, rows: list[str]) -> list[Any]:
        calls.append(list(rows))
        return [
            Conflict("refused on purpose")
            if endpoint == "refused"
            else store.registrations.register(tx, new(endpoint), 0.0)[0].endpoint
            for endpoint in rows
        ]

    async def main() -> None:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        batcher = store.batcher
        batcher.submit_row_nowait(register_rows, "a")
        batcher.submit_row_nowait(register_rows, "refused")
        batcher.submit_row_nowait(register_rows, "b")
        gate.released.set()
        await gated
        await batcher.flush()

    asyncio.run(main())
    assert calls == [["a", "refused", "b"]]
    assert sorted(endpoints(store)) == ["a", "b"]
    assert store.batcher.stats.lost_unawaited == 1


def test_a_write_the_loop_never_hands_over_is_still_committed(store: Store) -> None:
    """Writes are handed to the writer at the end of the event loop's turn (one batch per
    burst, issue 13). If that turn never ends -- the loop blocks or stops -- the writer still
    takes them after a short wait instead of leaving them queued."""
    committed = threading.Event()

    async def main() -> None:
        store.batcher.submit_nowait(lambda tx: tx.after_commit(committed.set))
        assert committed.wait(2.0)  # blocks the loop: its turn does not end meanwhile

    asyncio.run(main())


def test_rows_with_a_callback_are_told_in_order_after_the_commit(store: Store) -> None:
    """submit_row_then: rows share one writer call with submit_row's, each callback gets
    (ok, value) on the loop once the row is committed (the row is readable by then), in
    submission order; a callback that raises is logged and the next one is still called."""
    calls: list[list[str]] = []
    told: list[tuple[str, bool, Any, bool]] = []

    def register_rows(tx: Tx, rows: list[str]) -> list[Any]:
        calls.append(list(rows))
        return [
            Conflict("refused on purpose")
            if endpoint == "refused"
            else store.registrations.register(tx, new(endpoint), 0.0)[0].endpoint
            for endpoint in rows
        ]

    def then(name: str) -> Callable[[bool, Any], None]:
        def call(ok: bool, value: Any) -> None:
            told.append((name, ok, value, name in endpoints(store)))
            if name == "b":
                raise RuntimeError("a broken callback")

        return call

    async def main() -> Any:
        gate = Gate()
        gated = await gate.close_behind_writer(store)
        batcher = store.batcher
        batcher.submit_row_then(register_rows, "a", then("a"))
        batcher.submit_row_then(register_rows, "refused", then("refused"))
        future = batcher.submit_row(register_rows, "b")
        batcher.submit_row_then(register_rows, "b", then("b"))
        batcher.submit_row_then(register_rows, "c", then("c"))
        assert not told
        gate.released.set()
        await gated
        await batcher.flush()
        return await future

    assert asyncio.run(main()) == "b"
    assert calls == [["a", "refused", "b", "b", "c"]]
    assert [(name, ok) for name, ok, _, _ in told] == [
        ("a", True),
        ("refused", False),
        ("b", True),
        ("c", True),
    ]
    assert isinstance(told[1][2], Conflict)
    assert all(readable for name, _, _, readable in told if name != "refused")
