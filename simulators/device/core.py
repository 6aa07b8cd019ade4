"""One simulated device as a single sans-IO object: its object store, its LwM2M client and a
CoAP endpoint of its own, behind the same transport contract as the CoAP core.

::

    device = DeviceCore(template, "sim-0001", server_peer, config=ClientConfig(), rng=rng)
    device.start(now)
    device.receive_datagram(data, peer, now)
    device.datagrams_to_send(now) -> [(bytes, peer)]
    device.get_timer() / device.handle_timer(now)
    device.next_event() -> ClientEvent | None

In queue mode a sleeping device drops what it receives (``dropped_while_asleep`` counts it),
which is what the server's queue-mode logic exists for.

Bootstrap: ``device.start_bootstrap(bootstrap_peer, now)`` runs a
:class:`~simulators.device.bootstrap.BootstrapClient` on the same CoAP endpoint; events from and
for the bootstrap peer go to it, everything else to the DM client. ``BootstrapFinished`` (or
``BootstrapFailed``) comes out of ``next_event`` like every other event.
"""

from __future__ import annotations

from collections.abc import Hashable

from lwm2m.coap import CoapEndpoint, EndpointConfig, RandomSource
from simulators.device.bootstrap import BootstrapClient
from simulators.device.client import LwM2MClient
from simulators.device.config import ClientConfig
from simulators.device.events import ClientEvent
from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceTemplate


class DeviceCore:
    """A device = store + client + its own CoAP endpoint (see the module docstring)."""

    __slots__ = ("bootstrap", "client", "coap", "dropped_while_asleep", "store")

    def __init__(
        self,
        template: DeviceTemplate,
        endpoint_name: str,
        server: Hashable,
        *,
        config: ClientConfig,
        rng: RandomSource,
        coap_config: EndpointConfig | None = None,
        clock_offset: float = 0.0,
    ) -> None:
        self.store = ObjectStore(template, endpoint_name, clock_offset=clock_offset)
        self.coap = CoapEndpoint(rng=rng, config=coap_config)
        self.client = LwM2MClient(self.store, self.coap, server, config=config, rng=rng)
        self.dropped_while_asleep = 0
        self.bootstrap: BootstrapClient | None = None

    # -- transport contract ------------------------------------------------------------------
    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None:
        if self.client.asleep:
            self.dropped_while_asleep += 1
            return
        self.coap.receive_datagram(data, peer, now)
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Hashable]]:
        return self.coap.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        timers = [self.coap.get_timer(), self.client.get_timer()]
        if self.bootstrap is not None:
            timers.append(self.bootstrap.get_timer())
        due = [t for t in timers if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        coap = self.coap.get_timer()
        if coap is not None and coap <= now:
            self.coap.handle_timer(now)
            self._pump(now)
        client = self.client.get_timer()
        if client is not None and client <= now:
            self.client.handle_timer(now)
            self._pump(now)
        bootstrap = self.bootstrap
        if bootstrap is not None:
            due = bootstrap.get_timer()
            if due is not None and due <= now:
                bootstrap.handle_timer(now)
                self._pump(now)

    def next_event(self) -> ClientEvent | None:
        return self.client.next_event()

    def forget_peer(self, peer: Hashable, now: float) -> None:
        """The transport lost the session (DTLS closed by the server): pending exchanges fail
        now; a lost registration makes the client register again."""
        self.coap.forget_peer(peer, now)
        self._pump(now)

    def _pump(self, now: float) -> None:
        coap, client, bootstrap = self.coap, self.client, self.bootstrap
        while (event := coap.next_event()) is not None:
            if bootstrap is not None and bootstrap.owns(event):
                bootstrap.handle_coap_event(event, now)
            else:
                client.handle_coap_event(event, now)

    # -- application shortcuts ---------------------------------------------------------------
    def start(self, now: float) -> None:
        self.client.start(now)
        self._pump(now)

    def stop(self, now: float) -> None:
        self.client.stop(now)
        self._pump(now)

    def start_bootstrap(self, server: Hashable, now: float) -> BootstrapClient:
        """Bootstrap from the server at ``server`` (a peer of this device's endpoint)."""
        bootstrap = self.bootstrap
        if bootstrap is None or bootstrap.server != server:
            bootstrap = BootstrapClient(
                self.store, self.coap, server, config=self.client.config, emit=self.client._emit
            )
            bootstrap.version = self.client.lwm2m_version
            self.bootstrap = bootstrap
        bootstrap.start(now)
        self._pump(now)
        return bootstrap


__all__ = ["DeviceCore"]
