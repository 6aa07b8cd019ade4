"""A bootstrap server and DM server(s) on 127.0.0.1 ephemeral ports, sharing one store, and
simulated devices that bootstrap from it.

``running(store, regions=("eu", "us"))`` starts one :class:`~lwm2m.server.LwM2MServer` per
region (each with CoAP and DTLS sockets; certificate mode when a CA is given) and the
bootstrap server, whose built-in default policy points at the first region's DM server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from bootstrap.ca import CertificateAuthority
from bootstrap.policy import Policy
from bootstrap.server import BootstrapConfig, BootstrapServer
from lwm2m.server import LwM2MServer, ServerConfig
from lwm2m.store import Store
from lwm2m.transport import Address, X509Credentials
from simulators.device import ClientConfig
from simulators.runner import SimulatedDevice

KEYS = {
    "dev-psk": bytes(range(16)),
    "dev-psk-2": bytes(range(16, 32)),
}
FACTORY_CSV = """endpoint,serial,security_mode,psk_identity,psk_key,tenant,region
dev-plain,SN-P1,nosec,,,acme,eu
dev-plain-2,SN-P2,nosec,,,acme,eu
dev-psk,SN-K1,psk,dev-psk,000102030405060708090a0b0c0d0e0f,acme,eu
dev-psk-2,SN-K2,psk,dev-psk-2,101112131415161718191a1b1c1d1e1f,acme,eu
"""


def uri(scheme: str, address: Address | None) -> str:
    assert address is not None
    return f"{scheme}://{address[0]}:{address[1]}"


@dataclass
class Stack:
    store: Store
    bs: BootstrapServer
    dm: dict[str, LwM2MServer]
    ca: CertificateAuthority | None = None
    devices: list[SimulatedDevice] = field(default_factory=list)

    def bs_uri(self, secure: bool) -> str:
        if secure:
            return uri("coaps", self.bs.coaps_address)
        return uri("coap", self.bs.coap_address)

    def dm_uri(self, region: str, secure: bool = True) -> str:
        server = self.dm[region]
        return uri("coaps", server.coaps_address) if secure else uri("coap", server.coap_address)

    def region_policy(self, region: str, **extra: Any) -> Policy:
        document: dict[str, Any] = {
            "name": f"region-{region}",
            "match": {"region": region},
            "servers": [
                {"uri": self.dm_uri(region), "nosec_uri": self.dm_uri(region, secure=False)}
            ],
        }
        document.update(extra)
        return Policy.from_document(document)

    def device(
        self,
        endpoint: str,
        *,
        mode: str = "psk",
        config: ClientConfig | None = None,
        x509: X509Credentials | None = None,
        **kwargs: Any,
    ) -> SimulatedDevice:
        """A factory-fresh device of ``mode`` (nosec, psk or x509) for this bootstrap server."""
        secure = mode != "nosec"
        device = SimulatedDevice(
            endpoint,
            bootstrap_uri=self.bs_uri(secure),
            bootstrap_psk=(endpoint.encode(), KEYS[endpoint]) if mode == "psk" else None,
            bootstrap_x509=x509,
            config=config or ClientConfig(lwm2m_version="1.1"),
            bootstrap_wait=15.0,
            **kwargs,
        )
        self.devices.append(device)
        return device


@contextlib.asynccontextmanager
async def running(
    store: Store,
    *,
    ca: CertificateAuthority | None = None,
    regions: tuple[str, ...] = ("eu",),
    secure_only: bool = False,
    token_bytes: Callable[[int], bytes] | None = None,
    request_timeout: float = 5.0,
    retries: int = 2,
) -> AsyncIterator[Stack]:
    dm: dict[str, LwM2MServer] = {}
    bs: BootstrapServer | None = None
    stack: Stack | None = None
    try:
        for region in regions:
            x509 = None
            if ca is not None:
                issued = ca.issue_server(f"dm-{region}", ip_addresses=["127.0.0.1"])
                x509 = ca.credentials(issued)
            dm[region] = await LwM2MServer.start(
                ServerConfig(
                    coap_host="127.0.0.1",
                    coap_port=0,
                    coaps_host="127.0.0.1",
                    coaps_port=0,
                    secure_only=secure_only,
                    x509=x509,
                ),
                store,
            )
        first = dm[regions[0]]
        kwargs: dict[str, Any] = {} if token_bytes is None else {"token_bytes": token_bytes}
        bs = await BootstrapServer.start(
            BootstrapConfig(
                coap_host="127.0.0.1",
                coap_port=0,
                coaps_host="127.0.0.1",
                coaps_port=0,
                dm_coap_uri=uri("coap", first.coap_address),
                dm_coaps_uri=uri("coaps", first.coaps_address),
                server_names=("127.0.0.1",),
                request_timeout=request_timeout,
                retries=retries,
            ),
            store,
            ca=ca,
            dm_server=first,
            **kwargs,
        )
        await bs.import_identities(FACTORY_CSV, source="factory.csv")
        stack = Stack(store, bs, dm, ca)
        yield stack
    finally:
        if stack is not None:
            for device in stack.devices:
                with contextlib.suppress(Exception):
                    await device.stop(timeout=1.0)
        if bs is not None:
            await bs.stop()
        for server in dm.values():
            await server.stop()
