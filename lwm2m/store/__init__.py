"""Persistence of the device-management server: SQLite by default, PostgreSQL by URL.

Open a :class:`Store`, create the schema, then use its repositories inside transactions::

    store = Store.open(None, data_dir="data")   # sqlite:///data/fleetloop.db
    store.create_schema()
    reg, replaced = await store.write(lambda tx: store.registrations.register(tx, new, now))
    store.record(values)                       # telemetry, fire-and-forget, group-committed
    await store.aclose()

Durability, batching and what a crash can lose: ``docs/STORE.md``.
"""

from lwm2m.store.audit import (
    AuditError,
    AuditLog,
    AuditRecord,
    AuditTampered,
    AuditVerdict,
    InclusionProof,
)
from lwm2m.store.batcher import BatcherStats, GroupCommitBatcher
from lwm2m.store.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    CheckpointVerifier,
    Ed25519Signer,
    ProofError,
)
from lwm2m.store.domain import (
    Address,
    EndpointSecurity,
    Identity,
    IdentityKind,
    NewQueuedRequest,
    NewRegistration,
    Observation,
    Page,
    PskCredential,
    QueuedRequest,
    QueueState,
    Registration,
    RegistrationUpdate,
    ReportedValue,
    Source,
    X509Credential,
    new_registration_id,
)
from lwm2m.store.engine import BatchSettings, StoreSettings, Tx
from lwm2m.store.errors import (
    Conflict,
    CorruptRecord,
    NotFound,
    SchemaMismatch,
    StoreError,
    StoreOverloaded,
    StoreUnavailable,
)
from lwm2m.store.jsonvalue import value_from_json, value_to_json
from lwm2m.store.observations import ObservationRepository
from lwm2m.store.queue import QueueRepository
from lwm2m.store.registrations import RegistrationRepository
from lwm2m.store.security import PskKeyStore, SecurityCache, SecurityRepository
from lwm2m.store.store import Store
from lwm2m.store.telemetry import TelemetryRepository

__all__ = [
    "Address",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "AuditTampered",
    "AuditVerdict",
    "BatchSettings",
    "BatcherStats",
    "Checkpoint",
    "CheckpointSigner",
    "CheckpointVerifier",
    "Conflict",
    "CorruptRecord",
    "Ed25519Signer",
    "EndpointSecurity",
    "GroupCommitBatcher",
    "Identity",
    "IdentityKind",
    "InclusionProof",
    "NewQueuedRequest",
    "NewRegistration",
    "NotFound",
    "Observation",
    "ObservationRepository",
    "Page",
    "ProofError",
    "PskCredential",
    "PskKeyStore",
    "QueueRepository",
    "QueueState",
    "QueuedRequest",
    "Registration",
    "RegistrationRepository",
    "RegistrationUpdate",
    "ReportedValue",
    "SchemaMismatch",
    "SecurityCache",
    "SecurityRepository",
    "Source",
    "Store",
    "StoreError",
    "StoreOverloaded",
    "StoreSettings",
    "StoreUnavailable",
    "TelemetryRepository",
    "Tx",
    "X509Credential",
    "new_registration_id",
    "value_from_json",
    "value_to_json",
]
