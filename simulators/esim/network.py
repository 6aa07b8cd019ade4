"""Which network serves a simulated eSIM device: what its modem reports in the Connectivity
Monitoring object, /4/0/10 (SMCC) and /4/0/9 (SMNC).

A real device is served by a network of the carrier whose profile its eUICC has enabled (or by
a roaming partner). :class:`ServingNetwork` does the same for the simulated fleet: the PLMN of
the enabled profile's carrier (``serviceProviderName``) from a carrier -> PLMN table, unless the
device is put on another network (:meth:`ServingNetwork.roam`: a device the new carrier does
not serve directly, the case a campaign's carrier check catches). Devices it does not know keep
the template's values.
"""

from __future__ import annotations

from collections.abc import Mapping

from lwm2m.model import ValueType
from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceTemplate, Dynamic, InstanceTemplate, ObjectTemplate
from simulators.esim.euicc import SimEuicc

CONNECTIVITY, SMNC, SMCC = 4, 9, 10

#: The simulator's carriers (the profiles' serviceProviderName) and the PLMN (MCC, MNC) that
#: serves them: the test worlds' carriers and the spread fleet's (simulators.identities).
CARRIER_PLMNS: Mapping[str, tuple[int, int]] = {
    "Carrier A": (262, 1),
    "Carrier B": (310, 260),
    "Carrier C": (208, 1),
    "tmo-de": (262, 1),
    "orange-fr": (208, 1),
    "tmo": (310, 260),
    "vzw": (311, 480),
    "docomo": (440, 10),
}


def plmn_text(plmn: tuple[int, int]) -> str:
    return f"{plmn[0]:03d}-{plmn[1]:02d}"


class ServingNetwork:
    """The serving PLMN of each device by endpoint (module docstring)."""

    def __init__(self, table: Mapping[str, tuple[int, int]] | None = None) -> None:
        self.table = dict(CARRIER_PLMNS if table is None else table)
        self.euiccs: dict[str, SimEuicc] = {}
        self.roaming: dict[str, tuple[int, int]] = {}

    def attach(self, endpoint: str, euicc: SimEuicc) -> None:
        """``endpoint``'s modem runs ``euicc``."""
        self.euiccs[endpoint] = euicc

    def roam(self, endpoint: str, plmn: tuple[int, int] | None) -> None:
        """Put ``endpoint`` on network ``plmn`` whatever its profile (None: back to its
        carrier's)."""
        if plmn is None:
            self.roaming.pop(endpoint, None)
        else:
            self.roaming[endpoint] = plmn

    def plmn(self, endpoint: str) -> tuple[int, int] | None:
        """The (MCC, MNC) serving ``endpoint`` now; None: unknown (the template's values)."""
        if endpoint in self.roaming:
            return self.roaming[endpoint]
        euicc = self.euiccs.get(endpoint)
        profile = euicc.enabled if euicc is not None else None
        return self.table.get(profile.carrier) if profile is not None else None

    def connectivity(self, base: ObjectTemplate) -> ObjectTemplate:
        """``base`` (object 4) with SMCC and SMNC computed from this network."""
        instance = base.instances[0]
        mcc, mnc = instance.resources.get(SMCC, 0), instance.resources.get(SMNC, 0)

        def read(rid: int, default: object) -> Dynamic:
            def value(store: ObjectStore, now: float) -> ValueType:
                found = self.plmn(store.endpoint)
                if found is None:
                    return default if isinstance(default, int) else 0
                return found[0] if rid == SMCC else found[1]

            return Dynamic(value)

        resources = {**instance.resources, SMCC: read(SMCC, mcc), SMNC: read(SMNC, mnc)}
        return ObjectTemplate(
            base.definition,
            {**base.instances, 0: InstanceTemplate(resources)},
            base.new_instance,
            base.deletable,
            base.handlers,
            base.version,
            base.on_write,
            base.write_guard,
        )

    def template(self, base: DeviceTemplate) -> DeviceTemplate:
        """``base`` with its object 4 reporting this network (unchanged without object 4)."""
        found = base.objects.get(CONNECTIVITY)
        return base if found is None else base.replace(self.connectivity(found))


__all__ = ["CARRIER_PLMNS", "ServingNetwork", "plmn_text"]
