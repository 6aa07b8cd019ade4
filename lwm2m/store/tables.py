"""The store's tables, as SQLModel classes: the only module that knows the ORM.

The classes define the schema (one place to read it, ``create_all`` creates it). Repositories
query through SQLAlchemy Core on the exported :class:`~sqlalchemy.Table` objects rather than
through ORM sessions: a session's unit of work costs tens of microseconds per row, which the
telemetry path cannot afford, and Core statements are cached and batched by the driver. Rows
become domain dataclasses (:mod:`lwm2m.store.domain`) in the repositories, never leave them.

The tables have their own :class:`~sqlalchemy.MetaData` (not SQLModel's global one), so
``create_schema`` creates exactly the store's tables even when other layers define theirs in
the same process.

Conventions: times are ``double precision`` Unix epoch seconds; paths are their text form
(``/3/0/1``); values are the exact JSON of :mod:`lwm2m.store.jsonvalue`; lists are JSON text.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import registry
from sqlmodel import Column, Field, SQLModel

SCHEMA_COMPONENT = "lwm2m.store"
SCHEMA_VERSION = 2
"""Bump on every schema change and add the migration step to ``Store.create_schema``.

v2 added the audit log (``audit_log``, ``audit_device``, ``audit_checkpoint``): new tables only,
so upgrading from v1 is ``create_all`` plus the new version number."""

# SQLite makes only an ``INTEGER PRIMARY KEY`` an alias of the rowid (auto-increment without a
# separate index); PostgreSQL needs a 64-bit key for an append-only table.
_BIGINT_PK = BigInteger().with_variant(Integer, "sqlite")


class StoreModel(SQLModel, registry=registry()):
    """Base of the store's tables; owns their private metadata."""


class SchemaVersionRow(StoreModel, table=True):
    """One row per component sharing the database: which schema version it is at."""

    __tablename__ = "schema_version"

    component: str = Field(primary_key=True)
    version: int
    updated_at: float = Field(sa_type=Double)


class RegistrationRow(StoreModel, table=True):
    """The current registration of each registered endpoint (at most one per endpoint)."""

    __tablename__ = "registration"

    id: str = Field(primary_key=True)
    endpoint: str = Field(unique=True)
    lwm2m_version: str
    lifetime: int = Field(sa_type=BigInteger)
    binding: str
    queue_mode: bool
    sms_number: str | None = None
    host: str
    port: int
    root_path: str
    object_links: str = Field(sa_type=Text)
    supported_formats: str  # comma-separated content-format numbers
    registered_at: float = Field(sa_type=Double)
    updated_at: float = Field(sa_type=Double)
    expires_at: float = Field(sa_type=Double, index=True)
    identity_kind: str
    identity_value: str


class EndpointSecurityRow(StoreModel, table=True):
    """DM-server credentials per endpoint; the DTLS handshake looks them up by PSK identity."""

    __tablename__ = "endpoint_security"

    endpoint: str = Field(primary_key=True)
    psk_identity: str | None = Field(default=None, unique=True)
    psk_key: bytes | None = Field(default=None, sa_type=LargeBinary)
    x509_subject: str | None = Field(default=None, unique=True)
    x509_fingerprint: str | None = Field(default=None, unique=True)
    allow_nosec: bool = False
    updated_at: float = Field(sa_type=Double)


