"""The default device's behaviours, driven by the server as a campaign would: firmware update
through object 5, configuration bundles through object 32001 (docs/OBJECTS.md)."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from aiocoap.numbers.codes import Code

from objects.builtin.fleet_config import FleetConfigResult
from objects.enums import FirmwareUpdateResult, FirmwareUpdateState
from simulators.device.behaviours import FirmwareTiming
from simulators.device.defaults import default_template
from simulators.device.events import Rebooted
from simulators.device.execute import format_arguments
from simulators.device.formats import CF
from tests.simulators.pair import CLOCK, Pair, code, request


def write(pair: Pair, path: str, payload: bytes, cf: int = CF.TEXT) -> str:
    return code(pair.ask(request(Code.PUT, path, content_format=cf, payload=payload)))


def execute(pair: Pair, path: str, *args: tuple[int, str | None]) -> str:
    return code(pair.ask(request(Code.POST, path, payload=format_arguments(tuple(args)))))


def test_firmware_pull_download_update_and_reboot() -> None:
    timing = FirmwareTiming(download=5, install=2)
    pair = Pair(template=default_template(firmware=timing))
    pair.start()
    assert write(pair, "/5/0/1", b"coap://fw.example/images/fw-2.1.0.bin") == "2.04"
    assert pair.store.get("/5/0/3") == FirmwareUpdateState.DOWNLOADING
    assert execute(pair, "/5/0/2") == "4.05"  # not downloaded yet
    pair.advance(5)
    assert pair.store.get("/5/0/3") == FirmwareUpdateState.DOWNLOADED
    assert pair.store.get("/5/0/7") == "2.1.0"
    assert execute(pair, "/5/0/2") == "2.04"
    assert pair.store.get("/5/0/3") == FirmwareUpdateState.UPDATING
    pair.advance(2)
    assert pair.store.get("/3/0/3") == "2.1.0"
    assert pair.store.get("/5/0/3") == FirmwareUpdateState.IDLE
    assert pair.store.get("/5/0/5") == FirmwareUpdateResult.SUCCESS
    assert pair.of_type(Rebooted) == [Rebooted(False)]
    assert len(pair.registers()) == 2


def test_firmware_push_cancel_and_reset() -> None:
    pair = Pair()
    pair.start()
    assert write(pair, "/5/0/0", b"\x7fELF...", CF.OPAQUE) == "2.04"
    assert pair.store.get("/5/0/3") == FirmwareUpdateState.DOWNLOADED
    assert execute(pair, "/5/0/10") == "2.04"
    assert pair.store.get("/5/0/3") == FirmwareUpdateState.IDLE
    assert pair.store.get("/5/0/5") == FirmwareUpdateResult.CANCELLED
    assert write(pair, "/5/0/1", b"") == "2.04"
    assert pair.store.get("/5/0/5") == FirmwareUpdateResult.INITIAL


@pytest.fixture
def pair() -> Pair:
    pair = Pair()
    pair.start()
    return pair


def stage(pair: Pair, version: str, content: object, digest: bytes | None = None) -> None:
    bundle = cbor2.dumps(content)
    digest = hashlib.sha256(bundle).digest() if digest is None else digest
    assert write(pair, "/32001/0/0", version.encode()) == "2.04"
    assert write(pair, "/32001/0/1", bundle, CF.OPAQUE) == "2.04"
    assert write(pair, "/32001/0/2", digest, CF.OPAQUE) == "2.04"


def result(pair: Pair) -> tuple[object, object, object]:
    get = pair.store.get
    return get("/32001/0/5"), get("/32001/0/4"), get("/32001/0/6")


def test_config_apply_then_rollback(pair: Pair) -> None:
    stage(pair, "2024.05.3", {"apn": "iot.a"})
    assert execute(pair, "/32001/0/3", (0, "2024.05.3")) == "2.04"
    assert result(pair) == (FleetConfigResult.APPLIED, "2024.05.3", "")
    stage(pair, "2024.06.1", {"apn": "iot.b"})
    assert pair.store.get("/32001/0/5") == FleetConfigResult.IDLE  # staging resets
    pair.advance(10)
    assert execute(pair, "/32001/0/3", (0, "2024.06.1")) == "2.04"
    assert result(pair) == (FleetConfigResult.APPLIED, "2024.06.1", "")
    assert pair.store.get("/32001/0/11") == "2024.05.3"
    assert pair.store.get("/32001/0/10") == CLOCK + 10
    assert execute(pair, "/32001/0/13") == "2.04"
    assert result(pair) == (FleetConfigResult.ROLLED_BACK, "2024.05.3", "")
    assert execute(pair, "/32001/0/13") == "4.00"  # nothing left to roll back to


@pytest.mark.parametrize(
    ("content", "digest", "args", "expected"),
    [
        ({"a": 1}, None, ((0, "v2"), (1, None)), FleetConfigResult.VALIDATED),
        ({"a": 1}, None, ((0, "v9"),), FleetConfigResult.REJECTED_VERSION_MISMATCH),
        ({"a": 1}, b"\x00" * 32, ((0, "v2"),), FleetConfigResult.REJECTED_DIGEST_MISMATCH),
        ([1, 2], None, ((0, "v2"),), FleetConfigResult.REJECTED_INVALID),
        ({1: "x"}, None, ((0, "v2"),), FleetConfigResult.REJECTED_INVALID),
    ],
)
def test_config_apply_outcomes_change_nothing_but_the_result(
    pair: Pair,
    content: object,
    digest: bytes | None,
    args: tuple[tuple[int, str | None], ...],
    expected: FleetConfigResult,
) -> None:
    stage(pair, "v2", content, digest)
    assert execute(pair, "/32001/0/3", *args) == "2.04"
    assert pair.store.get("/32001/0/5") == expected
    assert pair.store.get("/32001/0/4") == ""


def test_config_apply_needs_the_expected_version(pair: Pair) -> None:
    assert execute(pair, "/32001/0/3") == "4.00"


def test_config_staging_is_refused_while_applying(pair: Pair) -> None:
    pair.store.set("/32001/0/5", int(FleetConfigResult.APPLYING), pair.now)
    assert write(pair, "/32001/0/0", b"v3") == "5.03"
    assert execute(pair, "/32001/0/3", (0, "v3")) == "5.03"
    assert write(pair, "/32001/0/9", b"canary") == "2.04"  # not a staging resource


def test_esim_placeholder_has_a_stable_eid_per_endpoint(pair: Pair) -> None:
    eid = pair.store.get("/3443/0/1")
    assert isinstance(eid, str) and len(eid) == 32 and eid.startswith("89")
    other = Pair(endpoint="sim-0002")
    assert other.store.get("/3443/0/1") != eid
    pair.store.set("/3443/0/0", 1, pair.now)
    assert write(pair, "/3443/0/2", b"\x30\x00", CF.OPAQUE) == "5.03"
    pair.store.set("/3443/0/3", b"\x01", pair.now)
    assert execute(pair, "/3443/0/4") == "2.04"
    assert pair.store.get("/3443/0/3") == b""
