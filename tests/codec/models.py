"""A small object model for codec tests, independent of the built-in ``objects`` package.

Object 3 mirrors the Device object's shape (enough to type the interop payloads); object 30000
is synthetic and holds one single and one multiple resource of every data type, so properties
can draw any node any format could carry.
"""

from __future__ import annotations

from lwm2m.model import DataType, ObjectDefinition, Operations, ResourceDefinition, StaticModel

_R, _RW, _E = Operations.R, Operations.RW, Operations.E


def _res(
    rid: int, name: str, dtype: DataType, multiple: bool = False, ops: Operations = _R
) -> ResourceDefinition:
    return ResourceDefinition(rid, name, ops, multiple, False, dtype)


DEVICE = ObjectDefinition(
    3,
    "Device",
    multiple=False,
    mandatory=True,
    resources=[
        _res(0, "Manufacturer", DataType.STRING),
        _res(1, "Model Number", DataType.STRING),
        _res(2, "Serial Number", DataType.STRING),
        _res(3, "Firmware Version", DataType.STRING),
        _res(4, "Reboot", DataType.NONE, ops=_E),
        _res(6, "Available Power Sources", DataType.INTEGER, True),
        _res(7, "Power Source Voltage", DataType.INTEGER, True),
        _res(8, "Power Source Current", DataType.INTEGER, True),
        _res(9, "Battery Level", DataType.INTEGER),
        _res(10, "Memory Free", DataType.INTEGER),
        _res(11, "Error Code", DataType.INTEGER, True),
        _res(13, "Current Time", DataType.TIME, ops=_RW),
        _res(14, "UTC Offset", DataType.STRING, ops=_RW),
        _res(15, "Timezone", DataType.STRING, ops=_RW),
        _res(16, "Supported Binding and Modes", DataType.STRING),
        _res(17, "Device Type", DataType.STRING),
        _res(18, "Hardware Version", DataType.STRING),
        _res(19, "Software Version", DataType.STRING),
        _res(20, "Battery Status", DataType.INTEGER),
        _res(21, "Memory Total", DataType.INTEGER),
        _res(22, "ExtDevInfo", DataType.OBJLNK, True),
    ],
)

ALL_TYPES_ID = 30000
_TYPES = [t for t in DataType if t is not DataType.NONE]
ALL_TYPES = ObjectDefinition(
    ALL_TYPES_ID,
    "All Types",
    multiple=True,
    mandatory=False,
    resources=[
        *(_res(i, f"single {t.value}", t, ops=_RW) for i, t in enumerate(_TYPES)),
        *(_res(100 + i, f"multi {t.value}", t, True, _RW) for i, t in enumerate(_TYPES)),
        _res(200, "exec", DataType.NONE, ops=_E),
    ],
)

TEST_MODEL = StaticModel([DEVICE, ALL_TYPES])
