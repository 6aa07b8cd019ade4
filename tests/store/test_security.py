"""Endpoint security: credentials, uniqueness of identities, and the PSK lookup cache."""

from __future__ import annotations

import asyncio

import pytest

from lwm2m.store import (
    Conflict,
    EndpointSecurity,
    NotFound,
    PskCredential,
    SecurityCache,
    Store,
    StoreSettings,
    X509Credential,
)
from tests.store.conftest import StoreTarget

FP = "AB:" * 31 + "CD"  # 32 bytes in the usual colon-separated upper-case form


def psk(endpoint: str, identity: str, key: bytes = b"k" * 16) -> EndpointSecurity:
    return EndpointSecurity(endpoint, psk=PskCredential(identity, key))


def put(store: Store, security: EndpointSecurity, now: float = 0.0) -> EndpointSecurity | None:
    with store.transaction() as tx:
        return store.security.set(tx, security, now)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_set_get_replace_remove(store: Store) -> None:
    sec = store.security
    assert put(store, psk("ep-1", "id-1"), now=5) is None
    stored = store.read_sync(lambda tx: sec.get(tx, "ep-1"))
    assert stored == EndpointSecurity("ep-1", psk=PskCredential("id-1", b"k" * 16), updated_at=5)
    both = EndpointSecurity(
        "ep-1",
        psk=PskCredential("id-1b", b"\x00" * 32),
        x509=X509Credential("CN=ep-1", FP),
        allow_nosec=True,
    )
    assert put(store, both, now=6) == stored
    with store.transaction() as tx:
        got = sec.get(tx, "ep-1")
        assert got is not None and got.allow_nosec
        assert got.x509 == X509Credential("CN=ep-1", "abab" * 15 + "abcd")  # normalised
        assert got.psk == PskCredential("id-1b", b"\x00" * 32)
        assert sec.find_by_psk_identity(tx, "id-1") is None
        assert sec.find_by_psk_identity(tx, "id-1b") == got
        assert sec.find_by_certificate(tx, subject="CN=ep-1") == got
        assert sec.find_by_certificate(tx, fingerprint_sha256=FP.lower()) == got
        assert sec.remove(tx, "ep-1") == got
        assert sec.get(tx, "ep-1") is None
    with pytest.raises(NotFound), store.transaction() as tx:
        sec.remove(tx, "ep-1")


def test_nosec_grant_without_credentials(store: Store) -> None:
    put(store, EndpointSecurity("lab-1", allow_nosec=True))
    got = store.read_sync(lambda tx: store.security.get(tx, "lab-1"))
    assert got is not None and got.allow_nosec and got.psk is None and got.x509 is None


def test_an_identity_belongs_to_one_endpoint_only(store: Store) -> None:
    put(store, psk("ep-1", "shared"))
    put(store, EndpointSecurity("ep-3", x509=X509Credential("CN=three", FP)))
    with pytest.raises(Conflict, match="'shared' already belongs to endpoint 'ep-1'"):
        put(store, psk("ep-2", "shared"))
    with pytest.raises(Conflict, match="certificate subject"):
        put(store, EndpointSecurity("ep-4", x509=X509Credential("CN=three")))
    with pytest.raises(Conflict, match="fingerprint"):
        put(store, EndpointSecurity("ep-4", x509=X509Credential("CN=four", FP)))
    put(store, psk("ep-1", "shared", key=b"new"))  # the owner may change its own key
    assert store.read_sync(lambda tx: store.security.get(tx, "ep-2")) is None


def test_malformed_fingerprints_and_lookups_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="64 hex"):
        put(store, EndpointSecurity("ep-1", x509=X509Credential("CN=x", "abc")))
    with pytest.raises(ValueError, match="exactly one"), store.transaction() as tx:
        store.security.find_by_certificate(tx)


def test_list_pages_by_endpoint(store: Store) -> None:
    for i in range(5):
        put(store, psk(f"ep-{i}", f"id-{i}"))
    with store.transaction() as tx:
        first = store.security.list_page(tx, limit=3)
        assert [s.endpoint for s in first.items] == ["ep-0", "ep-1", "ep-2"]
        rest = store.security.list_page(tx, after=first.next_after, limit=3)
        assert [s.endpoint for s in rest.items] == ["ep-3", "ep-4"]
        assert rest.next_after is None


def test_psk_store_answers_mbedtls_lookups_from_the_cache(store: Store) -> None:
    put(store, psk("ep-1", "id-1", key=b"secret-1"))
    keys = store.psk_store()
    cache = store.security_cache
    assert keys["id-1"] == b"secret-1"
    misses = cache.misses
    for _ in range(10):
        assert keys["id-1"] == b"secret-1"
    assert cache.misses == misses  # served from memory
    assert "id-1" in keys and "nope" not in keys
    with pytest.raises(KeyError):
        keys["nope"]


