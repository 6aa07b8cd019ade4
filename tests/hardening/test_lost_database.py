"""Issue 14 item 15: a database dropped and recreated under a running ``fleetloop serve``
(SQLite and PostgreSQL). Before the fix the API answered 500 "lacks the store's tables" and
devices 5.03 until a restart; now the server recreates the schema within seconds, ``GET
/ready`` reports the state (503 while not ready) and a device registers again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable

from sqlalchemy import create_engine, text

from simulators.runner import SimulatedDevice
from tests.hardening.serve_proc import ServeProcess
from tests.store.conftest import StoreTarget


def drop_everything(target: StoreTarget) -> None:
    """What an operator's `DROP DATABASE; CREATE DATABASE` (or restoring an empty backup)
    leaves: the same database, no tables."""
    if target.backend == "sqlite":
        with sqlite3.connect(target.data_dir / "data" / "fleetloop.db") as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            conn.execute("PRAGMA foreign_keys=OFF")
            for table in tables:
                conn.execute(f'DROP TABLE "{table}"')
        return
    engine = create_engine(target.url)
    with engine.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def test_the_server_recreates_a_dropped_schema_and_serves_again(target: StoreTarget) -> None:
    data_dir = target.data_dir / "data"
    url = None if target.backend == "sqlite" else target.url
    server = ServeProcess(data_dir, database_url=url)
    server.start()
    try:
        with server.api(prefix="") as root:
            assert root.get("/ready").status_code == 200
        drop_everything(target)
        with server.api() as api, server.api(prefix="") as root:
            answers: list[int] = []

            def writes_again() -> bool:
                put = api.put("/security/after-drop", json={"allow_nosec": True})
                answers.append(put.status_code)
                return put.status_code < 300

            eventually(writes_again, 30, "the API did not take a write again")
            assert 500 not in answers, answers
            eventually(
                lambda: root.get("/ready").json() == {"status": "ready", "checked": True},
                30,
                "/ready did not say ready again",
            )

        async def register() -> None:
            uri = f"coap://127.0.0.1:{server.coap_port}"
            async with SimulatedDevice("after-drop", uri) as device:
                await asyncio.wait_for(device.wait_registered(), 20)
                with server.api() as api:
                    shown = await asyncio.to_thread(api.get, "/devices/after-drop")
                assert shown.status_code == 200, shown.text

        asyncio.run(register())
    finally:
        assert server.stop() == 0
    assert "schema recreated" in server.log()
