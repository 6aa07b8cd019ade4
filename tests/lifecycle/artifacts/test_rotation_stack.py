"""The credential rotator against a real bootstrap server and DM server (in-process, real
DTLS sockets on 127.0.0.1 port 0), SQLite and PostgreSQL: a PSK device and a certificate
device each rotate -- requested, waiting while it re-bootstraps, verified once it registered
with the new credential -- the old credential stops working, a superseded DM certificate is
revoked (so it no longer counts as expiring), a NoSec device fails permanently, and a request
the device never acted on is asked again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bootstrap import CertificateAuthority
from bootstrap import create_schema as create_bootstrap_schema
from lifecycle.artifacts.credentials import (
    CredentialRotator,
    Progress,
    Rotation,
    RotationFailed,
    RotationRepository,
    expiring_certificates,
    fingerprint,
)
from lwm2m.store import Store
from lwm2m.transport import HandshakeFailed, X509Credentials
from simulators.device.events import Registered
from tests.bootstrap.conftest import run
from tests.bootstrap.stack import KEYS, Stack, running
from tests.bootstrap.test_end_to_end import dm_address, handshake, security

YEAR = 365 * 86_400.0


async def _rotated(rotator: CredentialRotator, endpoint: str, generation: int) -> None:
    """Ask until the rotation is verified (the reconciler asks on every registration)."""
    for _ in range(300):
        if await rotator.rotate(endpoint, generation) is Progress.VERIFIED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{endpoint}: rotation {generation} not verified")


async def _registered_again(stack: Stack, endpoint: str, mark: int) -> None:
    device = next(d for d in stack.devices if d.endpoint == endpoint)
    await device.wait_for(lambda e: isinstance(e, Registered), 20, since=mark)


def test_psk_and_certificate_devices_rotate_and_the_old_credential_is_refused(
    store: Store, tmp_path: Path
) -> None:
    create_bootstrap_schema(store)
    ca = CertificateAuthority.create(tmp_path / "ca")

    async def scenario() -> None:
        async with running(store, ca=ca) as s:
            report = await s.bs.import_identities(
                "endpoint,security_mode\ndev-cert,x509\n",
                source="certs.csv",
                key_dir=tmp_path / "keys",
            )
            cert_file, key_file = report.issued["dev-cert"]
            factory = X509Credentials(
                chain=(Path(cert_file).read_bytes(),),
                private_key=Path(key_file).read_bytes(),
                trust_anchors=(ca.pem,),
            )
            devices = {
                "dev-psk": s.device("dev-psk"),
                "dev-cert": s.device("dev-cert", mode="x509", x509=factory),
                "dev-plain": s.device("dev-plain", mode="nosec"),
            }
            for device in devices.values():
                await device.start()
                await device.wait_registered()
            rotator = CredentialRotator(store, s.dm["eu"], s.bs.manager)
            old_psk = await security(store, "dev-psk")
            old_cert = await security(store, "dev-cert")
            assert old_psk.psk is not None and old_cert.x509 is not None
            old_serials = {
                e.endpoint: e.serial
                for e in await store.read(
                    lambda tx: expiring_certificates(tx, within_s=100 * YEAR, now=0.0)
                )
            }

            marks = {e: len(d.events) for e, d in devices.items()}
            assert await rotator.rotate("dev-psk", 1) is Progress.REQUESTED
            assert await rotator.rotate("dev-cert", 1) is Progress.REQUESTED
            record = await rotator.status("dev-psk")
            assert record is not None and record.phase == "requested"
            await _registered_again(s, "dev-psk", marks["dev-psk"])
            await _registered_again(s, "dev-cert", marks["dev-cert"])
            await _rotated(rotator, "dev-psk", 1)
            await _rotated(rotator, "dev-cert", 1)
            assert await rotator.rotate("dev-psk", 1) is Progress.VERIFIED  # idempotent

            new_psk = await security(store, "dev-psk")
            assert new_psk.psk is not None and new_psk.psk.key != old_psk.psk.key
            with pytest.raises(HandshakeFailed):
                await handshake(dm_address(s), psk=(old_psk.psk.identity.encode(), old_psk.psk.key))
            await handshake(dm_address(s), psk=(new_psk.psk.identity.encode(), new_psk.psk.key))

            new_cert = await security(store, "dev-cert")
            assert new_cert.x509 is not None
            assert new_cert.x509.fingerprint_sha256 != old_cert.x509.fingerprint_sha256
            now_serials = {
                e.endpoint: e.serial
                for e in await store.read(
                    lambda tx: expiring_certificates(tx, within_s=100 * YEAR, now=0.0)
                )
            }
            assert now_serials["dev-cert"] != old_serials["dev-cert"]  # the old one was revoked
            registration = s.dm["eu"].registration("dev-cert")
            assert registration is not None and registration.identity.kind.value == "x509"

            with pytest.raises(RotationFailed) as nosec:
                await rotator.rotate("dev-plain", 1)
            assert nosec.value.permanent and "nothing to rotate" in str(nosec.value)
            assert KEYS["dev-psk"] != new_psk.psk.key  # the bootstrap key is not the DM key

    run(scenario(), timeout=90)


def test_a_request_the_device_never_acted_on_is_asked_again(store: Store) -> None:
    """A rotation recorded as requested long ago (the Execute lost with a crash) while the
    device kept its registration: the next pass asks again instead of waiting forever."""
    create_bootstrap_schema(store)

    async def scenario() -> None:
        async with running(store) as s:
            device = s.device("dev-psk")
            await device.start()
            await device.wait_registered()
            old = await security(store, "dev-psk")
            assert old.psk is not None
            registration = s.dm["eu"].registration("dev-psk")
            assert registration is not None
            lost = Rotation(
                "dev-psk",
                1,
                "requested",
                fingerprint(old.psk.key),
                registration.registered_at + 0.001,  # after it registered; never re-bootstrapped
                None,
                "re-bootstrap",
            )
            await store.write(lambda tx: RotationRepository().put(tx, lost))
            patient = CredentialRotator(store, s.dm["eu"], s.bs.manager, retry_after=3600.0)
            assert await patient.rotate("dev-psk", 1) is Progress.WAITING
            rotator = CredentialRotator(store, s.dm["eu"], s.bs.manager, retry_after=0.0)
            await asyncio.sleep(0.01)  # a moment after the lost request
            mark = len(device.events)
            assert await rotator.rotate("dev-psk", 1) is Progress.REQUESTED
            await _registered_again(s, "dev-psk", mark)
            await _rotated(rotator, "dev-psk", 1)
            new = await security(store, "dev-psk")
            assert new.psk is not None and new.psk.key != old.psk.key

    run(scenario(), timeout=60)
