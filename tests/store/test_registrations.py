"""Registrations: register / replace by endpoint / update / remove / list / expire / restart."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lwm2m.model import Path
from lwm2m.store import (
    Address,
    Identity,
    NewRegistration,
    NotFound,
    Observation,
    Registration,
    RegistrationUpdate,
    Store,
    new_registration_id,
)
from tests.store.conftest import StoreTarget


def new(endpoint: str = "ep-1", lifetime: int = 300, **changes: Any) -> NewRegistration:
    base = NewRegistration(
        endpoint=endpoint,
        lifetime=lifetime,
        address=Address("10.0.0.1", 5684),
        identity=Identity.psk(f"id-{endpoint}"),
    )
    return replace(base, **changes)


def register(store: Store, reg: NewRegistration, now: float) -> Registration:
    with store.transaction() as tx:
        created, _ = store.registrations.register(tx, reg, now)
    return created


def test_register_stores_every_field_and_computes_the_expiry(det_store: Store) -> None:
    reg = new(
        "ep-1",
        lifetime=86400,
        lwm2m_version="1.2",
        binding="UQ",
        queue_mode=True,
        sms_number="+491701234567",
        root_path="/lwm2m",
        object_links="</1/0>,</3/0>,</5>",
        supported_formats=(112, 11543),
        address=Address("2001:db8::1", 61000),
        identity=Identity.x509("CN=ep-1"),
    )
    created = register(det_store, reg, now=1000.5)
    assert created.id == "r0001"
    assert (created.registered_at, created.updated_at, created.expires_at) == (
        1000.5,
        1000.5,
        87400.5,
    )
    assert created.secure
    stored = det_store.read_sync(lambda tx: det_store.registrations.get(tx, "r0001"))
    assert stored == created
    assert stored.address == Address("2001:db8::1", 61000)
    assert str(stored.address) == "[2001:db8::1]:61000"
    assert stored.supported_formats == (112, 11543)
    assert stored.sms_number == "+491701234567"
    by_ep = det_store.read_sync(lambda tx: det_store.registrations.get_by_endpoint(tx, "ep-1"))
    assert by_ep == created


def test_nosec_registration_is_not_secure(det_store: Store) -> None:
    created = register(det_store, new(identity=Identity.nosec()), now=0)
    assert not created.secure
    assert det_store.read_sync(lambda tx: det_store.registrations.get(tx, created.id)) == created


def test_registering_again_replaces_and_returns_the_old_registration(det_store: Store) -> None:
    regs = det_store.registrations
    first = register(det_store, new("ep-1"), now=10)
    with det_store.transaction() as tx:
        det_store.observations.add(
            tx, Observation(b"\x01", first.id, "ep-1", (Path.of(3, 0),), created_at=11)
        )
    with det_store.transaction() as tx:
        second, replaced = regs.register(tx, new("ep-1", lifetime=60), now=20)
    assert replaced == first
    assert second.id != first.id
    with det_store.transaction() as tx:
        assert regs.get(tx, first.id) is None
        assert regs.get_by_endpoint(tx, "ep-1") == second
        assert regs.count(tx) == 1
        assert det_store.observations.for_endpoint(tx, "ep-1") == []


def test_first_registration_replaces_nothing(det_store: Store) -> None:
    with det_store.transaction() as tx:
        _, replaced = det_store.registrations.register(tx, new("ep-1"), now=0)
    assert replaced is None


def test_update_refreshes_the_lifetime_and_keeps_what_is_absent(det_store: Store) -> None:
    regs = det_store.registrations
    created = register(
        det_store, new("ep-1", lifetime=100, binding="U", sms_number="+1", object_links="</3/0>"), 0
    )
    with det_store.transaction() as tx:
        updated = regs.update(tx, created.id, RegistrationUpdate(), now=50)
    assert (updated.updated_at, updated.expires_at, updated.lifetime) == (50, 150, 100)
    assert updated.binding == "U" and updated.sms_number == "+1"
    assert updated.object_links == "</3/0>"
    change = RegistrationUpdate(
        lifetime=30,
        binding="UQ",
        queue_mode=True,
        object_links="</3/0>,</5/0>",
        supported_formats=(60,),
        address=Address("10.9.9.9", 1234),
    )
    with det_store.transaction() as tx:
        updated = regs.update(tx, created.id, change, now=60)
    assert updated.expires_at == 90
    assert (updated.binding, updated.queue_mode) == ("UQ", True)
    assert updated.address == Address("10.9.9.9", 1234)
    assert updated.registered_at == 0 and updated.identity == created.identity
    assert det_store.read_sync(lambda tx: regs.get(tx, created.id)) == updated


def test_update_of_an_unknown_or_expired_registration_is_not_found(det_store: Store) -> None:
    regs = det_store.registrations
    created = register(det_store, new("ep-1", lifetime=100), now=0)
    with pytest.raises(NotFound, match="unknown"), det_store.transaction() as tx:
        regs.update(tx, "nope", RegistrationUpdate(), now=1)
    with pytest.raises(NotFound, match="expired"), det_store.transaction() as tx:
        regs.update(tx, created.id, RegistrationUpdate(), now=100)
    # just before expiry it still works
    with det_store.transaction() as tx:
        assert regs.update(tx, created.id, RegistrationUpdate(), now=99.9).expires_at == 199.9


def test_remove_deletes_the_registration_and_its_observations(det_store: Store) -> None:
    regs = det_store.registrations
    created = register(det_store, new("ep-1"), now=0)
    with det_store.transaction() as tx:
        det_store.observations.add(tx, Observation(b"\x07", created.id, "ep-1", (Path.of(3),)))
        assert regs.remove(tx, created.id) == created
    with det_store.transaction() as tx:
        assert regs.get(tx, created.id) is None
        assert det_store.observations.get(tx, b"\x07") is None
    with pytest.raises(NotFound), det_store.transaction() as tx:
        regs.remove(tx, created.id)


def test_list_pages_in_endpoint_order_with_filters(det_store: Store) -> None:
    regs = det_store.registrations
    names = ["b_1", "a%1", "a_1", "ab1", "c1", "a_2"]
    for i, name in enumerate(names):
        register(det_store, new(name, lifetime=100 + i, queue_mode=name.startswith("a")), now=0)
    seen: list[str] = []
    after: str | None = None
    with det_store.transaction() as tx:
        while True:
            page = regs.list_page(tx, after=after, limit=4)
            seen += [r.endpoint for r in page.items]
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == sorted(names)
        prefixed = regs.list_page(tx, endpoint_prefix="a_")
        assert [r.endpoint for r in prefixed.items] == ["a_1", "a_2"]  # '_' is literal
        assert [r.endpoint for r in regs.list_page(tx, endpoint_prefix="a%").items] == ["a%1"]
        assert len(regs.list_page(tx, queue_mode=True).items) == 4
        assert [r.endpoint for r in regs.list_page(tx, expires_before=102).items] == ["a%1", "b_1"]
        with pytest.raises(ValueError):
            regs.list_page(tx, limit=0)


def test_expire_removes_exactly_the_lapsed_registrations(det_store: Store) -> None:
    regs = det_store.registrations
    for i in range(5):
        register(det_store, new(f"ep-{i}", lifetime=10 * (i + 1)), now=0)  # expire at 10..50
    with det_store.transaction() as tx:
        assert regs.expire(tx, now=9.99) == []
        gone = regs.expire(tx, now=30, limit=2)
        assert [r.endpoint for r in gone] == ["ep-0", "ep-1"]
        gone = regs.expire(tx, now=30, limit=2)
        assert [r.endpoint for r in gone] == ["ep-2"]
        assert regs.expire(tx, now=30) == []
        assert sorted(r.endpoint for r in regs.list_page(tx).items) == ["ep-3", "ep-4"]


def test_registrations_survive_a_restart_and_can_be_updated(target: StoreTarget) -> None:
    first = target.open()
    first.create_schema(now=0)
    created = register(first, new("ep-restart", lifetime=600), now=100)
    first.close()

    second = target.open()
    try:
        second.create_schema(now=200)  # idempotent on an existing database
        regs = second.registrations
        assert second.read_sync(lambda tx: regs.get(tx, created.id)) == created
        with second.transaction() as tx:
            updated = regs.update(tx, created.id, RegistrationUpdate(lifetime=60), now=300)
        assert updated.expires_at == 360 and updated.id == created.id
    finally:
        second.close()


def test_invalid_lifetimes_are_rejected(det_store: Store) -> None:
    with pytest.raises(ValueError), det_store.transaction() as tx:
        det_store.registrations.register(tx, new(lifetime=0), now=0)
    created = register(det_store, new(), now=0)
    with pytest.raises(ValueError), det_store.transaction() as tx:
        det_store.registrations.update(tx, created.id, RegistrationUpdate(lifetime=-1), now=1)


def test_default_registration_ids_are_short_random_and_distinct() -> None:
    drawn = {new_registration_id() for _ in range(2000)}
    assert len(drawn) == 2000
    assert all(len(i) == 12 and i.isalnum() and i.islower() for i in drawn)
    assert not any(set(i) & set("lo01") for i in drawn)


def test_register_many_replaces_stored_ones_and_the_later_of_two_in_one_call(
    det_store: Store,
) -> None:
    """A group commit's Registers in one call: a stored registration is replaced (its
    observations go with it), an endpoint listed twice keeps only the later one, and each
    Register gets what it replaced."""
    regs = det_store.registrations
    stored = register(det_store, new("ep-1"), now=10)
    with det_store.transaction() as tx:
        det_store.observations.add(
            tx, Observation(b"\x01", stored.id, "ep-1", (Path.of(3, 0),), created_at=11)
        )
    with det_store.transaction() as tx:
        results = regs.register_many(
            tx, [(new("ep-1"), 20.0), (new("ep-2"), 21.0), (new("ep-2", lifetime=60), 22.0)]
        )
    (one, one_replaced), (two_first, two_first_replaced), (two, two_replaced) = results
    assert one_replaced == stored and two_first_replaced is None
    assert two_replaced == two_first and two.expires_at == 82.0
    assert len({stored.id, one.id, two_first.id, two.id}) == 4
    with det_store.transaction() as tx:
        assert regs.get(tx, stored.id) is None and regs.get(tx, two_first.id) is None
        assert regs.get_by_endpoint(tx, "ep-1") == one
        assert regs.get_by_endpoint(tx, "ep-2") == two
        assert regs.count(tx) == 2
        assert det_store.observations.for_endpoint(tx, "ep-1") == []


def test_register_many_refuses_a_non_positive_lifetime_before_writing(det_store: Store) -> None:
    with pytest.raises(ValueError, match="lifetime"), det_store.transaction() as tx:
        det_store.registrations.register_many(tx, [(new("ep-1"), 0.0), (new("ep-2", 0), 0.0)])
    assert det_store.read_sync(det_store.registrations.count) == 0


def test_update_many_applies_in_order_and_fails_unknown_or_expired_rows_alone(
    det_store: Store,
) -> None:
    """A group commit's Updates in one call: an empty Update only moves the expiry, one with
    changes rewrites them, an id listed twice gets both (the later on top), and an unknown,
    expired or non-positive-lifetime row gets its own error while the others are written."""
    regs = det_store.registrations
    one = register(det_store, new("ep-1", lifetime=100), now=0)
    two = register(det_store, new("ep-2", lifetime=100), now=0)
    short = register(det_store, new("ep-3", lifetime=10), now=0)
    with det_store.transaction() as tx:
        results = regs.update_many(
            tx,
            [
                (one.id, RegistrationUpdate(), 50.0),
                (two.id, RegistrationUpdate(binding="UQ", address=Address("10.0.0.9", 9)), 51.0),
                ("nope", RegistrationUpdate(), 52.0),
                (short.id, RegistrationUpdate(), 53.0),
                (two.id, RegistrationUpdate(lifetime=0), 54.0),
                (two.id, RegistrationUpdate(lifetime=60), 55.0),
            ],
        )
    first, second, unknown, expired, bad, third = results
    assert first == replace(one, updated_at=50.0, expires_at=150.0)
    assert second == replace(
        two, binding="UQ", address=Address("10.0.0.9", 9), updated_at=51.0, expires_at=151.0
    )
    assert isinstance(unknown, NotFound) and "unknown" in str(unknown)
    assert isinstance(expired, NotFound) and "expired" in str(expired)
    assert isinstance(bad, ValueError) and "lifetime" in str(bad)
    assert third == replace(second, lifetime=60, updated_at=55.0, expires_at=115.0)
    with det_store.transaction() as tx:
        assert regs.get(tx, one.id) == first
        assert regs.get(tx, two.id) == third
        assert regs.get(tx, short.id) == short


def test_remove_many_deletes_registrations_and_observations_and_ignores_unknown_ids(
    det_store: Store,
) -> None:
    regs = det_store.registrations
    one = register(det_store, new("ep-1"), now=0)
    two = register(det_store, new("ep-2"), now=0)
    keep = register(det_store, new("ep-3"), now=0)
    with det_store.transaction() as tx:
        det_store.observations.add(
            tx, Observation(b"\x01", one.id, "ep-1", (Path.of(3, 0),), created_at=1)
        )
    with det_store.transaction() as tx:
        regs.remove_many(tx, [one.id, "nope", two.id, one.id])
    with det_store.transaction() as tx:
        assert regs.get(tx, one.id) is None and regs.get(tx, two.id) is None
        assert regs.get(tx, keep.id) == keep
        assert det_store.observations.for_endpoint(tx, "ep-1") == []


def test_apply_updates_writes_without_reading_and_matches_the_in_memory_rule(
    det_store: Store,
) -> None:
    """The server's Update path: the database applies each Update on top of the stored row
    (an id twice in one call gets both, in order), unknown and expired ids and a
    non-positive lifetime fail alone, and ``applied`` gives the same row the store holds."""
    from lwm2m.store.registrations import applied

    regs = det_store.registrations
    one = register(det_store, new("ep-1", lifetime=100), now=0)
    two = register(det_store, new("ep-2", lifetime=100), now=0)
    short = register(det_store, new("ep-3", lifetime=10), now=0)
    moved = RegistrationUpdate(binding="UQ", address=Address("10.0.0.9", 9))
    rows = [
        (one.id, RegistrationUpdate(), 50.0),
        (two.id, moved, 51.0),
        ("nope", RegistrationUpdate(), 52.0),
        (short.id, RegistrationUpdate(), 53.0),
        (two.id, RegistrationUpdate(lifetime=0), 54.0),
        (two.id, RegistrationUpdate(lifetime=60, supported_formats=(112,)), 55.0),
    ]
    with det_store.transaction() as tx:
        results = regs.apply_updates(tx, rows)
    assert results[0] is None and results[1] is None and results[5] is None
    assert isinstance(results[2], NotFound) and isinstance(results[3], NotFound)
    assert isinstance(results[4], ValueError)
    expected_two = applied(applied(two, moved, 51.0), rows[5][1], 55.0)
    assert expected_two.expires_at == 115.0 and expected_two.binding == "UQ"
    with det_store.transaction() as tx:
        assert regs.get(tx, one.id) == applied(one, RegistrationUpdate(), 50.0)
        assert regs.get(tx, two.id) == expected_two
        assert regs.get(tx, short.id) == short
    with det_store.transaction() as tx:  # all applied: the fast path, no read needed
        assert regs.apply_updates(tx, [(one.id, RegistrationUpdate(lifetime=30), 60.0)]) == [None]
    assert det_store.read_sync(lambda tx: regs.get(tx, one.id)).expires_at == 90.0  # type: ignore[union-attr]


def test_apply_updates_mixes_refreshes_new_lifetimes_and_other_changes_in_one_call(
    det_store: Store,
) -> None:
    """An empty Update, one with only a new lifetime and one with other changes each take
    their own fixed statement; in one call (and one round) they still give the rows
    ``applied`` computes, and an unknown id among the new lifetimes fails alone."""
    from lwm2m.store.registrations import applied

    regs = det_store.registrations
    one = register(det_store, new("ep-1", lifetime=100), now=0)
    two = register(det_store, new("ep-2", lifetime=100), now=0)
    three = register(det_store, new("ep-3", lifetime=100), now=0)
    rows = [
        (one.id, RegistrationUpdate(lifetime=40), 20.0),
        (two.id, RegistrationUpdate(), 21.0),
        ("nope", RegistrationUpdate(lifetime=40), 22.0),
        (three.id, RegistrationUpdate(lifetime=70, sms_number="+1555"), 23.0),
        (one.id, RegistrationUpdate(), 24.0),  # second round: on top of the first
    ]
    with det_store.transaction() as tx:
        results = regs.apply_updates(tx, rows)
    assert results[:2] == [None, None] and results[3:] == [None, None]
    assert isinstance(results[2], NotFound)
    expected_one = applied(applied(one, rows[0][1], 20.0), rows[4][1], 24.0)
    assert (expected_one.lifetime, expected_one.expires_at) == (40, 64.0)
    with det_store.transaction() as tx:
        assert regs.get(tx, one.id) == expected_one
        assert regs.get(tx, two.id) == applied(two, RegistrationUpdate(), 21.0)
        assert regs.get(tx, three.id) == applied(three, rows[3][1], 23.0)
