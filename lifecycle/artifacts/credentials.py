"""Credential rotation: a device's DM PSK replaced by server-initiated re-bootstrap, and the old
one refused once the new one is proven.

Why re-bootstrap and not a direct write: LwM2M 1.1 (core §E.1, Security object) lets only the
bootstrap server write object 0 -- a DM server's Write to /0 is refused -- so the DM server
asks the device to bootstrap again (Execute /1/x/9, the Bootstrap-Request Trigger). The
bootstrap server then does what it does at every bootstrap (:mod:`bootstrap.server`): a fresh
PSK from :class:`bootstrap.credentials.CredentialIssuer` (128 random bits per device), new
Security and Server instances written to the device, and the DM store's record for the
endpoint replaced in the same transaction that records the bootstrap -- sealed at rest by
:mod:`lwm2m.store.secrets`. From that commit on the DM server holds only the new key, so a
handshake with the old one fails; the commit happens after the device acknowledged every
write of the sequence, so it already holds the new key.

The credentials dimension's desired value is ``{"generation": N}`` (a rotation number;
:func:`lifecycle.artifacts.resolve.resolve_credentials` picks the next one). The reconciler's
step for it is :class:`~lifecycle.state.dimensions.RotateCredentials`, which calls
:meth:`CredentialRotator.rotate` (its ``credentials`` hook):

1. no rotation to ``N`` recorded yet: remember the fingerprint of the current key, Execute
   /1/x/9 (through :meth:`bootstrap.manager.BootstrapManager.rebootstrap`, audited), record
   the rotation as *requested* (``lc_credential_rotation``, so a restart does not ask again);
2. requested: the rotation is **proven** when the device is registered again over DTLS, that
   registration began after the request, and the key in the DM store is not the old one --
   then it is *verified* and the reconciler records ``{"generation": N}`` as reported (the
   dimension is applied); until then the pass waits (the device's registration wakes it).

A device registered ``retry_after`` seconds after the request with its old registration or
its old credential did not re-bootstrap (the Execute was lost with a crash, or the bootstrap
failed before its commit, so the old key still works): it is asked again. A device that
never comes back stays pending; a campaign's deadline turns that into TIMED_OUT. A NoSec
device has no credential to rotate: a permanent failure that says so.

**Certificates** rotate the same way: a device whose bootstrap policy provisions certificates
gets a fresh key pair and certificate from the CA at its re-bootstrap (the previous one is
revoked as superseded), and the proof compares the pinned certificate fingerprint instead of
the PSK. :func:`expiring_certificates` lists the devices whose current DM certificate expires
within a window -- ``POST /v1/credentials/renew`` (``fleetloop credentials renew
--within-days N``) sets the next credentials generation on exactly those.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from bootstrap.errors import BootstrapError, RebootstrapFailed, UnknownIdentity
from bootstrap.manager import BootstrapManager, DmServer
from bootstrap.tables import CERTIFICATE
from lifecycle.artifacts.bundle_tables import CREDENTIAL_ROTATION
from lwm2m.store import Store, Tx

ACTOR = "credential-rotation"


class RotationFailed(Exception):
    """The rotation cannot go on: ``permanent`` (retrying will not help) or transient."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Progress(StrEnum):
    """Where one device's rotation stands after :meth:`CredentialRotator.rotate`."""

    REQUESTED = "requested"  # re-bootstrap asked for now
    WAITING = "waiting"  # asked for earlier; not proven yet
    VERIFIED = "verified"  # the device registered with the new key


@dataclass(frozen=True, slots=True)
class Rotation:
    """One row of ``lc_credential_rotation``."""

    endpoint: str
    generation: int
    phase: str
    old_fingerprint: str | None
    requested_at: float
    verified_at: float | None
    detail: str


def fingerprint(key: bytes | None) -> str | None:
    """A key's SHA-256, shortened: enough to tell keys apart, useless to recover one."""
    return hashlib.sha256(key).hexdigest()[:32] if key else None


_C = CREDENTIAL_ROTATION.c


class RotationRepository:
    """``lc_credential_rotation`` inside the store's transactions."""

    def get(self, tx: Tx, endpoint: str) -> Rotation | None:
        row = tx.execute(select(CREDENTIAL_ROTATION).where(_C.endpoint == endpoint)).first()
        if row is None:
            return None
        return Rotation(
            row.endpoint,
            int(row.generation),
            row.phase,
            row.old_fingerprint,
            float(row.requested_at),
            row.verified_at,
            row.detail or "",
        )

    def put(self, tx: Tx, rotation: Rotation) -> None:
        values: dict[str, Any] = {
            "generation": rotation.generation,
            "phase": rotation.phase,
            "old_fingerprint": rotation.old_fingerprint,
            "requested_at": rotation.requested_at,
            "verified_at": rotation.verified_at,
            "detail": rotation.detail,
        }
        done = tx.execute(
            CREDENTIAL_ROTATION.update().where(_C.endpoint == rotation.endpoint).values(**values)
        )
        if not done.rowcount:
            tx.execute(CREDENTIAL_ROTATION.insert(), {"endpoint": rotation.endpoint, **values})


