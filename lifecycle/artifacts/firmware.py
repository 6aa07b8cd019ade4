"""The firmware repository: signed, versioned, content-addressed images that fleetloop serves
to devices itself (:mod:`lifecycle.artifacts.firmware_serving`).

An image is published once and never changes: its bytes are stored once per SHA-256
(``lc_fw_blob``), its metadata (semantic version, SKU compatibility, size, digest, signature,
signer, publisher) in ``lc_fw_image``. Its **id** is the first 16 hex digits of the SHA-256,
which is also its serving path (``/fw/<id>``) and its CoAP ETag: a changed image is a new id.

Trust: the repository keeps vendor public keys (ECDSA P-256); an upload carries a signature
over the image's SHA-256 by one of those keys (ECDSA with SHA-256 over the digest, DER), and
an upload whose signature verifies against none of them is refused with
:class:`SignatureRefused` -- before anything is written. So an image in the repository was
signed by a trusted vendor; the key that verified it is recorded as ``signer``.

Quarantine: an operator marks an image bad (who, why, when). A quarantined image resolves
for no new campaign (:meth:`FirmwareRepository.resolve` refuses it) and is served for no new
download (block 0 of ``/fw/<id>`` answers 4.04); a download already under way may finish.

Every change commits with its audit record in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import bindparam, select, update

from lifecycle.artifacts.firmware_tables import FW_BLOB, FW_IMAGE, FW_VENDOR_KEY
from lifecycle.campaigns.model import Component
from lifecycle.state.dimensions import Dimension, parse_desired
from lifecycle.versions import is_version, version_key
from lwm2m.store import Tx
from lwm2m.store.audit import AuditLog

MAX_IMAGE_SIZE = 16 * 1024 * 1024
"""Largest image accepted: a device's CoAP stack reassembles the whole body (and the default
CoAP body limit is 16 MiB)."""
ID_LENGTH = 16
"""Hex digits of the SHA-256 that name an image (64 bits: collisions are refused, not hoped
away -- see :meth:`FirmwareRepository.publish`)."""
SERVE_PREFIX = "fw"
"""The first path segment of the image endpoint on the DM server's sockets."""

_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]+$")


# -- errors ------------------------------------------------------------------------------------


class FirmwareError(ValueError):
    """A firmware repository request is wrong: ``image`` names the image (or upload) concerned,
    ``fix`` says what to do about it. The API answers 422 (409 for conflicts, 404 unknown)."""

    status = 422

    def __init__(self, image: str, message: str, fix: str = "") -> None:
        super().__init__(f"firmware {image}: {message}" + (f"; {fix}" if fix else ""))
        self.image = image
        self.message = message
        self.fix = fix


class InvalidImage(FirmwareError):
    """The upload itself is malformed (version, SKUs, size, signature encoding)."""


class SignatureRefused(FirmwareError):
    """The signature verifies against no trusted vendor key."""


class ImageConflict(FirmwareError):
    """The bytes are already published with other metadata (images are immutable)."""

    status = 409


class UnknownImage(FirmwareError):
    """No image matches the reference."""

    status = 404


class AmbiguousImage(FirmwareError):
    """Several images match a version: name one by id (or give the SKU)."""

    status = 409


class ImageQuarantined(FirmwareError):
    """The image is quarantined: no new campaign or download may use it."""

    status = 409


