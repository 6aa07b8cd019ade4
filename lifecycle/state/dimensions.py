"""What "desired" and "reported" mean per dimension, and the exact status between them (sans-IO).

A device's state is a handful of **dimensions** (:class:`Dimension`): firmware, config (object
32001's version + digest), connectivity (the APN set of object 11 and the active APN), feature
flags, credentials generation, eSIM profile (the enabled one, ``esim``) and the eSIM profiles
present on the eUICC (``esim_download``: the first phase of a carrier switch). For each one
this module says

* how an operator's desired value is validated and normalised (:func:`parse_desired`),
* which device paths report it and how the reported value is read from them
  (:data:`WATCHED`, :func:`reported_value`),
* when a reported value satisfies a desired one (:func:`satisfies`),
* the status of a device on a dimension (:func:`status`), and
* what to do next to get there (:func:`plan`), as data for the reconciler to execute.

**The generation rule.** Every desired value carries a ``generation`` that grows by one each
time its value changes (Kubernetes' ``metadata.generation``). LwM2M devices do not echo our
generations, so the reported side records ``observed_generation``: the generation of the
desired value the device was last *verified* to run -- a read-back by the reconciler or a
notification whose value satisfied that desired value (:func:`observed_after`). A report that
does not satisfy the desired value leaves ``observed_generation`` as it was. That gives exact
statuses without guessing:

=========  ===================================================================================
applied    the reported value satisfies the desired one and was verified for this generation
pending    not verified for this generation yet (never reported, or the change is under way)
drifted    the device was verified on this generation and now reports something else
failed     the device refused this generation for good (e.g. Apply Result 3: invalid bundle)
unknown    nothing reported for this dimension yet (never observed, or not supported)
=========  ===================================================================================

Nothing here does I/O; time and the device's values come in as arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from lwm2m.model import Path, ValueType
from objects.builtin.fleet_config import FleetConfigResource as Cfg
from objects.builtin.fleet_config import FleetConfigResult
from objects.enums import FirmwareUpdateResult, FirmwareUpdateState

JsonValue = Any
"""A JSON-compatible value (dict / list / str / int / bool / None)."""

Leaves = Mapping[Path, ValueType]
"""A device's reported values, flat: one entry per resource or resource instance."""


class StateError(ValueError):
    """A desired value is malformed; the message names the dimension and the fix."""

    def __init__(self, dimension: str, message: str) -> None:
        super().__init__(f"{dimension}: {message}")
        self.dimension = dimension
        self.message = message


class Dimension(StrEnum):
    """One aspect of a device that fleetloop drives to a desired value."""

    FIRMWARE = "firmware"
    CONFIG = "config"
    CONNECTIVITY = "connectivity"
    FLAGS = "flags"
    CREDENTIALS = "credentials"
    ESIM = "esim"
    ESIM_DOWNLOAD = "esim_download"
    """A profile is *present* on the eUICC (installed, enabled or not): the download phase of
    a carrier switch, verified by the eUICC's signed installation result / profile list
    before any enable is sent (docs/ESIM.md, "Switch a region to a new carrier")."""

    @classmethod
    def parse(cls, text: str) -> Dimension:
        name = ALIASES.get(text.strip().lower(), text.strip().lower())
        try:
            return cls(name)
        except ValueError:
            choices = ", ".join(d.value for d in cls)
            raise StateError(text, f"unknown dimension; use one of {choices}") from None


ALIASES = {
    "apn": "connectivity",
    "fw": "firmware",
    "feature-flags": "flags",
    "esim-download": "esim_download",
}


class Policy(StrEnum):
    """``enforce``: the reconciler drives drift to zero; ``report-only``: it only reports."""

    ENFORCE = "enforce"
    REPORT_ONLY = "report-only"


