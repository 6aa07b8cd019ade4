"""Create the lifecycle layer's tables (idempotent), beside the store's and bootstrap's.

Importing the component modules registers their tables on :data:`lifecycle.tables.METADATA`;
this module is the one place that lists them, so ``create_schema`` creates every table of the
layer and nothing else.
"""

from __future__ import annotations

import lifecycle.artifacts.bundle_tables
import lifecycle.artifacts.firmware_tables
import lifecycle.campaigns.tables
import lifecycle.groups
import lifecycle.operators
import lifecycle.state.tables
from lifecycle.tables import METADATA, SCHEMA_COMPONENT
from lwm2m.store import Store
from lwm2m.store.components import create_component_schema

SCHEMA_VERSION = 1
"""Bump on every schema change of the lifecycle tables and add the migration step here."""

_LOCK_KEY = 0x6C63_7363_6865  # "lcsche": pg_advisory_xact_lock key, concurrent starts queue up

_MODULES = (
    lifecycle.groups,
    lifecycle.operators,
    lifecycle.campaigns.tables,
    lifecycle.artifacts.firmware_tables,
)


def create_schema(store: Store, now: float | None = None) -> None:
    """Create the lifecycle tables; raise :class:`SchemaMismatch` for an unknown layout."""
    create_component_schema(
        store,
        METADATA,
        component=SCHEMA_COMPONENT,
        version=SCHEMA_VERSION,
        lock_key=_LOCK_KEY,
        label="lifecycle",
        now=now,
    )
