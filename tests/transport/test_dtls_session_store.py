"""The store side of parked DTLS sessions (``lwm2m.store.dtls_sessions``) on SQLite and on
PostgreSQL: blobs by peer key, replaced in place, deleted, sealed at rest."""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import select

from lwm2m.store import Store
from lwm2m.store.dtls_sessions import StoreDtlsSessions
from lwm2m.store.secrets import SecretBox, bind, is_sealed
from lwm2m.store.tables import DTLS_SESSION
from tests.store.conftest import StoreTarget, pg_admin, store, target  # noqa: F401  # fixtures
from tests.transport.helpers import run

BLOB_A = b"\x01" + os.urandom(300)
BLOB_B = b"\x01" + os.urandom(280)


def test_blobs_are_saved_replaced_loaded_and_deleted_by_peer_key(store: Store) -> None:  # noqa: F811
    sessions = StoreDtlsSessions(store)

    async def scenario() -> None:
        assert await sessions.load_all() == []
        await sessions.save({"127.0.0.1 5684": BLOB_A, "::1 5684 0 0": BLOB_B})
        assert await sessions.load("127.0.0.1 5684") == BLOB_A
        await sessions.save({"127.0.0.1 5684": BLOB_B})  # replaced, not duplicated
        assert sorted(await sessions.load_all()) == sorted(
            [("127.0.0.1 5684", BLOB_B), ("::1 5684 0 0", BLOB_B)]
        )
        await sessions.delete(["127.0.0.1 5684", "not there"])
        assert await sessions.load("127.0.0.1 5684") is None
        assert await sessions.load_all() == [("::1 5684 0 0", BLOB_B)]
        await sessions.delete([f"10.0.0.{i} 1" for i in range(1200)])  # chunked IN lists

    run(scenario())


def test_session_blobs_are_sealed_at_rest(target: StoreTarget) -> None:  # noqa: F811
    opened = target.open()
    opened.create_schema(now=0.0)
    bind(opened, SecretBox(os.urandom(32)))
    sessions = StoreDtlsSessions(opened)
    try:

        async def scenario() -> None:
            await sessions.save({"127.0.0.1 5684": BLOB_A})
            assert await sessions.load_all() == [("127.0.0.1 5684", BLOB_A)]

        run(scenario())
        raw = opened.read_sync(lambda tx: tx.execute(select(DTLS_SESSION.c.session)).scalar_one())
        assert is_sealed(bytes(raw)) and BLOB_A[1:40] not in bytes(raw)
    finally:
        opened.close()


def test_the_table_comes_with_the_store_schema(target: StoreTarget) -> None:  # noqa: F811
    opened = target.open()
    try:
        opened.create_schema(now=0.0)

        async def save() -> None:  # writes are queued on the running loop's store writer
            await StoreDtlsSessions(opened).save({"k 1": BLOB_A})

        asyncio.run(save())
    finally:
        opened.close()
