"""API fixtures: ``database_url`` runs a test on SQLite (None: the file under the data dir)
and on PostgreSQL (a fresh schema per test, dropped afterwards), like the store's own tests.
PostgreSQL comes from ``FLEETLOOP_TEST_PG_URL`` (default: the local server, database
``test``); when it is unreachable the PostgreSQL variant skips -- except under ``CI``, where
it fails."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.store.conftest import pg_base_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    admin = create_engine(pg_base_url(), connect_args={"connect_timeout": 3})
    schema = f"api_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:
        admin.dispose()
        reason = f"PostgreSQL unreachable ({type(err).__name__}); set FLEETLOOP_TEST_PG_URL"
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    url = make_url(pg_base_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
