"""Store fixtures: every store test runs against SQLite (a temporary file) and PostgreSQL.

PostgreSQL comes from ``FLEETLOOP_TEST_PG_URL`` (default: the machine's local server, database
``test``). Each test gets a fresh schema of its own (``CREATE SCHEMA`` with a random name,
chosen through ``search_path`` in the URL) that is dropped afterwards, so tests neither see
each other's rows nor need a database of their own. When PostgreSQL is unreachable the
PostgreSQL variants skip, saying why -- except under ``CI``, where they fail: CI must test the
backend production uses.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from lwm2m.store import Store

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_base_url() -> str:
    return os.environ.get("FLEETLOOP_TEST_PG_URL", DEFAULT_PG_URL)


@dataclass
class StoreTarget:
    """Where a test's store lives; ``open`` opens it (again) with the test's options."""

    backend: str
    url: str
    data_dir: Path

    def open(self, **kwargs: Any) -> Store:
        return Store.open(self.url, self.data_dir, **kwargs)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An engine on the test PostgreSQL, or a skip (a failure under CI) when it is down."""
    url = pg_base_url()
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        engine.dispose()
        shown = make_url(url).render_as_string(hide_password=True)
        reason = (
            f"PostgreSQL at {shown} is unreachable ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); set FLEETLOOP_TEST_PG_URL or "
            "start it (pg_ctlcluster --skip-systemctl-redirect <version> main start)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreTarget]:
    """A fresh, empty database: a SQLite file under ``tmp_path`` or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield StoreTarget("sqlite", f"sqlite:///{tmp_path / 'fleetloop.db'}", tmp_path)
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    schema = f"t_{secrets.token_hex(6)}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_base_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield StoreTarget("postgresql", url.render_as_string(hide_password=False), tmp_path)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def store(target: StoreTarget) -> Iterator[Store]:
    """An open store with its schema created; closed after the test."""
    s = target.open()
    s.create_schema(now=0.0)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ids() -> Callable[[], str]:
    """A deterministic registration id factory: r0001, r0002, ..."""
    counter = iter(range(1, 1_000_000))
    return lambda: f"r{next(counter):04d}"


@pytest.fixture
def det_store(target: StoreTarget, ids: Callable[[], str]) -> Iterator[Store]:
    """Like ``store``, with deterministic registration ids (see ``ids``)."""
    s = target.open(id_factory=ids)
    s.create_schema(now=0.0)
    try:
        yield s
    finally:
        s.close()
