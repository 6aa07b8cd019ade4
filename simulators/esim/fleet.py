"""eSIM devices in the simulated fleet: each fleet device gets an eUICC and an IPA on one of
the three ESipa bindings, instead of the placeholder object 3443.

* ``"3443"``: the IPA sits behind the device's object 3443 (`Object3443Ipa`): the eIM observes
  /3443/0/3, answers in /3443/0/2 and pushes there; the device model is the fleet's with this
  object 3443 in place of the placeholder (one device group per device: the object carries
  that device's IPA).
* ``"coap"``: the IPA polls ``POST /gsma/rsp2/asn1`` on the DM server's CoAP port (`CoapIpa`,
  aiocoap on a socket of its own beside the device's -- results over one CoAP block need the
  device's own socket, which the fleet engine does not share).
* ``"https"``: the IPA polls the eIM's HTTPS listener (`HttpsIpa`).

CoAP and HTTPS devices run the fleet's model without object 3443 (their IPA does not go
through LwM2M). Every device's Connectivity Monitoring object reports the network of its
enabled profile's carrier in /4/0/10 (SMCC) and /4/0/9 (SMNC) (`EsimFleet.network`, a
:class:`~simulators.esim.network.ServingNetwork`: ``network.roam(endpoint, (310, 410))`` puts
a device on another network). `EsimFleet.import_items` lists what ``POST /v1/esim/euiccs``
imports, each eUICC linked to its device's endpoint; `poll` lets every IPA talk to the eIM
until it is quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from aiocoap import Context

from simulators.device.models import fleet_template
from simulators.device.template import DeviceTemplate
from simulators.esim.coap import CoapIpa
from simulators.esim.euicc import SimEuicc
from simulators.esim.https import HttpsIpa
from simulators.esim.ipa import SimIpa
from simulators.esim.lwm2m import ESIM, Object3443Ipa
from simulators.esim.network import ServingNetwork
from simulators.fleet.runner import DeviceFleet

BINDINGS = ("3443", "coap", "https")


@dataclass
class EsimDevice:
    """One fleet device with its eUICC, IPA and binding."""

    index: int
    endpoint: str
    binding: str
    ipa: SimIpa
    object3443: Object3443Ipa | None = None


class EsimFleet:
    """eSIM devices added to a running `DeviceFleet` (module docstring).

    ``make_ipa(n)`` gives the n-th device's IPA with its eUICC (keys, certificate chain, the
    eIM it trusts: the caller's PKI). ``coap_uri``: the DM server (``coap://host:port``);
    ``esipa_url``: the eIM's HTTPS listener; ``client``: the HTTP client for it."""

    def __init__(
        self,
        fleet: DeviceFleet,
        make_ipa: Callable[[int], SimIpa],
        *,
        coap_uri: str,
        esipa_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        network: ServingNetwork | None = None,
    ) -> None:
        self.fleet = fleet
        self.make_ipa = make_ipa
        self.coap_uri = coap_uri
        self.esipa_url = esipa_url
        self.client = client
        self.devices: list[EsimDevice] = []
        #: The network serving each device (/4/0/9-10 from its enabled profile's carrier).
        self.network = network or ServingNetwork()
        self._context: Context | None = None
        self._plain: DeviceTemplate | None = None

    def spawn(self, bindings: Sequence[str], prefix: str = "esim-") -> list[EsimDevice]:
        """One device per entry of `bindings` ("3443", "coap" or "https"), started."""
        made: list[EsimDevice] = []
        for binding in bindings:
            if binding not in BINDINGS:
                raise ValueError(f"binding {binding!r}: use one of {', '.join(BINDINGS)}")
            if binding == "https" and (self.esipa_url is None or self.client is None):
                raise ValueError("an HTTPS IPA needs esipa_url and client")
            ipa = self.make_ipa(len(self.devices) + len(made))
            behind = Object3443Ipa(ipa) if binding == "3443" else None
            template = self._template(behind)
            [index] = self.fleet.spawn(
                1, prefix=prefix, server_uri=self.coap_uri, template=template
            )
            endpoint = self.fleet.device(index).endpoint
            self.network.attach(endpoint, ipa.euicc)
            made.append(EsimDevice(index, endpoint, binding, ipa, behind))
        self.devices.extend(made)
        return made

    def _template(self, behind: Object3443Ipa | None) -> DeviceTemplate:
        base = fleet_template(self.fleet.engine, server_uri=self.coap_uri)
        base = self.network.template(base)
        if behind is not None:
            return base.replace(behind.object_template())
        if self._plain is None:  # shared by every CoAP/HTTPS device
            self._plain = DeviceTemplate(
                [o for o in base.objects.values() if o.id != ESIM], base.model
            )
        return self._plain

    def import_items(self, certificates: Callable[[str], tuple[str, str]]) -> list[dict[str, Any]]:
        """``POST /v1/esim/euiccs`` items: `certificates(eid)` -> (eUICC PEM, EUM PEM)."""
        items = []
        for device in self.devices:
            euicc_pem, eum_pem = certificates(device.ipa.euicc.eid)
            items.append(
                {
                    "euicc_certificate": euicc_pem,
                    "eum_certificate": eum_pem,
                    "endpoint": device.endpoint,
                }
            )
        return items

    async def poll(self, rounds: int = 1) -> None:
        """Every IPA talks to the eIM until it is quiet (object 3443 ones: one message put in
        /3443/0/3; the rest of the exchange runs as the eIM writes and executes)."""
        if self._context is None and any(d.binding == "coap" for d in self.devices):
            self._context = await Context.create_client_context()

        async def one(device: EsimDevice) -> None:
            for _ in range(rounds):
                if device.object3443 is not None:
                    view = self.fleet.device(device.index)
                    device.object3443.poll(view.set, self.fleet.loop.time())
                elif device.binding == "coap":
                    assert self._context is not None
                    await CoapIpa(device.ipa, self._context, self.coap_uri).settle()
                else:
                    assert self.client is not None and self.esipa_url is not None
                    await HttpsIpa(device.ipa, self.client, self.esipa_url).settle()

        await asyncio.gather(*(one(d) for d in self.devices))

    async def close(self) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None

    def euiccs(self) -> list[SimEuicc]:
        return [d.ipa.euicc for d in self.devices]
