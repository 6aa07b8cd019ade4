"""Versioned config bundles on SQLite and PostgreSQL: publish (content-addressed, immutable),
versions in semantic order, key-level diff (hypothesis: applying it gives the new content),
overlays merged per cohort and delivered through the flat registry the reconciler reads."""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.artifacts.bundles import (
    BundleConflict,
    BundleError,
    BundleRepository,
    Patch,
    UnknownBundle,
    diff_content,
    parse_ref,
)
from lifecycle.state.dimensions import Dimension, parse_desired
from lifecycle.state.repository import StateRepository
from lwm2m.store import Store

BASE = {"interval": 60, "server": "eu.example", "debug": False}


repo = BundleRepository()


def test_publish_is_content_addressed_and_delivered_through_the_flat_registry(
    store: Store,
) -> None:
    with store.transaction() as tx:
        made, created = repo.publish(tx, "tracker", "1.0.0", BASE, actor="op", now=1.0)
    assert created
    encoded = cbor2.dumps(BASE, canonical=True)
    assert made.digest == hashlib.sha256(encoded).hexdigest() and made.size == len(encoded)
    flat = store.read_sync(lambda tx: StateRepository().bundle(tx, "tracker@1.0.0"))
    assert flat is not None and flat.content == encoded and flat.digest == made.digest
    # the desired value it resolves to is one the config dimension accepts as is
    assert parse_desired(Dimension.CONFIG, made.desired()) == {
        "version": "1.0.0",
        "digest": made.digest,
        "bundle": "tracker@1.0.0",
    }


def test_a_published_version_is_immutable(store: Store) -> None:
    with store.transaction() as tx:
        repo.publish(tx, "tracker", "1.0.0", BASE, actor="op", now=1.0)
    with store.transaction() as tx:
        again, created = repo.publish(tx, "tracker", "1.0.0", dict(BASE), actor="op2", now=2.0)
    assert not created and again.published_by == "op"
    with pytest.raises(BundleConflict) as err, store.transaction() as tx:
        repo.publish(tx, "tracker", "1.0.0", {**BASE, "interval": 30}, actor="op", now=3.0)
    assert "tracker@1.0.0" in err.value.message and "tracker@1.0.1" in err.value.message
    # other overlays are other content too
    with pytest.raises(BundleConflict), store.transaction() as tx:
        repo.publish(
            tx, "tracker", "1.0.0", BASE, overlays={"region=eu": {"a": 1}}, actor="op", now=3.0
        )
    content = store.read_sync(lambda tx: repo.content(tx, repo.resolve(tx, "tracker@1.0.0")))
    assert content == BASE  # nothing was lost or changed by the refusals


def test_versions_are_in_semantic_order_and_latest_resolves(store: Store) -> None:
    with store.transaction() as tx:
        for i, version in enumerate(["1.10.0", "1.2.0", "1.9.1", "2.0.0-rc.1"]):
            repo.publish(tx, "tracker", version, {"v": i}, actor="op", now=float(i))
    versions = store.read_sync(lambda tx: repo.versions(tx, "tracker"))
    assert [v.version for v in versions] == ["1.2.0", "1.9.1", "1.10.0", "2.0.0-rc.1"]
    assert store.read_sync(lambda tx: repo.resolve(tx, "tracker")).version == "2.0.0-rc.1"
    assert store.read_sync(lambda tx: repo.names(tx)) == [("tracker", 4, "2.0.0-rc.1")]
    with pytest.raises(UnknownBundle) as err:
        store.read_sync(lambda tx: repo.resolve(tx, "tracker@3.0.0"))
    assert "fleetloop bundle list tracker" in err.value.message


