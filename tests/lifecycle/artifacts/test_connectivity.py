"""APN profiles on SQLite and PostgreSQL (create, update with revisions, delete, typed
errors) and the per-device choice of a component's overlays (policy group > carrier >
country > region > base)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.artifacts.connectivity import (
    ConnectivityRepository,
    ProfileError,
    ProfileExists,
    UnknownProfile,
    parse_profile,
)
from lifecycle.campaigns.model import Component, Member
from lifecycle.state.dimensions import Dimension
from lwm2m.store import Store

repo = ConnectivityRepository()
BODY = {
    "apns": ["iot.global"],
    "variants": {
        "carrier=acme": {"apns": ["iot.acme", "iot.global"], "active": "iot.acme"},
        "country=DE": {"apns": ["iot.de"]},
    },
}


def test_create_update_delete_with_revisions(store: Store) -> None:
    with store.transaction() as tx:
        made, changed = repo.put(tx, "iot-2027", BODY, actor="op", now=1.0, create=True)
    assert (
        changed
        and made.revision == 1
        and made.value
        == {
            "apns": ["iot.global"],
            "active": "iot.global",
        }
    )
    assert made.variants["country=DE"] == {"apns": ["iot.de"], "active": "iot.de"}
    with pytest.raises(ProfileExists), store.transaction() as tx:
        repo.put(tx, "iot-2027", BODY, actor="op", now=2.0, create=True)
    with store.transaction() as tx:
        same, changed = repo.put(tx, "iot-2027", BODY, actor="op", now=3.0)
    assert not changed and same.revision == 1
    with store.transaction() as tx:
        edited, changed = repo.put(
            tx, "iot-2027", {**BODY, "apns": ["iot.world"]}, actor="op2", now=4.0, create=False
        )
    assert changed and edited.revision == 2 and edited.updated_by == "op2"
    assert [p.name for p in store.read_sync(repo.list)] == ["iot-2027"]
    with store.transaction() as tx:
        repo.delete(tx, "iot-2027")
    with pytest.raises(UnknownProfile) as err:
        store.read_sync(lambda tx: repo.require(tx, "iot-2027"))
    assert "fleetloop apn-profile list" in err.value.message


def test_a_device_gets_its_carriers_set_before_its_countrys(store: Store) -> None:
    with store.transaction() as tx:
        made, _ = repo.put(tx, "p", BODY, actor="op", now=1.0)
    assert made.value_for(carrier="acme", country="DE")["active"] == "iot.acme"
    assert made.value_for(carrier="other", country="DE")["active"] == "iot.de"
    assert made.value_for(carrier="other", country="FR")["active"] == "iot.global"


BAD_PROFILES: list[tuple[object, str]] = [
    ({"apns": []}, "apns"),
    ({"apns": ["bad apn!"]}, "apns"),
    ({"apns": ["a"], "variants": {"planet=mars": {"apns": ["b"]}}}, "variants"),
    (
        {"apns": ["a"], "variants": {"carrier=x": {"apns": ["b"], "active": "c"}}},
        "variants.carrier=x",
    ),
    ({"apns": ["a"], "colour": "red"}, "colour"),
    (["a"], "body"),
]


def test_bad_profiles_are_typed_errors_naming_the_field(store: Store) -> None:
    for body, field in BAD_PROFILES:
        with pytest.raises(ProfileError) as err, store.transaction() as tx:
            repo.put(tx, "p", body, actor="op", now=1.0)
        assert err.value.field == field, body
    assert store.read_sync(repo.list) == []


@given(
    st.recursive(
        st.none() | st.text(max_size=6) | st.integers(),
        lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=8), i, max_size=3),
        max_leaves=8,
    )
)
def test_parse_profile_accepts_or_raises_a_profile_error(raw: object) -> None:
    try:
        base, variants, _ = parse_profile(raw)
    except ProfileError:
        return
    assert base["active"] in base["apns"]
    assert all(v["active"] in v["apns"] for v in variants.values())


def _component() -> Component:
    value = {"apns": ["base"], "active": "base"}
    overlays = {
        f"{kind}=x": {"apns": [kind], "active": kind}
        for kind in ("policy_group", "carrier", "country", "region")
    }
    return Component(Dimension.CONNECTIVITY, value, overlays=overlays)


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        (Member("a", region="x", carrier="x", country="x", policy_group="x"), "policy_group"),
        (Member("a", region="x", carrier="x", country="x"), "carrier"),
        (Member("a", region="x", country="x"), "country"),
        (Member("a", region="x"), "region"),
        (Member("a", region="y", carrier="y"), "base"),
        (Member("a"), "base"),
    ],
)
def test_value_for_precedence(member: Member, expected: str) -> None:
    assert _component().value_for(member)["active"] == expected


def test_an_empty_attribute_matches_no_overlay() -> None:
    component = Component(
        Dimension.CONNECTIVITY,
        {"apns": ["base"], "active": "base"},
        overlays={"carrier=": {"apns": ["empty"], "active": "empty"}},
    )
    assert component.value_for(Member("a"))["active"] == "base"