class CredentialRotator:
    """Rotates DM PSKs by re-bootstrap (module docstring); the reconciler's ``credentials``
    hook."""

    def __init__(
        self,
        store: Store,
        dm_server: DmServer,
        bootstrap: BootstrapManager,
        *,
        clock: Callable[[], float] = time.time,
        retry_after: float = 300.0,
    ) -> None:
        self.store = store
        self.dm_server = dm_server
        self.bootstrap = bootstrap
        self.clock = clock
        #: Seconds after which a device still on its old registration is asked again.
        self.retry_after = retry_after
        self.rotations = RotationRepository()

    async def _current_key(self, endpoint: str) -> tuple[bool, str | None]:
        """(has a security record, fingerprint of its PSK -- or of its pinned certificate)."""
        security = await self.store.read(lambda tx: self.store.security.get(tx, endpoint))
        if security is None:
            return False, None
        if security.psk is not None:
            return True, fingerprint(security.psk.key)
        if security.x509 is not None:
            pinned = security.x509.fingerprint_sha256 or security.x509.subject
            return True, "x509:" + pinned
        return True, None

    async def rotate(self, endpoint: str, generation: int) -> Progress:
        """Move ``endpoint`` towards credentials generation ``generation`` (module docstring).
        Raises :class:`RotationFailed`."""
        found = await self.store.read(lambda tx: self.rotations.get(tx, endpoint))
        if found is not None and found.generation == generation:
            if found.phase == Progress.VERIFIED:
                return Progress.VERIFIED
            if await self._proven(found):
                now = self.clock()
                proven = Rotation(
                    endpoint,
                    generation,
                    Progress.VERIFIED.value,
                    found.old_fingerprint,
                    found.requested_at,
                    now,
                    "registered with the new key",
                )
                await self.store.write(lambda tx: self.rotations.put(tx, proven))
                return Progress.VERIFIED
            if not await self._stuck(found):
                return Progress.WAITING
            return await self._request(endpoint, generation, found.old_fingerprint)
        has_record, old = await self._current_key(endpoint)
        if old is None:
            raise RotationFailed(
                f"{endpoint} has no PSK or certificate in the DM store"
                + ("" if has_record else " (no security record: it registers with NoSec)")
                + "; there is nothing to rotate -- give it credentials through bootstrap first",
                permanent=True,
            )
        return await self._request(endpoint, generation, old)

    async def _stuck(self, rotation: Rotation) -> bool:
        """Asked long ago, and the device is registered on the registration it had then or
        with the credential it had then (a device that is away may still be bootstrapping)."""
        if self.clock() - rotation.requested_at <= self.retry_after:
            return False
        registration = self.dm_server.registration(rotation.endpoint)
        if registration is None:
            return False
        if registration.registered_at < rotation.requested_at:
            return True
        _, current = await self._current_key(rotation.endpoint)
        return current == rotation.old_fingerprint

    async def _request(self, endpoint: str, generation: int, old: str | None) -> Progress:
        """Execute /1/x/9 and record the request (``old``: the credential it replaces)."""
        requested_at = self.clock()
        try:
            await self.bootstrap.rebootstrap(endpoint, dm_server=self.dm_server, actor=ACTOR)
        except UnknownIdentity as err:
            raise RotationFailed(
                f"{err}: only devices with a factory identity can be re-bootstrapped",
                permanent=True,
            ) from None
        except RebootstrapFailed as err:
            permanent = " 4." in f" {err}" and "4.08" not in str(err)
            raise RotationFailed(str(err), permanent=permanent) from None
        except BootstrapError as err:
            raise RotationFailed(str(err), permanent=True) from None
        rotation = Rotation(
            endpoint, generation, Progress.REQUESTED.value, old, requested_at, None, "re-bootstrap"
        )
        await self.store.write(lambda tx: self.rotations.put(tx, rotation))
        return Progress.REQUESTED

    async def _proven(self, rotation: Rotation) -> bool:
        registration = self.dm_server.registration(rotation.endpoint)
        if registration is None or not registration.secure:
            return False
        if registration.registered_at < rotation.requested_at:
            return False  # still the registration from before the re-bootstrap
        _, current = await self._current_key(rotation.endpoint)
        return current is not None and current != rotation.old_fingerprint

    async def status(self, endpoint: str) -> Rotation | None:
        return await self.store.read(lambda tx: self.rotations.get(tx, endpoint))


@dataclass(frozen=True, slots=True)
class ExpiringCertificate:
    """A device's current DM certificate that expires within the window asked for."""

    endpoint: str
    serial: str
    not_after: float


_CERT = CERTIFICATE.c


def expiring_certificates(tx: Tx, *, within_s: float, now: float) -> list[ExpiringCertificate]:
    """Devices whose newest unrevoked DM certificate (``bs_certificate``, kind ``device-dm``)
    expires before ``now + within_s`` (already expired ones included), endpoint order. Only
    the newest counts: a device renewed meanwhile has a later one."""
    rows = tx.execute(
        select(_CERT.endpoint, _CERT.serial, _CERT.not_after).where(
            _CERT.kind == "device-dm", _CERT.revoked_at.is_(None), _CERT.endpoint.is_not(None)
        )
    )
    newest: dict[str, tuple[float, str]] = {}
    for row in rows:
        current = newest.get(row.endpoint)
        if current is None or row.not_after > current[0]:
            newest[str(row.endpoint)] = (float(row.not_after), str(row.serial))
    limit = now + within_s
    return [
        ExpiringCertificate(endpoint, serial, not_after)
        for endpoint, (not_after, serial) in sorted(newest.items())
        if not_after <= limit
    ]


__all__ = [
    "ACTOR",
    "CredentialRotator",
    "ExpiringCertificate",
    "Progress",
    "Rotation",
    "RotationFailed",
    "RotationRepository",
    "expiring_certificates",
    "fingerprint",
]
