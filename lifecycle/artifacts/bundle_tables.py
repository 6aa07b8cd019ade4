"""Tables of the artifact repositories: versioned config bundles, APN (connectivity) profiles
and credential rotations.

Content stays where the reconciler already finds it: ``lc_config_bundle`` (name -> CBOR
content + SHA-256), under a *delivery name* per published variant -- ``NAME@VERSION`` for the
base and ``NAME@VERSION:region=eu`` for an overlay's merged content. These tables add what
the flat registry lacks: the version (with its sortable key, :mod:`lifecycle.versions`), the
overlays (key patches over the base, per region or policy group) and who published what.
Keeping content in one place means ``config=NAME`` (the flat registry) and versioned bundles
are delivered by the same reconciler code, unchanged.
"""

from __future__ import annotations

from sqlalchemy import Double, Index, Text
from sqlmodel import Field

from lifecycle.tables import LifecycleModel, table_of

_VERSION_KEY = Text().with_variant(Text(collation="C"), "postgresql")
"""Version keys compare byte-wise (PostgreSQL's default collation would reorder them)."""


class BundleVersionRow(LifecycleModel, table=True):
    """One published version of a bundle: immutable once written."""

    __tablename__ = "lc_bundle_version"
    __table_args__ = (Index("ix_lc_bundle_version_key", "name", "version_key"),)

    name: str = Field(primary_key=True)
    version: str = Field(primary_key=True)
    version_key: str = Field(sa_type=_VERSION_KEY)
    digest: str  # SHA-256 of the base content (hex)
    size: int
    delivery: str  # lc_config_bundle name of the base content
    release_digest: str  # SHA-256 over base digest + overlay digests: what "same" means
    description: str = Field(default="", sa_type=Text)
    published_by: str
    published_at: float = Field(sa_type=Double)


class BundleOverlayRow(LifecycleModel, table=True):
    """An overlay of one bundle version: a key patch over the base for one cohort
    (``scope`` = ``region=NAME`` / ``policy_group=NAME`` / ``carrier=`` / ``country=``)."""

    __tablename__ = "lc_bundle_overlay"

    name: str = Field(primary_key=True)
    version: str = Field(primary_key=True)
    scope: str = Field(primary_key=True)
    patch: str = Field(sa_type=Text)  # JSON: {"set": {...}, "remove": [...]}
    digest: str  # SHA-256 of the merged content
    size: int
    delivery: str  # lc_config_bundle name of the merged content


BUNDLE_VERSION = table_of(BundleVersionRow)
BUNDLE_OVERLAY = table_of(BundleOverlayRow)


class ApnProfileRow(LifecycleModel, table=True):
    """A named connectivity profile: a default APN set and per-carrier / per-country sets
    (JSON ``{"apns": [...], "active": ...}`` each; ``variants`` maps ``carrier=NAME`` /
    ``country=CC`` to one). Editable (unlike bundles): ``revision`` grows on every change and
    a campaign records the revision it resolved."""

    __tablename__ = "lc_apn_profile"

    name: str = Field(primary_key=True)
    apns: str = Field(sa_type=Text)  # JSON list
    active: str
    variants: str = Field(default="{}", sa_type=Text)  # JSON {scope: {"apns", "active"}}
    description: str = Field(default="", sa_type=Text)
    revision: int = 1
    updated_by: str
    updated_at: float = Field(sa_type=Double)


APN_PROFILE = table_of(ApnProfileRow)


class CredentialRotationRow(LifecycleModel, table=True):
    """The last credential rotation of one device: which generation was asked for, when, the
    fingerprint of the key it replaces (never the key) and whether the device proved the new
    one (it registered again after its re-bootstrap with a key other than the old)."""

    __tablename__ = "lc_credential_rotation"

    endpoint: str = Field(primary_key=True)
    generation: int
    phase: str  # requested | verified
    old_fingerprint: str | None = None
    requested_at: float = Field(sa_type=Double)
    verified_at: float | None = Field(default=None, sa_type=Double)
    detail: str = Field(default="", sa_type=Text)


CREDENTIAL_ROTATION = table_of(CredentialRotationRow)

__all__ = [
    "APN_PROFILE",
    "BUNDLE_OVERLAY",
    "BUNDLE_VERSION",
    "CREDENTIAL_ROTATION",
    "ApnProfileRow",
    "BundleOverlayRow",
    "BundleVersionRow",
    "CredentialRotationRow",
]