def test_a_committed_change_invalidates_the_cache(store: Store) -> None:
    keys = store.psk_store()
    put(store, psk("ep-1", "id-1", key=b"old"))
    assert keys["id-1"] == b"old"
    put(store, psk("ep-1", "id-2", key=b"new"))  # identity rotated
    assert "id-1" not in keys
    assert keys["id-2"] == b"new"
    with store.transaction() as tx:
        store.security.remove(tx, "ep-1")
    assert "id-2" not in keys


def test_a_rolled_back_change_leaves_the_cache_alone(store: Store) -> None:
    keys = store.psk_store()
    put(store, psk("ep-1", "id-1", key=b"old"))
    assert keys["id-1"] == b"old"
    misses = store.security_cache.misses
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.security.set(tx, psk("ep-1", "id-1", key=b"never"), now=1)
        raise RuntimeError("abort")
    assert keys["id-1"] == b"old"
    assert store.security_cache.misses == misses


def test_changes_by_another_process_show_after_the_ttl(target: StoreTarget) -> None:
    clock = FakeClock()
    with target.open(cache_clock=clock) as server, target.open() as other:
        server.create_schema(now=0)
        keys = server.psk_store()
        assert "id-1" not in keys  # negative entry, kept negative_ttl (10 s)
        put(other, psk("ep-1", "id-1", key=b"v1"))
        assert "id-1" not in keys
        clock.now = 10.5
        assert keys["id-1"] == b"v1"
        put(other, psk("ep-1", "id-1", key=b"v2"))
        assert keys["id-1"] == b"v1"  # positive entry, kept ttl (300 s)
        clock.now = 311
        assert keys["id-1"] == b"v2"


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    loads: list[str] = []

    def loader(identity: str) -> EndpointSecurity | None:
        loads.append(identity)
        return psk(f"ep-{identity}", identity)

    cache = SecurityCache(loader, max_entries=2)
    for identity in ["a", "b", "a", "c", "a", "b"]:
        found = cache.lookup(identity)
        assert found is not None and found.endpoint == f"ep-{identity}"
    assert loads == ["a", "b", "c", "b"]  # 'b' was evicted as least recently used
    assert len(cache) == 2
    cache.invalidate()
    assert len(cache) == 0


def test_after_a_refresh_lookups_never_touch_the_database(target: StoreTarget) -> None:
    with target.open() as server, target.open() as other:
        server.create_schema(now=0)
        put(server, psk("ep-1", "id-1", key=b"v1"))
        put(server, EndpointSecurity("cert-only", x509=X509Credential("CN=c")))
        assert asyncio.run(server.refresh_security_cache())
        cache = server.security_cache
        keys = server.psk_store()
        assert cache.complete and len(cache) == 1
        misses = cache.misses
        assert keys.lookup(b"id-1") == b"v1"
        assert keys.lookup(b"made-up") is None
        assert keys.lookup(b"\xff\xfe") is None  # not UTF-8: unknown
        assert cache.misses == misses  # answered from memory, known or not

        # local writes are visible as soon as they commit
        put(server, psk("ep-1", "id-1b", key=b"v2"))  # identity rotated
        put(server, psk("ep-2", "id-2", key=b"w"))
        assert keys.lookup(b"id-1") is None
        assert (keys.lookup(b"id-1b"), keys.lookup(b"id-2")) == (b"v2", b"w")
        with server.transaction() as tx:
            server.security.remove(tx, "ep-2")
        assert keys.lookup(b"id-2") is None

        # another process's writes appear at the next refresh
        put(other, psk("ep-3", "id-3", key=b"x"))
        assert keys.lookup(b"id-3") is None
        assert asyncio.run(server.refresh_security_cache())
        assert keys.lookup(b"id-3") == b"x"
        assert cache.misses == misses


def test_a_fleet_too_big_for_the_cache_stays_lazy(target: StoreTarget) -> None:
    with target.open(settings=StoreSettings(psk_cache_size=2)) as store:
        store.create_schema(now=0)
        for i in range(3):
            put(store, psk(f"ep-{i}", f"id-{i}", key=bytes([i])))
        assert not asyncio.run(store.refresh_security_cache())
        assert not store.security_cache.complete
        keys = store.psk_store()
        assert [keys.lookup(f"id-{i}".encode()) for i in range(3)] == [b"\x00", b"\x01", b"\x02"]


def test_the_key_store_is_what_the_dtls_transport_accepts(store: Store) -> None:
    from lwm2m.transport.credentials import PskStore

    assert isinstance(store.psk_store(), PskStore)


def test_a_write_committed_during_a_refresh_is_not_lost() -> None:
    db = {"id-1": psk("ep-1", "id-1", key=b"old")}

    def load_all() -> list[EndpointSecurity]:
        copy = list(db.values())  # the refresh's query sees the old row...
        db["id-1"] = psk("ep-1", "id-1", key=b"new")  # ...then a write commits
        cache.invalidate("id-1")  # and its after-commit hook runs
        return copy

    cache = SecurityCache(db.get, load_all=load_all)
    assert cache.refresh()
    found = cache.lookup("id-1")
    assert found is not None and found.psk == PskCredential("id-1", b"new")