def test_overlays_merge_per_cohort_with_their_own_digest(store: Store) -> None:
    overlays = {
        "region=eu": {"set": {"server": "eu-2.example"}, "remove": ["debug"]},
        "policy_group=pilot": {"debug": True},
    }
    with store.transaction() as tx:
        made, _ = repo.publish(tx, "tracker", "1.0.0", BASE, overlays=overlays, actor="op", now=1.0)
    assert [o.scope for o in made.overlays] == ["policy_group=pilot", "region=eu"]
    eu = store.read_sync(lambda tx: repo.content(tx, made, "region=eu"))
    assert eu == {"interval": 60, "server": "eu-2.example"}
    value = made.desired("region=eu")
    assert value["digest"] == hashlib.sha256(cbor2.dumps(eu, canonical=True)).hexdigest()
    assert value["bundle"] == "tracker@1.0.0:region=eu" and value["version"] == "1.0.0"
    flat = store.read_sync(lambda tx: StateRepository().bundle(tx, value["bundle"]))
    assert flat is not None and flat.digest == value["digest"]


def test_diff_between_versions_is_key_level(store: Store) -> None:
    with store.transaction() as tx:
        repo.publish(tx, "tracker", "1.0.0", BASE, actor="op", now=1.0)
        repo.publish(
            tx,
            "tracker",
            "1.1.0",
            {"interval": 30, "server": "eu.example", "apn_watchdog": True},
            actor="op",
            now=2.0,
        )
    diff = store.read_sync(lambda tx: repo.diff(tx, "tracker", "1.0.0", "1.1.0"))
    assert diff.as_json() == {
        "added": {"apn_watchdog": True},
        "removed": {"debug": False},
        "changed": {"interval": {"old": 60, "new": 30}},
    }


BAD_INPUT: list[tuple[Any, str]] = [
    (lambda tx: repo.publish(tx, "bad name", "1.0.0", {}, actor="o", now=0), "name"),
    (lambda tx: repo.publish(tx, "b", "latest", {}, actor="o", now=0), "version"),
    (lambda tx: repo.publish(tx, "b", "1.0.0", [1], actor="o", now=0), "content"),
    (
        lambda tx: repo.publish(
            tx, "b", "1.0.0", {}, overlays={"planet=mars": {}}, actor="o", now=0
        ),
        "overlays",
    ),
    (
        lambda tx: repo.publish(
            tx,
            "b",
            "1.0.0",
            {},
            overlays={"region=eu": {"set": {"a": 1}, "remove": ["a"]}},
            actor="o",
            now=0,
        ),
        "overlays.region=eu",
    ),
]


def test_bad_input_is_a_typed_error_naming_the_field(store: Store) -> None:
    for call, field in BAD_INPUT:  # one store for all cases: each is refused before writing
        with pytest.raises(BundleError) as err, store.transaction() as tx:
            call(tx)
        assert err.value.field == field
    assert store.read_sync(lambda tx: repo.names(tx)) == []


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_maps = st.dictionaries(st.text(max_size=6), _values, max_size=8)


@given(_maps, _maps)
def test_a_diff_applied_to_the_old_content_gives_the_new(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    diff = diff_content(old, new)
    assert diff.apply(old) == new
    assert diff.empty == (old == new)
    assert not set(diff.added) & set(old) and not set(diff.removed) & set(new)


@given(
    _maps,
    st.dictionaries(st.text(max_size=6), _values, max_size=4),
    st.lists(st.text(max_size=6), max_size=4),
)
def test_a_patch_sets_and_removes_exactly_its_keys(
    base: dict[str, Any], sets: dict[str, Any], removes: list[str]
) -> None:
    removes = [k for k in removes if k not in sets]
    patch = Patch.parse({"set": sets, "remove": removes} if sets or removes else {})
    merged = patch.apply(base)
    for key in sets:
        assert merged[key] == sets[key]
    for key in removes:
        assert key not in merged
    for key, value in base.items():
        if key not in sets and key not in removes:
            assert merged[key] == value


@given(st.text(max_size=40))
def test_parse_ref_accepts_or_names_the_field(text: str) -> None:
    try:
        name, version = parse_ref(text)
    except BundleError as err:
        assert err.field in ("name", "version")
    else:
        assert "@" not in name and (version is None or "@" not in version)
