"""Opening a store: URLs, SQLite settings, schema versioning, unavailable databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update
from sqlalchemy.engine import make_url

from lwm2m.store import (
    SchemaMismatch,
    Store,
    StoreError,
    StoreSettings,
    StoreUnavailable,
)
from lwm2m.store.engine import resolve_url
from lwm2m.store.tables import SCHEMA_COMPONENT, SCHEMA_VERSION, SCHEMA_VERSION_TABLE
from tests.store.conftest import StoreTarget, pg_base_url


def _pragma(store: Store, name: str) -> object:
    with store.transaction() as tx:
        return tx.execute(text(f"PRAGMA {name}")).scalar()


def test_default_is_a_wal_sqlite_file_in_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    with Store.open(None, data_dir) as store:
        store.create_schema(now=0)
        assert store.url == f"sqlite:///{data_dir.resolve() / 'fleetloop.db'}"
        assert store.dialect == "sqlite"
        assert _pragma(store, "journal_mode") == "wal"
        assert _pragma(store, "synchronous") == 2  # FULL: a commit survives power loss
        assert _pragma(store, "foreign_keys") == 1
        assert _pragma(store, "busy_timeout") == 5000
    assert (data_dir / "fleetloop.db").is_file()


def test_sqlite_synchronous_normal_can_be_chosen(tmp_path: Path) -> None:
    settings = StoreSettings(sqlite_synchronous="NORMAL", sqlite_busy_timeout_ms=250)
    with Store.open(None, tmp_path, settings=settings) as store:
        assert _pragma(store, "synchronous") == 1
        assert _pragma(store, "busy_timeout") == 250


def test_create_schema_records_the_version_and_is_idempotent(target: StoreTarget) -> None:
    with target.open() as store:
        assert store.schema_version() is None
        store.create_schema(now=1)
        store.create_schema(now=2)
        assert store.schema_version() == SCHEMA_VERSION


@pytest.mark.parametrize(("stored", "message"), [(SCHEMA_VERSION + 1, "newer"), (0, "migration")])
def test_a_schema_version_this_code_does_not_know_is_refused(
    target: StoreTarget, stored: int, message: str
) -> None:
    with target.open() as store:
        store.create_schema(now=0)
        with store.transaction() as tx:
            tx.execute(
                update(SCHEMA_VERSION_TABLE)
                .where(SCHEMA_VERSION_TABLE.c.component == SCHEMA_COMPONENT)
                .values(version=stored)
            )
        with pytest.raises(SchemaMismatch, match=message):
            store.create_schema(now=1)


def test_using_a_store_before_its_schema_exists_says_what_to_do(target: StoreTarget) -> None:
    with target.open() as store, pytest.raises(SchemaMismatch, match="create_schema"):
        store.read_sync(lambda tx: store.registrations.get(tx, "x"))


def test_an_unreachable_postgresql_names_the_url_without_its_password() -> None:
    url = "postgresql+psycopg://fleet:s3cret@127.0.0.1:1/fleet"
    with pytest.raises(StoreUnavailable) as info:
        Store.open(url, settings=StoreSettings(pg_connect_timeout_s=2))
    message = str(info.value)
    assert "s3cret" not in message
    assert "postgresql+psycopg://fleet:***@127.0.0.1:1/fleet" in message
    assert "check that PostgreSQL is running" in message


def test_a_missing_postgresql_database_is_unavailable_not_a_schema_problem(
    pg_admin: Engine,
) -> None:
    url = make_url(pg_base_url()).set(database="fleetloop_no_such_db")
    with pytest.raises(StoreUnavailable, match="fleetloop_no_such_db"):
        Store.open(url.render_as_string(hide_password=False))


def test_an_unusable_data_directory_is_reported_as_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="data directory"):
        Store.open(None, blocker / "data")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgres://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+psycopg://u@h/db?options=-csearch_path%3Deu", None),
        ("sqlite:////var/lib/fleetloop/x.db", None),
    ],
)
def test_urls_are_normalised_to_the_supported_drivers(url: str, expected: str | None) -> None:
    assert resolve_url(url, None) == (expected or url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("mysql://u@h/db", "unsupported database"),
        ("postgresql+asyncpg://u@h/db", "unsupported PostgreSQL driver"),
        ("not a url", "invalid database URL"),
    ],
)
def test_unsupported_urls_are_refused_with_the_alternative(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        resolve_url(url, None)


def test_neither_url_nor_data_directory_is_an_error() -> None:
    with pytest.raises(StoreError, match="data directory"):
        resolve_url(None, None)


def test_a_closed_store_refuses_work(target: StoreTarget) -> None:
    store = target.open()
    store.create_schema(now=0)
    store.close()
    store.close()  # idempotent
    assert store.closed
    with pytest.raises(StoreError, match="closed"), store.transaction():
        pass
    with pytest.raises(StoreError, match="closed"):
        store.read_sync(lambda tx: None)