class Status(StrEnum):
    """Where a device stands on one dimension (module docstring)."""

    APPLIED = "applied"
    PENDING = "pending"
    DRIFTED = "drifted"
    FAILED = "failed"
    UNKNOWN = "unknown"
    UNMANAGED = "unmanaged"
    """No desired value is set: the reported value is shown, nothing is compared."""

    @property
    def out_of_line(self) -> bool:
        """Whether ``state drift`` lists it."""
        return self in (Status.PENDING, Status.DRIFTED, Status.FAILED, Status.UNKNOWN)


#: Dimensions the reconciler's LwM2M pass can apply. The eSIM ones are not among them: the
#: eUICC is reached through the eIM over ESipa, so the reconciler hands them to an *external
#: applier* (``Reconciler.external``, :mod:`lifecycle.esim` in serve). Credentials are rotated
#: by re-bootstrap through the reconciler's ``credentials`` hook
#: (:mod:`lifecycle.artifacts.credentials`; without it: failed, saying so).
APPLICABLE = frozenset(
    {
        Dimension.FIRMWARE,
        Dimension.CONFIG,
        Dimension.CONNECTIVITY,
        Dimension.FLAGS,
        Dimension.CREDENTIALS,
    }
)

#: The order in which the reconciler applies a device's dimensions: cheap and local first,
#: those that cost the device its connection (APN re-attach, firmware reboot, re-bootstrap)
#: last.
ORDER = (
    Dimension.FLAGS,
    Dimension.CONFIG,
    Dimension.CONNECTIVITY,
    Dimension.FIRMWARE,
    Dimension.CREDENTIALS,
)

CFG = 32001
FW_VERSION = Path.of(3, 0, 3)
FW_STATE = Path.of(5, 0, 3)
FW_RESULT = Path.of(5, 0, 5)
FW_URI = Path.of(5, 0, 1)
FW_UPDATE = Path.of(5, 0, 2)
FW_PACKAGE = Path.of(5, 0, 0)
CFG_VERSION = Path.of(CFG, 0, Cfg.CONFIG_VERSION)
CFG_INSTANCE = Path.of(CFG, 0)
CFG_DIGEST = Path.of(CFG, 0, Cfg.BUNDLE_DIGEST)
CFG_APPLY = Path.of(CFG, 0, Cfg.APPLY)
CFG_APPLIED = Path.of(CFG, 0, Cfg.APPLIED_VERSION)
CFG_RESULT = Path.of(CFG, 0, Cfg.APPLY_RESULT)
CFG_DETAIL = Path.of(CFG, 0, Cfg.APPLY_RESULT_DETAIL)
CFG_FLAGS = Path.of(CFG, 0, Cfg.FEATURE_FLAGS)
ACTIVE_APN = Path.of(4, 0, 7)
APN_PROFILES = Path.of(11)
RADIO = Path.of(4, 0, 0)

#: The paths whose values make up each dimension's reported value.
WATCHED: dict[Dimension, tuple[Path, ...]] = {
    Dimension.FIRMWARE: (FW_VERSION, FW_STATE, FW_RESULT),
    Dimension.CONFIG: (CFG_APPLIED, CFG_RESULT, CFG_DETAIL, CFG_DIGEST),
    Dimension.FLAGS: (CFG_FLAGS,),
    Dimension.CONNECTIVITY: (ACTIVE_APN, APN_PROFILES),
    Dimension.CREDENTIALS: (),
    Dimension.ESIM: (),
    Dimension.ESIM_DOWNLOAD: (),
}

#: What the state observer observes on a device (when its object links include it): small
#: resources whose change matters. A composite notification carries all of them whenever one
#: changes, so the APN profiles (/11, ten values per profile) and the staged digest are read
#: (at set-up and in every verification) instead of observed: the active APN (/4/0/7) is the
#: connectivity fact that drifts on its own.
OBSERVED: tuple[Path, ...] = (
    FW_VERSION,
    FW_STATE,
    FW_RESULT,
    CFG_APPLIED,
    CFG_RESULT,
    CFG_FLAGS,
    ACTIVE_APN,
)

#: Read once when the observation is set up (the rest of what the dimensions report).
READ_AT_SETUP: tuple[Path, ...] = (CFG_DIGEST, CFG_DETAIL, APN_PROFILES)

