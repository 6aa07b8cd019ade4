"""A store with the lifecycle schema, on SQLite and PostgreSQL (``database_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.schema import create_schema
from lwm2m.store import Store
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)


@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[Store]:  # noqa: F811
    opened = Store.open(database_url, tmp_path)
    opened.create_schema()
    create_schema(opened)
    try:
        yield opened
    finally:
        opened.close()
