"""An eSIM lab for ``fleetloop sim``: a CI -> EUM certificate chain of its own, simulated
devices with an eUICC and an IPA on the ESipa CoAP binding (:class:`~simulators.esim.fleet.
EsimFleet`), and their modems.

* :func:`make_lab_pki` writes ``ci.pem`` (what ``fleetloop serve --eim-ci`` trusts), ``eum.pem``
  and their keys into a folder; :func:`load_lab_pki` reads them back.
* :func:`lab_ipa` makes a device's eUICC -- the EID from its endpoint name, a certificate from
  the lab EUM, two profiles: :data:`ICCID_A` of Carrier A enabled (the fallback) and
  :data:`ICCID_B` of Carrier B installed, disabled -- trusting the eIM given, and its IPA.
* :class:`LabModems` polls every IPA over CoAP and, once an eUICC switched to a profile whose
  network serves it, re-attaches the device (a new address) and sends a registration Update --
  what a campaign's enable waits for. The devices' object 4 reports the enabled profile's
  carrier's PLMN (:class:`~simulators.esim.network.ServingNetwork`).

Lab only: the keys are written in clear (owner-only files) and the certificates say "Lab".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiocoap import Context
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgp32.certificates import POLICY_CI, POLICY_EUICC, POLICY_EUM
from simulators.device.esim import eid_for
from simulators.esim.certs import make_cert, x509_name
from simulators.esim.coap import CoapIpa
from simulators.esim.euicc import EimAssociation, SimEuicc, SimProfile
from simulators.esim.fleet import EsimDevice, EsimFleet
from simulators.esim.ipa import SimIpa

ICCID_A, ICCID_B = "8988247000000000011", "8988247000000000029"
CARRIER_A, CARRIER_B = "Carrier A", "Carrier B"
EUM_PREFIX = "89049032"  # the EIDs of simulators.device.esim.eid_for start with it
FILES = ("ci.pem", "ci.key", "eum.pem", "eum.key")


class LabError(Exception):
    """The lab folder is missing or unreadable; the message says what to run."""


@dataclass(frozen=True)
class LabPki:
    ci_key: ec.EllipticCurvePrivateKey
    ci: x509.Certificate
    eum_key: ec.EllipticCurvePrivateKey
    eum: x509.Certificate


_CI_NAME = x509_name((NameOID.COMMON_NAME, "fleetloop lab CI"))
_EUM_NAME = x509_name((NameOID.COMMON_NAME, "Lab EUM"), (NameOID.ORGANIZATION_NAME, "Lab EUM"))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_lab_pki(folder: Path) -> LabPki:
    """A new lab CI and EUM in ``folder`` (created; existing lab files are refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = [f for f in FILES if (folder / f).exists()]
    if taken:
        raise LabError(f"{folder} already holds a lab PKI ({', '.join(taken)}); use it")
    ci_key, eum_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ci = make_cert(_CI_NAME, ci_key, _CI_NAME, ci_key, ca=True, policy=POLICY_CI)
    permitted = x509_name(
        (NameOID.SERIAL_NUMBER, EUM_PREFIX), (NameOID.ORGANIZATION_NAME, "Lab EUM")
    )
    eum = make_cert(
        _EUM_NAME, eum_key, _CI_NAME, ci_key, ca=True, policy=POLICY_EUM, permitted=permitted
    )
    for name, data in (
        ("ci.pem", ci.public_bytes(serialization.Encoding.PEM)),
        ("eum.pem", eum.public_bytes(serialization.Encoding.PEM)),
    ):
        (folder / name).write_bytes(data)
    for name, key in (("ci.key", ci_key), ("eum.key", eum_key)):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(_key_pem(key))
    return LabPki(ci_key, ci, eum_key, eum)


def load_lab_pki(folder: Path) -> LabPki:
    """The lab CI and EUM of ``folder`` (:func:`make_lab_pki`)."""
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise LabError(
            f"{folder} holds no lab PKI (missing {', '.join(missing)}): run `fleetloop sim "
            f"esim-pki {folder}` and start serve with --eim-ci {folder / 'ci.pem'}"
        )
    try:
        keys = []
        for name in ("ci.key", "eum.key"):
            key = serialization.load_pem_private_key((folder / name).read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{name} is not an EC key")
            keys.append(key)
        ci = x509.load_pem_x509_certificate((folder / "ci.pem").read_bytes())
        eum = x509.load_pem_x509_certificate((folder / "eum.pem").read_bytes())
    except (OSError, ValueError) as err:
        raise LabError(f"cannot read the lab PKI in {folder}: {err}") from None
    return LabPki(keys[0], ci, keys[1], eum)


def _euicc_identity(
    pki: LabPki, eid: str, folder: Path | None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The eUICC's key and certificate: kept in ``folder/euiccs/`` so that a second run
    presents the certificate the eIM imported (another one for the EID is a conflict)."""
    base = folder / "euiccs" if folder is not None else None
    if base is not None and (base / f"{eid}.key").exists() and (base / f"{eid}.pem").exists():
        key = serialization.load_pem_private_key((base / f"{eid}.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((base / f"{eid}.pem").read_bytes())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509_name(
        (NameOID.COMMON_NAME, "Lab eUICC"),
        (NameOID.SERIAL_NUMBER, eid),
        (NameOID.ORGANIZATION_NAME, "Lab EUM"),
    )
    cert = make_cert(subject, key, pki.eum.subject, pki.eum_key, ca=False, policy=POLICY_EUICC)
    if base is not None:
        base.mkdir(exist_ok=True)
        (base / f"{eid}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(base / f"{eid}.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(_key_pem(key))
    return key, cert


def lab_ipa(
    pki: LabPki,
    endpoint: str,
    eim_id: str,
    eim_key: ec.EllipticCurvePublicKey,
    *,
    folder: Path | None = None,
    served: Sequence[str] = (CARRIER_A, CARRIER_B),
    rollback_after: float = 30.0,
) -> tuple[SimIpa, str]:
    """``endpoint``'s eUICC and IPA (module docstring) and the eUICC certificate, PEM; with
    ``folder`` (the lab's) its key and certificate are kept there across runs."""
    eid = eid_for(endpoint)
    key, cert = _euicc_identity(pki, eid, folder)
    euicc = SimEuicc(
        eid=eid,
        key=key,
        certificate_der=cert.public_bytes(serialization.Encoding.DER),
        eum_certificate_der=pki.eum.public_bytes(serialization.Encoding.DER),
        profiles={
            ICCID_A: SimProfile(ICCID_A, CARRIER_A, enabled=True, fallback=True),
            ICCID_B: SimProfile(ICCID_B, CARRIER_B),
        },
        eims={eim_id: EimAssociation(eim_id, eim_key)},
    )
    ipa = SimIpa(euicc, set(served), rollback_after=rollback_after)
    return ipa, cert.public_bytes(serialization.Encoding.PEM).decode()


class LabModems:
    """The modems of an :class:`EsimFleet`'s CoAP devices (module docstring)."""

    def __init__(self, esim: EsimFleet) -> None:
        self.esim = esim
        self.enabled: dict[str, str | None] = {}
        self.switches = 0
        self.errors = 0
        self._context: Context | None = None

    async def step(self) -> None:
        """Each IPA talks to the eIM until quiet; a device that switched re-attaches."""
        if self._context is None:
            self._context = await Context.create_client_context()
        await asyncio.gather(*(self._one(d) for d in self.esim.devices))

    async def _one(self, device: EsimDevice) -> None:
        assert self._context is not None
        ipa = device.ipa
        before = self.enabled.setdefault(
            device.endpoint, ipa.euicc.enabled.iccid if ipa.euicc.enabled else None
        )
        try:
            await CoapIpa(ipa, self._context, self.esim.coap_uri).settle()
        except Exception:  # the eIM refused or did not answer (EsipaError, aiocoap's errors)
            self.errors += 1  # the next poll tries again
        profile = ipa.euicc.enabled
        now = profile.iccid if profile is not None else None
        if now != before and ipa.connected:  # the new bearer: a new address, an Update
            self.enabled[device.endpoint] = now
            fleet = self.esim.fleet
            fleet.rebind(device.index)
            fleet.device(device.index).trigger_update()
            self.switches += 1
        elif not ipa.connected:
            self.enabled[device.endpoint] = now

    async def run(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def counts(self) -> dict[str, int]:
        """Devices per enabled ICCID."""
        out: dict[str, int] = {}
        for device in self.esim.devices:
            profile = device.ipa.euicc.enabled
            key = profile.iccid if profile is not None else "none"
            out[key] = out.get(key, 0) + 1
        return out

    async def close(self) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None


__all__ = [
    "CARRIER_A",
    "CARRIER_B",
    "ICCID_A",
    "ICCID_B",
    "LabError",
    "LabModems",
    "LabPki",
    "lab_ipa",
    "load_lab_pki",
    "make_lab_pki",
]