class ObservationRow(StoreModel, table=True):
    """Active observations; deleted with their registration."""

    __tablename__ = "observation"

    token: str = Field(primary_key=True)  # hex of the CoAP token
    registration_id: str = Field(
        sa_column=Column(
            String, ForeignKey("registration.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    endpoint: str = Field(index=True)
    paths: str = Field(sa_type=Text)  # JSON list of path strings
    composite: bool
    content_format: int | None = None
    attributes: str = Field(sa_type=Text)  # JSON list of [name, value]
    created_at: float = Field(sa_type=Double)


class ReportedValueRow(StoreModel, table=True):
    """The latest value per endpoint and path (upserted; older reports never overwrite)."""

    __tablename__ = "reported_value"

    endpoint: str = Field(primary_key=True)
    path: str = Field(primary_key=True)
    value: str = Field(sa_type=Text)
    at: float = Field(sa_type=Double)
    source: str


class TelemetryRow(StoreModel, table=True):
    """Every reported value, append-only, for history queries by endpoint, path and time."""

    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_telemetry_endpoint_path_at", "endpoint", "path", "at"),)

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_PK, primary_key=True))
    endpoint: str
    path: str
    value: str = Field(sa_type=Text)
    at: float = Field(sa_type=Double)
    source: str


class QueuedRequestRow(StoreModel, table=True):
    """Requests waiting for (or delivered to) a queue-mode device."""

    __tablename__ = "queued_request"
    __table_args__ = (
        Index("ix_queued_request_endpoint_state", "endpoint", "state", "id"),
        Index("ix_queued_request_state_deadline", "state", "deadline"),
    )

    id: int | None = Field(default=None, sa_column=Column(_BIGINT_PK, primary_key=True))
    endpoint: str
    operation: str
    paths: str = Field(sa_type=Text)  # JSON list of path strings
    content_format: int | None = None
    payload: bytes | None = Field(default=None, sa_type=LargeBinary)
    deadline: float | None = Field(default=None, sa_type=Double)
    correlation: str | None = None
    state: str
    created_at: float = Field(sa_type=Double)
    sent_at: float | None = Field(default=None, sa_type=Double)
    finished_at: float | None = Field(default=None, sa_type=Double)
    response_code: str | None = None
    response_payload: bytes | None = Field(default=None, sa_type=LargeBinary)


class AuditLogRow(StoreModel, table=True):
    """The one audit log: append-only, one row per operator action or device-affecting event.

    ``leaf_hash`` is the RFC 6962 leaf hash of the row's content (:mod:`lwm2m.store.audit`);
    the Merkle tree over them, in ``seq`` order, is what checkpoints sign.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_action", "action", "seq"),
        Index("ix_audit_log_tenant", "tenant", "seq"),
    )

    seq: int = Field(sa_column=Column(_BIGINT_PK, primary_key=True, autoincrement=False))
    at: float = Field(sa_type=Double)
    actor: str
    token_id: str | None = None
    tenant: str | None = None
    action: str
    subject: str
    endpoints: str = Field(sa_type=Text)  # JSON list of endpoint names
    detail: str = Field(sa_type=Text)  # canonical JSON; never secrets
    outcome: str
    leaf_hash: str  # hex


class AuditDeviceRow(StoreModel, table=True):
    """Which audit records name which device: makes ``audit log --endpoint`` an index scan."""

    __tablename__ = "audit_device"

    endpoint: str = Field(primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))


class AuditCheckpointRow(StoreModel, table=True):
    """A signed (tree size, root hash) of the audit log; export them to keep them elsewhere."""

    __tablename__ = "audit_checkpoint"

    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root_hash: str  # hex
    signature: str  # base64
    key_id: str
    at: float = Field(sa_type=Double)


class DtlsSessionRow(StoreModel, table=True):
    """A parked DTLS session, so sessions survive a restart (``lwm2m.store.dtls_sessions``).

    ``session`` is the transport's blob (``lwm2m.transport.parking``), sealed: it holds the
    session's master secret. New in place without a schema version bump: ``create_all``
    adds the table, and an older fleetloop ignores it."""

    __tablename__ = "dtls_session"

    peer_key: str = Field(primary_key=True)
    session: bytes = Field(sa_type=LargeBinary)
    updated_at: float = Field(sa_type=Double)


def _table(model: type[StoreModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


METADATA = StoreModel.metadata
SCHEMA_VERSION_TABLE = _table(SchemaVersionRow)
REGISTRATION = _table(RegistrationRow)
ENDPOINT_SECURITY = _table(EndpointSecurityRow)
OBSERVATION = _table(ObservationRow)
REPORTED_VALUE = _table(ReportedValueRow)
TELEMETRY = _table(TelemetryRow)
QUEUED_REQUEST = _table(QueuedRequestRow)
AUDIT_LOG = _table(AuditLogRow)
AUDIT_DEVICE = _table(AuditDeviceRow)
AUDIT_CHECKPOINT = _table(AuditCheckpointRow)
DTLS_SESSION = _table(DtlsSessionRow)
