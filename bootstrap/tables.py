"""The bootstrap layer's tables: in the DM store's database, on their own metadata.

They live beside the store's tables (same database, same engine, same transactions -- so the
DM credentials a bootstrap provisions and the bootstrap's own state commit together), but
``bootstrap.schema.create_schema`` creates them, never ``Store.create_schema``: the store does
not know this layer exists. Like the store, repositories query through SQLAlchemy Core on the
exported tables and hand out frozen dataclasses.

Conventions follow the store's: ``double precision`` epoch seconds, JSON as text, names
prefixed ``bs_`` so an operator can tell the layers apart in ``\\dt``.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

SCHEMA_COMPONENT = "bootstrap"
SCHEMA_VERSION = 2
"""Bump on every schema change of these tables and add the migration to ``create_schema``.

v2: ``bs_audit`` moved into the store's one audit log (``audit_log``)."""

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


class BootstrapModel(SQLModel, registry=registry()):
    """Base of the bootstrap tables; owns their private metadata."""


class IdentityRow(BootstrapModel, table=True):
    """One factory identity. Unique columns are what an operator searches by."""

    __tablename__ = "bs_identity"
    __table_args__ = (Index("ix_bs_identity_selection", "tenant", "region", "sku", "policy_group"),)

    endpoint: str = Field(primary_key=True)
    serial: str | None = Field(default=None, unique=True)
    hardware_id: str | None = None
    imei: str | None = Field(default=None, unique=True)
    eid: str | None = Field(default=None, unique=True)
    sku: str | None = None
    tenant: str | None = None
    region: str | None = None
    policy_group: str | None = None
    security_mode: str
    psk_identity: str | None = Field(default=None, unique=True)
    psk_key: bytes | None = Field(default=None, sa_type=LargeBinary)
    cert_fingerprint: str | None = Field(default=None, unique=True)
    cert_serial: str | None = None
    status: str
    created_at: float = Field(sa_type=Double)
    updated_at: float = Field(sa_type=Double)
    revoked_at: float | None = Field(default=None, sa_type=Double)
    revoked_reason: str | None = None
    import_batch: str | None = Field(default=None, index=True)


class CertificateRow(BootstrapModel, table=True):
    """Every certificate the CA issued (public part only) and its revocation."""

    __tablename__ = "bs_certificate"

    serial: str = Field(primary_key=True)  # hex
    kind: str  # device-bootstrap | device-dm | server
    endpoint: str | None = Field(default=None, index=True)
    subject: str
    fingerprint: str = Field(unique=True)  # sha-256 hex of the DER
    not_before: float = Field(sa_type=Double)
    not_after: float = Field(sa_type=Double)
    issued_at: float = Field(sa_type=Double)
    revoked_at: float | None = Field(default=None, sa_type=Double)
    revocation_reason: str | None = None
    pem: str = Field(sa_type=Text)


class PolicyRow(BootstrapModel, table=True):
    """One version of a bootstrap policy; versions are never updated, only added."""

    __tablename__ = "bs_policy"

    name: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    body: str = Field(sa_type=Text)  # canonical JSON of the policy document
    digest: str  # sha-256 hex of body
    retired: bool = False
    created_at: float = Field(sa_type=Double)
    author: str
    comment: str = ""


class StateRow(BootstrapModel, table=True):
    """Where each device is in bootstrapping: what an operator's ``bootstrap status`` shows."""

    __tablename__ = "bs_state"

    endpoint: str = Field(primary_key=True)
    state: str
    step: str = ""
    detail: str = Field(default="", sa_type=Text)
    attempts: int = 0
    completed: int = 0
    policy_name: str | None = None
    policy_version: int | None = None
    lwm2m_version: str | None = None
    content_format: int | None = None
    transport: str | None = None
    peer: str | None = None
    dm_uris: str = Field(default="[]", sa_type=Text)  # JSON list
    server_iids: str = Field(default="[]", sa_type=Text)  # JSON list of Server /1/x ids
    device_report: str = Field(default="", sa_type=Text)  # Bootstrap-Discover/Read, as text
    started_at: float | None = Field(default=None, sa_type=Double)
    updated_at: float = Field(sa_type=Double)
    finished_at: float | None = Field(default=None, sa_type=Double)
    rebootstrap_requested_at: float | None = Field(default=None, sa_type=Double)


# v1 kept its own hash-chained audit trail here; v2 moved it into the one audit log of the
# store (``lwm2m.store.audit``). The table is described -- on metadata of its own, so
# ``create_all`` never creates it again -- only for the migration to read and drop it.
_LEGACY = MetaData()
LEGACY_AUDIT = Table(
    "bs_audit",
    _LEGACY,
    Column("seq", _BIGINT, primary_key=True, autoincrement=False),
    Column("at", Double, nullable=False),
    Column("actor", String, nullable=False),
    Column("action", String, nullable=False),
    Column("subject", String, nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String, nullable=False),
    Column("hash", String, nullable=False, unique=True),
    Index("ix_bs_audit_subject", "subject", "seq"),
)


def _table(model: type[BootstrapModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


METADATA = BootstrapModel.metadata
IDENTITY = _table(IdentityRow)
CERTIFICATE = _table(CertificateRow)
POLICY = _table(PolicyRow)
STATE = _table(StateRow)

__all__ = [
    "CERTIFICATE",
    "IDENTITY",
    "LEGACY_AUDIT",
    "METADATA",
    "POLICY",
    "SCHEMA_COMPONENT",
    "SCHEMA_VERSION",
    "STATE",
]
