"""Typed codes: binding parsing, helpers, and agreement with the definitions and registry."""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

import pytest

from objects import InvalidBinding, builtin_definition, load_ddf
from objects.enums import (
    ApnAuthenticationType,
    BatteryStatus,
    BearerCategory,
    Binding,
    BindingMode,
    CoverageEnhancementLevel,
    DeviceErrorCode,
    ESimIoTState,
    FirmwareDeliveryMethod,
    FirmwareProtocol,
    FirmwareSeverity,
    FirmwareUpdateResult,
    FirmwareUpdateState,
    FleetConfigResult,
    NetworkBearer,
    PdnType,
    PowerSavingMode,
    PowerSource,
    SecurityMode,
    SignalMeasure,
    parse_binding,
)

U, T, S, N, M, H = (
    BindingMode.UDP,
    BindingMode.TCP,
    BindingMode.SMS,
    BindingMode.NON_IP,
    BindingMode.MQTT,
    BindingMode.HTTP,
)

# -- binding strings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "transports", "queued"),
    [
        ("U", (U,), set()),
        ("UQ", (U,), {U}),
        ("S", (S,), set()),
        ("SQ", (S,), {S}),
        ("US", (U, S), set()),
        ("UQS", (U, S), {U}),
        ("T", (T,), set()),
        ("UT", (U, T), set()),
        ("UTSN", (U, T, S, N), set()),
        ("NU", (N, U), set()),
        ("UMH", (U, M, H), set()),
        (" U ", (U,), set()),
    ],
)
def test_binding_strings_parse_into_transports_and_queue_flags(
    text: str, transports: tuple[BindingMode, ...], queued: set[BindingMode]
) -> None:
    binding = parse_binding(text)
    assert binding.transports == transports
    assert binding.queued == queued
    assert binding.queue_mode == bool(queued)
    assert str(binding) == text.strip()
    assert Binding.parse(str(binding)) == binding


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("X", "unknown binding letter 'X'"),
        ("u", "unknown binding letter 'u'"),
        ("Q", "must follow"),
        ("QU", "must follow"),
        ("UQQ", "must follow"),
        ("UU", "repeated"),
        ("USU", "repeated"),
        ("U S", "unknown binding letter ' '"),
    ],
)
def test_malformed_binding_strings_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(InvalidBinding, match=re.escape(reason)):
        parse_binding(text)


@pytest.mark.parametrize(
    ("text", "version", "error"),
    [
        ("U", "1.0", None),
        ("UQ", "1.0", None),
        ("UQS", "1.0", None),
        ("SQ", "1.0", None),
        ("US", "1.0", None),
        ("SU", "1.0", "allows only"),
        ("SQU", "1.0", "allows only"),
        ("T", "1.0", "allows only"),
        ("UT", "1.1", None),
        ("UTSN", "1.1", None),
        ("UQ", "1.1", "Register 'Q' parameter"),
        ("M", "1.1", "'M' needs LwM2M 1.2"),
        ("UH", "1.1", "'H' needs LwM2M 1.2"),
        ("UM", "1.2", None),
        ("NH", "1.2", None),
        ("UQ", "1.2", "1.0 only"),
        ("U", "one", "major.minor"),
    ],
)
def test_binding_validity_depends_on_the_lwm2m_version(
    text: str, version: str, error: str | None
) -> None:
    if error is None:
        assert str(parse_binding(text, version)) == text
    else:
        with pytest.raises(InvalidBinding, match=re.escape(error)):
            parse_binding(text, version)
        assert str(parse_binding(text)) == text or version == "one"  # lenient without version


def test_binding_supports_reports_transports() -> None:
    binding = parse_binding("UQS")
    assert binding.supports(U) and binding.supports(S) and not binding.supports(T)


# -- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "protocol"),
    [
        ("coap://fw.example/img", FirmwareProtocol.COAP),
        ("coaps://fw.example/img", FirmwareProtocol.COAPS),
        ("http://fw.example/img", FirmwareProtocol.HTTP),
        ("HTTPS://fw.example/img", FirmwareProtocol.HTTPS),
        ("coap+tcp://fw.example/img", FirmwareProtocol.COAP_TCP),
        ("coaps+tcp://fw.example/img", FirmwareProtocol.COAP_TLS),
        ("ftp://fw.example/img", None),
        ("fw.example/img", None),
        ("", None),
    ],
)
def test_firmware_protocol_for_a_package_uri(uri: str, protocol: FirmwareProtocol | None) -> None:
    assert FirmwareProtocol.for_uri(uri) is protocol
    if protocol is not None:
        assert uri.lower().startswith(protocol.uri_scheme + "://")


def test_firmware_result_classification() -> None:
    failures = {r for r in FirmwareUpdateResult if r.is_failure}
    assert failures == {FirmwareUpdateResult(v) for v in range(2, 10)}
    retryable = {r for r in FirmwareUpdateResult if r.is_retryable}
    assert retryable == {FirmwareUpdateResult.OUT_OF_RAM, FirmwareUpdateResult.CONNECTION_LOST}
    assert retryable <= failures
    for benign in (FirmwareUpdateResult.CANCELLED, FirmwareUpdateResult.DEFERRED):
        assert not benign.is_failure


