"""Schemas of the layers that keep their tables in the store's database.

Bootstrap, the lifecycle layer and the eIM each own tables on their own metadata and record
their own version in ``schema_version`` (one row per component). Creating them is the same
steps every time -- serialise concurrent starts, create missing tables, record or check the
version -- so it is written once here; a layer that needs a migration step does it itself.
"""

from __future__ import annotations

import time

from sqlalchemy import MetaData, select, text

from lwm2m.store.errors import SchemaMismatch
from lwm2m.store.store import Store
from lwm2m.store.tables import SCHEMA_VERSION_TABLE


def create_component_schema(
    store: Store,
    metadata: MetaData,
    *,
    component: str,
    version: int,
    lock_key: int,
    label: str,
    now: float | None = None,
) -> None:
    """Create ``metadata``'s tables (idempotent) and record ``component`` at ``version``.

    ``lock_key`` is the component's PostgreSQL advisory lock, so concurrent starts queue up;
    ``label`` names the layer in the error. Raises :class:`SchemaMismatch` when the database
    records another version (no migration between them exists here).
    """
    stamp = time.time() if now is None else now
    v = SCHEMA_VERSION_TABLE.c
    with store.transaction() as tx:
        if tx.dialect == "postgresql":
            tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        metadata.create_all(tx._conn)
        found = tx.execute(select(v.version).where(v.component == component)).scalar_one_or_none()
        if found is None:
            tx.execute(
                SCHEMA_VERSION_TABLE.insert(),
                {"component": component, "version": version, "updated_at": stamp},
            )
        elif found != version:
            raise SchemaMismatch(
                f"database {store.url} has {label} schema v{found}; this fleetloop has "
                f"v{version} and no migration between them"
            )
