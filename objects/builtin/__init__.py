"""fleetloop's own definitions of the objects it manages, written from the specification tables.

One module per object or small group; :data:`BUILTIN_DEFINITIONS` lists them all in id order.
The OMA registry's XML is not shipped: the test suite compares these definitions against a
reference copy of the registry instead.
"""

from lwm2m.model import ObjectDefinition
from objects.builtin.access_control import ACCESS_CONTROL
from objects.builtin.cellular import APN_CONNECTION_PROFILE, CELLULAR_CONNECTIVITY
from objects.builtin.connectivity import CONNECTIVITY_MONITORING, CONNECTIVITY_STATISTICS
from objects.builtin.device import DEVICE
from objects.builtin.esim import ESIM_IOT
from objects.builtin.firmware import FIRMWARE_UPDATE
from objects.builtin.fleet_config import (
    FLEET_CONFIG,
    FLEET_CONFIG_OBJECT_ID,
    FleetConfigResource,
    FleetConfigResult,
)
from objects.builtin.security import OSCORE, SECURITY
from objects.builtin.server import SERVER

BUILTIN_DEFINITIONS: tuple[ObjectDefinition, ...] = (
    SECURITY,
    SERVER,
    ACCESS_CONTROL,
    DEVICE,
    CONNECTIVITY_MONITORING,
    FIRMWARE_UPDATE,
    CONNECTIVITY_STATISTICS,
    CELLULAR_CONNECTIVITY,
    APN_CONNECTION_PROFILE,
    OSCORE,
    ESIM_IOT,
    FLEET_CONFIG,
)

__all__ = [
    "ACCESS_CONTROL",
    "APN_CONNECTION_PROFILE",
    "BUILTIN_DEFINITIONS",
    "CELLULAR_CONNECTIVITY",
    "CONNECTIVITY_MONITORING",
    "CONNECTIVITY_STATISTICS",
    "DEVICE",
    "ESIM_IOT",
    "FIRMWARE_UPDATE",
    "FLEET_CONFIG",
    "FLEET_CONFIG_OBJECT_ID",
    "OSCORE",
    "SECURITY",
    "SERVER",
    "FleetConfigResource",
    "FleetConfigResult",
]
