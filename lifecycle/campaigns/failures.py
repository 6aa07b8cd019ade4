"""Why a device failed, as a :class:`~lifecycle.campaigns.model.FailureKind` (sans-IO).

Only TRANSIENT failures are retried (with backoff, up to ``retry.max_attempts``); a
DEVICE_PERMANENT one fails that device at once; an ARTIFACT_BAD one fails it and tells the
engine the artifact itself is suspect (it may quarantine it, which halts every campaign that
uses it). The line between the last two matters: a cohort of devices that cannot take a
change is a gate matter (revert that region, carry on elsewhere), whereas a bad artifact
would hurt every device it reaches. So ARTIFACT_BAD is kept for evidence about the artifact
(integrity failure, an image that does not boot, a config the device applied and then had to
roll back), and a device that merely *refuses* something stays DEVICE_PERMANENT.

The classifiers never raise: they run inside the engine on whatever a device reported. A
code that is not a failure (success, in progress) or that nobody defined explains nothing
about why the device failed, so it gets the conservative DEVICE_PERMANENT: no blind retry,
and nothing blamed on the artifact.
"""

from __future__ import annotations

import re

from lifecycle.campaigns.model import FailureKind
from objects.builtin.fleet_config import FleetConfigResult
from objects.enums import FirmwareUpdateResult

T = FailureKind.TRANSIENT
P = FailureKind.DEVICE_PERMANENT
A = FailureKind.ARTIFACT_BAD

#: /5/0/5 Update Result (LwM2M Core E.6) -> kind.
FIRMWARE: dict[FirmwareUpdateResult, FailureKind] = {
    FirmwareUpdateResult.NOT_ENOUGH_FLASH: P,  # the image does not fit this device
    # Out of RAM *during download*: objects.enums marks it retryable (RAM in use by other
    # work is freed later), and the retry cap bounds the cost if it is not.
    FirmwareUpdateResult.OUT_OF_RAM: T,
    FirmwareUpdateResult.CONNECTION_LOST: T,
    FirmwareUpdateResult.INTEGRITY_CHECK_FAILURE: A,
    FirmwareUpdateResult.UNSUPPORTED_PACKAGE_TYPE: A,
    FirmwareUpdateResult.INVALID_URI: A,  # the URI fleetloop serves the image at is wrong
    FirmwareUpdateResult.UPDATE_FAILED: A,  # installed and did not boot: boot loop
    FirmwareUpdateResult.UNSUPPORTED_PROTOCOL: P,  # this device cannot fetch over that scheme
    FirmwareUpdateResult.CANCELLED: T,
    FirmwareUpdateResult.DEFERRED: T,  # the user deferred it: ask again later
}

#: /32001/0/5 Apply Result -> kind (each code's docstring in objects/builtin/fleet_config.py).
CONFIG: dict[FleetConfigResult, FailureKind] = {
    # "The bundle failed parsing or validation": validation is the device's own (its schema,
    # its region's rules), so a bundle refused by some devices is a cohort matter for the
    # gates, not proof the bundle is bad -- a bundle refused everywhere fails every cohort.
    FleetConfigResult.REJECTED_INVALID: P,
    # SHA-256 of what arrived differs from the digest written beside it. Bundles are
    # content-addressed by fleetloop, so the bytes were damaged or cut on the way: resend.
    FleetConfigResult.REJECTED_DIGEST_MISMATCH: T,
    # "Applying failed part-way; the device restored what it was running": the device could
    # not take it and is safe; retrying the same bundle would most likely fail the same way.
    FleetConfigResult.FAILED_APPLY: P,
    # "Applied, then reverted: health-check window expired": the config made the device
    # unhealthy -- the config analogue of a firmware image that does not boot.
    FleetConfigResult.ROLLED_BACK: A,
    # "Apply named a version other than Config Version": another write raced ours; writing
    # and applying again fixes it.
    FleetConfigResult.REJECTED_VERSION_MISMATCH: T,
}

