"""The ``/fw`` provider on SQLite and PostgreSQL: one database read per image however many
blocks are served (then slices of the cached copy), per-device progress, quarantine refusing
new downloads (at once through the API's refresh, within the metadata TTL otherwise), push
content by SHA-256, the LRU bound, and arbitrary requests answered without an exception."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.artifacts.firmware import (
    FirmwareImage,
    FirmwareRepository,
    new_vendor_key,
    sign_image,
)
from lifecycle.artifacts.firmware_serving import METADATA_TTL, FirmwareServing, base_uris
from lifecycle.schema import create_schema
from lwm2m.server.resources import ResourceRequest, ServedResource
from lwm2m.store import Store
from simulators.device.firmware import build_image
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)

PRIVATE, PUBLIC = new_vendor_key()


@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[Store]:  # noqa: F811
    opened = Store.open(database_url, tmp_path)
    opened.create_schema()
    create_schema(opened)
    try:
        yield opened
    finally:
        opened.close()


def _publish(store: Store, version: str, size: int, seed: int = 0) -> tuple[FirmwareImage, bytes]:
    repo = FirmwareRepository(store.audit)
    content = build_image(version, size, seed=seed)
    with store.transaction() as tx:
        repo.add_vendor_key(tx, "acme", PUBLIC.decode(), actor="op", now=1.0)
        image = repo.publish(
            tx,
            content,
            version=version,
            signature=sign_image(content, PRIVATE),
            actor="op",
            now=1.0,
        )
    return image, content


def _ask(image_id: str, block: int, who: str | None = "dev-1", szx: int = 6) -> ResourceRequest:
    return ResourceRequest(("fw", image_id), block, szx, who, "127.0.0.1:4000")


async def _answer(serving: FirmwareServing, request: ResourceRequest) -> ServedResource | None:
    found = serving.provide(request)
    if inspect.isawaitable(found):
        return await found
    return found


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_blocks_are_slices_of_one_cached_copy_and_progress_is_counted(store: Store) -> None:
    image, content = _publish(store, "1.0.0", 256 * 1024 - 60)
    reads = 0
    real_read = store.read

    async def counting(fn: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real_read(fn)

    store.read = counting  # type: ignore[method-assign,assignment]  # instrumentation

    async def case() -> None:
        serving = FirmwareServing(store)
        first = await _answer(serving, _ask(image.id, 0))
        assert first is not None and first.payload == content and first.etag == image.etag
        blocks = -(-len(content) // 1024)
        for device in ("dev-1", "dev-2"):
            for block in range(1 if device == "dev-1" else 0, blocks):
                answer = serving.provide(_ask(image.id, block, device))
                assert isinstance(answer, ServedResource)  # synchronous: no database
                assert answer.payload is first.payload  # the one shared copy
        serving.provide(_ask(image.id, blocks - 1, "dev-2"))  # a retransmitted request
        assert reads == 1 and serving.stats["loads"] == 1
        progress = {p.who: p for p in serving.progress(image=image.id)}
        assert progress["dev-1"].blocks == blocks and progress["dev-2"].blocks == blocks
        assert progress["dev-1"].done and progress["dev-1"].bytes == len(content)
        anonymous = serving.provide(_ask(image.id, 3, None))
        assert isinstance(anonymous, ServedResource)
        partial = serving.progress(who="127.0.0.1:4000")[0]
        assert (partial.blocks, partial.done, partial.last_block) == (1, False, 3)

    asyncio.run(case())


def test_quarantine_refuses_block_0_but_lets_a_download_under_way_finish(store: Store) -> None:
    image, _ = _publish(store, "2.0.0", 5000)
    repo = FirmwareRepository(store.audit)
    clock = _Clock()

    async def case() -> None:
        serving = FirmwareServing(store, clock=clock)
        assert await _answer(serving, _ask(image.id, 0)) is not None
        with store.transaction() as tx:  # written elsewhere: seen once the TTL ran out
            marked = repo.quarantine(tx, image.id, reason="bad", actor="op", now=2.0)
        assert serving.provide(_ask(image.id, 0, "dev-2")) is not None
        clock.now += METADATA_TTL + 1
        assert await _answer(serving, _ask(image.id, 0, "dev-3")) is None
        assert serving.provide(_ask(image.id, 2, "dev-1")) is not None  # under way
        assert await serving.content(image.sha256) is None  # no push of it either
        with store.transaction() as tx:
            lifted = repo.unquarantine(tx, image.id, actor="op", now=3.0)
        serving.refresh(lifted)  # what the API does: at once
        assert serving.provide(_ask(image.id, 0, "dev-3")) is not None
        serving.refresh(marked)
        assert serving.provide(_ask(image.id, 0, "dev-4")) is None
        assert serving.stats["refused"] == 2

    asyncio.run(case())


def test_push_content_by_sha256_and_the_lru_bound(store: Store) -> None:
    one, first = _publish(store, "3.0.0", 4000, seed=1)
    two, second = _publish(store, "3.0.1", 4000, seed=2)

    async def case() -> None:
        serving = FirmwareServing(store, cache_bytes=5000)
        assert await serving.content(one.sha256) == first
        assert await serving.content(two.sha256) == second
        assert await serving.content("ab" * 32) is None
        assert list(serving._cache) == [two.id]  # the older one was evicted
        assert await serving.content(one.sha256) == first
        assert serving.stats["loads"] == 3

    asyncio.run(case())


def test_base_uris_replace_a_wildcard_host() -> None:
    assert base_uris({"host": "0.0.0.0", "port": 5683}, {"host": "::1", "port": 5684}) == {
        "coap": "coap://127.0.0.1:5683",
        "coaps": "coaps://[::1]:5684",
    }


@settings(max_examples=60, deadline=None)
@given(
    path=st.lists(st.text(max_size=20), min_size=0, max_size=4),
    block=st.integers(min_value=0, max_value=2**20),
    szx=st.integers(min_value=0, max_value=6),
    who=st.none() | st.text(max_size=10),
)
def test_any_request_is_answered_or_refused_never_raises(
    tmp_path_factory: pytest.TempPathFactory,
    path: list[str],
    block: int,
    szx: int,
    who: str | None,
) -> None:
    global _FUZZ_STORE
    if _FUZZ_STORE is None:
        _FUZZ_STORE = Store.open(None, tmp_path_factory.mktemp("fuzz"))
        _FUZZ_STORE.create_schema()
        create_schema(_FUZZ_STORE)
    fuzz_store = _FUZZ_STORE

    async def case() -> None:
        serving = FirmwareServing(fuzz_store)
        request = ResourceRequest(("fw", *path), block, szx, who, "a")
        found = await _answer(serving, request)
        assert found is None or isinstance(found, ServedResource)

    asyncio.run(case())


_FUZZ_STORE: Store | None = None
