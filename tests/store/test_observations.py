"""Observations: persisted by token, tied to their registration's life."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lwm2m.model import Path
from lwm2m.store import (
    Address,
    Conflict,
    Identity,
    NewRegistration,
    NotFound,
    Observation,
    Registration,
    Store,
)


def register(store: Store, endpoint: str, now: float = 0, lifetime: int = 100) -> Registration:
    new = NewRegistration(endpoint, lifetime, Address("10.0.0.1", 5683), Identity.nosec())
    with store.transaction() as tx:
        return store.registrations.register(tx, new, now)[0]


def obs(reg: Registration, token: bytes, *paths: str, **changes: Any) -> Observation:
    base = Observation(token, reg.id, reg.endpoint, tuple(Path.parse(p) for p in paths))
    return replace(base, **changes)


def test_add_get_and_remove(store: Store) -> None:
    reg = register(store, "ep-1")
    composite = obs(
        reg,
        b"\xca\xfe",
        "/3/0/9",
        "/4/0",
        composite=True,
        content_format=112,
        attributes=(("pmin", "10"), ("pmax", "60")),
        created_at=5,
    )
    with store.transaction() as tx:
        assert store.observations.add(tx, composite) == composite
        store.observations.add(tx, obs(reg, b"\x01", "/3/0", created_at=6))
    with store.transaction() as tx:
        assert store.observations.get(tx, b"\xca\xfe") == composite
        assert [o.token for o in store.observations.for_registration(tx, reg.id)] == [
            b"\xca\xfe",
            b"\x01",
        ]
        assert store.observations.remove(tx, b"\xca\xfe") == composite
        assert store.observations.get(tx, b"\xca\xfe") is None
    with pytest.raises(NotFound), store.transaction() as tx:
        store.observations.remove(tx, b"\xca\xfe")


def test_an_observation_needs_its_registration(store: Store) -> None:
    reg = register(store, "ep-1")
    other = register(store, "ep-2")
    ghost = Observation(b"\x02", "gone", "ep-1", (Path.of(3),))
    with pytest.raises(NotFound), store.transaction() as tx:
        store.observations.add(tx, ghost)
    with pytest.raises(Conflict, match="belongs to"), store.transaction() as tx:
        store.observations.add(tx, Observation(b"\x02", other.id, "ep-1", (Path.of(3),)))
    with pytest.raises(ValueError), store.transaction() as tx:
        store.observations.add(tx, Observation(b"\x02", reg.id, "ep-1", ()))


def test_tokens_are_unique(store: Store) -> None:
    reg = register(store, "ep-1")
    with store.transaction() as tx:
        store.observations.add(tx, obs(reg, b"\x09", "/3"))
    with pytest.raises(Conflict, match="already in use"), store.transaction() as tx:
        store.observations.add(tx, obs(reg, b"\x09", "/4"))


def test_observations_go_with_their_registration(store: Store) -> None:
    a = register(store, "ep-a", lifetime=10)
    b = register(store, "ep-b", lifetime=1000)
    with store.transaction() as tx:
        store.observations.add(tx, obs(a, b"\x0a", "/3"))
        store.observations.add(tx, obs(b, b"\x0b", "/3"))
        store.observations.add(tx, obs(b, b"\x0c", "/5"))
    with store.transaction() as tx:
        store.registrations.expire(tx, now=50)
        assert store.observations.for_endpoint(tx, "ep-a") == []
        assert len(store.observations.for_endpoint(tx, "ep-b")) == 2
        removed = store.observations.remove_for_registration(tx, b.id)
        assert {o.token for o in removed} == {b"\x0b", b"\x0c"}
        assert store.observations.for_registration(tx, b.id) == []


def test_add_many_writes_the_good_ones_and_answers_each_like_add(store: Store) -> None:
    reg = register(store, "ep-1")
    other = register(store, "ep-2")
    with store.transaction() as tx:
        store.observations.add(tx, obs(reg, b"\x09", "/3"))
    batch = [
        obs(reg, b"\x01", "/3/0/9", composite=True, content_format=112, created_at=7),
        Observation(b"\x02", "gone", "ep-1", (Path.of(3),)),  # registration unknown
        Observation(b"\x03", other.id, "ep-1", (Path.of(3),)),  # someone else's registration
        Observation(b"\x04", reg.id, "ep-1", ()),  # no path
        obs(reg, b"\x09", "/4"),  # token in use (stored)
        obs(other, b"\x05", "/5"),
        obs(other, b"\x05", "/6"),  # token in use (earlier in the same call)
    ]
    with store.transaction() as tx:
        results = store.observations.add_many(tx, batch)
    assert results[0] == batch[0] and results[5] == batch[5]
    assert isinstance(results[1], NotFound)
    assert isinstance(results[2], Conflict) and "belongs to" in str(results[2])
    assert isinstance(results[3], ValueError)
    assert isinstance(results[4], Conflict) and "already in use" in str(results[4])
    assert isinstance(results[6], Conflict) and "already in use" in str(results[6])
    with store.transaction() as tx:
        assert store.observations.get(tx, b"\x01") == batch[0]
        assert store.observations.get(tx, b"\x05") == batch[5]
        assert [o.token for o in store.observations.for_registration(tx, reg.id)] == [
            b"\x09",
            b"\x01",
        ]
        assert store.observations.get(tx, b"\x02") is None
        assert store.observations.get(tx, b"\x04") is None
