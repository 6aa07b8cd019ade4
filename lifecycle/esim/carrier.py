"""The carrier check of an eSIM switch: after the eUICC's signed enable result, the device
re-registered with the DM server -- over which network?

The expected networks are the operator's: an optional ``plmns`` list (``"MCC-MNC"``) on the
desired ``esim`` value (``--plmn`` on ``fleetloop campaign create --kind esim``). The network
the device is served by is what it reports in the LwM2M Connectivity Monitoring object:
``/4/0/10`` (SMCC) and ``/4/0/9`` (SMNC), read from the device after the registration.

:func:`judge_carrier` is the verdict (pure): the served PLMN is one of the expected ones ->
verified; another one -> failed, the message naming the device, both PLMNs and the fix; no
expectation configured, no object 4, or no answer -> verified on the registration alone, and
the reason says ``carrier not checked (...)``. :meth:`EsimComponent.check_carrier
<lifecycle.esim.component.EsimComponent.check_carrier>` reads the device and audits the
verdict; the campaign engine asks it when a device in ``registering`` is heard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lwm2m.codec.link import parse_registration
from lwm2m.model.nodes import ObjectInstance, SingleResource

CONNECTIVITY = 4
SMNC, SMCC = 9, 10
_PLMN = re.compile(r"^(\d{3})-?(\d{2,3})$")


def parse_plmn(text: str) -> tuple[int, int]:
    """``"310-260"`` (or ``"310260"``) -> (310, 260); ValueError if it is no PLMN."""
    m = _PLMN.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a PLMN (MCC-MNC, e.g. 310-260)")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class CarrierVerdict:
    """``ok``: the step may be verified; ``checked``: the network was compared; ``seen``:
    the PLMN the device reported (``"MCC-MNC"``); ``reason``: one line for the campaign's
    report and the audit."""

    ok: bool
    checked: bool
    reason: str
    seen: str | None = None
    expected: tuple[str, ...] = ()
    source: str = ""
    """Where ``seen`` came from: ``reported`` (an observation or Send since the registration)
    or ``read`` (a Read of /4/0 after it)."""

    def json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "seen": self.seen,
            "expected": list(self.expected),
            "reason": self.reason,
            "source": self.source,
        }


def expected_plmns(value: Mapping[str, Any]) -> tuple[str, ...]:
    """The expected PLMNs of a desired ``esim`` value (empty: none configured)."""
    raw = value.get("plmns") or ()
    return tuple(str(p) for p in raw) if isinstance(raw, list | tuple) else ()


def has_connectivity_object(object_links: str) -> bool:
    """Whether a Register/Update payload lists object 4 instance 0 (or object 4)."""
    try:
        found = parse_registration(object_links)
    except ValueError:
        return False
    return found.supports(CONNECTIVITY) and (
        0 in found.instances_of(CONNECTIVITY) or not found.instances_of(CONNECTIVITY)
    )


def served_plmn(content: Any) -> tuple[int, int] | None:
    """(MCC, MNC) from a Read of /4/0: SMCC and SMNC; None where either is absent."""
    if not isinstance(content, ObjectInstance):
        return None
    found: dict[int, int] = {}
    for rid in (SMCC, SMNC):
        res = content.resources.get(rid)
        if isinstance(res, SingleResource) and isinstance(res.value.value, int):
            found[rid] = int(res.value.value)
    if len(found) != 2:
        return None
    return found[SMCC], found[SMNC]


def _shown(mcc: int, mnc: int, expected: Iterable[str]) -> str:
    for text in expected:  # the operator's spelling where it matches (3-digit MNCs)
        if parse_plmn(text) == (mcc, mnc):
            return text
    return f"{mcc:03d}-{mnc:02d}"


def not_checked(why: str, expected: Sequence[str] = ()) -> CarrierVerdict:
    return CarrierVerdict(True, False, f"carrier not checked ({why})", expected=tuple(expected))


def judge_carrier(
    endpoint: str,
    iccid: str,
    expected: Sequence[str],
    *,
    has_object4: bool,
    plmn: tuple[int, int] | None,
    error: str | None = None,
) -> CarrierVerdict:
    """The carrier verdict of ``endpoint`` after it registered over profile ``iccid`` (module
    docstring). ``plmn``: (SMCC, SMNC) read from the device; ``error``: why the read gave
    none."""
    expected = tuple(expected)
    if not expected:
        return not_checked(
            f"no expected PLMN is configured for profile {iccid}: give plmns on the esim "
            "value (--plmn MCC-MNC)"
        )
    if not has_object4:
        return not_checked(
            f"{endpoint} has no Connectivity Monitoring object /4/0 to report its network",
            expected,
        )
    if plmn is None:
        why = error or "it did not report SMCC /4/0/10 and SMNC /4/0/9"
        return not_checked(f"{endpoint}: {why}", expected)
    seen = _shown(plmn[0], plmn[1], expected)
    wanted = ", ".join(expected)
    if plmn in {parse_plmn(p) for p in expected}:
        return CarrierVerdict(
            True, True, f"registered over PLMN {seen} (expected {wanted})", seen, expected
        )
    return CarrierVerdict(
        False,
        True,
        f"{endpoint} registered over PLMN {seen} after enabling profile {iccid}, but the "
        f"profile's carrier is expected on {wanted}: the device is served by another network "
        "(roaming, or the wrong profile). If that network is a partner of the carrier, add it "
        "to the esim value's plmns (--plmn); otherwise check the profile and its coverage "
        "before going on (campaign report, revert the cohort)",
        seen,
        expected,
    )


__all__ = [
    "CarrierVerdict",
    "expected_plmns",
    "has_connectivity_object",
    "judge_carrier",
    "not_checked",
    "parse_plmn",
    "served_plmn",
]
