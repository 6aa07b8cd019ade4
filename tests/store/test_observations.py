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
