"""Fixtures of the bootstrap tests: a store with the bootstrap tables (SQLite and PostgreSQL,
through ``tests/store/conftest.py``), a CA in a temporary directory, and a coroutine runner.

Integration tests start a real :class:`~lwm2m.server.LwM2MServer` and a real
:class:`~bootstrap.server.BootstrapServer` on 127.0.0.1 ephemeral ports and drive simulated
devices (``simulators.runner.SimulatedDevice``) over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bootstrap.ca import CertificateAuthority
from bootstrap.repository import create_schema
from lwm2m.store import Store
from tests.store.conftest import StoreTarget, pg_admin, target  # noqa: F401  (fixtures)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test coroutine on a fresh loop, with a ceiling so a hang fails the test."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def store(target: StoreTarget) -> Iterator[Store]:  # noqa: F811
    """An open store with the DM and bootstrap tables; SQLite and PostgreSQL."""
    s = target.open()
    s.create_schema(now=0.0)
    create_schema(s, now=0.0)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """One CA for the session (creating a CA is cheap, but nothing needs a fresh one)."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca") / "ca", name="test CA")


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"