#: CoAP 4.xx codes that are worth retrying: 4.08 Request Entity Incomplete (a block-wise
#: transfer lost blocks), 4.12 Precondition Failed (the resource changed under us), 4.29 Too
#: Many Requests (RFC 8516: the device asks us to slow down).
COAP_TRANSIENT_4XX = frozenset({(4, 8), (4, 12), (4, 29)})
#: CoAP 5.xx codes that are not worth retrying: 5.01 Not Implemented, 5.05 Proxying Not
#: Supported. The others (5.00 Internal Server Error, 5.02, 5.03 Service Unavailable, 5.04
#: Gateway Timeout) describe a passing condition.
COAP_PERMANENT_5XX = frozenset({(5, 1), (5, 5)})

_DOTTED = re.compile(r"^\s*([0-9])\.([0-9]{2})\b")
_PLAIN = re.compile(r"^\s*([2-5])([0-9]{2})\b")


def classify_firmware(update_result: int) -> FailureKind:
    """The kind of a firmware Update Result (/5/0/5) failure (table :data:`FIRMWARE`); an
    unknown (vendor) code, or one that is no failure (0, 1), is DEVICE_PERMANENT."""
    try:
        code = FirmwareUpdateResult(update_result)
    except ValueError:
        return P
    return FIRMWARE.get(code, P)


def classify_config(apply_result: int) -> FailureKind:
    """The kind of a config Apply Result (/32001/0/5) failure (table :data:`CONFIG`); an
    unknown code, or one that is no failure (idle, applying, applied, validated), is
    DEVICE_PERMANENT."""
    try:
        code = FleetConfigResult(apply_result)
    except ValueError:
        return P
    return CONFIG.get(code, P)


def _coap_code(code: str | int) -> tuple[int, int] | None:
    """(class, detail) from 132 (the code byte), 404, "4.04", "404" or "4.04 Not Found"."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        # The code bytes of 2.xx/4.xx/5.xx are 64..191; 200..599 can only be the plain form.
        if 200 <= code <= 599:
            return code // 100, code % 100
        if 0 <= code < 200:
            return code >> 5, code & 0x1F
        return None
    match = _DOTTED.match(code) or _PLAIN.match(code)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def classify_coap(code: str | int) -> FailureKind:
    """The kind of a failed CoAP request: the response code (the code byte as an int below
    200, e.g. ``0x84``, or ``404``, ``"4.04"``, ``"4.04 Not Found"``), or ``"timeout"`` when no
    response came (TRANSIENT: one lost exchange; the step deadline catches a silent device).

    4.xx is DEVICE_PERMANENT (the device refuses the request: not found, not allowed, not
    acceptable, unauthorized...) except :data:`COAP_TRANSIENT_4XX`; 5.xx is TRANSIENT except
    :data:`COAP_PERMANENT_5XX`. Text that is no code is judged by :func:`classify_reason`.
    A success code (2.xx) or a number that is no code is DEVICE_PERMANENT (module docstring).
    """
    parsed = _coap_code(code)
    if parsed is None:
        return classify_reason(code) if isinstance(code, str) else P
    klass, detail = parsed
    if klass == 4:
        return T if (klass, detail) in COAP_TRANSIENT_4XX else P
    if klass == 5:
        return P if (klass, detail) in COAP_PERMANENT_5XX else T
    return P


_TRANSIENT_WORDS = (
    "timeout",
    "timed out",
    "time out",
    "unreachable",
    "connection",
    "unavailable",
    "busy",
    "retry",
    "reset",
    "temporar",
    "cancel",
    "deferred",
)
_ARTIFACT_WORDS = ("integrity", "signature", "boot loop", "bootloop", "does not boot", "corrupt")


def classify_reason(text: str) -> FailureKind:
    """A best guess from a free-text reason (a transport error, a device's detail string):
    words of a passing condition (timeout, connection, busy, unavailable...) are TRANSIENT,
    words about the artifact (integrity, signature, boot loop) ARTIFACT_BAD, anything else
    DEVICE_PERMANENT -- an unexplained refusal is not retried blindly."""
    lowered = text.lower()
    if any(word in lowered for word in _ARTIFACT_WORDS):
        return A
    if any(word in lowered for word in _TRANSIENT_WORDS):
        return T
    return P


__all__ = [
    "COAP_PERMANENT_5XX",
    "COAP_TRANSIENT_4XX",
    "CONFIG",
    "FIRMWARE",
    "classify_coap",
    "classify_config",
    "classify_firmware",
    "classify_reason",
]
