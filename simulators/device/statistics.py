"""Connectivity Statistics (object 7): the device's traffic counters, from the bytes the
fleet really carried for it.

Tx/Rx Data (kB), Max and Average Message Size are computed on read from
:meth:`DeviceServices.traffic`, so a device keeps no counters of its own in the object store:
the fleet counts bytes per device in compact arrays anyway (its link emulation needs them),
and an idle device pays nothing. Start resets and starts counting, Stop freezes the counters,
a Collection Period (/7/0/8) above 0 stops counting by itself after that many seconds.
"""

from __future__ import annotations

from lwm2m.model import Path, ValueType
from objects import builtin_definition
from simulators.device.execute import Arguments
from simulators.device.objects import ObjectStore
from simulators.device.services import DeviceServices
from simulators.device.template import DeviceActions, Dynamic, InstanceTemplate, ObjectTemplate

STATISTICS = 7
START, STOP, PERIOD = 6, 7, 8


def statistics_object(services: DeviceServices) -> ObjectTemplate:
    """Object 7 backed by ``services.traffic`` (see the module docstring)."""

    def tx_kb(store: ObjectStore, now: float) -> ValueType:
        return services.traffic(store)[0] // 1024

    def rx_kb(store: ObjectStore, now: float) -> ValueType:
        return services.traffic(store)[1] // 1024

    def max_size(store: ObjectStore, now: float) -> ValueType:
        return services.traffic(store)[2]

    def average_size(store: ObjectStore, now: float) -> ValueType:
        sent, received, _, messages = services.traffic(store)
        return (sent + received) // messages if messages else 0

    def start(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        services.traffic_control(device, True, now)
        period = device.store.get(Path.of(STATISTICS, 0, PERIOD), now)
        if isinstance(period, int) and period > 0:
            device.schedule(now + period, lambda at: services.traffic_control(device, False, at))

    def stop(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        services.traffic_control(device, False, now)

    instance = InstanceTemplate(
        {
            0: 0,
            1: 0,
            2: Dynamic(tx_kb),
            3: Dynamic(rx_kb),
            4: Dynamic(max_size),
            5: Dynamic(average_size),
            START: None,
            STOP: None,
            PERIOD: 0,
        }
    )
    return ObjectTemplate(
        builtin_definition(STATISTICS), {0: instance}, handlers={START: start, STOP: stop}
    )


__all__ = ["statistics_object"]
