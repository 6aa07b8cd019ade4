"""Firmware Update (object 5) as a device really does it: push and pull, integrity check,
install, reboot into the new version -- or fail at any of those steps.

State machine (TS Core 1.1 E.6, /5/0/3 State and /5/0/5 Update Result)::

    Idle --write URI--> Downloading --image ok--> Downloaded --Execute Update--> Updating
     ^  --write Package (Block1)------------------^                                |
     |                                                                             v
     +-- result 1 (success, /3/0/3 = new version after the reboot) or 8 (did not boot) --+

* **Pull**: writing /5/0/1 starts a block-wise GET of that CoAP URI through
  :meth:`DeviceServices.fetch`. A 4.04 ends in result 7 (invalid URI), a lost connection in
  4, a scheme other than ``coap`` in 9. Writing an empty URI, or Cancel, aborts it.
* **Push**: a block-wise Write of /5/0/0 (the CoAP core reassembles the Block1 upload and the
  device sees the whole image once, so the state goes straight to Downloaded).
* **Integrity**: an image is ``FLFW`` + a CBOR header (version, body length, SHA-256 of the
  body) + the body (:func:`build_image` makes one). A body that does not match its header is
  result 5; anything that is not such an image is result 6. Only the header's version is
  kept -- the device "flashes" the body and keeps no copy, so a fleet downloading images
  costs no memory per device.
* **Failures on purpose** (:class:`~simulators.profiles.Behaviour`): a download fails with
  probability ``firmware_download_failure`` (result 4); an installed image fails to boot with
  ``firmware_boot_failure`` -- the device reboots, its bootloader reverts to the old image,
  /3/0/3 is unchanged and the result is 8. An image whose header says ``"bootloop": true``
  (``build_image(..., bootloop=True)``) fails the same way on every device: one bad image.
  One whose header says ``"reboot_loop": true`` (``build_image(..., reboot_loop=True)``)
  installs and boots (result 1, the new version reported) and then keeps rebooting: the
  device reports ``firmware_reboot_loop`` and its fleet reboots it again after every boot,
  a few times (:data:`simulators.fleet.engine.REBOOT_LOOP`).

A reboot that interrupts a download or an installation (:func:`after_reboot`) leaves the
device Idle with result 4 or 8, as a real device finds it on boot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cbor2

from lwm2m.model import Path
from objects import builtin_definition
from objects.enums import (
    FirmwareDeliveryMethod,
    FirmwareProtocol,
    FirmwareUpdateResult,
    FirmwareUpdateState,
)
from simulators.device.errors import MethodNotAllowed
from simulators.device.execute import Arguments
from simulators.device.objects import ObjectStore
from simulators.device.services import DeviceServices
from simulators.device.template import DeviceActions, InstanceTemplate, ObjectTemplate

FIRMWARE = 5
PACKAGE, PACKAGE_URI, UPDATE, STATE, RESULT, PKG_NAME, PKG_VERSION = 0, 1, 2, 3, 5, 6, 7
CANCEL = 10
MAGIC = b"FLFW"
PACKAGE_NAME = "fleetloop-firmware"
MAX_HEADER = 1024

_IDLE = int(FirmwareUpdateState.IDLE)
_DOWNLOADING = int(FirmwareUpdateState.DOWNLOADING)
_DOWNLOADED = int(FirmwareUpdateState.DOWNLOADED)
_UPDATING = int(FirmwareUpdateState.UPDATING)


class ImageError(Exception):
    """The image is unusable; ``result`` is the Update Result code that says why."""

    def __init__(self, result: FirmwareUpdateResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the device learnt from a valid image's header (``bootloop``: the image is built
    not to boot -- a test's bad image, see :func:`build_image`)."""

    version: str
    size: int
    bootloop: bool = False
    reboot_loop: bool = False


