"""Policies: documents, selection precedence and its explanation, versions, and the plan a
policy turns into for one device."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bootstrap.errors import InvalidPolicy, NotProvisionable, PolicyConflict, UnknownPolicy
from bootstrap.identities import BootstrapCredential, FactoryIdentity
from bootstrap.manager import BootstrapManager
from bootstrap.plan import DmCredentials, PskSecret, build_plan
from bootstrap.policy import (
    BUILTIN_NAME,
    CredentialKind,
    Policy,
    PolicyMatch,
    ServerAccount,
    default_policy,
    select_policy,
)
from bootstrap.protocol import parse_discover
from lwm2m.codec import ContentFormat, decode_nodes
from lwm2m.model import ObjectInstance, ObjLink, Path, SingleResource
from lwm2m.store import Store
from objects import BUILTIN_MODEL
from tests.bootstrap.conftest import run

DM = "coaps://dm-eu.example:5684"
KEY = bytes(range(16))


def doc(name: str, **match: str) -> dict[str, Any]:
    return {"name": name, "match": match, "servers": [{"uri": DM}]}


def policy(name: str, **match: str) -> Policy:
    return Policy.from_document(doc(name, **match))


def device(**attrs: str) -> FactoryIdentity:
    return FactoryIdentity("dev-1", BootstrapCredential.psk("dev-1", KEY), **attrs)  # type: ignore[arg-type]


# -- documents ----------------------------------------------------------------------------------


def test_a_full_document_round_trips() -> None:
    full = {
        "name": "eu-prod",
        "match": {"tenant": "acme", "region": "eu"},
        "servers": [
            {
                "uri": DM,
                "short_server_id": 7,
                "credentials": "psk",
                "lifetime": 600,
                "binding": "U",
                "queue_mode": True,
                "default_pmin": 10,
                "default_pmax": 60,
                "notification_storing": False,
                "apn": "iot",
                "retry": [2, 30, 600, 3],
            }
        ],
        "apn_profiles": [
            {"name": "iot", "apn": "iot.carrier", "auth_type": "pap", "user": "u", "secret": "p",
             "pdn_type": "ipv4", "validity": ["262-01"]}
        ],
        "config": {"8": 300, "9": "canary", "7": ["telemetry=on"]},
        "content_format": "tlv",
        "description": "EU production",
    }  # fmt: skip
    parsed = Policy.from_document(full)
    assert Policy.from_json(parsed.canonical()) == parsed
    assert parsed.document()["config"] == {"7": ["telemetry=on"], "8": 300, "9": "canary"}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"servers": []}, "at least one server"),
        ({"servers": [{"uri": "http://x"}]}, "coap://"),
        ({"servers": [{"uri": "coap://dm", "credentials": "psk"}]}, "coaps://"),
        ({"servers": [{"uri": DM, "credentials": "nosec"}]}, "coap://"),
        ({"servers": [{"uri": DM, "short_server_id": 0}]}, "short_server_id"),
        ({"servers": [{"uri": DM}, {"uri": DM}]}, "distinct"),
        ({"servers": [{"uri": DM, "binding": "UQ"}]}, "queue_mode"),
        ({"servers": [{"uri": DM, "binding": "X"}]}, "binding"),
        ({"servers": [{"uri": DM, "apn": "nope"}]}, "apn_profiles does not define"),
        ({"servers": [{"uri": DM, "colour": "red"}]}, "unknown field"),
        ({"match": {"country": "de"}}, "unknown field"),
        ({"match": {"region": "eu west"}}, "label"),
        ({"config": {"5": 1}}, "not writable"),
        ({"config": {"99": 1}}, "no resource 99"),
        ({"config": {"8": "often"}}, "Reporting Interval"),
        ({"apn_profiles": [{"name": "a", "apn": "x", "validity": ["26201"]}]}, "MCC-MNC"),
        ({"content_format": "xml"}, "content_format"),
    ],
)
def test_bad_documents_are_refused_with_the_reason(change: dict[str, Any], fragment: str) -> None:
    document = doc("p") | change
    with pytest.raises(InvalidPolicy, match=fragment):
        Policy.from_document(document)


# -- selection ----------------------------------------------------------------------------------

POLICIES = [
    policy("everyone"),
    policy("eu", region="eu"),
    policy("acme", tenant="acme"),
    policy("eu-acme", tenant="acme", region="eu"),
    policy("canary", policy_group="canary"),
    policy("tracker", sku="TRK-1"),
]


@pytest.mark.parametrize(
    ("attrs", "winner"),
    [
        ({}, "everyone"),
        ({"region": "us"}, "everyone"),
        ({"region": "eu"}, "eu"),
        ({"tenant": "acme"}, "acme"),
        ({"tenant": "acme", "region": "eu"}, "eu-acme"),  # two criteria beat one
        ({"tenant": "acme", "region": "us"}, "acme"),
        ({"region": "eu", "policy_group": "canary"}, "canary"),  # group outranks region
        ({"region": "eu", "sku": "TRK-1"}, "tracker"),  # SKU outranks region
        ({"sku": "TRK-1", "policy_group": "canary"}, "canary"),  # group outranks SKU
        ({"tenant": "acme", "region": "eu", "policy_group": "canary"}, "eu-acme"),
    ],
)
def test_the_most_specific_matching_policy_wins(attrs: dict[str, str], winner: str) -> None:
    selection = select_policy(device(**attrs), POLICIES, None)
    assert selection.policy is not None and selection.policy.name == winner


def test_the_explanation_lists_every_policy_with_its_reasons() -> None:
    selection = select_policy(device(tenant="acme", region="eu"), POLICIES, None)
    assert selection.why.startswith("eu-acme v0 is the most specific match")
    assert "outranks" in selection.why and "acme (tenant=acme)" in selection.why
    by_name = {c.name: c for c in selection.candidates}
    assert by_name["eu-acme"].matched and by_name["eu-acme"].rank == (2, 3)
    assert not by_name["canary"].matched
    assert "policy_group=canary does not match (identity has unset)" in by_name["canary"].reasons
    assert selection.candidates[0].name == "eu-acme"  # most specific match first
    json.dumps(selection.as_dict())


def test_without_a_match_the_default_applies_and_says_so() -> None:
    default = default_policy("coap://127.0.0.1:5683", "coaps://127.0.0.1:5684")
    assert default is not None and default.builtin and default.name == BUILTIN_NAME
    selection = select_policy(device(region="us"), [policy("eu", region="eu")], default)
    assert selection.policy is default and "no stored policy matches" in selection.why
    none = select_policy(device(), [], None)
    assert none.policy is None and "cannot be bootstrapped" in none.why


def test_the_default_gives_each_identity_kind_its_own_credentials() -> None:
    default = default_policy("coap://h:5683", "coaps://h:5684")
    assert default is not None
    (account,) = default.servers
    for mode, kind, uri in [
        ("nosec", CredentialKind.NOSEC, "coap://h:5683"),
        ("psk", CredentialKind.PSK, "coaps://h:5684"),
        ("x509", CredentialKind.X509, "coaps://h:5684"),
    ]:
        from bootstrap.identities import SecurityMode

        resolved = account.credentials_for(SecurityMode(mode))
        assert resolved is kind and account.uri_for(resolved) == uri
    assert default_policy(None, None) is None


# -- versions in the database -------------------------------------------------------------------


def test_policies_are_versioned_diffed_audited_and_retired(store: Store) -> None:
    async def scenario() -> None:
        m = BootstrapManager(store, clock=lambda: 100.0)
        v1, changed = await m.add_policy(policy("eu", region="eu"), actor="alice", comment="first")
        assert changed and v1.version == 1
        again, changed = await m.add_policy(policy("eu", region="eu"), actor="alice")
        assert not changed and again.version == 1  # identical: no new version
        updated = Policy.from_document(
            doc("eu", region="eu") | {"servers": [{"uri": DM, "lifetime": 300}]}
        )
        v2, changed = await m.add_policy(updated, actor="bob", comment="shorter lifetime")
        assert changed and v2.version == 2 and v2.author == "bob"
        diff = await m.diff_policy("eu")
        assert '-      "lifetime": 86400' in diff and '+      "lifetime": 300' in diff
        assert (await m.policy("eu", 1)).servers[0].lifetime == 86_400
        assert [v["version"] for v in await m.policy_versions("eu")] == [1, 2]
        actions = [(r.action, r.actor) for r in await m.audit(subject="policy:eu")]
        assert actions == [("policy.add", "alice"), ("policy.update", "bob")]
        with pytest.raises(PolicyConflict, match="same match criteria as eu"):
            await m.add_policy(policy("europe", region="eu"))
        await m.retire_policy("eu", actor="carol")
        assert await m.list_policies() == []
        with pytest.raises(UnknownPolicy):
            await m.policy("eu")
        v4, _ = await m.add_policy(policy("eu", region="eu"))
        assert v4.version == 4  # a name comes back with the next version number
        verdict = await m.verify_audit()
        assert verdict.ok and verdict.records == 4

    run(scenario())


def test_explain_reads_the_stored_policies(store: Store) -> None:
    async def scenario() -> None:
        m = BootstrapManager(store, dm_coap_uri="coap://h:5683", dm_coaps_uri="coaps://h:5684")
        csv = "endpoint,security_mode,region\nplain-1,nosec,eu\n"
        await m.import_identities(csv, source="x.csv")
        explanation = await m.explain("plain-1")
        assert explanation.selection.policy is not None
        assert explanation.selection.policy.builtin
        assert explanation.provisions[0]["uri"] == "coap://h:5683"
        assert explanation.provisions[0]["credentials"] == "nosec"
        await m.add_policy(
            Policy.from_document(
                {
                    "name": "eu",
                    "match": {"region": "eu"},
                    "servers": [{"uri": DM, "credentials": "psk"}],
                }
            )
        )
        explanation = await m.explain("plain-1")
        assert explanation.selection.policy is not None
        assert explanation.selection.policy.name == "eu"
        assert any("travel in clear" in p for p in explanation.problems)
        json.dumps(explanation.as_dict())

    run(scenario())


# -- the plan one device gets -------------------------------------------------------------------

PSK = DmCredentials(psk=PskSecret("dev-1", b"\x01" * 16))


def instance(plan_writes: Any, path: str) -> ObjectInstance:
    return next(w.instance for w in plan_writes if str(w.path) == path)


def value(inst: ObjectInstance, rid: int) -> object:
    resource = inst.resources[rid]
    assert isinstance(resource, SingleResource)
    return resource.value.value


def test_a_1_1_plan_writes_security_apn_server_and_config_in_that_order() -> None:
    full = Policy.from_document(
        {
            "name": "p",
            "servers": [{"uri": DM, "apn": "iot", "queue_mode": True, "retry": [1, 2, 3, 4]}],
            "apn_profiles": [{"name": "iot", "apn": "iot.example", "validity": ["262-01"]}],
            "config": {"9": "canary"},
        }
    )
    info = parse_discover(b"</>;lwm2m=1.1,</0/0>,</1>,</11>,</32001/0>")
    plan = build_plan(device(), full, info, PSK, lwm2m_version="1.1", secure_channel=True)
    assert [str(w.path) for w in plan.writes] == ["/0/1", "/11/0", "/1/0", "/32001/0"]
    assert [str(p) for p in plan.deletes] == ["/0", "/1", "/11"]
    security = instance(plan.writes, "/0/1")
    assert value(security, 2) == 0 and value(security, 3) == b"dev-1"
    assert value(security, 5) == b"\x01" * 16 and value(security, 10) == 1
    server = instance(plan.writes, "/1/0")
    assert value(server, 7) == "U"  # 1.1: queue mode is the client's Register parameter
    assert value(server, 10) == ObjLink(11, 0) and value(server, 16) is True
    assert value(server, 17) == 1
    assert plan.endpoint_security(5.0).psk is not None
    assert "01" * 16 not in json.dumps(plan.audit_detail(lambda key: "fp"))


def test_a_1_0_plan_uses_only_1_0_resources_and_the_uq_binding() -> None:
    queue = Policy.from_document(
        {"name": "p", "servers": [{"uri": DM, "queue_mode": True, "retry": [1, 2, 3, 4]}]}
    )
    plan = build_plan(device(), queue, None, PSK, lwm2m_version="1.0", secure_channel=True)
    server = instance(plan.writes, "/1/0")
    assert value(server, 7) == "UQ" and set(server.resources) <= set(range(9))
    assert set(instance(plan.writes, plan.writes[0].path.__str__()).resources) <= set(range(13))
    # without Discover the bootstrap account may be /0/0 or /0/1: the DM account avoids both
    assert str(plan.writes[0].path) == "/0/2"


def test_security_ids_avoid_the_bootstrap_account_discover_reports() -> None:
    info = parse_discover(b'</>;lwm2m=1.2,</0>,</0/1>;uri="coaps://bs",</1>')  # Anjay's layout
    plan = build_plan(device(), policy("p"), info, PSK, lwm2m_version="1.2", secure_channel=True)
    assert str(plan.writes[0].path) == "/0/2"


def test_objects_the_device_lacks_are_skipped_with_a_note() -> None:
    full = Policy.from_document(
        {
            "name": "p",
            "servers": [{"uri": DM}],
            "apn_profiles": [{"name": "iot", "apn": "iot.example"}],
            "config": {"8": 60},
        }
    )
    info = parse_discover(b"</>;lwm2m=1.1,</0/0>,</1>")
    plan = build_plan(device(), full, info, PSK, lwm2m_version="1.1", secure_channel=True)
    assert [str(w.path) for w in plan.writes] == ["/0/1", "/1/0"]
    assert len(plan.notes) == 2


def test_secrets_never_go_over_an_unencrypted_bootstrap() -> None:
    with pytest.raises(NotProvisionable, match="in clear"):
        build_plan(device(), policy("p"), None, PSK, lwm2m_version="1.1", secure_channel=False)


def test_certificate_plans_need_the_ca() -> None:
    cert_policy = Policy(
        name="p", servers=(ServerAccount(uri=DM, credentials=CredentialKind.X509),)
    )
    with pytest.raises(NotProvisionable, match="no CA"):
        build_plan(
            device(), cert_policy, None, DmCredentials(), lwm2m_version="1.1", secure_channel=True
        )


def test_the_pack_carries_every_write_in_senml_cbor() -> None:
    plan = build_plan(device(), policy("p"), None, PSK, lwm2m_version="1.2", secure_channel=True)
    nodes = decode_nodes(ContentFormat.SENML_CBOR, plan.pack(), BUILTIN_MODEL)
    assert Path.parse("/0/2/0") in nodes and Path.parse("/1/0/1") in nodes


def test_policy_match_rank_orders_group_over_sku_over_region_over_tenant() -> None:
    ranks = [
        PolicyMatch(**{name: "x"}).rank for name in ("policy_group", "sku", "region", "tenant")
    ]
    assert ranks == sorted(ranks, reverse=True)


def test_an_oscore_account_gets_a_fresh_context_linked_from_its_security_instance() -> None:
    from bootstrap.plan import OscoreSecret

    oscore = Policy.from_document(
        {
            "name": "p",
            "servers": [{"uri": "coap://dm:5683", "credentials": "nosec", "oscore": True}],
        }
    )
    secret = OscoreSecret(b"\x07" * 16, b"\x01", b"\x02")
    creds = DmCredentials(oscore=(secret,))
    plan = build_plan(device(), oscore, None, creds, lwm2m_version="1.1", secure_channel=True)
    assert [str(w.path) for w in plan.writes] == ["/0/2", "/21/0", "/1/0"]
    assert value(instance(plan.writes, "/0/2"), 17) == ObjLink(21, 0)
    assert value(instance(plan.writes, "/21/0"), 0) == b"\x07" * 16
    assert Path.parse("/21") in plan.deletes
    with pytest.raises(NotProvisionable, match="OSCORE"):
        build_plan(
            device(), oscore, None, DmCredentials(), lwm2m_version="1.1", secure_channel=True
        )
    with pytest.raises(InvalidPolicy, match="oscore"):
        Policy.from_document({"name": "p", "servers": [{"uri": DM, "oscore": True}]})