#: Read once at set-up for the inventory (published as a ``DeviceRead``): manufacturer,
#: model, network bearer and serving MNC/MCC; they change seldom, and a re-registration reads
#: them again.
FACTS_AT_SETUP: tuple[Path, ...] = (
    Path.of(3, 0, 0),
    Path.of(3, 0, 1),
    Path.of(4, 0, 0),
    Path.of(4, 0, 9),
    Path.of(4, 0, 10),
)


def dimensions_of(paths: set[Path] | frozenset[Path]) -> set[Dimension]:
    """The dimensions whose reported value depends on any of ``paths`` (or their children)."""
    found = set()
    for dim, watched in WATCHED.items():
        if any(p.startswith(w) or w.startswith(p) for p in paths for w in watched):
            found.add(dim)
    return found


# -- desired values ----------------------------------------------------------------------------

_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+~-]{0,63}$")
_APN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.-]{0,99}$")
_FLAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_ICCID = re.compile(r"^89[0-9]{16,20}F?$")
_ACTIVATION_CODE = re.compile(r"^1\$[^$\s/]+\$[^$]*(\$.*)?$")
_PLMN = re.compile(r"^([0-9]{3})-?([0-9]{2,3})$")


def _version(dim: str, text: object, what: str = "version") -> str:
    if not isinstance(text, str) or not _VERSION.match(text):
        raise StateError(
            dim, f"{what} {text!r} is not a version (1..64 of letters, digits, . _ + ~ -)"
        )
    return text


