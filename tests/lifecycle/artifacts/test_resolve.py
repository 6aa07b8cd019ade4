"""The campaign spec resolver on SQLite and PostgreSQL: config bundle references (versioned,
latest, flat ``config=NAME``) with their overlays, APN profiles with carrier/country overlays,
credential rotation numbers, pass-through dimensions, and typed errors naming the field."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.artifacts.bundles import BundleRepository
from lifecycle.artifacts.connectivity import ConnectivityRepository
from lifecycle.artifacts.resolve import make_resolver
from lifecycle.campaigns.model import CampaignError, Component, Member
from lifecycle.state.dimensions import Dimension, Policy, parse_desired
from lifecycle.state.repository import StateRepository
from lwm2m.store import Store, Tx

CONTENT = {"interval": 60, "server": "a.example"}


def _resolve(dimension: Dimension, raw: object, tx: Tx) -> Component:
    return make_resolver(tx)(dimension, raw)


def _publish(store: Store) -> None:
    with store.transaction() as tx:
        BundleRepository().publish(tx, "tracker", "1.0.0", {"interval": 90}, actor="op", now=1.0)
        BundleRepository().publish(
            tx,
            "tracker",
            "1.1.0",
            CONTENT,
            overlays={"region=eu": {"server": "eu.example"}},
            actor="op",
            now=2.0,
        )
        StateRepository().put_bundle(tx, "legacy", {"a": 1}, actor="op", now=3.0)
        ConnectivityRepository().put(
            tx,
            "iot",
            {"apns": ["iot.global"], "variants": {"carrier=acme": {"apns": ["iot.acme"]}}},
            actor="op",
            now=4.0,
        )


def test_config_references_resolve_to_the_version_with_its_overlays(store: Store) -> None:
    _publish(store)
    refs: list[object] = ["tracker@1.1.0", "tracker", {"bundle": "tracker", "version": "1.1.0"}]
    for raw in refs:
        component = store.read_sync(partial(_resolve, Dimension.CONFIG, raw))
        assert component.artifact == "bundle:tracker@1.1.0", raw
        assert component.value["version"] == "1.1.0"
        assert component.value["bundle"] == "tracker@1.1.0"
        assert parse_desired(Dimension.CONFIG, dict(component.value)) == component.value
        eu = component.value_for(Member("d", region="eu"))
        assert eu["bundle"] == "tracker@1.1.0:region=eu"
        assert eu["digest"] != component.value["digest"]
        assert component.value_for(Member("d", region="us")) == component.value
        assert component.size > 0


def test_a_flat_bundle_name_still_resolves(store: Store) -> None:
    _publish(store)
    component = store.read_sync(lambda tx: make_resolver(tx)(Dimension.CONFIG, "legacy"))
    assert component.value["bundle"] == "legacy" and component.value["version"] == "legacy"


def test_an_apn_profile_resolves_with_carrier_overlays(store: Store) -> None:
    _publish(store)
    component = store.read_sync(lambda tx: make_resolver(tx)(Dimension.CONNECTIVITY, "profile:iot"))
    assert component.artifact == "apn-profile:iot@r1"
    assert component.value_for(Member("d", carrier="acme"))["active"] == "iot.acme"
    assert component.value_for(Member("d", carrier="other"))["active"] == "iot.global"
    plain = store.read_sync(lambda tx: make_resolver(tx)(Dimension.CONNECTIVITY, "a,b"))
    assert plain.value == {"apns": ["a", "b"], "active": "a"} and not plain.overlays


def test_a_psk_rotation_takes_the_next_generation(store: Store) -> None:
    first = store.read_sync(lambda tx: make_resolver(tx)(Dimension.CREDENTIALS, {"rotate": "psk"}))
    assert first.value == {"generation": 1}
    with store.transaction() as tx:
        StateRepository().set_desired(
            tx,
            ["d1"],
            {Dimension.CREDENTIALS: {"generation": 4}},
            policy=Policy.ENFORCE,
            actor="op",
            now=1.0,
        )
    again = store.read_sync(lambda tx: make_resolver(tx)(Dimension.CREDENTIALS, {"rotate": "psk"}))
    assert again.value == {"generation": 5}


def test_flags_pass_through(store: Store) -> None:
    component = store.read_sync(lambda tx: make_resolver(tx)(Dimension.FLAGS, {"x": True}))
    assert component.value == {"x": "true"}


UNRESOLVABLE: list[tuple[Dimension, object, str]] = [
    (Dimension.CONFIG, "tracker@9.9.9", "no published config bundle tracker@9.9.9"),
    (Dimension.CONFIG, "nothing", "no published config bundle nothing"),
    (Dimension.CONFIG, {"bundle": "tracker", "colour": 1}, "unknown key"),
    (Dimension.CONNECTIVITY, "profile:nope", "no APN profile 'nope'"),
    (Dimension.CREDENTIALS, {"rotate": "rsa"}, "rotate"),
    (Dimension.FLAGS, ["x"], "flags"),
]


def test_unresolvable_components_name_the_field(store: Store) -> None:
    _publish(store)
    for dimension, raw, says in UNRESOLVABLE:
        with pytest.raises(CampaignError) as err:
            store.read_sync(partial(_resolve, dimension, raw))
        assert err.value.field == f"components.{dimension.value}"
        assert says in str(err.value), (raw, str(err.value))


_raw = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda i: (
        st.lists(i, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["bundle", "version", "apns", "active", "profile", "rotate", "generation", "x"]
            ),
            i,
            max_size=3,
        )
    ),
    max_leaves=6,
)


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(st.sampled_from(list(Dimension)), _raw)
def test_any_input_resolves_or_is_a_campaign_error(
    store: Store, dimension: Dimension, raw: object
) -> None:
    try:
        component = store.read_sync(lambda tx: make_resolver(tx)(dimension, raw))
    except CampaignError as err:
        assert err.field == f"components.{dimension.value}"
    else:
        assert component.dimension is dimension


def test_firmware_references_resolve_through_the_firmware_repository(store: Store) -> None:
    from lifecycle.artifacts.firmware import FirmwareRepository, new_vendor_key, sign_image
    from simulators.device.firmware import build_image

    vendor = new_vendor_key()
    repo = FirmwareRepository(store.audit)
    image = build_image("2.1.0", 3000)
    with store.transaction() as tx:
        repo.add_vendor_key(tx, "acme", vendor[1].decode(), actor="op", now=1.0)
        made = repo.publish(
            tx,
            image,
            version="2.1.0",
            signature=sign_image(image, vendor[0]),
            skus=["t1"],
            actor="op",
            now=2.0,
        )

    def resolve(raw: object) -> Component:
        return store.read_sync(
            lambda tx: make_resolver(tx, base_uri="coap://fleet:5683/")(Dimension.FIRMWARE, raw)
        )

    component = resolve("2.1.0")
    assert component.value == {"version": "2.1.0", "uri": f"coap://fleet:5683/fw/{made.id}"}
    assert component.size == len(image)
    with pytest.raises(CampaignError) as err:
        resolve("9.9.9")
    assert err.value.field == "components.firmware"
    # without a base URI the state layer's forms apply
    plain = store.read_sync(lambda tx: make_resolver(tx)(Dimension.FIRMWARE, "2.1.0"))
    assert plain.value == {"version": "2.1.0"}


def test_parse_spec_resolves_a_change_and_it_round_trips_resolved(store: Store) -> None:
    from lifecycle.campaigns.spec import parse_spec, spec_to_dict

    _publish(store)
    raw = {
        "name": "tracker 1.1 with the 2027 APNs",
        "selector": "sku=T1",
        "change": [
            {"config": "tracker@1.1.0"},
            {"connectivity": "profile:iot"},
            {"credentials": {"rotate": "psk"}},
        ],
    }
    spec = store.read_sync(lambda tx: parse_spec(raw, resolve=make_resolver(tx)))
    config, connectivity, credentials = spec.components
    assert config.overlays.keys() == {"region=eu"} and config.artifact == "bundle:tracker@1.1.0"
    assert connectivity.overlays.keys() == {"carrier=acme"}
    assert credentials.value == {"generation": 1}
    # the persisted (resolved) form parses back without the repositories
    assert parse_spec(spec_to_dict(spec)) == spec
    with pytest.raises(CampaignError) as err:
        store.read_sync(
            lambda tx: parse_spec(
                {**raw, "change": [{"config": "tracker@7.0.0"}]}, resolve=make_resolver(tx)
            )
        )
    assert err.value.field.startswith("change[0]") and "tracker@7.0.0" in err.value.message
