"""Fixtures of the hardening tests: the store targets (SQLite and PostgreSQL) of the store
suite, so every store-level check runs on both backends."""

from tests.store.conftest import pg_admin, store, target

__all__ = ["pg_admin", "store", "target"]
