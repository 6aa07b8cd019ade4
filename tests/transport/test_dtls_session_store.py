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


def test_a_blob_queued_with_save_now_commits_no_later_than_a_write_queued_after_it(
    store: Store,  # noqa: F811
) -> None:
    """What the DTLS server's replay guarantee rests on: a session blob queued by
    ``save_now`` (the record's mark) is in the database for any write queued after it -- the
    registration or telemetry the record causes -- in the same transaction or an earlier one.
    Two blobs of one key queued back to back: the last wins."""
    sessions = StoreDtlsSessions(store)

    async def scenario() -> None:
        sessions.save_now("127.0.0.1 5684", BLOB_A)
        sessions.save_now("127.0.0.1 5684", BLOB_B)
        sessions.save_now("::1 5684 0 0", BLOB_A)
        seen = await store.write(
            lambda tx: (
                sessions.repository.load(tx, "127.0.0.1 5684"),
                sessions.repository.load(tx, "::1 5684 0 0"),
            )
        )
        assert seen == (BLOB_B, BLOB_A)
        assert await sessions.load("127.0.0.1 5684") == BLOB_B

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
