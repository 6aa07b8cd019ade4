"""Create the eIM tables (idempotent), beside the store's, bootstrap's and lifecycle's."""

from __future__ import annotations

import time

from sqlalchemy import select, text

from lwm2m.store import SchemaMismatch, Store
from lwm2m.store.tables import SCHEMA_VERSION_TABLE
from sgp32.eim.tables import METADATA, SCHEMA_COMPONENT

SCHEMA_VERSION = 1
"""Bump on every schema change of the eIM tables and add the migration step here."""

_LOCK_KEY = 0x6569_6D73_6368  # "eimsch": pg_advisory_xact_lock key, concurrent starts queue up


def create_schema(store: Store, now: float | None = None) -> None:
    """Create the eIM tables; raise :class:`SchemaMismatch` for an unknown layout."""
    stamp = time.time() if now is None else now
    v = SCHEMA_VERSION_TABLE.c
    with store.transaction() as tx:
        if tx.dialect == "postgresql":
            tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        METADATA.create_all(tx._conn)
        found = tx.execute(
            select(v.version).where(v.component == SCHEMA_COMPONENT)
        ).scalar_one_or_none()
        if found is None:
            tx.execute(
                SCHEMA_VERSION_TABLE.insert(),
                {"component": SCHEMA_COMPONENT, "version": SCHEMA_VERSION, "updated_at": stamp},
            )
        elif found != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"database {store.url} has eIM schema v{found}; this fleetloop has "
                f"v{SCHEMA_VERSION} and no migration between them"
            )
