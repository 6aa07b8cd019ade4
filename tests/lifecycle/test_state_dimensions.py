"""Dimensions: validation of desired values, reading reported values, the exact status and
the generation rule, and the next step the reconciler takes (all sans-IO)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.state.dimensions import (
    Desired,
    Dimension,
    Fail,
    InstallFirmware,
    PullFirmware,
    Reported,
    SetApns,
    StateError,
    Status,
    Wait,
    WriteConfig,
    WriteFlags,
    dimensions_of,
    observed_after,
    parse_desired,
    plan,
    reported_value,
    satisfies,
    status,
)
from lwm2m.model import Path

DIGEST = "ab" * 32
CONFIG = Desired(Dimension.CONFIG, {"version": "eu-v7", "digest": DIGEST, "bundle": "eu-v7"}, 3)


def reported(
    value: dict[str, Any] | None, observed: int | None = None, failed: int | None = None
) -> Reported:
    return Reported(Dimension.CONFIG, value, observed, failed)


def test_a_verified_matching_report_is_applied() -> None:
    assert status(CONFIG, reported({"version": "eu-v7", "result": "applied"}, 3)) is Status.APPLIED


def test_a_matching_report_not_verified_for_this_generation_is_pending() -> None:
    assert status(CONFIG, reported({"version": "eu-v7", "result": "applied"}, 2)) is Status.PENDING


def test_a_device_verified_on_this_generation_that_reports_something_else_drifted() -> None:
    assert status(CONFIG, reported({"version": "local", "result": "applied"}, 3)) is Status.DRIFTED


def test_a_device_not_yet_on_this_generation_is_pending_not_drifted() -> None:
    assert status(CONFIG, reported({"version": "eu-v6", "result": "applied"}, 2)) is Status.PENDING


def test_a_permanent_failure_of_this_generation_is_failed_and_of_an_older_one_pending() -> None:
    value = {"version": "eu-v6", "result": "rejected_invalid"}
    assert status(CONFIG, reported(value, None, failed=3)) is Status.FAILED
    assert status(CONFIG, reported(value, None, failed=2)) is Status.PENDING


def test_nothing_reported_is_unknown_and_no_desired_value_is_unmanaged() -> None:
    assert status(CONFIG, None) is Status.UNKNOWN
    assert status(CONFIG, reported(None)) is Status.UNKNOWN
    assert status(None, reported({"version": "x"})) is Status.UNMANAGED


def test_the_generation_rule_stamps_only_a_satisfying_report_and_keeps_the_old_otherwise() -> None:
    assert observed_after(CONFIG, {"version": "eu-v7", "result": "applied"}, 1) == 3
    assert observed_after(CONFIG, {"version": "local"}, 3) == 3  # kept: that is how drift shows
    assert observed_after(CONFIG, {"version": "local"}, None) is None
    assert observed_after(None, {"version": "eu-v7"}, 2) == 2


def test_config_is_not_satisfied_by_a_rolled_back_apply_or_a_bundle_of_other_content() -> None:
    assert not satisfies(
        Dimension.CONFIG, CONFIG.value, {"version": "eu-v7", "result": "rolled_back"}
    )
    other = {"version": "eu-v7", "result": "applied", "staged_digest": "cd" * 32}
    assert not satisfies(Dimension.CONFIG, CONFIG.value, other)


def test_connectivity_needs_the_active_apn_and_every_desired_profile_extra_profiles_may_stay() -> (
    None
):
    want = {"apns": ["iot.new", "iot.old"], "active": "iot.new"}
    assert satisfies(
        Dimension.CONNECTIVITY, want, {"apns": ["iot.old", "iot.new", "x"], "active": "iot.new"}
    )
    assert not satisfies(Dimension.CONNECTIVITY, want, {"apns": ["iot.new"], "active": "iot.new"})
    assert not satisfies(
        Dimension.CONNECTIVITY, want, {"apns": ["iot.old", "iot.new"], "active": "iot.old"}
    )


def test_flags_are_compared_as_a_whole_set() -> None:
    assert satisfies(Dimension.FLAGS, {"a": "1"}, {"a": "1"})
    assert not satisfies(Dimension.FLAGS, {"a": "1"}, {"a": "1", "b": "2"})


@pytest.mark.parametrize(
    ("dimension", "raw", "expected"),
    [
        (Dimension.FIRMWARE, "2.4.1", {"version": "2.4.1"}),
        (
            Dimension.FIRMWARE,
            {"version": "2.4.1", "uri": "coap://h/fw-2.4.1.bin"},
            {"version": "2.4.1", "uri": "coap://h/fw-2.4.1.bin"},
        ),
        (Dimension.CONNECTIVITY, "iot.a, iot.b", {"apns": ["iot.a", "iot.b"], "active": "iot.a"}),
        (Dimension.FLAGS, {"b": True, "a": 2}, {"a": "2", "b": "true"}),
        (Dimension.CREDENTIALS, 4, {"generation": 4}),
        (Dimension.ESIM, "8944501234567890123", {"iccid": "8944501234567890123"}),
    ],
)
def test_desired_values_are_normalised(dimension: Dimension, raw: Any, expected: Any) -> None:
    assert parse_desired(dimension, raw) == expected


@pytest.mark.parametrize(
    ("dimension", "raw", "names"),
    [
        (Dimension.FIRMWARE, "2.4 1", "version"),
        (Dimension.FIRMWARE, {"version": "2", "uri": "ftp://x"}, "uri"),
        (Dimension.CONFIG, {"version": "v", "digest": "zz"}, "digest"),
        (Dimension.CONNECTIVITY, {"apns": ["a"], "active": "b"}, "active APN"),
        (Dimension.CONNECTIVITY, "a,a", "twice"),
        (Dimension.FLAGS, {"a": "x=y"}, "without '='"),
        (Dimension.ESIM, "1234", "ICCID"),
    ],
)
def test_bad_desired_values_are_refused_naming_the_dimension_and_the_problem(
    dimension: Dimension, raw: Any, names: str
) -> None:
    with pytest.raises(StateError) as err:
        parse_desired(dimension, raw)
    assert str(err.value).startswith(dimension.value) and names in str(err.value)


def test_an_unknown_dimension_lists_the_known_ones() -> None:
    with pytest.raises(StateError, match="firmware, config, connectivity"):
        Dimension.parse("colour")
    assert Dimension.parse("apn") is Dimension.CONNECTIVITY


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(st.sampled_from(list(Dimension)), json_values)
def test_parse_desired_refuses_anything_malformed_with_a_state_error_only(
    dimension: Dimension, raw: Any
) -> None:
    try:
        value = parse_desired(dimension, raw)
    except StateError:
        return
    assert parse_desired(dimension, value) == value  # normalised values parse to themselves


LEAVES: dict[Path, Any] = {
    Path.parse("/3/0/3"): "1.0.0",
    Path.parse("/5/0/3"): 0,
    Path.parse("/5/0/5"): 0,
    Path.parse("/32001/0/4"): "eu-v6",
    Path.parse("/32001/0/5"): 2,
    Path.parse("/32001/0/2"): bytes.fromhex(DIGEST),
    Path.parse("/32001/0/7/0"): "a=1",
    Path.parse("/32001/0/7/1"): "b=2",
    Path.parse("/4/0/7/0"): "iot.fleetloop",
    Path.parse("/11/0/0"): "default",
    Path.parse("/11/0/1"): "iot.fleetloop",
    Path.parse("/11/3/0"): "iot.new",
    Path.parse("/11/3/1"): "",
}


def test_reported_values_are_read_from_the_devices_paths() -> None:
    assert reported_value(Dimension.FIRMWARE, LEAVES) == {
        "version": "1.0.0",
        "update_state": "idle",
        "update_result": "initial",
    }
    assert reported_value(Dimension.CONFIG, LEAVES) == {
        "version": "eu-v6",
        "result": "applied",
        "staged_digest": DIGEST,
    }
    assert reported_value(Dimension.FLAGS, LEAVES) == {"a": "1", "b": "2"}
    assert reported_value(Dimension.CONNECTIVITY, LEAVES) == {
        "apns": ["iot.fleetloop", "iot.new"],  # the profile name stands in for an empty APN
        "active": "iot.fleetloop",
    }
    assert reported_value(Dimension.FIRMWARE, {}) is None


def test_the_dimensions_a_report_touches() -> None:
    assert dimensions_of(frozenset({Path.parse("/32001/0/7")})) == {Dimension.FLAGS}
    assert dimensions_of(frozenset({Path.parse("/11")})) == {Dimension.CONNECTIVITY}
    assert dimensions_of(frozenset({Path.parse("/3/0/9")})) == set()


def test_plan_config_writes_and_applies_the_bundle_or_waits_while_the_device_applies() -> None:
    step = plan(CONFIG, LEAVES, bundle=b"\xa0")
    assert step == WriteConfig("eu-v7", b"\xa0", bytes.fromhex(DIGEST))
    assert isinstance(plan(CONFIG, {**LEAVES, Path.parse("/32001/0/5"): 1}, bundle=b"\xa0"), Wait)
    assert isinstance(plan(CONFIG, LEAVES, bundle=None), Fail)


def test_plan_flags_and_apns() -> None:
    flags = Desired(Dimension.FLAGS, {"b": "2", "a": "1"}, 1)
    assert plan(flags, LEAVES) == WriteFlags(("a=1", "b=2"))
    apn = Desired(Dimension.CONNECTIVITY, {"apns": ["iot.x", "iot.new"], "active": "iot.x"}, 1)
    step = plan(apn, LEAVES)
    assert isinstance(step, SetApns)
    assert step.create == ("iot.x",) and step.active == "iot.x"
    assert step.existing == {"iot.fleetloop": 0, "iot.new": 3}


def test_plan_firmware_follows_the_object_5_state_machine() -> None:
    want = Desired(Dimension.FIRMWARE, {"version": "2.0.0", "uri": "coap://h/fw-2.0.0.bin"}, 1)
    fw = Path.parse("/5/0/3")
    assert plan(want, LEAVES) == PullFirmware("coap://h/fw-2.0.0.bin")
    assert isinstance(plan(want, {**LEAVES, fw: 1}), Wait)
    assert plan(want, {**LEAVES, fw: 2}) == InstallFirmware()
    assert isinstance(plan(want, {**LEAVES, fw: 3}), Wait)
    failed = {**LEAVES, Path.parse("/5/0/5"): 5}
    assert isinstance(plan(want, failed, attempted=True), Fail)
    assert plan(want, failed, attempted=False) == PullFirmware("coap://h/fw-2.0.0.bin")
    no_uri = Desired(Dimension.FIRMWARE, {"version": "2.0.0"}, 1)
    assert isinstance(plan(no_uri, LEAVES), Fail)
