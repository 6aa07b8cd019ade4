"""A real ``fleetloop serve`` with its eIM (``--esipa-https`` over TLS, ``--eim-ci``) and
simulated eUICCs + IPAs that reach it over the HTTPS ESipa binding: for the API, CLI and
esim-dimension tests (and benchmarks/bench_esim_switch.py).

:func:`start_smdp` adds a test SM-DP+ on loopback (certified by the test CI) for downloads;
:class:`Modem` ties a simulated IPA to the simulated LwM2M device that carries it, as the
device's modem does: when the eUICC switches to a profile whose carrier serves it, the device
gets a new address (a new socket) and sends a registration Update over it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.esim.euicc import EimAssociation, SimEuicc, SimProfile
from simulators.esim.https import EsipaError, HttpsIpa, client_for
from simulators.esim.ipa import SimIpa
from simulators.esim.smdp import LoopbackSmdp, SmdpServer
from simulators.fleet.runner import DeviceFleet
from tests.integration.conftest import Serve, _wait_for_api_json, fleetloop
from tests.sgp32.pki import MadePki, eid_with_check, make_cert, make_euicc, make_pki
from tests.sgp32.tls import client_context, make_tls

EIM_ID = "eim.fleetloop.test"
DP_AUTH = x509.ObjectIdentifier("2.23.146.1.2.1.4")
OLD_ICCID = "8988247000000000011"
NEW_ICCID = "8988247000000000029"
OLD_CARRIER, NEW_CARRIER = "Carrier A", "Carrier B"


def pem(cert: Any) -> str:
    return str(cert.public_bytes(serialization.Encoding.PEM).decode())


def der(cert: Any) -> bytes:
    return bytes(cert.public_bytes(serialization.Encoding.DER))


@dataclass
class EsimWorld:
    """The server, its eIM's public key, the test PKI (valid now) and the devices made."""

    serve: Serve
    pki: MadePki
    eim_key: ec.EllipticCurvePublicKey
    tls_ca: Path
    euiccs: dict[str, SimEuicc] = field(default_factory=dict)
    certs: dict[str, tuple[str, str]] = field(default_factory=dict)  # eid -> (euicc, eum) PEM

    @property
    def esipa_url(self) -> str:
        return f"https://127.0.0.1:{self.serve.port('esipa_https')}"

    def device(
        self, prefix: str, n: int, served: set[str] | None = None, rollback_after: float = 30.0
    ) -> tuple[SimEuicc, SimIpa]:
        """eUICC n of a family `prefix` (a 7-digit number): profile at carrier A enabled
        (the fallback), one at carrier B disabled."""
        eid = eid_with_check(f"890490320000000000000{prefix}{n:07d}")
        key, cert = make_euicc(self.pki, eid, now=datetime.now(UTC))
        euicc = SimEuicc(
            eid=eid,
            key=key,
            certificate_der=der(cert),
            eum_certificate_der=der(self.pki.eum),
            profiles={
                OLD_ICCID: SimProfile(OLD_ICCID, OLD_CARRIER, enabled=True, fallback=True),
                NEW_ICCID: SimProfile(NEW_ICCID, NEW_CARRIER),
            },
            eims={EIM_ID: EimAssociation(EIM_ID, self.eim_key)},
        )
        self.euiccs[eid] = euicc
        self.certs[eid] = (pem(cert), pem(self.pki.eum))
        carriers = {OLD_CARRIER, NEW_CARRIER} if served is None else served
        return euicc, SimIpa(euicc, carriers, rollback_after=rollback_after)

    def import_item(self, eid: str, endpoint: str | None = None) -> dict[str, Any]:
        euicc_pem, eum_pem = self.certs[eid]
        item: dict[str, Any] = {"euicc_certificate": euicc_pem, "eum_certificate": eum_pem}
        if endpoint is not None:
            item["endpoint"] = endpoint
        return item

    def client(self) -> httpx.AsyncClient:
        return client_for(client_context(self.tls_ca))


async def poll(ipas: Sequence[HttpsIpa], rounds: int = 1) -> None:
    """Each IPA talks to the eIM until quiet (or offline), `rounds` times, concurrently."""

    async def one(ipa: HttpsIpa) -> None:
        for _ in range(rounds):
            await ipa.settle()

    await asyncio.gather(*(one(i) for i in ipas))


@dataclass
class EsimFiles:
    """What a serve with the eIM needs on disk (kept across a restart: same data directory,
    same CI, same TLS identity)."""

    folder: Path
    pki: MadePki
    ci: Path
    tls: tuple[Path, Path, Path]  # certificate, key, CA

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @classmethod
    def make(cls, folder: Path) -> EsimFiles:
        folder.mkdir(parents=True, exist_ok=True)
        pki = make_pki(now=datetime.now(UTC))
        ci = folder / "ci.pem"
        ci.write_text(pem(pki.ci))
        return cls(folder, pki, ci, make_tls(folder))