def parse_desired(dimension: Dimension, raw: JsonValue) -> dict[str, JsonValue]:
    """The normalised desired value of ``dimension`` from what an operator gave.

    Accepted forms: firmware ``"2.4.1"`` or ``{"version": ..., "uri": ...}`` (the image URI the
    device pulls) or ``{"version": ..., "image": <sha-256 hex>, "method": "push"}`` (the
    repository image the reconciler writes to /5/0/0, :mod:`lifecycle.artifacts.firmware`);
    config ``{"version": ..., "digest": <sha-256 hex>}`` (the API resolves a bundle name to
    this); connectivity ``"apn-a,apn-b"`` (the first is active) or ``{"apns": [...],
    "active": ...}``; flags ``{"name": "value", ...}`` (the whole set); credentials
    ``{"generation": N}``; esim ``"8944..."`` or ``{"iccid": ..., "activation_code": ...}`` (the
    code downloads the profile first where the eUICC does not have it; optional ``plmns``:
    ``["MCC-MNC", ...]``, the networks a campaign's carrier check expects); esim_download
    ``{"iccid": ..., "activation_code": ...}`` (both required: the profile to have on the eUICC,
    and where to download it from when it is not).
    """
    dim = dimension.value
    if dimension is Dimension.FIRMWARE:
        if isinstance(raw, str):
            raw = {"version": raw}
        if not isinstance(raw, dict) or set(raw) - {"version", "uri", "image", "method"}:
            raise StateError(dim, 'give "2.4.1" or {"version": "2.4.1", "uri": "coap://..."}')
        value: dict[str, JsonValue] = {"version": _version(dim, raw.get("version"))}
        if raw.get("method", "pull") not in ("pull", "push"):
            raise StateError(dim, f"method {raw.get('method')!r} is not pull or push")
        if raw.get("method") == "push" or raw.get("image") is not None:
            # Push: the reconciler writes the repository image's bytes to /5/0/0 (Block1).
            image = raw.get("image")
            if raw.get("method") != "push" or raw.get("uri") is not None:
                raise StateError(dim, 'push is {"version": ..., "image": SHA256, "method": "push"}')
            if not isinstance(image, str) or not re.fullmatch(r"[0-9a-f]{64}", image):
                raise StateError(dim, f"image {image!r} is not a SHA-256 in lowercase hex")
            value.update(image=image, method="push")
            return value
        uri = raw.get("uri")
        if uri is not None:
            if not isinstance(uri, str) or not re.match(r"^(coaps?|https?)://\S+$", uri):
                raise StateError(dim, f"uri {uri!r} is not a coap(s):// or http(s):// URI")
            value["uri"] = uri
        return value
    if dimension is Dimension.CONFIG:
        if not isinstance(raw, dict) or set(raw) - {"version", "digest", "bundle"}:
            raise StateError(dim, "name a registered bundle (config=NAME)")
        digest = raw.get("digest")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise StateError(dim, f"digest {digest!r} is not a SHA-256 in lowercase hex")
        out: dict[str, JsonValue] = {"version": _version(dim, raw.get("version")), "digest": digest}
        if raw.get("bundle") is not None:
            out["bundle"] = str(raw["bundle"])
        return out
    if dimension is Dimension.CONNECTIVITY:
        if isinstance(raw, str):
            names = [a.strip() for a in raw.split(",") if a.strip()]
            raw = {"apns": names, "active": names[0] if names else None}
        if not isinstance(raw, dict) or set(raw) - {"apns", "active"}:
            raise StateError(dim, 'give "apn-a,apn-b" or {"apns": [...], "active": "apn-a"}')
        apns = raw.get("apns")
        if not isinstance(apns, list) or not apns or len(apns) > 8:
            raise StateError(dim, "apns must list 1..8 APNs")
        for apn in apns:
            if not isinstance(apn, str) or not _APN.match(apn):
                raise StateError(dim, f"{apn!r} is not an APN (letters, digits, dots, dashes)")
        if len(set(apns)) != len(apns):
            raise StateError(dim, "apns lists an APN twice")
        active = raw.get("active", apns[0])
        if active not in apns:
            raise StateError(dim, f"active APN {active!r} is not one of apns {apns}")
        return {"apns": list(apns), "active": active}
    if dimension is Dimension.FLAGS:
        if not isinstance(raw, dict) or len(raw) > 64:
            raise StateError(dim, 'give {"name": "value", ...} (at most 64 flags)')
        flags: dict[str, JsonValue] = {}
        for name, flag in sorted(raw.items()):
            if not isinstance(name, str) or not _FLAG.match(name):
                raise StateError(dim, f"flag name {name!r} must be an identifier")
            if isinstance(flag, bool):
                flag = "true" if flag else "false"
            if not isinstance(flag, str | int | float) or "=" in str(flag) or len(str(flag)) > 128:
                raise StateError(dim, f"flag {name} value {flag!r} must be text without '='")
            flags[name] = str(flag)
        return flags
    if dimension is Dimension.CREDENTIALS:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"generation": raw}
        gen = raw.get("generation") if isinstance(raw, dict) else None
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise StateError(dim, 'give {"generation": N} with N >= 0')
        return {"generation": gen}
    if dimension is Dimension.ESIM_DOWNLOAD:
        if not isinstance(raw, dict) or set(raw) != {"iccid", "activation_code"}:
            raise StateError(dim, 'give {"iccid": ..., "activation_code": "1$SM-DP+$matching ID"}')
        return _esim_value(dim, raw)
    if isinstance(raw, str):
        raw = {"iccid": raw}
    if not isinstance(raw, dict) or set(raw) - {"iccid", "activation_code", "plmns"}:
        raise StateError(dim, 'give "ICCID" or {"iccid": ..., "activation_code": "1$..."}')
    esim = _esim_value(dim, raw)
    if raw.get("plmns") is not None:  # the networks the device must register over (carrier check)
        plmns = raw["plmns"]
        if not isinstance(plmns, list) or not 1 <= len(plmns) <= 16:
            raise StateError(dim, 'plmns lists 1..16 networks, e.g. ["310-260", "310-410"]')
        found = [_PLMN.match(p) if isinstance(p, str) else None for p in plmns]
        bad = [p for p, m in zip(plmns, found, strict=True) if m is None]
        if bad:
            raise StateError(dim, f"plmns: {bad[0]!r} is not MCC-MNC (3 + 2 or 3 digits)")
        esim["plmns"] = sorted({f"{m.group(1)}-{m.group(2)}" for m in found if m is not None})
    return esim


