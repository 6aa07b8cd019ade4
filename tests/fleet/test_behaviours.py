"""Device behaviours of the fleet model, driven the way a DM server drives them: firmware pull
and push with integrity checks and failures, APN changes and fallbacks, config bundles that
are rejected on purpose, traffic counters, eSIM identifiers."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from aiocoap.numbers.codes import Code

from lwm2m.codec import ContentFormat, encode
from lwm2m.model import DataType, ObjectInstance, ObjLink, Path, SingleResource, Value
from objects import BUILTIN_MODEL
from objects.builtin.fleet_config import FleetConfigResult
from objects.enums import FirmwareUpdateResult, FirmwareUpdateState
from simulators.device.cellular import active_apn
from simulators.device.esim import eid_for, imei_for
from simulators.device.events import Rebooted
from simulators.device.firmware import ImageError, build_image, parse_image
from simulators.fleet.engine import REGISTERED, Outcome
from simulators.netem import PRESETS
from simulators.profiles import DeviceProfile
from tests.fleet.harness import FILES, SimNet, code, request

URI = f"coap://{FILES[0]}:{FILES[1]}/fw/app-2.0.0.bin"
CORRUPTED = build_image("2.0.0", 2000)[:-1] + b"\x00"


def write_text(net: SimNet, index: int, path: str, text: str) -> str:
    reply = net.ask(index, request(Code.PUT, path, payload=text.encode(), content_format=0))
    return code(reply)


def execute(net: SimNet, index: int, path: str, args: str = "") -> str:
    return code(net.ask(index, request(Code.POST, path, payload=args.encode())))


def fw_state(net: SimNet, index: int = 0) -> tuple[object, object]:
    return net.value(index, "/5/0/3"), net.value(index, "/5/0/5")


# -- images ------------------------------------------------------------------------------------


def test_an_image_carries_its_version_and_fails_integrity_when_touched() -> None:
    image = build_image("2.0.0", 3000)
    assert parse_image(image).version == "2.0.0"
    corrupted = image[:-1] + bytes([image[-1] ^ 1])
    with pytest.raises(ImageError) as integrity:
        parse_image(corrupted)
    assert integrity.value.result is FirmwareUpdateResult.INTEGRITY_CHECK_FAILURE
    with pytest.raises(ImageError) as truncated:
        parse_image(image[:-10])
    assert truncated.value.result is FirmwareUpdateResult.INTEGRITY_CHECK_FAILURE
    with pytest.raises(ImageError) as foreign:
        parse_image(b"\x7fELF" + bytes(100))
    assert foreign.value.result is FirmwareUpdateResult.UNSUPPORTED_PACKAGE_TYPE


# -- firmware pull -----------------------------------------------------------------------------


def test_pull_downloads_block_wise_updates_reboots_and_reports_the_new_version() -> None:
    net = SimNet()
    net.files["fw/app-2.0.0.bin"] = build_image("2.0.0", 5000)
    net.spawn(1)
    received = net.engine.counters.bytes_received
    assert write_text(net, 0, "/5/0/1", URI) == "2.04"
    net.run_until(lambda: net.value(0, "/5/0/3") == FirmwareUpdateState.DOWNLOADED)
    assert net.engine.counters.bytes_received - received > 5000  # several Block2 responses
    assert net.value(0, "/5/0/7") == "2.0.0"
    assert net.value(0, "/3/0/3") == "1.0.0"
    assert execute(net, 0, "/5/0/2") == "2.04"
    assert net.value(0, "/5/0/3") == FirmwareUpdateState.UPDATING
    net.run_until(lambda: any(isinstance(e, Rebooted) for e in net.events(0)))
    net.run_until(lambda: net.engine.status[0] == REGISTERED)
    assert net.value(0, "/3/0/3") == "2.0.0"
    assert fw_state(net) == (FirmwareUpdateState.IDLE, FirmwareUpdateResult.SUCCESS)
    assert Outcome("firmware_updated") in net.events(0)
    assert net.engine.counters.registrations == 2


@pytest.mark.parametrize(
    ("uri", "body", "result"),
    [
        (URI, CORRUPTED, FirmwareUpdateResult.INTEGRITY_CHECK_FAILURE),
        (URI, b"not a firmware image at all", FirmwareUpdateResult.UNSUPPORTED_PACKAGE_TYPE),
        (f"coap://{FILES[0]}/fw/missing.bin", None, FirmwareUpdateResult.INVALID_URI),
        ("coaps://10.0.0.2/fw/app.bin", None, FirmwareUpdateResult.UNSUPPORTED_PROTOCOL),
        ("http://10.0.0.2/fw/app.bin", None, FirmwareUpdateResult.UNSUPPORTED_PROTOCOL),
        ("coap://firmware.example/fw.bin", None, FirmwareUpdateResult.INVALID_URI),
    ],
    ids=["corrupted", "foreign", "missing", "coaps", "http", "unresolvable"],
)
def test_pull_failures_end_idle_with_the_result_code(
    uri: str, body: bytes | None, result: FirmwareUpdateResult
) -> None:
    net = SimNet()
    if body is not None:
        net.files["fw/app-2.0.0.bin"] = body
    net.spawn(1)
    assert write_text(net, 0, "/5/0/1", uri) == "2.04"
    net.run_until(lambda: net.value(0, "/5/0/3") == FirmwareUpdateState.IDLE)
    assert net.value(0, "/5/0/5") == result
    assert execute(net, 0, "/5/0/2") == "4.05"  # nothing to install
    assert net.value(0, "/3/0/3") == "1.0.0"


def test_a_download_that_fails_on_purpose_reports_connection_lost() -> None:
    net = SimNet()
    net.files["fw/app-2.0.0.bin"] = build_image("2.0.0", 2000)
    net.spawn(1, net.group(DeviceProfile().with_behaviour(firmware_download_failure=1.0)))
    write_text(net, 0, "/5/0/1", URI)
    net.run_until(lambda: net.value(0, "/5/0/3") == FirmwareUpdateState.IDLE)
    assert net.value(0, "/5/0/5") == FirmwareUpdateResult.CONNECTION_LOST
    assert net.engine.counters.outcomes["firmware_download_failed"] == 1


def test_an_image_that_does_not_boot_is_reverted_after_the_reboot() -> None:
    net = SimNet()
    net.files["fw/app-2.0.0.bin"] = build_image("2.0.0", 2000)
    net.spawn(1, net.group(DeviceProfile().with_behaviour(firmware_boot_failure=1.0)))
    write_text(net, 0, "/5/0/1", URI)
    net.run_until(lambda: net.value(0, "/5/0/3") == FirmwareUpdateState.DOWNLOADED)
    execute(net, 0, "/5/0/2")
    net.run_until(lambda: net.engine.counters.reboots == 1)
    net.run_until(lambda: net.engine.status[0] == REGISTERED)
    assert net.value(0, "/3/0/3") == "1.0.0"
    assert fw_state(net) == (FirmwareUpdateState.IDLE, FirmwareUpdateResult.UPDATE_FAILED)
    assert Outcome("firmware_reverted") in net.events(0)


def test_cancel_and_reboot_interrupt_a_slow_download() -> None:
    net = SimNet()
    net.files["fw/app-2.0.0.bin"] = build_image("2.0.0", 20_000)
    profile = DeviceProfile(link=PRESETS["nbiot"].replace(loss=0.0, duplicate=0.0, reorder=0.0))
    net.spawn(2, net.group(profile))
    net.run_until(lambda: net.engine.by_status[REGISTERED] == 2, within=60)
    write_text(net, 0, "/5/0/1", URI)
    write_text(net, 1, "/5/0/1", URI)
    assert fw_state(net, 0)[0] == FirmwareUpdateState.DOWNLOADING
    assert execute(net, 0, "/5/0/10") == "2.04"
    assert fw_state(net, 0) == (FirmwareUpdateState.IDLE, FirmwareUpdateResult.CANCELLED)
    net.engine.reboot(1, net.now)
    net.advance(0.001)
    assert fw_state(net, 1) == (FirmwareUpdateState.IDLE, FirmwareUpdateResult.CONNECTION_LOST)
    net.advance(120)  # nothing left running finishes either download
    assert fw_state(net, 0)[0] == fw_state(net, 1)[0] == FirmwareUpdateState.IDLE


# -- firmware push -----------------------------------------------------------------------------


def test_push_is_a_block_wise_write_of_the_package() -> None:
    net = SimNet()
    net.spawn(1)
    image = build_image("3.1.0", 4000)
    reply = net.ask(
        0, request(Code.PUT, "/5/0/0", payload=image, content_format=ContentFormat.OPAQUE)
    )
    assert code(reply) == "2.04"
    assert net.server.stats.as_dict().get("block1_sent", 1)  # the core split the upload
    assert net.value(0, "/5/0/3") == FirmwareUpdateState.DOWNLOADED
    assert net.value(0, "/5/0/0") == b""  # flashed, not kept
    execute(net, 0, "/5/0/2")
    net.run_until(lambda: net.value(0, "/3/0/3") == "3.1.0")
    bad = build_image("3.2.0", 1500)[:-1] + b"\x01"
    net.run_until(lambda: net.engine.status[0] == REGISTERED)
    net.ask(0, request(Code.PUT, "/5/0/0", payload=bad, content_format=ContentFormat.OPAQUE))
    assert fw_state(net) == (
        FirmwareUpdateState.IDLE,
        FirmwareUpdateResult.INTEGRITY_CHECK_FAILURE,
    )


# -- APN profiles ------------------------------------------------------------------------------


def create_profile(net: SimNet, index: int, iid: int, apn: str) -> str:
    node = ObjectInstance.of(
        iid,
        [
            SingleResource(0, Value(DataType.STRING, f"profile-{iid}")),
            SingleResource(1, Value(DataType.STRING, apn)),
            SingleResource(4, Value(DataType.INTEGER, 3)),
        ],
    )
    payload = encode(ContentFormat.SENML_JSON, node, Path.parse(f"/11/{iid}"), BUILTIN_MODEL)
    reply = net.ask(
        index,
        request(Code.POST, "/11", payload=payload, content_format=ContentFormat.SENML_JSON),
    )
    return code(reply)


def test_an_apn_change_reattaches_from_a_new_address_and_reports_the_apn() -> None:
    net = SimNet()
    profile = DeviceProfile(reachable_apns=frozenset({"iot.fleetloop", "iot.eu"}))
    net.spawn(1, net.group(profile))
    registration = net.registrations[net.endpoint(0)]
    before = registration.peer
    assert create_profile(net, 0, 1, "iot.eu") == "2.01"
    assert write_text(net, 0, "/1/0/10", "11:1") == "2.04"
    assert active_apn(net.engine.clients[0].store) == "iot.eu"
    net.run_until(lambda: bool(registration.updates))
    assert registration.updates[-1][1] != before
    assert net.value(0, "/4/0/7") == {0: "iot.eu"}
    assert net.value(0, "/10/0/11") == {0: ObjLink(11, 1)}
    assert Outcome("apn_changed") in net.events(0)


def test_an_unreachable_apn_loses_the_device_until_it_falls_back() -> None:
    net = SimNet()
    profile = DeviceProfile(reachable_apns=frozenset({"iot.fleetloop"})).with_behaviour(
        apn_fallback=120.0
    )
    net.spawn(1, net.group(profile))
    before = net.registrations[net.endpoint(0)].peer
    create_profile(net, 0, 1, "wrong.apn")
    changed_at = net.now
    write_text(net, 0, "/1/0/10", "11:1")
    net.advance(30)
    handle = net.request(0, request(Code.GET, "/3/0/0"))
    net.advance(80)
    assert handle in net.failures  # offline
    assert net.engine.counters.dropped_offline > 0
    net.run_until(lambda: Outcome("apn_changed") in net.events(0), within=400)
    back = net.now
    assert back - changed_at >= 120
    assert net.value(0, "/1/0/10") == ObjLink(11, 0)
    outcomes = [e.name for e in net.events(0) if isinstance(e, Outcome)]
    assert outcomes == ["apn_lost", "apn_fallback", "apn_changed"]
    # The server hears from the device again (an Update, or a Register if the Update it tried
    # while offline had failed), from its new address.
    net.run_until(lambda: any(t >= back and p[:1] == "r" for t, p, _ in net.received), within=300)
    net.run_until(lambda: net.engine.status[0] == REGISTERED, within=300)
    assert net.registrations[net.endpoint(0)].peer != before
    assert code(net.ask(0, request(Code.GET, "/3/0/0"))) == "2.05"


def test_apn_loss_behaviour_loses_even_a_good_apn() -> None:
    net = SimNet()
    profile = DeviceProfile().with_behaviour(apn_loss=1.0, apn_fallback=50.0)
    net.spawn(1, net.group(profile))
    create_profile(net, 0, 1, "iot.other")
    write_text(net, 0, "/1/0/10", "11:1")
    net.advance(20)
    assert net.engine.flags[0] & 4  # NO_APN
    net.advance(60)
    assert not net.engine.flags[0] & 4
    assert net.value(0, "/4/0/7") == {0: "iot.fleetloop"}


# -- config bundles ----------------------------------------------------------------------------


def stage_and_apply(net: SimNet, index: int, version: str) -> str:
    bundle = cbor2.dumps({"reporting_interval": 60})
    for rid, payload, cf in (
        (0, version.encode(), ContentFormat.TEXT),
        (1, bundle, ContentFormat.OPAQUE),
        (2, hashlib.sha256(bundle).digest(), ContentFormat.OPAQUE),
    ):
        reply = net.ask(
            index, request(Code.PUT, f"/32001/0/{rid}", payload=payload, content_format=cf)
        )
        assert code(reply) == "2.04"
    return execute(net, index, "/32001/0/3", f"0='{version}'")


def test_a_bundle_is_applied_or_rejected_on_purpose_as_the_profile_says() -> None:
    net = SimNet()
    net.spawn(1)
    net.spawn(1, net.group(DeviceProfile().with_behaviour(config_reject=1.0)))
    assert stage_and_apply(net, 0, "v2") == "2.04"
    assert net.value(0, "/32001/0/5") == FleetConfigResult.APPLIED
    assert net.value(0, "/32001/0/4") == "v2"
    assert stage_and_apply(net, 1, "v2") == "2.04"
    assert net.value(1, "/32001/0/5") == FleetConfigResult.REJECTED_INVALID
    assert "refused" in str(net.value(1, "/32001/0/6"))
    assert net.value(1, "/32001/0/4") == ""
    assert net.engine.counters.outcomes == {"config_applied": 1, "config_rejected": 1}


# -- traffic counters, eSIM --------------------------------------------------------------------


def test_connectivity_statistics_count_what_the_fleet_carried() -> None:
    net = SimNet()
    net.spawn(1)
    assert net.value(0, "/7/0/2") == 0
    assert execute(net, 0, "/7/0/6") == "2.04"
    for _ in range(20):
        net.ask(0, request(Code.GET, "/3/0", accept=ContentFormat.SENML_JSON))
    sent = net.value(0, "/7/0/2")
    assert isinstance(sent, int) and sent >= 10  # kB: 20 SenML JSON reads of /3/0
    largest, average = net.value(0, "/7/0/4"), net.value(0, "/7/0/5")
    assert isinstance(largest, int) and isinstance(average, int)
    assert largest > 500
    assert 0 < average <= largest
    execute(net, 0, "/7/0/7")
    frozen = net.value(0, "/7/0/3")
    for _ in range(5):
        net.ask(0, request(Code.GET, "/3/0", accept=ContentFormat.SENML_JSON))
    assert net.value(0, "/7/0/3") == frozen


def test_the_esim_placeholder_reports_the_factory_eid() -> None:
    net = SimNet()
    net.spawn(1)
    reply = net.ask(0, request(Code.GET, "/3443/0/1"))
    eid = reply.payload.decode()
    assert eid == eid_for(net.endpoint(0))
    assert len(eid) == 32 and int(eid) % 97 == 1
    assert len(imei_for(net.endpoint(0))) == 15
