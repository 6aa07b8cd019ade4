"""Cellular connectivity (object 10) and APN connection profiles (object 11): which APN the
device attaches to, and therefore whether it can reach its server at all.

The *active APN* (:func:`active_apn`) is the first enabled profile (/11/x/3 not false) among,
in order: the profile the first Server instance's APN Link (/1/x/10) points to, the
profiles listed in Activated Profile Names (/10/0/11), and every /11 instance. Its APN is
/11/x/1 (the profile name when that is empty). A device without object 11 instances uses its
modem's built-in APN and ``active_apn`` is None.

A server changes the APN the way fleetloop's fleet layer does (docs/OBJECTS.md): it writes a
new /11 profile, points /1/0/10 at it (or rewrites /11/x/1, or toggles /11/x/3). Each such
write calls :meth:`DeviceServices.network_changed` after the answer went out; the fleet then
detaches the device, re-attaches it after the link's ``attach_time`` -- with a new IP address,
so the next datagram leaves from a new source port -- and the device sends a Registration
Update from there. On a link with ``static_address`` (a private APN with a static IP) the
address stays and the client, seeing nothing changed, sends no Update. Whether the new APN
reaches the server is the fleet's decision (``DeviceProfile.reachable_apns``,
``Behaviour.apn_loss``); a device that lost connectivity falls back to the last APN that
worked (:func:`fall_back`) after ``Behaviour.apn_fallback`` seconds, as modems with an APN
watchdog do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lwm2m.model import ObjLink, Path
from objects import builtin_definition
from simulators.device.objects import ObjectStore
from simulators.device.services import DeviceServices
from simulators.device.template import (
    DeviceActions,
    DeviceTemplate,
    InstanceTemplate,
    ObjectTemplate,
)

SERVER, CONNECTIVITY, CELLULAR, APN_PROFILE = 1, 4, 10, 11
APN_LINK = 10
ACTIVATED_PROFILES = 11
PROFILE_NAME, APN, ENABLED, AUTH_TYPE = 0, 1, 3, 4
DEFAULT_APN = "iot.fleetloop"
_NO_AUTH = 3


def _value(store: ObjectStore, key: tuple[int, int, int]) -> object:
    if not store.has_resource(*key):
        return None
    return store.stored(key, 0.0)


def _enabled(store: ObjectStore, iid: int) -> bool:
    return _value(store, (APN_PROFILE, iid, ENABLED)) is not False


def _apn_of(store: ObjectStore, iid: int) -> str:
    apn = _value(store, (APN_PROFILE, iid, APN))
    if isinstance(apn, str) and apn:
        return apn
    name = _value(store, (APN_PROFILE, iid, PROFILE_NAME))
    return name if isinstance(name, str) else ""


def active_profile(store: ObjectStore) -> int | None:
    """The /11 instance the device attaches with (see the module docstring)."""
    if APN_PROFILE not in store.template.objects:
        return None
    profiles = store.instance_ids(APN_PROFILE)
    if not profiles:
        return None
    candidates: list[int] = []
    if SERVER in store.template.objects and (servers := store.instance_ids(SERVER)):
        link = _value(store, (SERVER, servers[0], APN_LINK))
        if isinstance(link, ObjLink) and link.object_id == APN_PROFILE:
            candidates.append(link.instance_id)
    if CELLULAR in store.template.objects and store.has_instance(CELLULAR, 0):
        activated = _value(store, (CELLULAR, 0, ACTIVATED_PROFILES))
        if isinstance(activated, Mapping):
            candidates.extend(
                link.instance_id
                for _, link in sorted(activated.items())
                if isinstance(link, ObjLink) and link.object_id == APN_PROFILE
            )
    candidates.extend(profiles)
    for iid in candidates:
        if iid in profiles and _enabled(store, iid):
            return iid
    return None


def active_apn(store: ObjectStore) -> str | None:
    """The APN the device attaches with; None when it has no APN profiles (built-in APN);
    ``""`` when every profile is disabled (the device cannot attach)."""
    if APN_PROFILE not in store.template.objects or not store.instance_ids(APN_PROFILE):
        return None
    iid = active_profile(store)
    return "" if iid is None else _apn_of(store, iid)


def attached(store: ObjectStore, apn: str | None, now: float) -> None:
    """The device attached with ``apn``: Activated Profile Names and the Connectivity
    Monitoring APN (/4/0/7) say so."""
    iid = active_profile(store)
    if iid is not None and store.has_resource(CELLULAR, 0, ACTIVATED_PROFILES):
        store.set(Path.of(CELLULAR, 0, ACTIVATED_PROFILES), {0: ObjLink(APN_PROFILE, iid)}, now)
    if apn and store.has_resource(CONNECTIVITY, 0, 7):
        store.set(Path.of(CONNECTIVITY, 0, 7), {0: apn}, now)


def fall_back(store: ObjectStore, apn: str, now: float) -> bool:
    """Point the APN Link back at a profile whose APN is ``apn`` (the last one that worked),
    enabling it; False when no such profile is left."""
    if APN_PROFILE not in store.template.objects:
        return False
    for iid in store.instance_ids(APN_PROFILE):
        if _apn_of(store, iid) == apn:
            store.set(Path.of(APN_PROFILE, iid, ENABLED), True, now)
            servers = store.instance_ids(SERVER) if SERVER in store.template.objects else ()
            if servers and store.has_resource(SERVER, servers[0], APN_LINK):
                store.set(Path.of(SERVER, servers[0], APN_LINK), ObjLink(APN_PROFILE, iid), now)
            return True
    return False


def cellular_objects(
    base: DeviceTemplate, services: DeviceServices, *, apn: str | None = DEFAULT_APN
) -> list[ObjectTemplate]:
    """Objects 10 and 11 (one profile for ``apn``, or none when ``apn`` is None) and object 1
    with its APN Link, replacing those of ``base``; every APN-relevant write calls
    ``services.network_changed``."""

    def changed(device: DeviceActions, path: Path, now: float) -> None:
        services.network_changed(device, now)

    profiles = {}
    if apn is not None:
        profiles[0] = InstanceTemplate(
            {PROFILE_NAME: "default", APN: apn, 2: False, ENABLED: True, AUTH_TYPE: _NO_AUTH}
        )
    apn_objects = ObjectTemplate(
        builtin_definition(APN_PROFILE),
        profiles,
        new_instance=InstanceTemplate({PROFILE_NAME: "", APN: "", ENABLED: True, AUTH_TYPE: 3}),
        deletable=True,
        on_write={APN: changed, ENABLED: changed},
    )
    cellular = ObjectTemplate(
        builtin_definition(CELLULAR),
        {
            0: InstanceTemplate(
                {
                    4: 86_400,  # PSM Timer (T3412 extended), s
                    5: 60,  # Active Timer (T3324), s
                    ACTIVATED_PROFILES: {0: ObjLink(APN_PROFILE, 0)} if apn is not None else {},
                    12: 3,  # PSM and eDRX supported
                    13: 1,  # PSM active
                }
            )
        },
    )
    objects = [apn_objects, cellular]
    server = base.objects.get(SERVER)
    if server is not None:
        instances = {
            iid: InstanceTemplate(
                {**inst.resources, APN_LINK: ObjLink(APN_PROFILE, 0 if apn is not None else 65535)}
            )
            for iid, inst in server.instances.items()
        }
        objects.append(
            dataclasses.replace(
                server, instances=instances, on_write={**server.on_write, APN_LINK: changed}
            )
        )
    return objects


__all__ = [
    "DEFAULT_APN",
    "active_apn",
    "active_profile",
    "attached",
    "cellular_objects",
    "fall_back",
]