def _esim_value(dim: str, raw: dict[str, JsonValue]) -> dict[str, JsonValue]:
    iccid = raw.get("iccid")
    if not isinstance(iccid, str) or not _ICCID.match(iccid):
        raise StateError(dim, f"iccid {iccid!r} is not an ICCID (89 and 16..20 digits)")
    esim: dict[str, JsonValue] = {"iccid": iccid}
    code = raw.get("activation_code")
    if code is not None:
        # Where the profile is not on the eUICC yet, the eIM downloads it first (lifecycle.esim).
        if not isinstance(code, str) or not _ACTIVATION_CODE.match(code):
            raise StateError(dim, "activation_code must be 1$SM-DP+ address$matching ID")
        esim["activation_code"] = code
    return esim


# -- reported values ---------------------------------------------------------------------------


def _under(leaves: Leaves, prefix: Path) -> list[tuple[Path, ValueType]]:
    return sorted((p, v) for p, v in leaves.items() if p.startswith(prefix))


def reported_value(dimension: Dimension, leaves: Leaves) -> dict[str, JsonValue] | None:
    """The reported value of ``dimension`` from a device's values, or None when the device
    reported nothing for it."""
    if dimension is Dimension.FIRMWARE:
        version = leaves.get(FW_VERSION)
        if version is None:
            return None
        out: dict[str, JsonValue] = {"version": str(version)}
        state, result = leaves.get(FW_STATE), leaves.get(FW_RESULT)
        if isinstance(state, int):
            out["update_state"] = _name(FirmwareUpdateState, state)
        if isinstance(result, int):
            out["update_result"] = _name(FirmwareUpdateResult, result)
        return out
    if dimension is Dimension.CONFIG:
        applied = leaves.get(CFG_APPLIED)
        if applied is None:
            return None
        out = {"version": str(applied)}
        result = leaves.get(CFG_RESULT)
        if isinstance(result, int):
            out["result"] = _name(FleetConfigResult, result)
        digest = leaves.get(CFG_DIGEST)
        if isinstance(digest, bytes) and digest:
            out["staged_digest"] = digest.hex()
        detail = leaves.get(CFG_DETAIL)
        if isinstance(detail, str) and detail:
            out["detail"] = detail
        return out
    if dimension is Dimension.FLAGS:
        entries = _under(leaves, CFG_FLAGS)
        if not entries and CFG_FLAGS not in leaves and CFG_APPLIED not in leaves:
            return None  # no object 32001 reported (an empty flag set has no leaves)
        flags: dict[str, JsonValue] = {}
        for _, entry in entries:
            name, _, flag = str(entry).partition("=")
            flags[name] = flag
        return dict(sorted(flags.items()))
    if dimension is Dimension.CONNECTIVITY:
        profiles: dict[int, dict[int, ValueType]] = {}
        for path, value in _under(leaves, APN_PROFILES):
            if len(path.ids) >= 3:
                profiles.setdefault(path.ids[1], {})[path.ids[2]] = value
        apns = []
        for _, resources in sorted(profiles.items()):
            apn = resources.get(1) or resources.get(0)
            if isinstance(apn, str) and apn:
                apns.append(apn)
        active_entries = _under(leaves, ACTIVE_APN)
        active = str(active_entries[0][1]) if active_entries else None
        if not apns and active is None:
            return None
        return {"apns": apns, "active": active}
    return None


def _name(kind: type[Enum], code: int) -> str:
    try:
        return str(kind(code).name.lower())
    except ValueError:
        return str(code)


