"""Object 32001, Fleetloop Config: fleetloop's own object for configuration rollouts.

A config change is a desired state that must be written, verified, applied, acknowledged and,
when it goes wrong, rolled back — on a device that may sleep for hours between contacts and
whose only way home is the configuration being changed. The object is shaped around that:

1. the server writes Config Version, Bundle and Bundle Digest together (one Write on the
   instance; block-wise when the bundle is large);
2. it executes Apply with the version it expects (``0='<version>'``), so a stale Apply cannot
   install a newer or older bundle that a concurrent write left behind;
3. the device checks the SHA-256 of Bundle against Bundle Digest *before* touching anything,
   validates the bundle, keeps the running version as Previous Version, and applies;
4. Apply Result and Applied Version are observed (or sent with the Send operation), so the
   server learns the outcome without polling; Apply Result Detail says why it failed;
5. with a Health Check Window set, the device reverts to Previous Version by itself if it cannot
   reach the server again within the window after applying — a bad APN or server URI in a
   bundle then heals itself instead of stranding the device; Rollback lets the server revert
   on application-level telemetry.

Feature flags, reporting interval and policy group are small, frequently changed settings that
take effect on Write without the bundle ceremony.

The id sits in 26241..32768, the x-label range OMNA long designated for private objects that
need no registration. OMNA now also accepts registrations there, so the test suite checks the
id against the registry copy; an id clash only matters if one device hosts both objects.
"""

from __future__ import annotations

from enum import IntEnum

from objects.builtin._dsl import (
    INTEGER,
    MANDATORY,
    MULTIPLE,
    NONE,
    OPAQUE,
    OPTIONAL,
    SINGLE,
    STRING,
    TIME,
    UNSIGNED,
    obj,
    res,
)

FLEET_CONFIG_OBJECT_ID = 32001
"""Object id of :data:`FLEET_CONFIG`; within the private x-label range 26241..32768."""


class FleetConfigResource(IntEnum):
    """Resource ids of the Fleetloop Config object, so server code names them, not numbers."""

    CONFIG_VERSION = 0
    BUNDLE = 1
    BUNDLE_DIGEST = 2
    APPLY = 3
    APPLIED_VERSION = 4
    APPLY_RESULT = 5
    APPLY_RESULT_DETAIL = 6
    FEATURE_FLAGS = 7
    REPORTING_INTERVAL = 8
    POLICY_GROUP = 9
    LAST_APPLIED_TIME = 10
    PREVIOUS_VERSION = 11
    HEALTH_CHECK_WINDOW = 12
    ROLLBACK = 13


class FleetConfigResult(IntEnum):
    """Codes of Apply Result (/32001/0/5): where the last rollout on this device stands.

    Writing Config Version or Bundle resets the result to IDLE, as writing a firmware package
    resets Update Result; every other transition is the device's.
    """

    IDLE = 0
    """Nothing applied since the current bundle was written (or ever)."""
    APPLYING = 1
    """Apply in progress, including the health-check window after a successful apply."""
    APPLIED = 2
    """Config Version is in effect: Applied Version equals it."""
    REJECTED_INVALID = 3
    """The bundle failed parsing or validation; nothing changed."""
    REJECTED_DIGEST_MISMATCH = 4
    """SHA-256 of Bundle differs from Bundle Digest (or no digest); nothing changed."""
    FAILED_APPLY = 5
    """Applying failed part-way; the device restored the configuration it was running."""
    ROLLED_BACK = 6
    """Applied, then reverted: health-check window expired or Rollback was executed."""
    VALIDATED = 7
    """A validate-only Apply (argument 1) found the bundle sound; nothing changed."""
    REJECTED_VERSION_MISMATCH = 8
    """Apply named a version other than Config Version; nothing changed."""

    @property
    def is_final(self) -> bool:
        """True once the device will not change the result by itself any more."""
        return self not in (FleetConfigResult.IDLE, FleetConfigResult.APPLYING)

    @property
    def is_failure(self) -> bool:
        """True for outcomes a rollout counts against its health gate."""
        return self in _FAILURES

    @property
    def config_changed(self) -> bool:
        """True if the device ended up on a different configuration than before the Apply."""
        return self is FleetConfigResult.APPLIED


_FAILURES = frozenset(
    {
        FleetConfigResult.REJECTED_INVALID,
        FleetConfigResult.REJECTED_DIGEST_MISMATCH,
        FleetConfigResult.FAILED_APPLY,
        FleetConfigResult.ROLLED_BACK,
        FleetConfigResult.REJECTED_VERSION_MISMATCH,
    }
)

_RESULT_RANGE = f"0..{max(FleetConfigResult)}"

FLEET_CONFIG = obj(
    FLEET_CONFIG_OBJECT_ID,
    "Fleetloop Config",
    "Desired configuration bundle, its verified application, rollback and runtime settings.",
    version="1.0",
    lwm2m="1.1",
    instances=SINGLE,
    presence=OPTIONAL,
    resources=[
        res(0, "Config Version", "RW", SINGLE, MANDATORY, STRING,
            "Version of the staged (desired) bundle; compared for equality only.",
            range="0..64"),
        res(1, "Bundle", "W", SINGLE, MANDATORY, OPAQUE,
            "Bundle payload (CBOR map); write-only so secrets in it are never read back."),
        res(2, "Bundle Digest", "RW", SINGLE, MANDATORY, OPAQUE,
            "SHA-256 of Bundle; checked before anything is applied.", range="32"),
        res(3, "Apply", "E", SINGLE, MANDATORY, NONE,
            "Apply the staged bundle; args 0='<expected version>', 1 validate only."),
        res(4, "Applied Version", "R", SINGLE, MANDATORY, STRING,
            "Version in effect; observe it to confirm a rollout.", range="0..64"),
        res(5, "Apply Result", "R", SINGLE, MANDATORY, INTEGER,
            "Outcome of the last Apply (FleetConfigResult); observe it.",
            range=_RESULT_RANGE),
        res(6, "Apply Result Detail", "R", SINGLE, OPTIONAL, STRING,
            "Why the last Apply failed, e.g. the offending key.", range="0..255"),
        res(7, "Feature Flags", "RW", MULTIPLE, OPTIONAL, STRING,
            "One 'name=value' flag per instance; effective on Write."),
        res(8, "Reporting Interval", "RW", SINGLE, OPTIONAL, UNSIGNED,
            "Period of telemetry Sends; 0 stops periodic telemetry.", units="s"),
        res(9, "Policy Group", "RW", SINGLE, OPTIONAL, STRING,
            "Policy group the device belongs to (e.g. canary, eu-west-prod).",
            range="0..64"),
        res(10, "Last Applied Time", "R", SINGLE, OPTIONAL, TIME,
            "When Applied Version last changed (apply or rollback)."),
        res(11, "Previous Version", "R", SINGLE, OPTIONAL, STRING,
            "Version kept for rollback; empty if none.", range="0..64"),
        res(12, "Health Check Window", "RW", SINGLE, OPTIONAL, UNSIGNED,
            "Revert if the server is unreachable this long after Apply; 0 disables.",
            units="s"),
        res(13, "Rollback", "E", SINGLE, OPTIONAL, NONE,
            "Revert to Previous Version now."),
    ],
)  # fmt: skip
