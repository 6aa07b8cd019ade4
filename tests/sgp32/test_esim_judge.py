"""The esim dimension's verdicts (lifecycle.esim.judge, pure): what the state layer records for
a device from the eIM's profile table and the package its desired generation queued."""

from __future__ import annotations

from typing import Any

from lifecycle.esim import judge
from lifecycle.esim.component import package_actor
from lifecycle.state.dimensions import Desired, Dimension, Policy, Reported
from sgp32.eim import PackageRecord, PackageState, ProfileRecord, ProfileState

EID = "89049032000000000000000000000123"
OLD, NEW = "8988247000000000011", "8988247000000000029"
WANT = Desired(Dimension.ESIM, {"iccid": NEW}, 3)


def profiles(enabled: str, state: ProfileState = ProfileState.ENABLED) -> list[ProfileRecord]:
    other = OLD if enabled == NEW else NEW
    return [
        ProfileRecord(EID, enabled, state, False, 0.0, "Carrier"),
        ProfileRecord(EID, other, ProfileState.DISABLED, False, 0.0),
    ]


def package(
    state: PackageState, result: dict[str, Any] | None = None, generation: int = 3
) -> PackageRecord:
    return PackageRecord(
        EID,
        7,
        b"\x00" * 8,
        "eim",
        ({"op": "enable", "iccid": NEW, "rollback": True},),
        b"",
        state,
        0.0,
        package_actor(generation),
        result=result,
    )


def test_no_package_yet_queues_one_and_reports_the_enabled_profile() -> None:
    verdict = judge(WANT, None, EID, profiles(OLD), [])
    assert verdict.queue and verdict.failure is None
    assert verdict.reported == {"iccid": OLD, "state": "enabled", "carrier": "Carrier"}


def test_a_package_of_an_older_generation_does_not_count() -> None:
    old = package(PackageState.DONE, {"results": [["enableResult", 0]]}, generation=2)
    assert judge(WANT, None, EID, profiles(OLD), [old]).queue


def test_waiting_while_queued_or_pending_confirmation() -> None:
    for state in (PackageState.QUEUED, PackageState.DELIVERED):
        verdict = judge(WANT, None, EID, profiles(OLD), [package(state)])
        assert not verdict.queue and verdict.failure is None
    pending = judge(WANT, None, EID, profiles(NEW, ProfileState.PENDING), [package(state)])
    assert not pending.queue and pending.failure is None


def test_confirmed_enable_is_applied() -> None:
    done = package(PackageState.DONE, {"results": [["enableResult", 0]]})
    verdict = judge(WANT, None, EID, profiles(NEW), [done])
    assert verdict.failure is None and not verdict.queue
    assert verdict.reported is not None and verdict.reported["iccid"] == NEW


def test_rollback_enable_refusal_and_package_error_fail_with_the_reason() -> None:
    rolled = package(PackageState.DONE, {"results": [["enableResult", 0], ["rollbackResult", 0]]})
    verdict = judge(WANT, None, EID, profiles(OLD), [rolled])
    assert verdict.failure is not None and "rolled back" in verdict.failure
    assert OLD in verdict.failure
    refused = package(PackageState.DONE, {"results": [["enableResult", 1]]})
    assert "iccidOrAidNotFound" in (judge(WANT, None, EID, profiles(OLD), [refused]).failure or "")
    error = package(PackageState.FAILED, {"error_code": 4})
    assert "replayError" in (judge(WANT, None, EID, profiles(OLD), [error]).failure or "")
    unsigned = package(
        PackageState.FAILED,
        {"reason": "eim_deleted_on_euicc", "message": f"eUICC {EID} no longer knows eIM eim"},
    )
    failure = judge(WANT, None, EID, profiles(OLD), [unsigned]).failure or ""
    assert "no longer knows eIM" in failure and "None" not in failure


def test_failed_generation_is_not_retried_and_unlinked_device_fails() -> None:
    failed = Reported(Dimension.ESIM, {"iccid": OLD}, None, failed_generation=3)
    verdict = judge(WANT, failed, EID, profiles(OLD), [])
    assert not verdict.queue and verdict.failure is None
    unlinked = judge(WANT, None, None, [], [])
    assert unlinked.failure is not None and "--endpoint" in unlinked.failure


def test_report_only_never_queues() -> None:
    report_only = Desired(Dimension.ESIM, {"iccid": NEW}, 1, Policy.REPORT_ONLY)
    verdict = judge(report_only, None, EID, profiles(OLD), [])
    assert not verdict.queue and verdict.failure is None and verdict.reported is not None


def test_a_missing_profile_is_listed_then_downloaded_then_enabled() -> None:
    code = "1$smdp.example.com$ORDER-1"
    want = Desired(Dimension.ESIM, {"iccid": NEW, "activation_code": code}, 3)
    old_only = [ProfileRecord(EID, OLD, ProfileState.ENABLED, True, 0.0, "Carrier")]

    def op(name: str, state: PackageState, result: dict[str, Any] | None = None) -> PackageRecord:
        return PackageRecord(
            EID, 7, b"\x01", "eim", ({"op": name},), b"", state, 0.0, package_actor(3),
            result=result,
        )  # fmt: skip

    assert judge(want, None, EID, [], []).list_profiles  # nothing known: ask first
    listed = op("listProfileInfo", PackageState.DONE)
    assert judge(want, None, EID, old_only, [listed]).download == code
    trigger = op("profileDownloadTrigger", PackageState.DELIVERED)
    waiting = judge(want, None, EID, old_only, [listed, trigger])
    assert not waiting.queue and waiting.download is None and waiting.failure is None
    failed = op("profileDownloadTrigger", PackageState.FAILED, {"results": [["x", 127]]})
    assert "download of" in (judge(want, None, EID, old_only, [failed]).failure or "")
    installed = [*old_only, ProfileRecord(EID, NEW, ProfileState.DISABLED, False, 0.0)]
    done = op("profileDownloadTrigger", PackageState.DONE, {"iccid": NEW})
    assert judge(want, None, EID, installed, [done]).queue  # now the enable
    # without an activation code a missing profile is simply enabled (and refused if absent)
    plain = Desired(Dimension.ESIM, {"iccid": NEW}, 3)
    assert judge(plain, None, EID, old_only, []).queue