class InvalidVendorKey(FirmwareError):
    """A vendor key is malformed, or its name is taken by another key."""


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Who quarantined an image, why and when."""

    by: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """A published image (its bytes: :meth:`FirmwareRepository.content`)."""

    id: str
    sha256: str
    version: str
    skus: tuple[str, ...]
    size: int
    signature: str
    signer: str
    description: str
    published_by: str
    published_at: float
    quarantine: Quarantine | None = None

    @property
    def quarantined(self) -> bool:
        return self.quarantine is not None

    @property
    def etag(self) -> bytes:
        """The CoAP ETag of the image (8 bytes of its SHA-256)."""
        return bytes.fromhex(self.sha256[:16])

    def path(self) -> str:
        """The serving path on the DM server's sockets."""
        return f"/{SERVE_PREFIX}/{self.id}"

    def uri(self, base_uri: str) -> str:
        """The pull URI of the image at fleetloop's ``coap(s)://host:port`` ``base_uri``."""
        return base_uri.rstrip("/") + self.path()

    def compatible(self, sku: str | None) -> bool:
        """Whether a device of ``sku`` may take this image (no SKU list: any device)."""
        return not self.skus or (sku is not None and sku in self.skus)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "sha256": self.sha256,
            "version": self.version,
            "skus": list(self.skus),
            "size": self.size,
            "signature": self.signature,
            "signer": self.signer,
            "description": self.description,
            "published_by": self.published_by,
            "published_at": self.published_at,
            "quarantined": self.quarantined,
        }
        if self.quarantine is not None:
            out["quarantine"] = {
                "by": self.quarantine.by,
                "reason": self.quarantine.reason,
                "at": self.quarantine.at,
            }
        return out


@dataclass(frozen=True, slots=True)
class VendorKey:
    """A trusted vendor public key."""

    name: str
    public_key: str  # PEM
    fingerprint: str
    added_by: str
    added_at: float


# -- signing helpers (vendors and tests) -------------------------------------------------------