def satisfies(dimension: Dimension, desired: Mapping[str, JsonValue], reported: Any) -> bool:
    """Whether a reported value is the desired one (extra reported detail is ignored).

    Firmware and config compare versions (config also the staged digest when reported, so a
    same-named bundle of other content is not taken for ours; config must also have been
    applied, not rolled back); flags compare the whole set; connectivity needs the active APN
    and every desired APN among the device's profiles (other profiles may stay: they are the
    device's fallback).
    """
    if not isinstance(reported, Mapping):
        return False
    if dimension is Dimension.FIRMWARE:
        return bool(reported.get("version") == desired.get("version"))
    if dimension is Dimension.CONFIG:
        if reported.get("version") != desired.get("version"):
            return False
        if reported.get("result") not in (None, "applied", "idle"):
            return False
        staged = reported.get("staged_digest")
        return staged is None or staged == desired.get("digest")
    if dimension is Dimension.FLAGS:
        return dict(reported) == dict(desired)
    if dimension is Dimension.CONNECTIVITY:
        have = reported.get("apns") or []
        return reported.get("active") == desired.get("active") and all(
            a in have for a in desired.get("apns", [])
        )
    if dimension is Dimension.ESIM_DOWNLOAD:
        # Present on the eUICC as the eIM knows it (a verified installation result or the
        # eUICC's signed profile list): enabled or not.
        return desired.get("iccid") in (reported.get("iccids") or ())
    if dimension is Dimension.ESIM:
        # Enabled, and confirmed: an enable with rollbackFlag that the eIM has only seen in a
        # notification ("enabled_pending") may still roll back (lifecycle.esim).
        return bool(
            reported.get("iccid") == desired.get("iccid")
            and reported.get("state", "enabled") == "enabled"
        )
    return dict(reported) == dict(desired)


# -- status and the generation rule ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Desired:
    """A desired value with its generation and policy."""

    dimension: Dimension
    value: dict[str, JsonValue]
    generation: int
    policy: Policy = Policy.ENFORCE


@dataclass(frozen=True, slots=True)
class Reported:
    """What the device last reported for a dimension, and what was verified of it."""

    dimension: Dimension
    value: dict[str, JsonValue] | None
    observed_generation: int | None = None
    failed_generation: int | None = None
    detail: str = ""


def observed_after(desired: Desired | None, value: Any, previous: int | None) -> int | None:
    """``observed_generation`` after a verified report of ``value`` (the generation rule):
    the desired generation when the value satisfies it, otherwise unchanged -- keeping the
    old one is what lets a later mismatch be told apart as drift."""
    if (
        desired is not None
        and value is not None
        and satisfies(desired.dimension, desired.value, value)
    ):
        return desired.generation
    return previous


def status(desired: Desired | None, reported: Reported | None) -> Status:
    """The exact status of one dimension (module docstring)."""
    if desired is None:
        return Status.UNMANAGED
    value = reported.value if reported is not None else None
    observed = reported.observed_generation if reported is not None else None
    failed = reported is not None and reported.failed_generation == desired.generation
    if value is not None and satisfies(desired.dimension, desired.value, value):
        return Status.APPLIED if observed == desired.generation else Status.PENDING
    if failed:
        return Status.FAILED
    if value is None:
        return Status.UNKNOWN
    if observed == desired.generation:
        return Status.DRIFTED
    return Status.PENDING


# -- what to do next ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteConfig:
    """Write Config Version + Bundle + Digest to /32001/0, then Execute Apply with the version."""

    version: str
    bundle: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class WriteFlags:
    """Replace /32001/0/7 with one ``name=value`` entry per flag."""

    entries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetApns:
    """Create an /11 profile for each APN in ``create``, then point the server account's APN
    Link (/1/x/10) at the profile of ``active``; ``existing`` maps APNs to their instance."""

    create: tuple[str, ...]
    active: str
    existing: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PullFirmware:
    """Write the image URI to /5/0/1: the device downloads it."""

    uri: str


@dataclass(frozen=True, slots=True)
class PushFirmware:
    """Write the image bytes (the repository image with SHA-256 ``image``) to /5/0/0 in a
    block-wise (Block1) Write: the device has the package once it acknowledged."""

    image: str


@dataclass(frozen=True, slots=True)
class InstallFirmware:
    """Execute /5/0/2 Update: the downloaded image is installed; the device reboots."""


