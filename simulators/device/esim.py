"""eSIM IoT (object 3443) until the eIM issue gives the device an eUICC: a placeholder whose
identifiers are the ones the factory records say.

The device's EID (/3443/0/1) and IMEI are derived from its endpoint name, with valid check
digits (SGP.29 MOD 97-10 for the EID, Luhn for the IMEI), so the identity CSV the fleet
generates (:mod:`simulators.identities`) passes the bootstrap importer's checks and matches
what each device reports. The messaging resources behave as in ``behaviours.py`` (IPA busy:
5.03; Clear empties the IPA message).
"""

from __future__ import annotations

import hashlib

from lwm2m.model import ValueType
from objects import builtin_definition
from simulators.device import behaviours as b
from simulators.device.objects import ObjectStore
from simulators.device.template import Dynamic, InstanceTemplate, ObjectTemplate

ESIM = 3443
_EID_PREFIX = "89049032"  # EUM + country code digits of a test eUICC
_TAC = "35999999"  # an 8-digit type allocation code reserved for the simulator


def _digits(endpoint: str, salt: str, count: int) -> str:
    digest = int.from_bytes(hashlib.sha256(f"{salt}/{endpoint}".encode()).digest(), "big")
    return f"{digest % 10**count:0{count}d}"


def eid_for(endpoint: str) -> str:
    """The 32-digit EID of ``endpoint``'s eUICC; its last two digits make it 1 mod 97."""
    first30 = _EID_PREFIX + _digits(endpoint, "eid", 22)
    check = 98 - (int(first30) * 100) % 97
    return f"{first30}{check:02d}"


def imei_for(endpoint: str) -> str:
    """The 15-digit IMEI of ``endpoint``'s modem (Luhn check digit)."""
    body = _TAC + _digits(endpoint, "imei", 6)
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char)
        if position % 2 == 0:  # doubled: every second digit from the right of the full number
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return body + str((10 - total % 10) % 10)


def _eid(store: ObjectStore, now: float) -> ValueType:
    return eid_for(store.endpoint)


def esim_object() -> ObjectTemplate:
    """Object 3443: State 0 (no profile operation), the EID above, the placeholder messaging."""
    instance = InstanceTemplate({0: 0, 1: Dynamic(_eid), 2: b"", 3: b"", 4: None})
    return ObjectTemplate(
        builtin_definition(ESIM),
        {0: instance},
        handlers={4: b.esim_clear},
        write_guard=b.esim_write_guard,
    )


__all__ = ["eid_for", "esim_object", "imei_for"]
