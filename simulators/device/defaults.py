"""The default simulated device: one DM server account, device information, connectivity,
firmware update, the Fleetloop Config object and an eSIM placeholder.

:func:`default_template` is cached on its arguments, so every device of a fleet created with the
same server and lifetime shares one template object — and with it every default value.
"""

from __future__ import annotations

import functools
from types import MappingProxyType

from objects import BUILTIN_MODEL, builtin_definition
from objects.enums import (
    BatteryStatus,
    FirmwareDeliveryMethod,
    FirmwareProtocol,
    FirmwareUpdateResult,
    FirmwareUpdateState,
    NetworkBearer,
    PowerSource,
    SecurityMode,
)
from simulators.device import behaviours as b
from simulators.device.objects import ObjectStore
from simulators.device.template import (
    DeviceTemplate,
    Dynamic,
    InstanceTemplate,
    ObjectTemplate,
)

MANUFACTURER = "fleetloop-sim"
MODEL_NUMBER = "FL-SIM-1"
FIRMWARE_VERSION = "1.0.0"


def _current_time(store: ObjectStore, now: float) -> int:
    delta = store.override((3, 0, 13))
    return int(store.wall_time(now)) + (delta if isinstance(delta, int) else 0)


def _set_current_time(store: ObjectStore, value: object, now: float) -> None:
    assert isinstance(value, int)
    delta = value - int(store.wall_time(now))
    store.set_override((3, 0, 13), delta or None)


CURRENT_TIME = Dynamic(_current_time, _set_current_time)
"""/3/0/13 follows the device clock; a Write shifts it (the shift is the only state kept)."""


def _security(server_uri: str, security_mode: SecurityMode, ssid: int) -> ObjectTemplate:
    instance = InstanceTemplate(
        {0: server_uri, 1: False, 2: int(security_mode), 3: b"", 4: b"", 5: b"", 10: ssid}
    )
    return ObjectTemplate(builtin_definition(0), {0: instance})


def _server(ssid: int, lifetime: int, binding: str) -> ObjectTemplate:
    instance = InstanceTemplate(
        {
            0: ssid,
            1: lifetime,
            2: 0,
            3: 0,
            4: None,
            5: 86_400,
            6: True,
            7: binding,
            8: None,
            # Communication Retry resources, at their TS 1.1 defaults
            17: 5,
            18: 60,
            19: 86_400,
            20: 1,
            23: False,
        }
    )
    return ObjectTemplate(
        builtin_definition(1), {0: instance}, handlers={8: b.registration_update_trigger}
    )


def _device() -> ObjectTemplate:
    instance = InstanceTemplate(
        {
            0: MANUFACTURER,
            1: MODEL_NUMBER,
            2: Dynamic(b.serial_number),
            3: FIRMWARE_VERSION,
            4: None,
            5: None,
            6: {0: int(PowerSource.INTERNAL_BATTERY), 1: int(PowerSource.USB)},
            7: {0: 3800, 1: 5000},
            8: {0: 125, 1: 900},
            9: 95,
            10: 15_000,
            11: {0: 0},
            12: None,
            13: CURRENT_TIME,
            14: "+00:00",
            15: "Etc/UTC",
            16: "UQ",
            17: "tracker",
            18: "1.0",
            19: FIRMWARE_VERSION,
            20: int(BatteryStatus.NORMAL),
            21: 32_000,
        }
    )
    return ObjectTemplate(
        builtin_definition(3),
        {0: instance},
        handlers={4: b.reboot, 5: b.factory_reset, 12: b.reset_error_code},
    )


def _connectivity() -> ObjectTemplate:
    instance = InstanceTemplate(
        {
            0: int(NetworkBearer.NB_IOT),
            1: {0: int(NetworkBearer.NB_IOT), 1: int(NetworkBearer.LTE_FDD)},
            2: -95,
            3: -10,
            4: {0: "10.0.0.2"},
            5: {0: "10.0.0.1"},
            7: {0: "iot.fleetloop"},
            8: 20_877,
            9: 1,
            10: 262,
            11: 12,
            12: 4711,
            13: 0,
        }
    )
    return ObjectTemplate(builtin_definition(4), {0: instance})


def _firmware(timing: b.FirmwareTiming) -> ObjectTemplate:
    on_write, handlers = b.firmware_behaviour(timing)
    instance = InstanceTemplate(
        {
            0: b"",
            1: "",
            2: None,
            3: int(FirmwareUpdateState.IDLE),
            5: int(FirmwareUpdateResult.INITIAL),
            6: "",
            7: "",
            8: {0: int(FirmwareProtocol.COAP), 1: int(FirmwareProtocol.COAPS)},
            9: int(FirmwareDeliveryMethod.BOTH),
            10: None,
        }
    )
    return ObjectTemplate(
        builtin_definition(5), {0: instance}, handlers=handlers, on_write=on_write
    )


def _fleet_config() -> ObjectTemplate:
    instance = InstanceTemplate(
        {
            0: "",
            1: b"",
            2: b"",
            3: None,
            4: "",
            5: 0,
            6: "",
            7: MappingProxyType({}),
            8: 0,
            9: "",
            10: 0,
            11: "",
            12: 0,
            13: None,
        }
    )
    return ObjectTemplate(
        builtin_definition(32001),
        {0: instance},
        handlers={3: b.config_apply, 13: b.config_rollback},
        on_write={0: b.config_staged, 1: b.config_staged, 2: b.config_staged},
        write_guard=b.config_write_guard,
    )


def _esim() -> ObjectTemplate:
    instance = InstanceTemplate({0: 0, 1: Dynamic(b.eid), 2: b"", 3: b"", 4: None})
    return ObjectTemplate(
        builtin_definition(3443),
        {0: instance},
        handlers={4: b.esim_clear},
        write_guard=b.esim_write_guard,
    )


@functools.lru_cache(maxsize=64)
def default_template(
    *,
    server_uri: str = "coap://127.0.0.1:5683",
    lifetime: int = 300,
    binding: str = "U",
    security_mode: SecurityMode = SecurityMode.NO_SEC,
    short_server_id: int = 1,
    firmware: b.FirmwareTiming = b.FirmwareTiming(),  # noqa: B008 - frozen, hashable
) -> DeviceTemplate:
    """The default device model (objects 0, 1, 3, 4, 5, 3443, 32001) for one server account.

    Identical arguments return the identical template, so a fleet shares it.
    """
    return DeviceTemplate(
        [
            _security(server_uri, security_mode, short_server_id),
            _server(short_server_id, lifetime, binding),
            _device(),
            _connectivity(),
            _firmware(firmware),
            _esim(),
            _fleet_config(),
        ],
        BUILTIN_MODEL,
    )


__all__ = ["CURRENT_TIME", "FIRMWARE_VERSION", "MANUFACTURER", "MODEL_NUMBER", "default_template"]
