"""Create the eIM tables (idempotent), beside the store's, bootstrap's and lifecycle's."""

from __future__ import annotations

from lwm2m.store import Store
from lwm2m.store.components import create_component_schema
from sgp32.eim.tables import METADATA, SCHEMA_COMPONENT

SCHEMA_VERSION = 1
"""Bump on every schema change of the eIM tables and add the migration step here."""

_LOCK_KEY = 0x6569_6D73_6368  # "eimsch": pg_advisory_xact_lock key, concurrent starts queue up


def create_schema(store: Store, now: float | None = None) -> None:
    """Create the eIM tables; raise :class:`SchemaMismatch` for an unknown layout."""
    create_component_schema(
        store,
        METADATA,
        component=SCHEMA_COMPONENT,
        version=SCHEMA_VERSION,
        lock_key=_LOCK_KEY,
        label="eIM",
        now=now,
    )
