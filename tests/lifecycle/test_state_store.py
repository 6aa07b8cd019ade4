"""The state repository on SQLite and PostgreSQL: generations on change, the generation rule
in ``record`` (applied, drift, failure), the drift listing and the bundle registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.schema import create_schema
from lifecycle.state.dimensions import Dimension, Policy, Status
from lifecycle.state.repository import StateRepository
from lwm2m.store import Conflict, Store
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)

FLAGS = {Dimension.FLAGS: {"a": "1"}}


@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[Store]:  # noqa: F811
    opened = Store.open(database_url, tmp_path)
    opened.create_schema()
    create_schema(opened)
    try:
        yield opened
    finally:
        opened.close()


repo = StateRepository()


def test_the_generation_grows_only_when_the_value_changes(store: Store) -> None:
    with store.transaction() as tx:
        first = repo.set_desired(tx, ["a", "b"], FLAGS, policy=Policy.ENFORCE, actor="op", now=1.0)
    assert [(c.endpoint, c.generation, c.changed) for c in first] == [
        ("a", 1, True),
        ("b", 1, True),
    ]
    with store.transaction() as tx:
        again = repo.set_desired(tx, ["a"], FLAGS, policy=Policy.REPORT_ONLY, actor="op", now=2.0)
        changed = repo.set_desired(
            tx, ["b"], {Dimension.FLAGS: {"a": "2"}}, policy=Policy.ENFORCE, actor="op", now=3.0
        )
    assert (again[0].generation, again[0].changed) == (1, False)
    assert (changed[0].generation, changed[0].changed) == (2, True)
    desired = store.read_sync(lambda tx: repo.desired(tx, "a"))
    assert desired[Dimension.FLAGS].policy is Policy.REPORT_ONLY


def test_record_applies_the_generation_rule_and_reports_a_drift(store: Store) -> None:
    with store.transaction() as tx:
        repo.set_desired(tx, ["a"], FLAGS, policy=Policy.ENFORCE, actor="op", now=1.0)
        before = repo.record(tx, "a", {Dimension.FLAGS: {}}, now=2.0, source="observe")
        applied = repo.record(tx, "a", {Dimension.FLAGS: {"a": "1"}}, now=3.0, source="verify")
        drift = repo.record(tx, "a", {Dimension.FLAGS: {"a": "0"}}, now=4.0, source="notify")
    assert (before[0].before, before[0].after) == (Status.UNKNOWN, Status.PENDING)
    assert applied[0].after is Status.APPLIED
    assert (drift[0].before, drift[0].after) == (Status.APPLIED, Status.DRIFTED)
    reported = store.read_sync(lambda tx: repo.reported(tx, "a"))[Dimension.FLAGS]
    assert reported.observed_generation == 1 and reported.value == {"a": "0"}


def test_a_failure_marks_this_generation_failed_until_a_new_value_is_set(store: Store) -> None:
    with store.transaction() as tx:
        repo.set_desired(tx, ["a"], FLAGS, policy=Policy.ENFORCE, actor="op", now=1.0)
        done = repo.record(
            tx, "a", {}, now=2.0, source="reconcile", failures={Dimension.FLAGS: "4.05 refused"}
        )
    assert done[0].after is Status.FAILED
    view = store.read_sync(lambda tx: repo.view(tx, "a"))
    assert view[0].reported is not None and view[0].reported.detail == "4.05 refused"
    with store.transaction() as tx:
        repo.set_desired(
            tx, ["a"], {Dimension.FLAGS: {"a": "2"}}, policy=Policy.ENFORCE, actor="op", now=3.0
        )
    assert store.read_sync(lambda tx: repo.view(tx, "a"))[0].status is Status.UNKNOWN


def test_drift_lists_only_devices_out_of_line_for_a_selection(store: Store) -> None:
    with store.transaction() as tx:
        repo.set_desired(tx, ["a", "b", "c"], FLAGS, policy=Policy.ENFORCE, actor="op", now=1.0)
        repo.record(tx, "a", {Dimension.FLAGS: {"a": "1"}}, now=2.0, source="verify")
        repo.record(tx, "b", {Dimension.FLAGS: {"a": "9"}}, now=2.0, source="notify")
    everything = store.read_sync(lambda tx: repo.out_of_line(tx, None))
    assert [(v.endpoint, v.status) for v in everything] == [
        ("b", Status.PENDING),
        ("c", Status.UNKNOWN),
    ]
    some = store.read_sync(lambda tx: repo.out_of_line(tx, ["a", "c"]))
    assert [v.endpoint for v in some] == ["c"]


def test_bundles_are_immutable_and_content_addressed(store: Store) -> None:
    with store.transaction() as tx:
        made, created = repo.put_bundle(tx, "eu-v7", {"k": 1}, actor="op", now=1.0)
        same, again = repo.put_bundle(tx, "eu-v7", {"k": 1}, actor="op", now=2.0)
    assert created and not again and same.digest == made.digest and len(made.digest) == 64
    assert made.decoded() == {"k": 1}
    with pytest.raises(Conflict, match="immutable"), store.transaction() as tx:
        repo.put_bundle(tx, "eu-v7", {"k": 2}, actor="op", now=3.0)
    assert [b.name for b in store.read_sync(repo.bundles)] == ["eu-v7"]
