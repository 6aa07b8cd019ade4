"""The reconciler's sans-IO cores on a fake clock: the per-endpoint work queue (dedup,
no double hand-out, parking sleepers, delayed retries), the token bucket, the backoff."""

from __future__ import annotations

import pytest

from lifecycle.state.reconciler import OBSERVE, RECONCILE, TokenBucket, WorkQueue, backoff


def test_pushes_for_one_endpoint_merge_into_one_entry_in_fifo_order() -> None:
    queue = WorkQueue()
    assert queue.push("a", RECONCILE)
    assert queue.push("b", RECONCILE)
    assert not queue.push("a", OBSERVE)
    assert queue.pop(0.0) == ("a", {RECONCILE, OBSERVE})
    assert queue.pop(0.0) == ("b", {RECONCILE})
    assert queue.pop(0.0) is None


def test_an_endpoint_being_worked_on_is_not_handed_out_again_but_its_new_work_is_kept() -> None:
    queue = WorkQueue()
    queue.push("a", RECONCILE)
    assert queue.pop(0.0) == ("a", {RECONCILE})
    queue.push("a", OBSERVE)
    assert queue.pop(0.0) is None
    queue.done("a")
    assert queue.pop(0.0) == ("a", {OBSERVE})
    queue.done("a")
    assert queue.pop(0.0) is None and not queue.active


def test_a_parked_sleeper_keeps_its_work_until_it_wakes() -> None:
    queue = WorkQueue()
    queue.push("s", RECONCILE)
    endpoint, kinds = queue.pop(0.0) or ("", set())
    queue.park(endpoint, kinds)
    queue.push("s", OBSERVE)  # events while asleep add to the parked work
    assert queue.pop(100.0) is None
    assert queue.wake("s")
    assert queue.pop(100.0) == ("s", {RECONCILE, OBSERVE})
    assert not queue.wake("s")


def test_a_delayed_retry_is_handed_out_only_once_due_unless_new_work_arrives() -> None:
    queue = WorkQueue()
    queue.push("a", RECONCILE, not_before=10.0)
    assert queue.next_due() == 10.0
    assert queue.pop(9.9) is None
    assert queue.pop(10.0) == ("a", {RECONCILE})
    queue.done("a")
    queue.push("b", RECONCILE, not_before=50.0)
    assert queue.push("b", OBSERVE)  # an event makes it ready now
    assert queue.pop(0.0) == ("b", {RECONCILE, OBSERVE})


def test_the_token_bucket_grants_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.1)
    assert bucket.take(0.05) == pytest.approx(0.05)
    assert bucket.take(0.1) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at burst


def test_the_token_bucket_refuses_a_nonsense_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0.0, burst=1, now=0.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
