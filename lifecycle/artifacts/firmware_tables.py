"""Tables of the firmware repository (``lc_fw_*``).

* ``lc_fw_blob``: image bytes, keyed by their SHA-256 (content-addressed: the same bytes are
  stored once whatever refers to them). Images are 256 KiB to a few MiB, so they live in the
  database beside their metadata: one transaction makes an upload durable (docs/DESIGN.md,
  "Firmware images in the database").
* ``lc_fw_image``: one published image -- version (with its sortable key), SKUs, size,
  digest, signature and who signed/published it; never updated except for the quarantine
  columns.
* ``lc_fw_vendor_key``: the trusted vendor public keys an upload's signature must verify
  against.
"""

from __future__ import annotations

from sqlalchemy import Double, Index, LargeBinary, Text
from sqlmodel import Field

from lifecycle.tables import _VERSION_KEY, LifecycleModel, table_of


class FirmwareBlobRow(LifecycleModel, table=True):
    """The bytes of an image, stored once per SHA-256."""

    __tablename__ = "lc_fw_blob"

    sha256: str = Field(primary_key=True)  # lowercase hex
    size: int
    content: bytes = Field(sa_type=LargeBinary)


class FirmwareImageRow(LifecycleModel, table=True):
    """A published firmware image (immutable but for the quarantine columns)."""

    __tablename__ = "lc_fw_image"
    __table_args__ = (Index("ix_lc_fw_image_version", "version_key"),)

    id: str = Field(primary_key=True)  # the first 16 hex digits of sha256: /fw/<id>
    sha256: str = Field(unique=True)
    version: str
    version_key: str = Field(sa_type=_VERSION_KEY)
    skus: str = Field(default="[]", sa_type=Text)  # JSON list; [] = any SKU
    size: int
    signature: str = Field(sa_type=Text)  # DER, hex
    signer: str  # the vendor key that verified the signature
    description: str = Field(default="", sa_type=Text)
    published_by: str
    published_at: float = Field(sa_type=Double)
    quarantined: bool = False
    quarantined_by: str | None = None
    quarantine_reason: str | None = Field(default=None, sa_type=Text)
    quarantined_at: float | None = Field(default=None, sa_type=Double)


class FirmwareVendorKeyRow(LifecycleModel, table=True):
    """A trusted vendor signing key (ECDSA P-256 public key, PEM)."""

    __tablename__ = "lc_fw_vendor_key"

    name: str = Field(primary_key=True)
    public_key: str = Field(sa_type=Text)
    fingerprint: str  # SHA-256 of the DER SubjectPublicKeyInfo, hex
    added_by: str
    added_at: float = Field(sa_type=Double)


FW_BLOB = table_of(FirmwareBlobRow)
FW_IMAGE = table_of(FirmwareImageRow)
FW_VENDOR_KEY = table_of(FirmwareVendorKeyRow)

__all__ = [
    "FW_BLOB",
    "FW_IMAGE",
    "FW_VENDOR_KEY",
    "FirmwareBlobRow",
    "FirmwareImageRow",
    "FirmwareVendorKeyRow",
]