@dataclass(frozen=True, slots=True)
class RotateCredentials:
    """Rotate the device's DM credentials to ``generation`` (server-initiated re-bootstrap:
    only the bootstrap server may write the Security object)."""

    generation: int


@dataclass(frozen=True, slots=True)
class Wait:
    """A change is under way on the device (download, apply); its report will come."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    """The device refused this generation for good; retrying would not help."""

    reason: str


Step = (
    WriteConfig
    | WriteFlags
    | SetApns
    | PullFirmware
    | PushFirmware
    | InstallFirmware
    | RotateCredentials
    | Wait
    | Fail
)


def apn_instances(leaves: Leaves) -> dict[str, int]:
    """APN -> /11 instance id, from a device's reported values."""
    found: dict[str, int] = {}
    profiles: dict[int, dict[int, ValueType]] = {}
    for path, value in _under(leaves, APN_PROFILES):
        if len(path.ids) >= 3:
            profiles.setdefault(path.ids[1], {})[path.ids[2]] = value
    for iid, resources in sorted(profiles.items()):
        apn = resources.get(1) or resources.get(0)
        if isinstance(apn, str) and apn and apn not in found:
            found[apn] = iid
    return found


def plan(
    desired: Desired, leaves: Leaves, *, bundle: bytes | None = None, attempted: bool = False
) -> Step:
    """The next step towards ``desired`` given the device's current values.

    ``bundle`` is the config bundle's content (config only); ``attempted`` says the
    reconciler already started this generation on the device, so a firmware result that
    reports failure is the answer to our attempt, not a leftover.
    """
    value = desired.value
    dim = desired.dimension
    if dim is Dimension.FLAGS:
        return WriteFlags(tuple(f"{k}={v}" for k, v in sorted(value.items())))
    if dim is Dimension.CONFIG:
        if leaves.get(CFG_RESULT) == FleetConfigResult.APPLYING:
            return Wait("the device is applying a configuration bundle")
        if bundle is None:
            return Fail(
                f"config bundle {value.get('bundle') or value['version']!r} is not registered"
            )
        return WriteConfig(str(value["version"]), bundle, bytes.fromhex(str(value["digest"])))
    if dim is Dimension.CONNECTIVITY:
        existing = apn_instances(leaves)
        missing = tuple(a for a in value["apns"] if a not in existing)
        return SetApns(missing, str(value["active"]), existing)
    if dim is Dimension.FIRMWARE:
        state = leaves.get(FW_STATE)
        result = leaves.get(FW_RESULT)
        if state == FirmwareUpdateState.DOWNLOADING or state == FirmwareUpdateState.UPDATING:
            return Wait(f"firmware {_name(FirmwareUpdateState, int(state))}")
        if state == FirmwareUpdateState.DOWNLOADED:
            return InstallFirmware()
        if attempted and isinstance(result, int) and result not in (0, 1):
            return Fail(f"firmware update result {_name(FirmwareUpdateResult, result)} ({result})")
        if value.get("method") == "push":
            return PushFirmware(str(value["image"]))
        uri = value.get("uri")
        if not isinstance(uri, str):
            return Fail("desired firmware has no image URI; set firmware=VERSION@URI")
        return PullFirmware(uri)
    if dim is Dimension.CREDENTIALS:
        return RotateCredentials(int(value["generation"]))
    return Fail(f"{dim.value} is report-only: fleetloop does not apply it yet")


__all__ = [
    "APPLICABLE",
    "FACTS_AT_SETUP",
    "OBSERVED",
    "ORDER",
    "READ_AT_SETUP",
    "WATCHED",
    "Desired",
    "Dimension",
    "Fail",
    "InstallFirmware",
    "Leaves",
    "Policy",
    "PullFirmware",
    "PushFirmware",
    "Reported",
    "RotateCredentials",
    "SetApns",
    "StateError",
    "Status",
    "Step",
    "Wait",
    "WriteConfig",
    "WriteFlags",
    "apn_instances",
    "dimensions_of",
    "observed_after",
    "parse_desired",
    "plan",
    "reported_value",
    "satisfies",
    "status",
]
