"""Registration refusals into the audit log without letting an attacker scale it, and the
checkpoint component; the aggregator is pure (time passed in), the component runs on a real
store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifecycle.audit_events import (
    REFUSAL_ACTION,
    TEXT_CAP,
    AuditComponent,
    RefusalAggregator,
    source_host,
)
from lwm2m.server import RegistrationRefused
from lwm2m.store import Ed25519Signer, Store
from tests.store.conftest import StoreTarget, pg_admin, target  # noqa: F401  (fixtures)


def refused(
    address: str = "10.0.0.7:5683", reason: str = "identity mismatch", endpoint: str = "ep"
) -> RegistrationRefused:
    return RegistrationRefused(endpoint, reason, "psk:x", "4.03", address)


def test_the_first_refusal_is_recorded_and_repeats_become_one_record_per_window() -> None:
    agg = RefusalAggregator(window=60.0)
    first = agg.feed(refused(), now=100.0)
    assert len(first) == 1 and first[0].detail["code"] == "4.03"
    assert first[0].endpoints == ("ep",)
    for i in range(500):
        assert agg.feed(refused(address=f"10.0.0.7:{1000 + i}"), now=100.0 + i / 10) == []
    assert agg.flush(now=159.0) == []  # the window is still open
    (summary,) = agg.flush(now=160.0)
    assert summary.detail["repeats"] == 500 and summary.outcome == "repeated"
    assert summary.detail["source"] == "10.0.0.7"
    assert agg.open_windows == 0
    assert len(agg.feed(refused(), now=161.0)) == 1  # a new window records its first again


def test_sources_and_reasons_are_counted_apart() -> None:
    agg = RefusalAggregator()
    out = agg.feed(refused(), 0.0) + agg.feed(refused(reason="unknown endpoint"), 1.0)
    out += agg.feed(refused(address="[2001:db8::1]:5683"), 2.0)
    out += agg.feed(refused(address="10.0.0.7:9"), 3.0)  # same host, other port: a repeat
    assert len(out) == 3
    assert source_host("[2001:db8::1]:5683") == "2001:db8::1"
    assert source_host("10.0.0.7:5683") == "10.0.0.7"


def test_attacker_supplied_text_is_capped() -> None:
    agg = RefusalAggregator()
    (record,) = agg.feed(refused(reason="r" * 5000, endpoint="e" * 5000), 0.0)
    assert len(record.subject) == TEXT_CAP and len(record.detail["reason"]) == TEXT_CAP
    assert all(len(e) <= TEXT_CAP for e in record.endpoints)


def test_a_flood_from_many_sources_folds_into_one_overflow_bucket() -> None:
    agg = RefusalAggregator(window=60.0, max_sources=10)
    records = []
    for i in range(10_000):
        records += agg.feed(refused(address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:1"), 1.0)
    records += agg.flush(61.0)
    assert len(records) <= 2 * (10 + 1)
    overflow = [r for r in records if r.detail.get("repeats")]
    assert sum(r.detail["repeats"] for r in overflow) == 10_000 - 11


@pytest.fixture
def store(target: StoreTarget) -> Iterator[Store]:  # noqa: F811
    s = target.open()
    s.create_schema(now=0.0)
    try:
        yield s
    finally:
        s.close()


def test_the_component_writes_refusals_and_checkpoints_on_a_real_store(store: Store) -> None:
    clock = [1000.0]
    signer = Ed25519Signer(Ed25519PrivateKey.generate())
    component = AuditComponent(
        store, signer, public_key_raw=signer.public_key_raw, clock=lambda: clock[0]
    )

    async def main() -> None:
        for i in range(300):
            clock[0] = 1000.0 + i / 100
            await component.on_refused(refused())
        await component.stop()  # flushes the open window and signs a last checkpoint

    asyncio.run(main())
    records = store.read_sync(lambda tx: store.audit.list(tx, action_prefix=REFUSAL_ACTION))
    assert [r.outcome for r in records] == ["4.03", "repeated"]
    assert records[1].detail["repeats"] == 299
    latest = store.read_sync(store.audit.latest_checkpoint)
    assert latest is not None and latest.tree_size == 2
    assert store.read_sync(lambda tx: store.audit.verify(tx, verifier=signer.verifier())).ok
