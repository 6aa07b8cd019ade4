"""The esim_download dimension's verdicts and the fallback rule (lifecycle.esim, pure): what
the eIM's applier records and queues in each phase of an eSIM switch, from the eIM's profile
table and the packages the desired generation queued."""

from __future__ import annotations

from typing import Any

import pytest

from lifecycle.esim import FallbackError, check_fallback, judge, judge_download
from lifecycle.esim.component import package_actor
from lifecycle.state.dimensions import (
    Desired,
    Dimension,
    Reported,
    StateError,
    parse_desired,
    satisfies,
)
from sgp32.eim import PackageRecord, PackageState, ProfileRecord, ProfileState
from sgp32.packages import Delete, Disable, Enable

EID = "89049032000000000000000000000123"
OLD, NEW = "8988247000000000011", "8988247000000000029"
CODE = "1$smdp.example.com$ORDER-1"
WANT = Desired(Dimension.ESIM_DOWNLOAD, {"iccid": NEW, "activation_code": CODE}, 2)


def op(name: str, state: PackageState, result: dict[str, Any] | None = None) -> PackageRecord:
    return PackageRecord(
        EID, 7, b"\x01", "eim", ({"op": name},), b"", state, 0.0,
        package_actor(2, Dimension.ESIM_DOWNLOAD), result=result,
    )  # fmt: skip


def test_the_desired_value_needs_both_iccid_and_activation_code() -> None:
    assert parse_desired(Dimension.ESIM_DOWNLOAD, {"iccid": NEW, "activation_code": CODE}) == {
        "iccid": NEW,
        "activation_code": CODE,
    }
    for bad in (NEW, {"iccid": NEW}, {"iccid": "12", "activation_code": CODE}):
        with pytest.raises(StateError):
            parse_desired(Dimension.ESIM_DOWNLOAD, bad)
    assert Dimension.parse("esim-download") is Dimension.ESIM_DOWNLOAD
    assert satisfies(Dimension.ESIM_DOWNLOAD, WANT.value, {"iccids": [NEW, OLD]})
    assert not satisfies(Dimension.ESIM_DOWNLOAD, WANT.value, {"iccids": [OLD]})


def test_download_phase_lists_then_downloads_and_applies_once_present_never_enabling() -> None:
    old = [ProfileRecord(EID, OLD, ProfileState.ENABLED, True, 0.0, "Carrier A")]
    assert judge_download(WANT, None, EID, [], []).list_profiles
    listed = op("listProfileInfo", PackageState.DONE)
    first = judge_download(WANT, None, EID, old, [listed])
    assert first.download == CODE and not first.queue
    trigger = op("profileDownloadTrigger", PackageState.DELIVERED)
    waiting = judge_download(WANT, None, EID, old, [listed, trigger])
    assert waiting.download is None and waiting.failure is None and not waiting.queue
    failed = op("profileDownloadTrigger", PackageState.FAILED, {"results": [["x", 127]]})
    assert "download of" in (judge_download(WANT, None, EID, old, [failed]).failure or "")
    present = [*old, ProfileRecord(EID, NEW, ProfileState.DISABLED, False, 0.0, "Carrier B")]
    done = judge_download(WANT, None, EID, present, [listed])
    assert done.failure is None and not done.queue and done.download is None
    assert done.reported == {"iccids": sorted([NEW, OLD])}  # applied: present, disabled
    again = Reported(Dimension.ESIM_DOWNLOAD, {"iccids": [OLD]}, None, failed_generation=2)
    assert not judge_download(WANT, again, EID, old, [failed]).download  # no retry
    assert "--endpoint" in (judge_download(WANT, None, None, [], []).failure or "")


def test_the_enable_sets_the_fallback_attribute_first_where_no_profile_carries_it() -> None:
    want = Desired(Dimension.ESIM, {"iccid": NEW}, 3)
    without = [
        ProfileRecord(EID, OLD, ProfileState.ENABLED, False, 0.0, "Carrier A"),
        ProfileRecord(EID, NEW, ProfileState.DISABLED, False, 0.0, "Carrier B"),
    ]
    verdict = judge(want, None, EID, without, [])
    assert verdict.queue and verdict.fallback == OLD
    with_fallback = [
        ProfileRecord(EID, OLD, ProfileState.ENABLED, True, 0.0, "Carrier A"),
        without[1],
    ]
    kept = judge(want, None, EID, with_fallback, [])
    assert kept.queue and kept.fallback is None


def test_disabling_or_deleting_the_fallback_profile_is_refused_naming_the_fix() -> None:
    profiles = [
        ProfileRecord(EID, OLD, ProfileState.DISABLED, True, 0.0, "Carrier A"),
        ProfileRecord(EID, NEW, ProfileState.ENABLED, False, 0.0, "Carrier B"),
    ]
    for operation in (Delete(OLD), Disable(OLD)):
        with pytest.raises(FallbackError, match=r"meter-0042.*fallback.*esim fallback meter-0042"):
            check_fallback("meter-0042", profiles, [operation])
    check_fallback("meter-0042", profiles, [Enable(OLD), Disable(NEW)])  # not the fallback
