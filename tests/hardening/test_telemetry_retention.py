"""Issue 14 item 3 (retention): telemetry history bounded by age and by rows per device,
enforced in bounded batches, on SQLite and PostgreSQL, and by a real ``fleetloop serve``.

Before the fix nothing ever deleted history: one device sent 250 000 rows in 18 s and kept
them all."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from sqlalchemy import func, select

from lwm2m.model import Path as LwPath
from lwm2m.model import Value
from lwm2m.store import Store
from lwm2m.store.domain import ReportedValue
from lwm2m.store.tables import TELEMETRY
from lwm2m.store.telemetry import RetentionPolicy, TelemetryRetention
from simulators.device.events import SendCompleted
from simulators.runner import SimulatedDevice
from tests.hardening.serve_proc import ServeProcess

NOW = 1_000_000.0


def values(endpoint: str, count: int, start: float, step: float = 1.0) -> list[ReportedValue]:
    return [
        ReportedValue(
            endpoint, LwPath.parse(f"/3303/0/{5700 + i % 2}"), Value.integer(i), start + i * step
        )
        for i in range(count)
    ]


def history_count(store: Store, endpoint: str | None = None) -> int:
    query = select(func.count()).select_from(TELEMETRY)
    if endpoint is not None:
        query = query.where(TELEMETRY.c.endpoint == endpoint)
    return int(store.read_sync(lambda tx: tx.execute(query).scalar_one()))


def oldest(store: Store, endpoint: str) -> float:
    query = select(func.min(TELEMETRY.c.at)).where(TELEMETRY.c.endpoint == endpoint)
    return float(store.read_sync(lambda tx: tx.execute(query).scalar_one()))


def run_pass(store: Store, policy: RetentionPolicy) -> TelemetryRetention:
    retention = TelemetryRetention(
        store.telemetry, store.write, store.read, policy, clock=lambda: NOW, pause=0.0
    )

    async def go() -> None:
        await retention.run_once()
        await store.flush()

    asyncio.run(go())
    return retention


def test_history_older_than_the_max_age_goes_in_bounded_batches(store: Store) -> None:
    with store.transaction() as tx:  # 2 500 rows an hour old and older, 500 recent ones
        store.telemetry.append(tx, values("dev-old", 2500, NOW - 5_000.0))
        store.telemetry.append(tx, values("dev-new", 500, NOW - 100.0, 0.1))
    retention = run_pass(
        store, RetentionPolicy(max_age=3600.0, max_rows_per_device=None, batch=300)
    )
    cutoff = NOW - 3600.0
    kept_old = sum(1 for v in values("dev-old", 2500, NOW - 5_000.0) if v.at >= cutoff)
    assert history_count(store, "dev-old") == kept_old
    assert history_count(store, "dev-new") == 500
    assert oldest(store, "dev-old") >= cutoff
    deleted = 2500 - kept_old
    assert deleted == 1400 and kept_old == 1100
    assert retention.stats.deleted_by_age == deleted
    assert retention.stats.batches >= -(-deleted // 300)  # never more than a batch at once
    with store.transaction() as tx:  # the latest values are not history: they stay
        assert len(store.telemetry.latest(tx, "dev-old")) == 2


def test_a_device_over_its_row_cap_keeps_its_newest_rows_only(store: Store) -> None:
    with store.transaction() as tx:
        store.telemetry.append(tx, values("noisy", 1200, NOW - 500.0, 0.1))
        store.telemetry.append(tx, values("quiet", 40, NOW - 500.0))
    retention = run_pass(store, RetentionPolicy(max_age=None, max_rows_per_device=250, batch=100))
    assert history_count(store, "noisy") == 250
    assert history_count(store, "quiet") == 40
    newest_250 = sorted(v.at for v in values("noisy", 1200, NOW - 500.0, 0.1))[-250:]
    assert abs(oldest(store, "noisy") - newest_250[0]) < 1e-6
    assert retention.stats.deleted_by_cap == 950
    assert retention.stats.batches >= 10
    run_pass(store, RetentionPolicy(max_age=None, max_rows_per_device=250, batch=100))
    assert history_count(store, "noisy") == 250  # idempotent


def test_serve_trims_a_noisy_device_to_its_configured_row_cap(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServeProcess(
        data_dir,
        extra_args=("--telemetry-max-rows", "30", "--telemetry-retention-interval", "1"),
    )
    server.start()

    def rows() -> int:
        with sqlite3.connect(data_dir / "fleetloop.db") as conn:
            found = conn.execute("SELECT count(*) FROM telemetry WHERE endpoint = 'noisy-1'")
            return int(found.fetchone()[0])

    async def flood() -> None:
        uri = f"coap://127.0.0.1:{server.coap_port}"
        async with SimulatedDevice("noisy-1", uri) as device:
            await asyncio.wait_for(device.wait_registered(), 20)
            for _ in range(150):
                device.send(["/3/0/9", "/3/0/13"])
                await asyncio.sleep(0.005)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                answered = [e for e in device.events if isinstance(e, SendCompleted)]
                if len(answered) == 150:
                    break
                await asyncio.sleep(0.1)
            assert {e.code for e in answered} == {"2.04"} and len(answered) == 150  # 300 rows
            deadline = time.monotonic() + 20
            while rows() > 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
            assert rows() == 30

    try:
        asyncio.run(flood())
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
