"""The carrier check of an eSIM switch's enable: the verdict (lifecycle.esim.carrier, pure), the
``plmns`` of the desired esim value, and the engine asking the eIM's applier after the device
re-registered -- on SQLite and PostgreSQL.

The engine rig is ``test_engine``'s (a real LwM2M server, store, state component, inventory),
with the real :class:`~lifecycle.esim.component.EsimComponent` as the esim applier (its worker
not started: the eIM's verdicts are recorded by the test, as in ``test_esim_phases``) and real
simulated devices registered with the server, whose object 4 the check reads: one on the
expected network, one on another network, one without object 4, and one that reported its
network in a Send after registering (the check takes that, and does not read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from lifecycle.campaigns.model import CampaignError, Component, DeviceState, GateSpec
from lifecycle.campaigns.spec import esim_switch, parse_spec
from lifecycle.esim.carrier import (
    expected_plmns,
    has_connectivity_object,
    judge_carrier,
    parse_plmn,
    served_plmn,
)
from lifecycle.esim.component import EsimComponent
from lifecycle.schema import create_schema
from lifecycle.state.dimensions import Dimension, StateError, parse_desired
from lwm2m.model import Path as LwPath
from lwm2m.model.nodes import ObjectInstance, SingleResource
from lwm2m.model.values import DataType, Value
from lwm2m.server import Updated
from lwm2m.store import Store
from sgp32.eim import Eim, EimDeployment
from sgp32.eim.sql import EimStore
from sgp32.signing import EimIdentity
from simulators.device.models import fleet_template
from simulators.device.template import DeviceTemplate
from simulators.esim.network import ServingNetwork
from simulators.fleet.runner import DeviceFleet
from simulators.identities import Identity
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)
from tests.lifecycle.campaigns.test_engine import _records, eventually, rig
from tests.lifecycle.campaigns.test_esim_phases import (
    CODE,
    NEW,
    _downloaded,
    _enabled,
    _spec,
    _wait_state,
)

EP = "meter-0042"


# -- the verdict ----------------------------------------------------------------------------------
def test_the_expected_network_verifies() -> None:
    v = judge_carrier(EP, NEW, ["310-260", "310-410"], has_object4=True, plmn=(310, 260))
    assert v.ok and v.checked and v.seen == "310-260"
    assert v.reason == "registered over PLMN 310-260 (expected 310-260, 310-410)"


def test_another_network_fails_naming_device_plmns_and_fix() -> None:
    v = judge_carrier(EP, NEW, ["310-260"], has_object4=True, plmn=(262, 1))
    assert not v.ok and v.checked and v.seen == "262-01"
    for part in (EP, "262-01", "310-260", NEW, "plmns", "--plmn"):
        assert part in v.reason, v.reason
    # a 3-digit MNC with a leading zero is compared as a number, shown as configured
    assert judge_carrier(EP, NEW, ["310-026"], has_object4=True, plmn=(310, 26)).seen == "310-026"


def test_no_object_4_verifies_on_the_registration_and_says_not_checked() -> None:
    v = judge_carrier(EP, NEW, ["310-260"], has_object4=False, plmn=None)
    assert v.ok and not v.checked
    assert v.reason.startswith("carrier not checked (") and "/4/0" in v.reason
    unread = judge_carrier(EP, NEW, ["310-260"], has_object4=True, plmn=None, error="4.04")
    assert unread.ok and not unread.checked and "4.04" in unread.reason


def test_no_expected_plmn_verifies_and_says_not_checked() -> None:
    v = judge_carrier(EP, NEW, [], has_object4=True, plmn=(262, 1))
    assert v.ok and not v.checked and v.seen is None
    assert "carrier not checked" in v.reason and "plmns" in v.reason
    assert expected_plmns({"iccid": NEW}) == ()


def test_plmns_on_the_desired_value_and_the_campaign_spec() -> None:
    value = parse_desired(Dimension.ESIM, {"iccid": NEW, "plmns": ["310410", "310-260", "310-260"]})
    assert value == {"iccid": NEW, "plmns": ["310-260", "310-410"]}
    assert parse_desired(Dimension.ESIM, NEW) == {"iccid": NEW}  # optional, as before
    for bad in (["31-26"], "310-260", [], [310260]):
        with pytest.raises(StateError, match="plmns"):
            parse_desired(Dimension.ESIM, {"iccid": NEW, "plmns": bad})
    spec = parse_spec(
        {
            "name": "carrier B",
            "selector": "region=north",
            "kind": "esim",
            "esim": {"iccid": NEW, "activation_code": CODE, "plmns": ["310-260"]},
        }
    )
    download, enable = spec.components
    assert download.value == {"iccid": NEW, "activation_code": CODE}
    assert enable.value == {"iccid": NEW, "plmns": ["310-260"]}
    with pytest.raises(CampaignError, match="plmns"):
        parse_spec({"name": "x", "selector": "", "kind": "esim", "esim": {"iccid": NEW}})
    assert parse_plmn("26201") == (262, 1)
    with pytest.raises(ValueError, match="not a PLMN"):
        parse_plmn("2620")


def test_object_4_from_the_registration_and_the_read() -> None:
    assert has_connectivity_object("</1/0>,</3/0>,</4/0>")
    assert has_connectivity_object("</4>")
    assert not has_connectivity_object("</1/0>,</3/0>,</5/0>")
    content = ObjectInstance(
        0,
        {
            9: SingleResource(9, Value(DataType.INTEGER, 260)),
            10: SingleResource(10, Value(DataType.INTEGER, 310)),
        },
    )
    assert served_plmn(content) == (310, 260)
    assert served_plmn(ObjectInstance(0, {9: content.resources[9]})) is None


# -- the engine asks the eIM's applier -------------------------------------------------------------
@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[Store]:  # noqa: F811
    opened = Store.open(database_url, tmp_path)
    opened.create_schema()
    create_schema(opened)
    try:
        yield opened
    finally:
        opened.close()


def test_the_engine_fails_the_wrong_network_and_the_gate_counts_it(store: Store) -> None:
    async def case() -> None:
        records = _records("ec-", {"eu": 4})
        on_net, roaming, bare, sender = (r.endpoint for r in records)
        async with rig(store, records) as r:
            identity = EimIdentity("eim.test", ec.generate_private_key(ec.SECP256R1()))
            eims = EimStore(store, Eim(EimDeployment.of([identity], [])))
            applier = EsimComponent(eims, r.state)
            r.state.reconciler.external[Dimension.ESIM] = applier
            address = r.server.coap_address
            assert address is not None
            uri = f"coap://127.0.0.1:{address[1]}"
            network = ServingNetwork()
            network.roam(on_net, (310, 260))
            network.roam(roaming, (310, 410))
            network.roam(sender, (310, 260))
            async with DeviceFleet(uri, seed=5) as fleet:
                base = network.template(fleet_template(fleet.engine, server_uri=uri))
                without4 = DeviceTemplate(
                    [o for o in base.objects.values() if o.id != 4], base.model
                )
                fleet.spawn(identities=[Identity(on_net), Identity(roaming)], template=base)
                fleet.spawn(identities=[Identity(bare)], template=without4)
                [sending] = fleet.spawn(identities=[Identity(sender)], template=base)
                await fleet.wait_registered(timeout=30)
                fleet.device(sending).send(["/4/0/9", "/4/0/10"])  # on 310-260 then

                async def sent() -> bool:
                    found = await store.read(
                        lambda tx: store.telemetry.latest(tx, sender, LwPath.parse("/4/0"))
                    )
                    return len(found) == 2

                await eventually(sent, timeout=10)
                network.roam(sender, (310, 410))  # a Read now would see another network

                download, enable = esim_switch(
                    Component(
                        Dimension.ESIM,
                        {"iccid": NEW, "activation_code": CODE, "plmns": ["310-260"]},
                    )
                )
                spec = _spec(
                    "ec-",
                    components=(download, enable),
                    gates=replace(_spec("ec-").gates, min_sample=4, max_failure_pct=20.0),
                    deadlines=replace(_spec("ec-").deadlines, registered_s=30.0),
                )
                assert isinstance(spec.gates, GateSpec)
                cid = await r.campaigns.create(spec, actor="op")
                devices = await _wait_state(r, cid, DeviceState.DELIVERING, 4)
                await _downloaded(r, devices)
                await _wait_state(r, cid, DeviceState.DELIVERING, 4)
                await _enabled(r, devices)
                await _wait_state(r, cid, DeviceState.REGISTERING, 4)
                for endpoint in devices:  # each device updates its registration
                    reg = r.server.registration(endpoint)
                    assert reg is not None
                    await r.campaigns._on_updated(Updated(endpoint, reg, reg))

                async def halted() -> bool:
                    return bool((await r.campaigns.status(cid))["state"] == "halted")

                await eventually(halted, timeout=30)
                status = await r.campaigns.status(cid)
                assert status["counts"] == {"succeeded": 3, "failed": 1}, status["counts"]
                assert "failures 1/4" in status["reason"], status["reason"]
                report = await r.campaigns.report(cid)
                rows = {d["endpoint"]: d for d in report["device_list"]}
                assert "310-410" in rows[roaming]["reason"] and roaming in rows[roaming]["reason"]
                assert "registered over PLMN 310-260" in rows[on_net]["reason"]
                assert "carrier not checked" in rows[bare]["reason"]
                assert "/4/0" in rows[bare]["reason"]

                audits = await store.read(
                    lambda tx: store.audit.list(tx, action_prefix="esim.carrier", limit=10)
                )
                outcomes = {
                    a.endpoints[0]: (a.outcome, a.detail["checked"], a.detail["source"])
                    for a in audits
                }
                assert outcomes == {
                    on_net: ("ok", True, "read"),
                    roaming: ("failed", True, "read"),
                    bare: ("ok", False, ""),
                    sender: ("ok", True, "reported"),
                }, outcomes

    asyncio.run(asyncio.wait_for(case(), 90))


def test_the_cli_puts_the_plmns_on_the_esim_value() -> None:
    import click

    from cli.campaign_cmd import _spec as cli_spec

    flags: dict[str, object] = {
        "name": "carrier B",
        "select": "region=north",
        "kind": "esim",
        "iccid": NEW,
        "activation_code": CODE,
        "plmn": ("310-260", "310410"),
    }
    spec, _, flagged = cli_spec(None, flags)
    assert spec["esim"] == {"iccid": NEW, "activation_code": CODE, "plmns": ["310-260", "310410"]}
    assert "esim" in flagged
    assert parse_spec(spec).components[1].value == {"iccid": NEW, "plmns": ["310-260", "310-410"]}
    without, _, _ = cli_spec(None, {**flags, "plmn": ()})
    assert "plmns" not in without["esim"]
    with pytest.raises(click.UsageError, match="--plmn"):
        cli_spec(None, {"name": "x", "select": "", "plmn": ("310-260",)})
