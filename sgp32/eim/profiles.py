"""Profile state per EID: how package results and notifications move it (pure functions).

An enable with rollbackFlag is only *confirmed* when its result reaches the eIM - the IPA sends
it over the newly enabled profile, so its arrival proves the new profile has connectivity. A
notification that the profile was enabled, seen before that result, leaves it
"enabled, pending confirmation". A result carrying `rollbackResult ok` means the IPA could not
reach the eIM over the new profile and the eUICC went back: the target stays disabled and the
previously enabled profile is still the enabled one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from sgp32.eim.model import ProfileRecord, ProfileState
from sgp32.identifiers import iccid_from_bytes
from sgp32.notifications import ProfileNotification

OK = 0
NOT_IN_DISABLED_STATE = 2  # enableResult profileNotInDisabledState


def _by_iccid(profiles: Iterable[ProfileRecord]) -> dict[str, ProfileRecord]:
    return {p.iccid: p for p in profiles}


def _set(table: dict[str, ProfileRecord], eid: str, iccid: str, now: float, **changes: Any) -> None:
    current = table.get(iccid) or ProfileRecord(eid, iccid, ProfileState.DISABLED, False, now)
    table[iccid] = dataclasses.replace(current, updated_at=now, **changes)


def _enable(
    table: dict[str, ProfileRecord],
    eid: str,
    iccid: str,
    now: float,
    state: ProfileState,
    note: str,
) -> None:
    for other in list(table.values()):
        if other.iccid != iccid and other.state != ProfileState.DISABLED:
            _set(table, eid, other.iccid, now, state=ProfileState.DISABLED, note=f"{iccid} enabled")
    _set(table, eid, iccid, now, state=state, note=note)


def apply_results(
    eid: str,
    profiles: Sequence[ProfileRecord],
    operations: Sequence[dict[str, Any]],
    results: Sequence[tuple[str, Any]],
    now: float,
) -> list[ProfileRecord]:
    """The profiles after a signed package result (results pair with operations in order)."""
    table = _by_iccid(profiles)
    rolled_back = any(name == "rollbackResult" and value == OK for name, value in results)
    paired = [r for r in results if r[0] != "rollbackResult"]
    for op, (name, value) in zip(operations, paired, strict=False):
        kind, iccid = op["op"], op.get("iccid")
        if name == "listProfileInfoResult":
            table = _by_iccid(from_profile_info(eid, value, now))
            continue
        if kind == "enable" and name == "enableResult" and value == NOT_IN_DISABLED_STATE:
            # The signed answer says the profile is already enabled -- and it reached us, so
            # whatever the eIM had as pending (a rollback's notification) is confirmed.
            if iccid is not None and not rolled_back:
                _enable(table, eid, iccid, now, ProfileState.ENABLED, "already enabled")
            continue
        if value != OK:
            continue
        if kind == "enable" and iccid is not None:
            if rolled_back:
                _set(table, eid, iccid, now, state=ProfileState.DISABLED, note="rolled back")
            else:
                _enable(table, eid, iccid, now, ProfileState.ENABLED, "confirmed")
        elif kind == "disable" and iccid is not None:
            _set(table, eid, iccid, now, state=ProfileState.DISABLED, note="disabled")
        elif kind == "delete" and iccid is not None:
            table.pop(iccid, None)
        elif kind == "setFallbackAttribute" and iccid is not None:
            for other in list(table):
                _set(table, eid, other, now, fallback=other == iccid)
            _set(table, eid, iccid, now, fallback=True)
        elif kind == "unsetFallbackAttribute":
            for other in list(table):
                _set(table, eid, other, now, fallback=False)
    if rolled_back and not any(name == "enableResult" for name, _ in paired):
        # The rollback result alone (SGP.32 5.9.16 is not at hand to say whether the enable's
        # own result travels with it): the enable of this package did not stick either way.
        for op in operations:
            if op["op"] == "enable" and op.get("iccid") is not None:
                _set(table, eid, op["iccid"], now, state=ProfileState.DISABLED, note="rolled back")
    return sorted(table.values(), key=lambda p: p.iccid)


def from_profile_info(eid: str, response: tuple[str, Any], now: float) -> list[ProfileRecord]:
    """The whole profile list of a listProfileInfo result (it replaces what the eIM had)."""
    name, value = response
    if name != "profileInfoListOk":
        return []
    out = []
    for info in value:
        if "iccid" not in info:
            continue
        state = ProfileState.ENABLED if info.get("profileState") == 1 else ProfileState.DISABLED
        out.append(
            ProfileRecord(
                eid=eid,
                iccid=iccid_from_bytes(info["iccid"]),
                state=state,
                fallback=bool(info.get("fallbackAttribute", False)),
                updated_at=now,
                carrier=info.get("serviceProviderName"),
                note="listProfileInfo",
            )
        )
    return sorted(out, key=lambda p: p.iccid)


def apply_notification(
    eid: str,
    profiles: Sequence[ProfileRecord],
    notification: ProfileNotification,
    awaiting_confirmation: bool,
    now: float,
) -> list[ProfileRecord]:
    """The profiles after a verified notification. `awaiting_confirmation`: an enable with
    rollbackFlag for this ICCID has no result yet, so an enable here is only pending."""
    table = _by_iccid(profiles)
    iccid = notification.iccid
    if iccid is None:
        return list(profiles)
    for event in notification.events:
        if event == "install":
            _set(table, eid, iccid, now, note="installed")
        elif event == "enable":
            current = table.get(iccid)
            if current is not None and current.state == ProfileState.ENABLED:
                continue  # the result already confirmed it
            state = ProfileState.PENDING if awaiting_confirmation else ProfileState.ENABLED
            _enable(table, eid, iccid, now, state, "notification")
        elif event == "disable":
            _set(table, eid, iccid, now, state=ProfileState.DISABLED, note="notification")
        elif event == "delete":
            table.pop(iccid, None)
    return sorted(table.values(), key=lambda p: p.iccid)