def build_image(
    version: str,
    size: int = 4096,
    *,
    seed: int = 0,
    bootloop: bool = False,
    reboot_loop: bool = False,
) -> bytes:
    """A valid firmware image for ``version`` with a ``size``-byte body (deterministic bytes,
    so a test can corrupt one and know the digest no longer matches). ``bootloop``: every
    device that installs it fails to boot it and reverts (result 8), as with the profile's
    ``firmware_boot_failure`` -- so a test can make ONE image bad."""
    if size < 0:
        raise ValueError("size must not be negative")
    block = hashlib.sha256(f"{version}/{seed}".encode()).digest()
    body = (block * (size // len(block) + 1))[:size]
    fields: dict[str, object] = {"v": version, "n": size, "sha256": hashlib.sha256(body).digest()}
    if bootloop:
        fields["bootloop"] = True
    if reboot_loop:
        fields["reboot_loop"] = True
    header = cbor2.dumps(fields)
    return MAGIC + len(header).to_bytes(2, "big") + header + body


def parse_image(image: bytes) -> ImageInfo:
    """Check an image (see the module docstring); :class:`ImageError` when it is unusable."""
    unsupported = FirmwareUpdateResult.UNSUPPORTED_PACKAGE_TYPE
    if len(image) < 6 or image[:4] != MAGIC:
        raise ImageError(unsupported, "not a fleetloop firmware image (no FLFW magic)")
    length = int.from_bytes(image[4:6], "big")
    if length > MAX_HEADER or len(image) < 6 + length:
        raise ImageError(unsupported, "truncated image header")
    try:
        header = cbor2.loads(image[6 : 6 + length])
    except Exception as exc:  # cbor2 raises several types for garbage
        raise ImageError(unsupported, f"image header is not CBOR: {exc}") from None
    if (
        not isinstance(header, dict)
        or not isinstance(header.get("v"), str)
        or not isinstance(header.get("n"), int)
        or not isinstance(header.get("sha256"), bytes)
    ):
        raise ImageError(unsupported, "image header lacks version, length or digest")
    body = image[6 + length :]
    integrity = FirmwareUpdateResult.INTEGRITY_CHECK_FAILURE
    if len(body) != header["n"]:
        raise ImageError(integrity, f"body is {len(body)} bytes, header says {header['n']}")
    if hashlib.sha256(body).digest() != header["sha256"]:
        raise ImageError(integrity, "SHA-256 of the body does not match the header")
    return ImageInfo(
        header["v"],
        len(body),
        header.get("bootloop") is True,
        header.get("reboot_loop") is True,
    )


def _get(store: ObjectStore, rid: int, now: float) -> object:
    return store.get(Path.of(FIRMWARE, 0, rid), now)


def _set(device: DeviceActions, rid: int, value: object, now: float) -> None:
    device.store.set(Path.of(FIRMWARE, 0, rid), value, now)


def _state(store: ObjectStore, now: float) -> int:
    value = _get(store, STATE, now)
    assert isinstance(value, int)
    return value


def _finish(device: DeviceActions, result: int, now: float) -> None:
    _set(device, STATE, _IDLE, now)
    _set(device, RESULT, result, now)


def _accept(device: DeviceActions, info: ImageInfo, now: float) -> None:
    _set(device, PKG_NAME, PACKAGE_NAME, now)
    _set(device, PKG_VERSION, info.version, now)
    _set(device, STATE, _DOWNLOADED, now)


def firmware_object(
    services: DeviceServices,
    *,
    download_failure: float = 0.0,
    boot_failure: float = 0.0,
    install_time: float = 2.0,
) -> ObjectTemplate:
    """Object 5 with the behaviour of the module docstring."""
    #: Endpoints whose downloaded package is a boot-looping image (only while downloaded:
    #: the device keeps no copy of the image, so this is all it remembers of it).
    bootloops: set[str] = set()
    reboot_loops: set[str] = set()  # the same, for images that boot, then keep rebooting

    def accept(device: DeviceActions, info: ImageInfo, now: float) -> None:
        for marks, bad in ((bootloops, info.bootloop), (reboot_loops, info.reboot_loop)):
            if bad:
                marks.add(device.store.endpoint)
            else:
                marks.discard(device.store.endpoint)
        _accept(device, info, now)

    def package_uri_written(device: DeviceActions, path: Path, now: float) -> None:
        services.cancel_fetch(device, now)
        uri = device.store.get(path, now)
        assert isinstance(uri, str)
        if not uri:
            _finish(device, int(FirmwareUpdateResult.INITIAL), now)
            return
        _set(device, STATE, _DOWNLOADING, now)
        _set(device, RESULT, int(FirmwareUpdateResult.INITIAL), now)

        def done(payload: bytes | None, error: str | None, at: float) -> None:
            if _state(device.store, at) != _DOWNLOADING:
                return  # cancelled or reset meanwhile
            if payload is None:
                result = (
                    FirmwareUpdateResult.INVALID_URI
                    if error in ("4.04", "4.00", "4.02")
                    else FirmwareUpdateResult.CONNECTION_LOST
                )
                services.report(device, "firmware_download_failed", at)
                _finish(device, int(result), at)
                return
            if services.chance(download_failure):
                services.report(device, "firmware_download_failed", at)
                _finish(device, int(FirmwareUpdateResult.CONNECTION_LOST), at)
                return
            try:
                info = parse_image(payload)
            except ImageError as exc:
                services.report(device, "firmware_rejected", at)
                _finish(device, int(exc.result), at)
                return
            services.report(device, "firmware_downloaded", at)
            accept(device, info, at)

        problem = services.fetch(device, uri, now, done)
        if problem is not None:
            services.report(device, "firmware_download_failed", now)
            _finish(device, problem, now)

    def package_written(device: DeviceActions, path: Path, now: float) -> None:
        services.cancel_fetch(device, now)
        package = device.store.get(path, now)
        assert isinstance(package, bytes)
        if not package:
            _finish(device, int(FirmwareUpdateResult.INITIAL), now)
            return
        _set(device, PACKAGE, b"", now)  # flashed: the device keeps no copy
        try:
            info = parse_image(package)
        except ImageError as exc:
            services.report(device, "firmware_rejected", now)
            _finish(device, int(exc.result), now)
            return
        _set(device, RESULT, int(FirmwareUpdateResult.INITIAL), now)
        services.report(device, "firmware_downloaded", now)
        accept(device, info, now)

    def update(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        if _state(device.store, now) != _DOWNLOADED:
            raise MethodNotAllowed("Update needs a downloaded package (State 2)")
        _set(device, STATE, _UPDATING, now)

        bad_image = device.store.endpoint in bootloops
        bootloops.discard(device.store.endpoint)
        looping = device.store.endpoint in reboot_loops
        reboot_loops.discard(device.store.endpoint)

        def installed(at: float) -> None:
            if bad_image or services.chance(boot_failure):
                # The new image did not boot; the bootloader went back to the old one.
                services.report(device, "firmware_reverted", at)
                _finish(device, int(FirmwareUpdateResult.UPDATE_FAILED), at)
            else:
                version = _get(device.store, PKG_VERSION, at)
                device.store.set(Path.of(3, 0, 3), str(version), at)
                services.report(device, "firmware_updated", at)
                if looping:  # it boots, then keeps rebooting (its fleet reboots it)
                    services.report(device, "firmware_reboot_loop", at)
                _finish(device, int(FirmwareUpdateResult.SUCCESS), at)
            device.reboot(at)

        device.schedule(now + install_time, installed)

    def cancel(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        if _state(device.store, now) == _UPDATING:
            raise MethodNotAllowed("an update being installed cannot be cancelled")
        services.cancel_fetch(device, now)
        _finish(device, int(FirmwareUpdateResult.CANCELLED), now)

    instance = InstanceTemplate(
        {
            PACKAGE: b"",
            PACKAGE_URI: "",
            UPDATE: None,
            STATE: _IDLE,
            RESULT: int(FirmwareUpdateResult.INITIAL),
            PKG_NAME: "",
            PKG_VERSION: "",
            8: {0: int(FirmwareProtocol.COAP)},
            9: int(FirmwareDeliveryMethod.BOTH),
            CANCEL: None,
        }
    )
    return ObjectTemplate(
        builtin_definition(FIRMWARE),
        {0: instance},
        handlers={UPDATE: update, CANCEL: cancel},
        on_write={PACKAGE: package_written, PACKAGE_URI: package_uri_written},
    )


def after_reboot(store: ObjectStore, now: float) -> None:
    """A reboot interrupted a download (result 4) or an installation (result 8)."""
    if FIRMWARE not in store.template.objects or not store.has_instance(FIRMWARE, 0):
        return
    state = _state(store, now)
    if state == _DOWNLOADING:
        store.set(Path.of(FIRMWARE, 0, STATE), _IDLE, now)
        store.set(Path.of(FIRMWARE, 0, RESULT), int(FirmwareUpdateResult.CONNECTION_LOST), now)
    elif state == _UPDATING:
        store.set(Path.of(FIRMWARE, 0, STATE), _IDLE, now)
        store.set(Path.of(FIRMWARE, 0, RESULT), int(FirmwareUpdateResult.UPDATE_FAILED), now)


__all__ = [
    "MAGIC",
    "ImageError",
    "ImageInfo",
    "after_reboot",
    "build_image",
    "firmware_object",
    "parse_image",
]
