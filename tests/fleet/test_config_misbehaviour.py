"""Misbehaviour a campaign test needs, on the fleet engine with a fake clock: config bundles
refused by version or by key (deterministic, per profile -- so one region's devices can
refuse what the others take), and silent devices that register but never answer."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from aiocoap.numbers.codes import Code

from lwm2m.codec import ContentFormat
from objects.builtin.fleet_config import FleetConfigResult
from simulators.fleet.engine import REGISTERED
from simulators.profiles import BEHAVIOUR_FIELDS, Behaviour, DeviceProfile
from tests.fleet.harness import SimNet, code, request


def stage_and_apply(net: SimNet, index: int, version: str, content: dict[str, object]) -> str:
    bundle = cbor2.dumps(content)
    for rid, payload, cf in (
        (0, version.encode(), ContentFormat.TEXT),
        (1, bundle, ContentFormat.OPAQUE),
        (2, hashlib.sha256(bundle).digest(), ContentFormat.OPAQUE),
    ):
        reply = net.ask(
            index, request(Code.PUT, f"/32001/0/{rid}", payload=payload, content_format=cf)
        )
        assert code(reply) == "2.04"
    reply = net.ask(index, request(Code.POST, "/32001/0/3", payload=f"0='{version}'".encode()))
    return code(reply)


def test_a_version_or_a_key_is_refused_by_the_devices_whose_profile_says_so() -> None:
    net = SimNet()
    net.spawn(1)  # takes everything
    picky = DeviceProfile().with_behaviour(
        config_reject_versions=frozenset({"2.0.0"}), config_reject_keys=frozenset({"turbo"})
    )
    net.spawn(1, net.group(picky))
    for index in (0, 1):
        assert stage_and_apply(net, index, "2.0.0", {"a": 1}) == "2.04"
    assert net.value(0, "/32001/0/5") == FleetConfigResult.APPLIED
    assert net.value(1, "/32001/0/5") == FleetConfigResult.REJECTED_INVALID
    assert "config_reject_versions" in str(net.value(1, "/32001/0/6"))
    assert stage_and_apply(net, 1, "2.0.1", {"a": 1, "turbo": True}) == "2.04"
    assert net.value(1, "/32001/0/5") == FleetConfigResult.REJECTED_INVALID
    assert "'turbo'" in str(net.value(1, "/32001/0/6"))
    assert net.value(1, "/32001/0/4") == ""  # nothing was applied
    assert stage_and_apply(net, 1, "2.0.2", {"a": 2}) == "2.04"
    assert net.value(1, "/32001/0/5") == FleetConfigResult.APPLIED
    assert net.value(1, "/32001/0/4") == "2.0.2"


def test_a_silent_device_registers_but_never_answers() -> None:
    net = SimNet()
    net.spawn(1, net.group(DeviceProfile().with_behaviour(silent=1.0)))
    net.spawn(1)
    net.run_until(lambda: all(net.engine.status[i] == REGISTERED for i in (0, 1)))
    handle = net.request(0, request(Code.GET, "/3/0/0"))
    answered = net.ask(1, request(Code.GET, "/3/0/0"))
    assert code(answered) == "2.05"
    net.advance(300.0)  # past every CoAP retransmission
    assert handle in net.failures and handle not in net.responses
    assert net.engine.counters.dropped_silent >= 1
    assert net.engine.status[0] == REGISTERED  # still registered: only its answers are gone


def test_silent_is_a_probability_and_the_list_fields_are_not_cli_numbers() -> None:
    with pytest.raises(ValueError, match="silent"):
        Behaviour(silent=1.5)
    assert "silent" in BEHAVIOUR_FIELDS
    assert "config_reject_keys" not in BEHAVIOUR_FIELDS
