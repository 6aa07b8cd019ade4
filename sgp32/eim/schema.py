"""Create the eIM tables (idempotent) and upgrade an older layout in place, beside the store's,
bootstrap's and lifecycle's."""

from __future__ import annotations

import time

from sqlalchemy import and_, exists, insert, literal, select, text

from lwm2m.store import SchemaMismatch, Store, Tx
from lwm2m.store.tables import SCHEMA_VERSION_TABLE
from sgp32.eim.tables import ASSOCIATION, EUICC, METADATA, SCHEMA_COMPONENT

SCHEMA_VERSION = 2
"""Bump on every schema change of the eIM tables and add the migration step here.

v2: counters and association tokens per (EID, eimId) in ``eim_association`` (v1 had one
counter per EID in ``eim_euicc``)."""

_LOCK_KEY = 0x6569_6D73_6368  # "eimsch": pg_advisory_xact_lock key, concurrent starts queue up


def create_schema(store: Store, now: float | None = None) -> None:
    """Create the eIM tables; upgrade v1 in place; raise :class:`SchemaMismatch` for a layout
    this fleetloop does not know.

    v1 -> v2 moves each eUICC's counter and association token to the eIM it is bound to (a
    row of ``eim_association``), in the same transaction as the version change: a failed
    migration leaves the v1 database as it was, and a fleetloop that only knows v1 refuses to
    start on the migrated database rather than number packages from the stale v1 counter.
    """
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
        elif found == 1:
            migrate_counters(tx)
            tx.execute(
                SCHEMA_VERSION_TABLE.update()
                .where(v.component == SCHEMA_COMPONENT)
                .values(version=SCHEMA_VERSION, updated_at=stamp)
            )
        elif found != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"database {store.url} has eIM schema v{found}; this fleetloop has "
                f"v{SCHEMA_VERSION} and no migration between them"
            )


def migrate_counters(tx: Tx) -> int:
    """v1 -> v2: an ``eim_association`` row for each eUICC without one, carrying its v1 counter
    and token for the eIM it is bound to. Returns how many rows it wrote."""
    e, a = EUICC.c, ASSOCIATION.c
    missing = ~exists().where(and_(a.eid == e.eid, a.eim_id == e.eim_id))
    result = tx.execute(
        insert(ASSOCIATION).from_select(
            ["eid", "eim_id", "counter_value", "association_token", "source", "confirmed_at"],
            select(
                e.eid,
                e.eim_id,
                e.counter_value,
                e.association_token,
                literal("migrated"),
                e.registered_at,
            ).where(missing),
        )
    )
    return int(result.rowcount or 0)
