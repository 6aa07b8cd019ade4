"""The operator token registry on SQLite and PostgreSQL: the token text works once issued and
never rests in the database, names are unique among live tokens, a revocation is refused at
once in this process (and within the cache TTL elsewhere), a scoped admin stays inside its
tenants, ``last_used_at`` is written lazily, and every change is audited."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from bootstrap.repository import create_schema as create_bootstrap_schema
from lifecycle.operators import (
    OPERATOR_TOKEN,
    InvalidTokenRequest,
    OperatorRegistry,
    Role,
    ScopeExceeded,
    TokenNameTaken,
    UnknownToken,
    split_token,
)
from lifecycle.schema import create_schema
from lwm2m.store import Store
from tests.lifecycle.api import conftest as api_conftest

database_url = api_conftest.database_url  # the SQLite + PostgreSQL fixture


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def opened(tmp_path: Path, url: str | None) -> AsyncIterator[Store]:
    store = Store.open(url, tmp_path)
    store.create_schema()
    create_bootstrap_schema(store)
    create_schema(store)
    try:
        yield store
    finally:
        await store.aclose()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def rows(store: Store) -> list[dict[str, Any]]:
    return [
        dict(r._mapping) for r in store.read_sync(lambda tx: tx.execute(select(OPERATOR_TOKEN)))
    ]


def test_a_token_authenticates_and_its_secret_never_rests_in_the_database(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with opened(tmp_path, database_url) as store:
            registry = OperatorRegistry(store)
            issued = await registry.create(
                "ci-deploy", "operator", ["acme"], actor="operator:admin"
            )
            parts = split_token(issued.text)
            assert parts is not None
            token_id, secret = parts
            assert token_id == issued.token.id
            assert len(secret) >= 43  # 32 random bytes, URL-safe base64
            found = await registry.authenticate(issued.text)
            assert found is not None
            assert (found.name, found.role, found.tenants) == (
                "ci-deploy",
                Role.OPERATOR,
                frozenset({"acme"}),
            )
            [row] = rows(store)
            assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
            assert all(secret not in str(v) for v in row.values())
            flipped = "A" if secret[-1] != "A" else "B"
            assert await registry.authenticate(issued.text[:-1] + flipped) is None
            assert await registry.authenticate(f"flt_{token_id}_{'x' * 43}") is None
            assert await registry.authenticate("flt_000000000000_" + secret) is None
            assert await registry.authenticate("not-a-token") is None
            assert await registry.authenticate("flt_") is None
            # a fresh registry (another process) reads it from the database
            assert await OperatorRegistry(store).authenticate(issued.text) is not None

    run(scenario)


def test_names_are_unique_among_live_tokens_and_free_again_after_revocation(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with opened(tmp_path, database_url) as store:
            registry = OperatorRegistry(store)
            first = await registry.create("alice", Role.VIEWER, None, actor="operator:admin")
            with pytest.raises(TokenNameTaken, match="already named 'alice'"):
                await registry.create("alice", Role.ADMIN, None, actor="operator:admin")
            revoked = await registry.revoke("alice", actor="operator:admin")
            assert revoked.id == first.token.id and revoked.revoked_at is not None
            second = await registry.create("alice", Role.ADMIN, None, actor="operator:admin")
            assert second.token.id != first.token.id
            live = await registry.list()
            assert [t.id for t in live] == [second.token.id]
            everything = await registry.list(include_revoked=True)
            assert {t.id for t in everything} == {first.token.id, second.token.id}
            with pytest.raises(UnknownToken):
                await registry.revoke(first.token.id, actor="operator:admin")

    run(scenario)


def test_revocation_is_refused_at_once_here_and_within_the_ttl_elsewhere(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with opened(tmp_path, database_url) as store:
            clock = Clock()
            here = OperatorRegistry(store, clock=clock, cache_ttl=5.0)
            elsewhere = OperatorRegistry(store, clock=clock, cache_ttl=5.0)
            issued = await here.create("bot", "viewer", None, actor="operator:admin")
            assert await here.authenticate(issued.text) is not None
            assert await elsewhere.authenticate(issued.text) is not None  # now cached there
            await here.revoke(issued.token.id, actor="operator:admin")
            assert await here.authenticate(issued.text) is None
            clock.now += 1
            assert await elsewhere.authenticate(issued.text) is not None  # stale cache, < TTL
            clock.now += 5
            assert await elsewhere.authenticate(issued.text) is None

    run(scenario)


def test_last_used_is_written_lazily_not_on_every_request(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with opened(tmp_path, database_url) as store:
            clock = Clock()
            registry = OperatorRegistry(store, clock=clock, touch_interval=60.0)
            issued = await registry.create("bot", "viewer", None, actor="operator:admin")
            assert rows(store)[0]["last_used_at"] is None
            await registry.authenticate(issued.text)
            await store.flush()
            assert rows(store)[0]["last_used_at"] == clock.now
            first_use = clock.now
            for _ in range(5):
                clock.now += 10
                await registry.authenticate(issued.text)
            await store.flush()
            assert rows(store)[0]["last_used_at"] == first_use  # no write within the interval
            clock.now += 15  # 65 s after the first use
            await registry.authenticate(issued.text)
            await store.flush()
            assert rows(store)[0]["last_used_at"] == clock.now

    run(scenario)


def test_a_scoped_admin_stays_inside_its_tenants(tmp_path: Path, database_url: str | None) -> None:
    async def scenario() -> None:
        async with opened(tmp_path, database_url) as store:
            registry = OperatorRegistry(store)
            mine = frozenset({"acme", "beta"})
            other = await registry.create("other", "viewer", ["gamma"], actor="operator:admin")
            wide = await registry.create("wide", "viewer", None, actor="operator:admin")
            with pytest.raises(ScopeExceeded, match="cannot issue a token for every tenant"):
                await registry.create("x", "viewer", None, actor="a", issuer_tenants=mine)
            with pytest.raises(ScopeExceeded, match="gamma"):
                await registry.create(
                    "x", "viewer", ["acme", "gamma"], actor="a", issuer_tenants=mine
                )
            ok = await registry.create("x", "admin", ["beta"], actor="a", issuer_tenants=mine)
            assert ok.token.tenants == frozenset({"beta"})
            assert [t.name for t in await registry.list(issuer_tenants=mine)] == ["x"]
            for hidden in (other.token.id, "other", wide.token.id, "wide"):
                with pytest.raises(UnknownToken):
                    await registry.revoke(hidden, actor="a", issuer_tenants=mine)
            assert await registry.authenticate(other.text) is not None  # untouched

    run(scenario)


def test_every_change_is_audited_with_the_operator_and_its_token(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with opened(tmp_path, database_url) as store:
            registry = OperatorRegistry(store)
            issued = await registry.create(
                "ci", "operator", ["acme"], actor="operator:root", actor_token_id="serve"
            )
            await registry.revoke("ci", actor="operator:root", actor_token_id="serve")
            records = await store.read(lambda tx: store.audit.list(tx, action_prefix="token."))
            assert [(r.action, r.subject, r.actor, r.token_id, r.tenant) for r in records] == [
                ("token.create", f"token:{issued.token.id}", "operator:root", "serve", "acme"),
                ("token.revoke", f"token:{issued.token.id}", "operator:root", "serve", "acme"),
            ]
            assert records[0].detail == {"name": "ci", "role": "operator", "tenants": ["acme"]}
            assert issued.text not in str(records)
            assert (await store.read(store.audit.verify)).ok

    run(scenario)


@pytest.mark.parametrize(
    ("name", "role", "tenants", "field"),
    [
        ("", "viewer", None, "name"),
        ("has space", "viewer", None, "name"),
        ("-leading-dash", "viewer", None, "name"),
        ("n" * 65, "viewer", None, "name"),
        ("ok", "superuser", None, "role"),
        ("ok", "viewer", [], "tenants"),
        ("ok", "viewer", ["acme", "bad tenant"], "tenants[1]"),
        ("ok", "viewer", [""], "tenants[0]"),
    ],
)
def test_bad_requests_name_the_field_and_the_fix(
    tmp_path: Path, name: str, role: str, tenants: list[str] | None, field: str
) -> None:
    async def scenario() -> None:
        async with opened(tmp_path, None) as store:
            with pytest.raises(InvalidTokenRequest) as caught:
                await OperatorRegistry(store).create(name, role, tenants, actor="a")
            assert caught.value.field == field
            assert rows(store) == []

    run(scenario)


@given(st.text(max_size=120))
def test_any_text_that_is_not_a_token_parses_to_nothing_or_a_well_formed_pair(text: str) -> None:
    parts = split_token(text)
    if parts is not None:
        token_id, secret = parts
        assert text == f"flt_{token_id}_{secret}"
        assert len(token_id) == 12 and secret
