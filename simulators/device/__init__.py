"""The simulated LwM2M device, sans-IO: object store, client state machine, default content.

Nothing here reads a clock, opens a socket or draws random numbers itself: ``now`` is passed
in and randomness injected, so thousands of devices run in one process under a fake clock.
The asyncio side is :mod:`simulators.runner`; the design is in ``docs/SIMULATOR.md``.
"""

from simulators.device.client import ClientError, LwM2MClient, State
from simulators.device.config import ClientConfig
from simulators.device.core import DeviceCore
from simulators.device.defaults import default_template
from simulators.device.formats import ANJAY, FLEETLOOP, WAKAAMA, FormatProfile
from simulators.device.objects import ObjectStore
from simulators.device.template import (
    DeviceTemplate,
    Dynamic,
    InstanceTemplate,
    ObjectTemplate,
)

__all__ = [
    "ANJAY",
    "FLEETLOOP",
    "WAKAAMA",
    "ClientConfig",
    "ClientError",
    "DeviceCore",
    "DeviceTemplate",
    "Dynamic",
    "FormatProfile",
    "InstanceTemplate",
    "LwM2MClient",
    "ObjectStore",
    "ObjectTemplate",
    "State",
    "default_template",
]