def image_digest(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def sign_image(content: bytes, private_key_pem: bytes) -> bytes:
    """A vendor's signature of ``content``: ECDSA P-256 over its SHA-256, DER-encoded."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidImage("-", "the signing key is not an ECDSA P-256 private key")
    return key.sign(image_digest(content), ec.ECDSA(Prehashed(hashes.SHA256())))


def new_vendor_key() -> tuple[bytes, bytes]:
    """``(private PEM, public PEM)`` of a fresh P-256 key (tests, ``fleetloop firmware``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _load_public(name: str, pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise InvalidVendorKey(
            f"key {name}", f"not a PEM public key ({exc})", "give the vendor's P-256 public key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidVendorKey(
            f"key {name}", "not an ECDSA P-256 public key", "give the vendor's P-256 public key"
        )
    return key


def _fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _verifies(key: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        return False
    return True


# -- the repository ----------------------------------------------------------------------------

_I = FW_IMAGE.c
_IMAGE_BY_ID = select(FW_IMAGE).where(_I.id == bindparam("id"))
_IMAGE_BY_SHA = select(FW_IMAGE).where(_I.sha256 == bindparam("sha256"))
_BLOB = select(FW_BLOB.c.content).where(FW_BLOB.c.sha256 == bindparam("sha256"))


def _image(row: Any) -> FirmwareImage:
    quarantine = None
    if row.quarantined:
        quarantine = Quarantine(
            row.quarantined_by or "", row.quarantine_reason or "", row.quarantined_at or 0.0
        )
    return FirmwareImage(
        id=row.id,
        sha256=row.sha256,
        version=row.version,
        skus=tuple(json.loads(row.skus)),
        size=row.size,
        signature=row.signature,
        signer=row.signer,
        description=row.description,
        published_by=row.published_by,
        published_at=row.published_at,
        quarantine=quarantine,
    )


def _skus(skus: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for sku in skus:
        sku = sku.strip()
        if not sku:
            continue
        if not _SKU.match(sku):
            raise InvalidImage(
                "upload", f"SKU {sku!r} is not a SKU name", "use letters, digits and . _ : / -"
            )
        if sku not in out:
            out.append(sku)
    if len(out) > 256:
        raise InvalidImage("upload", "more than 256 SKUs", "list at most 256 compatible SKUs")
    return tuple(sorted(out))


class FirmwareRepository:
    """Images, their bytes and the trusted vendor keys, inside the store's transactions.

    ``audit`` (the store's :class:`~lwm2m.store.audit.AuditLog`) gets one record per change,
    in the same transaction.
    """

    def __init__(self, audit: AuditLog | None = None) -> None:
        self.audit = audit

    # -- vendor keys ---------------------------------------------------------------------------
    def add_vendor_key(self, tx: Tx, name: str, pem: str, *, actor: str, now: float) -> VendorKey:
        """Trust ``pem`` (an ECDSA P-256 public key) as vendor key ``name``; adding the same
        key again is a no-op, another key under a taken name is refused."""
        if not _KEY_NAME.match(name):
            raise InvalidVendorKey(
                f"key {name!r}", "bad key name", "use 1..64 letters, digits, . _ -"
            )
        key = _load_public(name, pem)
        fingerprint = _fingerprint(key)
        row = tx.execute(select(FW_VENDOR_KEY).where(FW_VENDOR_KEY.c.name == name)).first()
        if row is not None:
            if row.fingerprint != fingerprint:
                raise InvalidVendorKey(
                    f"key {name}",
                    "the name is taken by another key",
                    "pick another name (trusted keys are never replaced in place)",
                )
            return VendorKey(row.name, row.public_key, row.fingerprint, row.added_by, row.added_at)
        normalised = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        tx.execute(
            FW_VENDOR_KEY.insert().values(
                name=name,
                public_key=normalised,
                fingerprint=fingerprint,
                added_by=actor,
                added_at=now,
            )
        )
        self._audit(tx, actor, "firmware.key_add", f"firmware-key:{name}", now, {"fp": fingerprint})
        return VendorKey(name, normalised, fingerprint, actor, now)

    def vendor_keys(self, tx: Tx) -> list[VendorKey]:
        rows = tx.execute(select(FW_VENDOR_KEY).order_by(FW_VENDOR_KEY.c.name))
        return [
            VendorKey(r.name, r.public_key, r.fingerprint, r.added_by, r.added_at) for r in rows
        ]

    # -- publishing ----------------------------------------------------------------------------
    def publish(
        self,
        tx: Tx,
        content: bytes,
        *,
        version: str,
        signature: bytes,
        skus: Iterable[str] = (),
        description: str = "",
        actor: str,
        now: float,
    ) -> FirmwareImage:
        """Publish an image after checking its signature against the trusted vendor keys.

        Publishing the same bytes with the same version and SKUs again returns the published
        image (an upload retried after a lost answer is not an error); with other metadata it
        is an :class:`ImageConflict` -- published images never change.
        """
        version = version.strip()
        if not version or not is_version(version) or len(version) > 64:
            raise InvalidImage(
                f"upload {version!r}",
                "the version is not a semantic version",
                "give MAJOR.MINOR.PATCH, e.g. 2.4.1 or 2.4.1-rc.1",
            )
        name = f"{version} (upload)"
        if not content:
            raise InvalidImage(name, "the image is empty", "upload the image file's bytes")
        if len(content) > MAX_IMAGE_SIZE:
            raise InvalidImage(
                name,
                f"the image is {len(content)} bytes, more than {MAX_IMAGE_SIZE}",
                "split the update or raise MAX_IMAGE_SIZE",
            )
        if not signature or len(signature) > 128:
            raise InvalidImage(
                name,
                "no signature",
                "sign the image's SHA-256 with the vendor key (ECDSA P-256, DER) and send it",
            )
        compatible = _skus(skus)
        digest = image_digest(content)
        sha = digest.hex()
        keys = self.vendor_keys(tx)
        if not keys:
            raise SignatureRefused(
                name,
                "no vendor key is trusted yet",
                "add the vendor's public key first (fleetloop firmware key add NAME FILE.pem)",
            )
        signer = next(
            (
                k.name
                for k in keys
                if _verifies(_load_public(k.name, k.public_key), digest, signature)
            ),
            None,
        )
        if signer is None:
            raise SignatureRefused(
                name,
                f"the signature of SHA-256 {sha[:16]}... verifies against none of the trusted "
                f"vendor keys ({', '.join(k.name for k in keys)})",
                "sign the image with a trusted vendor key, or trust the vendor's key first",
            )
        existing = tx.execute(_IMAGE_BY_SHA, {"sha256": sha}).first()
        if existing is not None:
            image = _image(existing)
            if image.version == version and image.skus == compatible:
                return image
            raise ImageConflict(
                image.id,
                f"these bytes are already published as version {image.version} "
                f"(SKUs {list(image.skus) or 'any'})",
                "published images are immutable: build a new image for a new version",
            )
        image_id = sha[:ID_LENGTH]
        if tx.execute(_IMAGE_BY_ID, {"id": image_id}).first() is not None:
            raise ImageConflict(
                image_id, "another image has the same 64-bit id", "rebuild the image (any byte)"
            )
        if tx.execute(_BLOB, {"sha256": sha}).first() is None:
            tx.execute(FW_BLOB.insert().values(sha256=sha, size=len(content), content=content))
        tx.execute(
            FW_IMAGE.insert().values(
                id=image_id,
                sha256=sha,
                version=version,
                version_key=version_key(version),
                skus=json.dumps(list(compatible)),
                size=len(content),
                signature=signature.hex(),
                signer=signer,
                description=description[:1000],
                published_by=actor,
                published_at=now,
                quarantined=False,
            )
        )
        image = FirmwareImage(
            image_id,
            sha,
            version,
            compatible,
            len(content),
            signature.hex(),
            signer,
            description[:1000],
            actor,
            now,
        )
        self._audit(
            tx,
            actor,
            "firmware.publish",
            f"firmware:{image_id}",
            now,
            {"version": version, "sha256": sha, "size": len(content), "signer": signer},
        )
        return image

    # -- reading -------------------------------------------------------------------------------
    def image(self, tx: Tx, ref: str) -> FirmwareImage | None:
        """The image whose id or full SHA-256 is ``ref`` (quarantined or not)."""
        ref = ref.strip().lower()
        if len(ref) == 64:
            row = tx.execute(_IMAGE_BY_SHA, {"sha256": ref}).first()
        else:
            row = tx.execute(_IMAGE_BY_ID, {"id": ref}).first()
        return _image(row) if row is not None else None

    def images(
        self, tx: Tx, *, version: str | None = None, sku: str | None = None
    ) -> list[FirmwareImage]:
        """Every image (newest version first), optionally of one version / for one SKU."""
        query = select(FW_IMAGE).order_by(_I.version_key.desc(), _I.published_at.desc())
        if version is not None:
            query = query.where(_I.version_key == version_key(version))
        found = [_image(r) for r in tx.execute(query)]
        if sku is not None:
            found = [i for i in found if i.compatible(sku)]
        return found

    def quarantined_images(self, tx: Tx) -> list[FirmwareImage]:
        """Every quarantined image (the campaign engine counts them as quarantined
        artifacts: one quarantine, whichever route set it)."""
        return [_image(r) for r in tx.execute(select(FW_IMAGE).where(_I.quarantined.is_(True)))]

    def content(self, tx: Tx, sha256: str) -> bytes | None:
        """The bytes of an image by SHA-256 (hex)."""
        row = tx.execute(_BLOB, {"sha256": sha256}).first()
        return bytes(row.content) if row is not None else None

    def resolve(self, tx: Tx, ref: str, *, sku: str | None = None) -> FirmwareImage:
        """The image a campaign spec means by ``ref``: an id, a SHA-256, or a version (unique
        among the images compatible with ``sku`` when given). Quarantined images are refused
        (:class:`ImageQuarantined`), as are unknown (:class:`UnknownImage`) and ambiguous
        (:class:`AmbiguousImage`) references."""
        text = ref.strip()
        image = None
        if _HEX.match(text.lower()) and len(text) in (ID_LENGTH, 64):
            image = self.image(tx, text)
        if image is None:
            candidates = self.images(tx, version=text, sku=sku) if is_version(text) else []
            if not candidates:
                raise UnknownImage(
                    text,
                    "no such image" + (f" for SKU {sku}" if sku else ""),
                    "list the images with fleetloop firmware list",
                )
            live = [c for c in candidates if not c.quarantined] or candidates
            if len(live) > 1:
                raise AmbiguousImage(
                    text,
                    f"{len(live)} images have this version ({', '.join(c.id for c in live)})",
                    "name one by its id",
                )
            image = live[0]
        if image.quarantined:
            assert image.quarantine is not None
            raise ImageQuarantined(
                image.id,
                f"quarantined by {image.quarantine.by}: {image.quarantine.reason}",
                "pick another image, or unquarantine it if the reason no longer holds",
            )
        if sku is not None and not image.compatible(sku):
            raise InvalidImage(
                image.id,
                f"not compatible with SKU {sku} (only {', '.join(image.skus)})",
                "pick an image built for that SKU",
            )
        return image

    # -- quarantine ----------------------------------------------------------------------------
    def quarantine(self, tx: Tx, ref: str, *, reason: str, actor: str, now: float) -> FirmwareImage:
        """Quarantine an image (idempotent: the first reason stays)."""
        image = self._known(tx, ref)
        if not reason.strip():
            raise InvalidImage(image.id, "no reason given", "say why the image is quarantined")
        if image.quarantined:
            return image
        tx.execute(
            update(FW_IMAGE)
            .where(_I.id == image.id)
            .values(
                quarantined=True,
                quarantined_by=actor,
                quarantine_reason=reason.strip()[:1000],
                quarantined_at=now,
            )
        )
        self._audit(
            tx, actor, "firmware.quarantine", f"firmware:{image.id}", now, {"reason": reason}
        )
        return self._known(tx, image.id)

    def unquarantine(self, tx: Tx, ref: str, *, actor: str, now: float) -> FirmwareImage:
        image = self._known(tx, ref)
        if not image.quarantined:
            return image
        tx.execute(
            update(FW_IMAGE)
            .where(_I.id == image.id)
            .values(
                quarantined=False,
                quarantined_by=None,
                quarantine_reason=None,
                quarantined_at=None,
            )
        )
        self._audit(tx, actor, "firmware.unquarantine", f"firmware:{image.id}", now, {})
        return self._known(tx, image.id)

    def _known(self, tx: Tx, ref: str) -> FirmwareImage:
        image = self.image(tx, ref)
        if image is None:
            raise UnknownImage(ref, "no such image", "give an image id (fleetloop firmware list)")
        return image

    def _audit(
        self, tx: Tx, actor: str, action: str, subject: str, now: float, detail: dict[str, Any]
    ) -> None:
        if self.audit is not None:
            self.audit.append(
                tx, actor=actor, action=action, subject=subject, now=now, detail=detail
            )


# -- campaigns ---------------------------------------------------------------------------------


def firmware_component(
    image: FirmwareImage, *, base_uri: str, method: Literal["pull", "push"] = "pull"
) -> Component:
    """The firmware-dimension :class:`~lifecycle.campaigns.model.Component` that delivers
    ``image``: pull writes fleetloop's own ``coap(s)://.../fw/<id>`` URI to /5/0/1, push
    writes the bytes to /5/0/0 (block-wise). ``artifact`` is the image id, ``size`` its
    bytes."""
    if image.quarantined:
        raise ImageQuarantined(image.id, "quarantined", "pick another image")
    raw: dict[str, Any]
    if method == "pull":
        raw = {"version": image.version, "uri": image.uri(base_uri)}
    elif method == "push":
        raw = {"version": image.version, "image": image.sha256, "method": "push"}
    else:
        raise InvalidImage(image.id, f"method {method!r}", "use pull or push")
    value = parse_desired(Dimension.FIRMWARE, raw)
    return Component(Dimension.FIRMWARE, value, artifact=image.id, size=image.size)


def parse_signature(text: str) -> bytes:
    """A signature given as hex or base64 (DER inside)."""
    import base64
    import binascii

    cleaned = text.strip()
    try:
        if _HEX.match(cleaned.lower()) and len(cleaned) % 2 == 0:
            return bytes.fromhex(cleaned)
        return base64.b64decode(cleaned, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidImage(
            "upload", "the signature is neither hex nor base64", "send the DER signature as hex"
        ) from None


__all__ = [
    "ID_LENGTH",
    "MAX_IMAGE_SIZE",
    "SERVE_PREFIX",
    "AmbiguousImage",
    "FirmwareError",
    "FirmwareImage",
    "FirmwareRepository",
    "ImageConflict",
    "ImageQuarantined",
    "InvalidImage",
    "InvalidVendorKey",
    "Quarantine",
    "SignatureRefused",
    "UnknownImage",
    "VendorKey",
    "firmware_component",
    "image_digest",
    "new_vendor_key",
    "parse_signature",
    "sign_image",
]
