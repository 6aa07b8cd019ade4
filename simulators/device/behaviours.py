"""Minimal device behaviours behind the default objects: what happens when a server executes
Reboot, stages firmware, or applies a configuration bundle.

Each behaviour only uses the store's local API and the :class:`DeviceActions` of the client
(reboot, trigger an Update, schedule a later step), so it runs unchanged under a fake clock.
Timings (download, install) are parameters, not sleeps. Firmware download is simulated by a
timer: fetching the image over CoAP block-wise is the later fleet issue's work.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import cbor2

from lwm2m.model import Path, ValueType
from objects.builtin.fleet_config import FleetConfigResource as Cfg
from objects.builtin.fleet_config import FleetConfigResult
from objects.enums import FirmwareUpdateResult, FirmwareUpdateState
from simulators.device.errors import BadRequest, MethodNotAllowed, ServiceUnavailable
from simulators.device.execute import Arguments
from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceActions, ExecuteHandler, WriteHook

# -- Device (3) and Server (1) -------------------------------------------------------------------


def reboot(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
    """/3/0/4: answer 2.04, then restart and register again."""
    device.reboot(now)


def factory_reset(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
    """/3/0/5: forget every change (back to the template), then restart."""
    device.reboot(now, factory_reset=True)


def reset_error_code(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
    """/3/0/12: the error code list becomes the single "no error" entry."""
    device.store.set(Path.of(3, path.ids[1], 11), {0: 0}, now)


def registration_update_trigger(
    device: DeviceActions, path: Path, args: Arguments, now: float
) -> None:
    """/1/x/8: send a Registration Update now (as Anjay does; wakaama does not)."""
    device.trigger_update(now)


def serial_number(store: ObjectStore, now: float) -> ValueType:
    """/3/0/2 is the endpoint name: unique per device at no per-device cost."""
    return store.endpoint


def eid(store: ObjectStore, now: float) -> ValueType:
    """/3443/0/1: a stable 32-digit EID derived from the endpoint name."""
    digest = int.from_bytes(hashlib.sha256(store.endpoint.encode()).digest()[:12], "big")
    return f"89049032{digest % 10**24:024d}"


# -- Firmware Update (5) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FirmwareTiming:
    """How long the simulated download and installation take (seconds of ``now``)."""

    download: float = 5.0
    install: float = 2.0


_VERSION_IN_URI = re.compile(r"(\d+(?:\.\d+)+)")


def _fw_set(device: DeviceActions, iid: int, rid: int, value: object, now: float) -> None:
    device.store.set(Path.of(5, iid, rid), value, now)


def _fw_state(device: DeviceActions, iid: int, now: float) -> int:
    value = device.store.get(Path.of(5, iid, 3), now)
    assert isinstance(value, int)
    return value


def firmware_behaviour(
    timing: FirmwareTiming,
) -> tuple[dict[int, WriteHook], dict[int, ExecuteHandler]]:
    """``(on_write hooks, execute handlers)`` of object 5 with the given timing."""

    def package_uri_written(device: DeviceActions, path: Path, now: float) -> None:
        iid = path.ids[1]
        uri = device.store.get(path, now)
        assert isinstance(uri, str)
        if not uri:
            _fw_set(device, iid, 3, int(FirmwareUpdateState.IDLE), now)
            _fw_set(device, iid, 5, int(FirmwareUpdateResult.INITIAL), now)
            return
        _fw_set(device, iid, 3, int(FirmwareUpdateState.DOWNLOADING), now)
        _fw_set(device, iid, 5, int(FirmwareUpdateResult.INITIAL), now)
        match = _VERSION_IN_URI.search(uri.rsplit("/", 1)[-1])
        version = match.group(1) if match else "unknown"

        def downloaded(at: float) -> None:
            if _fw_state(device, iid, at) != FirmwareUpdateState.DOWNLOADING:
                return  # cancelled or reset meanwhile
            _fw_set(device, iid, 6, "fleetloop-firmware", at)
            _fw_set(device, iid, 7, version, at)
            _fw_set(device, iid, 3, int(FirmwareUpdateState.DOWNLOADED), at)

        device.schedule(now + timing.download, downloaded)

    def package_written(device: DeviceActions, path: Path, now: float) -> None:
        iid = path.ids[1]
        package = device.store.get(path, now)
        if not package:
            _fw_set(device, iid, 3, int(FirmwareUpdateState.IDLE), now)
            _fw_set(device, iid, 5, int(FirmwareUpdateResult.INITIAL), now)
            return
        _fw_set(device, iid, 6, "fleetloop-firmware", now)
        _fw_set(device, iid, 7, "pushed", now)
        _fw_set(device, iid, 3, int(FirmwareUpdateState.DOWNLOADED), now)

    def update(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        iid = path.ids[1]
        if _fw_state(device, iid, now) != FirmwareUpdateState.DOWNLOADED:
            raise MethodNotAllowed("Update needs a downloaded package (State 2)")
        _fw_set(device, iid, 3, int(FirmwareUpdateState.UPDATING), now)

        def installed(at: float) -> None:
            version = device.store.get(Path.of(5, iid, 7), at)
            device.store.set(Path.of(3, 0, 3), str(version), at)
            _fw_set(device, iid, 3, int(FirmwareUpdateState.IDLE), at)
            _fw_set(device, iid, 5, int(FirmwareUpdateResult.SUCCESS), at)
            device.reboot(at)

        device.schedule(now + timing.install, installed)

    def cancel(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        iid = path.ids[1]
        state = _fw_state(device, iid, now)
        if state == FirmwareUpdateState.UPDATING:
            raise MethodNotAllowed("an update being installed cannot be cancelled")
        _fw_set(device, iid, 3, int(FirmwareUpdateState.IDLE), now)
        _fw_set(device, iid, 5, int(FirmwareUpdateResult.CANCELLED), now)

    return {0: package_written, 1: package_uri_written}, {2: update, 10: cancel}


# -- Fleetloop Config (32001), see docs/OBJECTS.md ------------------------------------------------


def _cfg(device: DeviceActions, iid: int, rid: int, now: float) -> ValueType:
    value = device.store.get(Path.of(32001, iid, rid), now)
    assert not isinstance(value, dict)
    return value


def _cfg_set(device: DeviceActions, iid: int, rid: int, value: object, now: float) -> None:
    device.store.set(Path.of(32001, iid, rid), value, now)


def _applying(device: DeviceActions, iid: int, now: float) -> bool:
    return _cfg(device, iid, Cfg.APPLY_RESULT, now) == FleetConfigResult.APPLYING


def config_write_guard(device: DeviceActions, path: Path, now: float) -> None:
    """While a bundle is being applied, staging resources cannot change (5.03)."""
    rid = path.ids[2] if len(path.ids) > 2 else -1
    staging = (Cfg.CONFIG_VERSION, Cfg.BUNDLE, Cfg.BUNDLE_DIGEST)
    if rid in staging and _applying(device, path.ids[1], now):
        raise ServiceUnavailable("a configuration bundle is being applied")


def config_staged(device: DeviceActions, path: Path, now: float) -> None:
    """Writing Config Version, Bundle or Digest resets the result to IDLE."""
    iid = path.ids[1]
    _cfg_set(device, iid, Cfg.APPLY_RESULT, int(FleetConfigResult.IDLE), now)
    _cfg_set(device, iid, Cfg.APPLY_RESULT_DETAIL, "", now)


def _validate_bundle(bundle: bytes) -> str | None:
    """Why a bundle is invalid, or None. A bundle is a CBOR map with text keys."""
    try:
        content = cbor2.loads(bundle)
    except Exception as exc:  # cbor2 raises several types for garbage
        return f"bundle is not CBOR: {exc}"
    if not isinstance(content, dict):
        return "bundle is not a CBOR map"
    bad = [k for k in content if not isinstance(k, str)]
    if bad:
        return f"bundle key {bad[0]!r} is not text"
    return None


def config_apply(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
    """Apply (or, with argument 1, validate) the staged bundle; the outcome goes to /5."""
    iid = path.ids[1]
    if _applying(device, iid, now):
        raise ServiceUnavailable("a configuration bundle is being applied")
    expected = args.get(0)
    if expected is None:
        raise BadRequest("Apply needs argument 0='<expected config version>'")
    version = _cfg(device, iid, Cfg.CONFIG_VERSION, now)

    def result(code: FleetConfigResult, detail: str = "") -> None:
        _cfg_set(device, iid, Cfg.APPLY_RESULT_DETAIL, detail, now)
        _cfg_set(device, iid, Cfg.APPLY_RESULT, int(code), now)

    if expected != version:
        result(FleetConfigResult.REJECTED_VERSION_MISMATCH, f"staged {version!r}")
        return
    _cfg_set(device, iid, Cfg.APPLY_RESULT, int(FleetConfigResult.APPLYING), now)
    bundle = _cfg(device, iid, Cfg.BUNDLE, now)
    digest = _cfg(device, iid, Cfg.BUNDLE_DIGEST, now)
    assert isinstance(bundle, bytes)
    if hashlib.sha256(bundle).digest() != digest:
        result(FleetConfigResult.REJECTED_DIGEST_MISMATCH, "SHA-256(Bundle) != Bundle Digest")
        return
    problem = _validate_bundle(bundle)
    if problem is not None:
        result(FleetConfigResult.REJECTED_INVALID, problem)
        return
    if args.has(1):
        result(FleetConfigResult.VALIDATED)
        return
    _cfg_set(device, iid, Cfg.PREVIOUS_VERSION, _cfg(device, iid, Cfg.APPLIED_VERSION, now), now)
    _cfg_set(device, iid, Cfg.APPLIED_VERSION, version, now)
    _cfg_set(device, iid, Cfg.LAST_APPLIED_TIME, int(device.store.wall_time(now)), now)
    result(FleetConfigResult.APPLIED)


def config_rollback(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
    """Return to Previous Version (4.00 when there is none)."""
    iid = path.ids[1]
    if _applying(device, iid, now):
        raise ServiceUnavailable("a configuration bundle is being applied")
    previous = _cfg(device, iid, Cfg.PREVIOUS_VERSION, now)
    if not previous:
        raise BadRequest("no previous version to roll back to")
    _cfg_set(device, iid, Cfg.APPLIED_VERSION, previous, now)
    _cfg_set(device, iid, Cfg.PREVIOUS_VERSION, "", now)
    _cfg_set(device, iid, Cfg.LAST_APPLIED_TIME, int(device.store.wall_time(now)), now)
    _cfg_set(device, iid, Cfg.APPLY_RESULT_DETAIL, "", now)
    _cfg_set(device, iid, Cfg.APPLY_RESULT, int(FleetConfigResult.ROLLED_BACK), now)


# -- eSIM IoT (3443), placeholder -----------------------------------------------------------------


def esim_write_guard(device: DeviceActions, path: Path, now: float) -> None:
    """An eIM message is refused while the IPA is busy (State above 0)."""
    state = device.store.get(Path.of(3443, path.ids[1], 0), now)
    if len(path.ids) > 2 and path.ids[2] == 2 and state != 0:
        raise ServiceUnavailable("the IPA is busy")


def esim_clear(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
    device.store.set(Path.of(3443, path.ids[1], 3), b"", now)


__all__ = [
    "FirmwareTiming",
    "config_apply",
    "config_rollback",
    "config_staged",
    "config_write_guard",
    "eid",
    "esim_clear",
    "esim_write_guard",
    "factory_reset",
    "firmware_behaviour",
    "reboot",
    "registration_update_trigger",
    "reset_error_code",
    "serial_number",
]
