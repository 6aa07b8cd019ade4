"""Failure classification: which device answers are retried (transient), which fail the
device (device-permanent) and which put the artifact under suspicion (artifact-bad)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.campaigns.failures import (
    classify_coap,
    classify_config,
    classify_firmware,
    classify_reason,
)
from lifecycle.campaigns.model import FailureKind
from objects.builtin.fleet_config import FleetConfigResult
from objects.enums import FirmwareUpdateResult

T = FailureKind.TRANSIENT
P = FailureKind.DEVICE_PERMANENT
A = FailureKind.ARTIFACT_BAD


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (2, P),  # not enough flash: the image does not fit this device
        (3, T),  # out of RAM during download: objects.enums calls it retryable
        (4, T),  # connection lost during download
        (5, A),  # integrity check failure
        (6, A),  # unsupported package type
        (7, A),  # invalid URI
        (8, A),  # installed and did not boot
        (9, P),  # unsupported protocol
        (10, T),  # cancelled
        (11, T),  # deferred by the user
    ],
)
def test_firmware_update_results(code: int, kind: FailureKind) -> None:
    assert classify_firmware(code) is kind


def test_firmware_retryable_codes_agree_with_objects_enums() -> None:
    for code in FirmwareUpdateResult:
        if code.is_failure:
            assert (classify_firmware(code) is T) == code.is_retryable, code


def test_firmware_codes_that_are_no_failure_or_unknown_are_not_retried() -> None:
    assert classify_firmware(0) is P
    assert classify_firmware(1) is P
    assert classify_firmware(200) is P


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (FleetConfigResult.REJECTED_INVALID, P),  # refusal is a cohort matter, not quarantine
        (FleetConfigResult.REJECTED_DIGEST_MISMATCH, T),  # damaged on the way: resend
        (FleetConfigResult.FAILED_APPLY, P),
        (FleetConfigResult.ROLLED_BACK, A),  # it made the device unhealthy
        (FleetConfigResult.REJECTED_VERSION_MISMATCH, T),  # a racing write
        (FleetConfigResult.APPLIED, P),  # no failure: explains nothing
        (FleetConfigResult.IDLE, P),
        (99, P),
    ],
)
def test_config_apply_results(code: int, kind: FailureKind) -> None:
    assert classify_config(int(code)) is kind


def test_every_config_failure_code_has_a_considered_kind() -> None:
    from lifecycle.campaigns.failures import CONFIG

    assert {c for c in FleetConfigResult if c.is_failure} == set(CONFIG)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("4.04", P),
        ("4.04 Not Found", P),
        ("4.05", P),
        ("4.01", P),
        ("4.00", P),
        ("4.06", P),
        ("4.13", P),
        ("4.15", P),
        ("4.08", T),
        ("4.12", T),
        ("4.29", T),
        ("5.00", T),
        ("5.03", T),
        ("5.04", T),
        ("5.01", P),
        ("5.05", P),
        (404, P),
        (503, T),
        (429, T),
        (0x84, P),  # the code byte of 4.04
        (0xA3, T),  # 5.03
        (0x88, T),  # 4.08
        ("503", T),
        ("timeout", T),
        ("request timed out after 3 retransmissions", T),
        ("2.04", P),  # a success explains no failure
        (204, P),
        ("image integrity check failed", A),
        ("something odd", P),
        (-1, P),
    ],
)
def test_coap_codes(code: str | int, kind: FailureKind) -> None:
    assert classify_coap(code) is kind


def test_reasons_by_their_words() -> None:
    assert classify_reason("connection reset by peer") is T
    assert classify_reason("device busy") is T
    assert classify_reason("boot loop detected after install") is A
    assert classify_reason("not supported") is P


@given(st.one_of(st.integers(), st.text(max_size=30)))
def test_coap_classification_is_total(code: int | str) -> None:
    assert classify_coap(code) in FailureKind
    if isinstance(code, int):
        assert classify_firmware(code) in FailureKind
        assert classify_config(code) in FailureKind
