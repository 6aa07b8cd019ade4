"""Queued requests: FIFO per endpoint, the state machine, deadlines, restart recovery."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lwm2m.model import Path
from lwm2m.store import (
    Conflict,
    NewQueuedRequest,
    NotFound,
    QueuedRequest,
    QueueState,
    Store,
    Tx,
)


def enqueue(
    store: Store, endpoint: str = "ep-1", now: float = 0, deadline: float | None = None
) -> QueuedRequest:
    request = NewQueuedRequest(
        endpoint,
        "write",
        (Path.parse("/1/0/1"),),
        content_format=11542,
        payload=b"\x00\x01",
        deadline=deadline,
        correlation="campaign-7/step-2",
    )
    with store.transaction() as tx:
        return store.queue.enqueue(tx, request, now)


def test_enqueue_and_list_pending_in_fifo_order(store: Store) -> None:
    first = enqueue(store, now=1)
    second = enqueue(store, now=2, deadline=100)
    enqueue(store, endpoint="ep-2", now=3)
    assert first.state is QueueState.PENDING and first.id < second.id
    with store.transaction() as tx:
        assert store.queue.get(tx, first.id) == first
        assert store.queue.pending(tx, "ep-1", now=50) == [first, second]
        assert store.queue.pending(tx, "ep-1", now=100) == [first]  # deadline reached
        assert store.queue.pending(tx, "ep-1", now=50, limit=1) == [first]
        assert store.queue.get(tx, 12345) is None
    assert first.payload == b"\x00\x01" and first.paths == (Path.parse("/1/0/1"),)


def test_sent_then_answered(store: Store) -> None:
    req = enqueue(store)
    with store.transaction() as tx:
        sent = store.queue.mark_sent(tx, req.id, now=10)
        assert (sent.state, sent.sent_at) == (QueueState.SENT, 10)
        assert store.queue.pending(tx, "ep-1", now=10) == []
        done = store.queue.mark_answered(tx, req.id, now=11, code="2.04", payload=b"ok")
    assert (done.state, done.finished_at, done.response_code) == (QueueState.ANSWERED, 11, "2.04")
    assert done.response_payload == b"ok"
    assert store.read_sync(lambda tx: store.queue.get(tx, req.id)) == done


def test_sent_then_timeout(store: Store) -> None:
    req = enqueue(store)
    with store.transaction() as tx:
        store.queue.mark_sent(tx, req.id, now=10)
        timed_out = store.queue.mark_timeout(tx, req.id, now=40)
    assert (timed_out.state, timed_out.finished_at) == (QueueState.TIMEOUT, 40)


@pytest.mark.parametrize("send_first", [False, True])
def test_cancel_from_pending_or_sent(store: Store, send_first: bool) -> None:
    req = enqueue(store)
    with store.transaction() as tx:
        if send_first:
            store.queue.mark_sent(tx, req.id, now=1)
        assert store.queue.cancel(tx, req.id, now=2).state is QueueState.CANCELLED


@pytest.mark.parametrize(
    ("setup", "action", "state"),
    [
        ([], "mark_answered", "pending"),
        ([], "mark_timeout", "pending"),
        (["mark_sent"], "mark_sent", "sent"),
        (["mark_sent", "mark_answered"], "cancel", "answered"),
        (["mark_sent", "mark_timeout"], "mark_answered", "timeout"),
        (["cancel"], "mark_sent", "cancelled"),
    ],
)
def test_transitions_the_state_machine_forbids_are_conflicts(
    store: Store, setup: list[str], action: str, state: str
) -> None:
    req = enqueue(store)
    actions: dict[str, Callable[[Tx], QueuedRequest]] = {
        "mark_sent": lambda tx: store.queue.mark_sent(tx, req.id, 5),
        "mark_answered": lambda tx: store.queue.mark_answered(tx, req.id, 5, code="2.05"),
        "mark_timeout": lambda tx: store.queue.mark_timeout(tx, req.id, 5),
        "cancel": lambda tx: store.queue.cancel(tx, req.id, 5),
    }
    with store.transaction() as tx:
        for name in setup:
            actions[name](tx)
    with pytest.raises(Conflict, match=f"is {state}"), store.transaction() as tx:
        actions[action](tx)
    unchanged = store.read_sync(lambda tx: store.queue.get(tx, req.id))
    assert unchanged is not None and unchanged.state.value == state


def test_unknown_requests_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound), store.transaction() as tx:
        store.queue.mark_sent(tx, 999, now=0)


def test_expire_moves_only_overdue_pending_requests(store: Store) -> None:
    overdue = enqueue(store, deadline=10)
    later = enqueue(store, deadline=30)
    no_deadline = enqueue(store)
    in_flight = enqueue(store, deadline=10)
    with store.transaction() as tx:
        store.queue.mark_sent(tx, in_flight.id, now=5)
    with store.transaction() as tx:
        expired = store.queue.expire(tx, now=10)
        assert [(r.id, r.state, r.finished_at) for r in expired] == [
            (overdue.id, QueueState.EXPIRED, 10)
        ]
        assert store.queue.expire(tx, now=10) == []
        states = {r.id: r.state for r in store.queue.for_endpoint(tx, "ep-1")}
    assert states == {
        overdue.id: QueueState.EXPIRED,
        later.id: QueueState.PENDING,
        no_deadline.id: QueueState.PENDING,
        in_flight.id: QueueState.SENT,
    }


def test_a_deadline_in_the_past_is_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        enqueue(store, now=10, deadline=10)


def test_after_a_restart_requests_in_flight_are_timed_out(store: Store) -> None:
    sent = enqueue(store)
    waiting = enqueue(store)
    with store.transaction() as tx:
        store.queue.mark_sent(tx, sent.id, now=1)
    with store.transaction() as tx:
        abandoned = store.queue.abandon_sent(tx, now=100)
        assert [(r.id, r.state) for r in abandoned] == [(sent.id, QueueState.TIMEOUT)]
        assert store.queue.pending(tx, "ep-1", now=100) == [waiting]


def test_purge_finished_keeps_live_and_recent_requests(store: Store) -> None:
    old = enqueue(store)
    recent = enqueue(store)
    live = enqueue(store)
    with store.transaction() as tx:
        store.queue.cancel(tx, old.id, now=10)
        store.queue.cancel(tx, recent.id, now=100)
        assert store.queue.purge_finished(tx, before=50) == 1
        left = [r.id for r in store.queue.for_endpoint(tx, "ep-1")]
        assert left == [recent.id, live.id]
        only_pending = store.queue.for_endpoint(tx, "ep-1", states=(QueueState.PENDING,))
        assert [r.id for r in only_pending] == [live.id]