def test_delivery_method_capabilities() -> None:
    assert [(m.supports_pull, m.supports_push) for m in FirmwareDeliveryMethod] == [
        (True, False),
        (False, True),
        (True, True),
    ]


def test_security_mode_properties() -> None:
    assert [m for m in SecurityMode if not m.is_secure] == [SecurityMode.NO_SEC]
    assert {m for m in SecurityMode if m.uses_certificates} == {
        SecurityMode.CERTIFICATE,
        SecurityMode.CERTIFICATE_EST,
    }


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (0, "no error"),
        (4, "low signal"),
        (12, "reserved error code 12"),
        (20, "device-specific error 20"),
        (33, "invalid error code 33"),
    ],
)
def test_device_error_codes_are_described_including_unlisted_ones(code: int, label: str) -> None:
    assert DeviceErrorCode.describe(code) == label


def test_bearers_know_their_category_and_signal_measure() -> None:
    assert NetworkBearer.NB_IOT.category is BearerCategory.CELLULAR
    assert NetworkBearer.WLAN.category is BearerCategory.WIRELESS
    assert NetworkBearer.ETHERNET.category is BearerCategory.WIRELINE
    assert BearerCategory.of(15) is BearerCategory.CELLULAR  # reserved cellular code
    assert BearerCategory.of(51) is None
    assert NetworkBearer.NB_IOT.signal_measure is SignalMeasure.NRSRP
    assert NetworkBearer.LTE_FDD.signal_measure is SignalMeasure.RSRP
    assert NetworkBearer.WCDMA.signal_measure is SignalMeasure.RSCP
    assert NetworkBearer.GSM.signal_measure is SignalMeasure.RSSI
    assert NetworkBearer.NR_FDD.signal_measure is None  # object 4 names none for 5G


def test_esim_state_gates_eim_writes() -> None:
    assert ESimIoTState.accepts_messages(0)
    assert not ESimIoTState.accepts_messages(ESimIoTState.BUSY)
    assert not ESimIoTState.accepts_messages(7)  # the object says "in case value is >0"


def test_power_saving_modes_are_a_bit_mask() -> None:
    both = PowerSavingMode(3)
    assert PowerSavingMode.PSM in both and PowerSavingMode.EDRX in both


# -- agreement with the definitions (and, when present, the registry text) -------------------

ENUM_RESOURCES: list[tuple[type[IntEnum], int, int]] = [
    (FirmwareUpdateState, 5, 3),
    (FirmwareUpdateResult, 5, 5),
    (FirmwareProtocol, 5, 8),
    (FirmwareDeliveryMethod, 5, 9),
    (FirmwareSeverity, 5, 11),
    (SecurityMode, 0, 2),
    (PowerSource, 3, 6),
    (BatteryStatus, 3, 20),
    (CoverageEnhancementLevel, 4, 13),
    (FleetConfigResult, 32001, 5),
]


@pytest.mark.parametrize(
    ("enum", "oid", "rid"), ENUM_RESOURCES, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_enum_covers_exactly_the_declared_range(enum: type[IntEnum], oid: int, rid: int) -> None:
    declared = builtin_definition(oid).resources[rid].range_enumeration
    low, high = map(int, declared.split(".."))
    assert {int(m) for m in enum} == set(range(low, high + 1))


# (enum, object, resource, pattern of a line that defines a code)
REGISTRY_CODES: list[tuple[type[IntEnum], int, int, str]] = [
    (FirmwareUpdateState, 5, 3, r"(\d+):"),
    (FirmwareUpdateResult, 5, 5, r"(\d+):"),
    (FirmwareProtocol, 5, 8, r"(\d+):"),
    (FirmwareDeliveryMethod, 5, 9, r"(\d+):"),
    (FirmwareSeverity, 5, 11, r"(\d+):"),
    (SecurityMode, 0, 2, r"(\d+):"),
    (PowerSource, 3, 6, r"(\d+):"),
    (BatteryStatus, 3, 20, r"(\d+)\t"),
    (DeviceErrorCode, 3, 11, r"(\d+)="),
    (NetworkBearer, 4, 0, r"(\d+):"),
    (CoverageEnhancementLevel, 4, 13, r"(\d+):"),
    (ApnAuthenticationType, 11, 4, r"(\d+):"),
    (PdnType, 11, 24, r"(\d+)="),
    (ESimIoTState, 3443, 0, r"(\d+)\s+\w"),
]


@pytest.mark.parametrize(
    ("enum", "oid", "rid", "pattern"),
    REGISTRY_CODES,
    ids=lambda v: getattr(v, "__name__", None) or str(v),
)
def test_enum_members_are_the_codes_the_registry_lists(
    shared_dir: Path, enum: type[IntEnum], oid: int, rid: int, pattern: str
) -> None:
    path = shared_dir / "reference" / "lwm2m-registry" / f"{oid}.xml"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    [definition] = load_ddf(path)
    text = definition.resources[rid].description
    listed = {int(m[1]) for line in text.splitlines() if (m := re.match(pattern, line.strip()))}
    assert {int(m) for m in enum} == listed