def start_serve(
    files: EsimFiles, extra: Sequence[str] = (), env_extra: Mapping[str, str] | None = None
) -> EsimWorld:
    """Start ``fleetloop serve`` with the eIM on (every port ephemeral on 127.0.0.1)."""
    cert, key, ca = files.tls
    command = [
        *fleetloop(),
        "serve",
        "--data-dir",
        str(files.data_dir),
        "--coap",
        "127.0.0.1:0",
        "--coaps",
        "127.0.0.1:0",
        "--bs-coap",
        "off",
        "--bs-coaps",
        "off",
        "--api",
        "127.0.0.1:0",
        "--esipa-https",
        "127.0.0.1:0",
        "--eim-id",
        EIM_ID,
        "--eim-ci",
        str(files.ci),
        "--x509-cert",
        str(cert),
        "--x509-key",
        str(key),
        "--x509-ca",
        str(ca),
        "--log-level",
        "warning",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env.update(env_extra or {})
    (files.data_dir / "api.json").unlink(missing_ok=True)
    with (files.folder / "serve.log").open("a") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, text=True)
    info = _wait_for_api_json(files.data_dir, process)
    loaded = serialization.load_pem_private_key((files.data_dir / "eim-key.pem").read_bytes(), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    return EsimWorld(Serve(process, files.data_dir, info), files.pki, loaded.public_key(), ca)


def stop_serve(world: EsimWorld) -> None:
    process = world.serve.process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def esim_serve(folder: Path, extra: Sequence[str] = ()) -> Iterator[EsimWorld]:
    """``fleetloop serve`` with the eIM on, every port ephemeral on 127.0.0.1; SIGTERM at the
    end."""
    world = start_serve(EsimFiles.make(folder), extra)
    try:
        yield world
    finally:
        stop_serve(world)


async def start_smdp(files: EsimFiles) -> tuple[LoopbackSmdp, SmdpServer]:
    """A test SM-DP+ over TLS on 127.0.0.1 (port 0), its certificate from the test CI; serve
    must trust the TLS CA (``FLEETLOOP_EIM_SMDP_CA``)."""
    pki = files.pki
    cert, key, _ = files.tls
    smdp_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test SM-DP+")])
    smdp_cert = make_cert(
        name,
        smdp_key,
        pki.ci.subject,
        pki.ci_key,
        ca=False,
        policy=DP_AUTH,
        now=pki.ci.not_valid_before_utc,
    )
    smdp = LoopbackSmdp("", smdp_key, smdp_cert, pki.ci)
    server = SmdpServer(smdp, cert, key)
    smdp.address = f"127.0.0.1:{await server.start()}"
    return smdp, server


@dataclass
class Modem:
    """A device's modem: its IPA polls the eIM; after the eUICC enabled another profile that
    the network serves, the LwM2M client gets a new address and updates its registration
    (what the campaign's enable waits for). ``updates`` counts those."""

    fleet: DeviceFleet
    index: int
    remote: HttpsIpa
    enabled: str | None = None
    updates: int = 0
    exchanges: int = 0

    def __post_init__(self) -> None:
        profile = self.remote.ipa.euicc.enabled
        self.enabled = profile.iccid if profile is not None else None

    async def poll(self) -> None:
        with contextlib.suppress(EsipaError, httpx.HTTPError):  # offline: the next poll retries
            done = await self.remote.settle()
            self.exchanges += done
        profile = self.remote.ipa.euicc.enabled
        iccid = profile.iccid if profile is not None else None
        if iccid != self.enabled and self.remote.ipa.connected:
            self.enabled = iccid
            self.fleet.rebind(self.index)  # the new bearer: a new address
            self.fleet.device(self.index).trigger_update()
            self.updates += 1
        elif not self.remote.ipa.connected:
            self.enabled = iccid


async def run_modems(modems: Sequence[Modem], stop: asyncio.Event, every: float = 0.3) -> None:
    """Every modem polls until ``stop`` is set (each on its own, as devices do)."""

    async def one(modem: Modem) -> None:
        while not stop.is_set():
            await modem.poll()
            await asyncio.sleep(every)

    await asyncio.gather(*(one(m) for m in modems))


async def set_region(api: Any, prefix: str, region: str, count: int, timeout: float = 30.0) -> None:
    """Move the ``count`` devices named ``prefix*`` to ``region`` in the inventory, once the
    inventory has a record of each (it is written after the registration is answered)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        moved = await api.post(
            "/v1/inventory/bulk", {"select": f"endpoint={prefix}*", "region": region}
        )
        if moved["count"] >= count:
            return
        if loop.time() > deadline:
            raise AssertionError(f"only {moved['count']} of {count} {prefix}* in the inventory")
        await asyncio.sleep(0.2)
