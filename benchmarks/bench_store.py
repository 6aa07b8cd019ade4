"""Store benchmark: registrations/s and telemetry values/s, group commit vs a commit per write.

    .venv/bin/python -m benchmarks.bench_store [--devices 4000] [--notifications 20000]
        [--values 5] [--window 500] [--pg-url postgresql+psycopg://postgres@127.0.0.1/test]
        [--no-pg] [--json]

For each backend (SQLite with ``synchronous=FULL`` -- the default --, SQLite with ``NORMAL``,
PostgreSQL) and each mode it opens a fresh database (a temporary SQLite file; a new
PostgreSQL schema, dropped afterwards) and measures, through the same ``Store`` API the
server uses:

* registrations/s -- ``--devices`` Register operations, at most ``--window`` outstanding at a
  time (many devices registering at once), each awaited until committed, as the server must
  before acknowledging; plus the submit-to-commit latency (p50 / p99) each device would see
  ("burst"), and the same latency at light load: 200 more registrations, 4 in flight ("light");
* telemetry values/s -- ``--notifications`` notifications of ``--values`` values each,
  fire-and-forget through ``Store.record``, timed until a final ``flush`` has committed all.

"batched" is the default group commit (``BatchSettings()``); "per-write" is the same writer
with ``max_batch=1, max_delay=0``: one transaction and one commit per write, i.e. what the
server would get without batching (still off the event loop). Per-write runs use a tenth of
the operations so the run stays short; rates are rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lwm2m.model import Path as LwPath
from lwm2m.model import Value
from lwm2m.store import (
    Address,
    BatchSettings,
    Identity,
    NewRegistration,
    ReportedValue,
    Store,
    StoreSettings,
)

DEFAULT_PG_URL = os.environ.get(
    "FLEETLOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PER_WRITE = BatchSettings(max_batch=1, max_delay=0.0)


@dataclass(frozen=True)
class Backend:
    name: str
    kind: Literal["sqlite", "postgresql"]
    synchronous: Literal["FULL", "NORMAL"] = "FULL"


@contextmanager
def fresh_database(backend: Backend, pg_url: str) -> Iterator[tuple[str, Path]]:
    """A URL to an empty database and a data directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        if backend.kind == "sqlite":
            yield f"sqlite:///{tmp}/fleetloop.db", Path(tmp)
            return
        schema = f"bench_{secrets.token_hex(5)}"
        admin = create_engine(pg_url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
            yield url.render_as_string(hide_password=False), Path(tmp)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def open_store(url: str, data_dir: Path, backend: Backend, batch: BatchSettings) -> Store:
    settings = StoreSettings(sqlite_synchronous=backend.synchronous, batch=batch)
    store = Store.open(url, data_dir, settings=settings)
    store.create_schema(now=0)
    return store


async def registrations(
    store: Store, devices: int, window: int, first: int = 0
) -> dict[str, float]:
    """Register ``devices`` new endpoints, ``window`` at a time, awaiting each commit."""
    gate = asyncio.Semaphore(window)
    latencies: list[float] = []
    now = time.time()

    async def device(i: int) -> None:
        new = NewRegistration(
            f"urn:imei:{350000000000000 + first + i}",
            86400,
            Address("10.20.30.40", 40000 + i % 20000),
            Identity.psk(f"id-{i}"),
            binding="UQ",
            queue_mode=True,
            object_links="</1/0>,</3/0>,</4/0>,</5/0>,</3303/0>,</3303/1>",
            supported_formats=(112, 11542, 11543),
        )
        async with gate:
            t0 = time.perf_counter()
            await store.write(lambda tx: store.registrations.register(tx, new, now))
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(device(i) for i in range(devices)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "ops": devices,
        "seconds": elapsed,
        "per_second": devices / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def telemetry(store: Store, notifications: int, values: int) -> dict[str, float]:
    """Record ``notifications`` x ``values`` values, fire-and-forget, then flush."""
    base = time.time()
    paths = [LwPath.of(3303, i % 4, 5700 + i) for i in range(values)]
    t0 = time.perf_counter()
    for n in range(notifications):
        endpoint = f"urn:imei:{350000000000000 + n % 1000}"
        at = base + n / 1000
        store.record(
            [ReportedValue(endpoint, p, Value.float_(20.0 + (n % 100) / 10), at) for p in paths]
        )
        if n % 256 == 255:
            await asyncio.sleep(0)  # a server yields between datagrams
    await store.flush()
    elapsed = time.perf_counter() - t0
    total = notifications * values
    return {"ops": total, "seconds": elapsed, "per_second": total / elapsed}


def run_one(backend: Backend, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    batch = BatchSettings() if mode == "batched" else PER_WRITE
    scale = 1 if mode == "batched" else 10
    result: dict[str, Any] = {"backend": backend.name, "mode": mode}
    with fresh_database(backend, args.pg_url) as (url, data_dir):
        store = open_store(url, data_dir, backend, batch)
        try:
            result["registrations"] = asyncio.run(
                registrations(store, max(args.devices // scale, 1), args.window)
            )
            reg_batches = store.batcher.stats.batches
            reg_items = store.batcher.stats.items
            result["light"] = asyncio.run(
                registrations(store, max(200 // scale, 20), 4, first=args.devices)
            )
            result["telemetry"] = asyncio.run(
                telemetry(store, max(args.notifications // scale, 1), args.values)
            )
            stats = store.batcher.stats
            result["mean_batch"] = {
                "registrations": result["registrations"]["ops"] / max(reg_batches, 1),
                "telemetry_items": (stats.items - reg_items) / max(stats.batches - reg_batches, 1),
            }
        finally:
            store.close()
    return result


def machine() -> dict[str, str]:
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?"
            )
    except OSError:
        info["cpu"] = platform.processor() or "?"
    return info


def pg_version(url: str) -> str | None:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    except Exception as err:
        print(f"PostgreSQL at {make_url(url).render_as_string()} skipped: {err}", file=sys.stderr)
        return None
    finally:
        engine.dispose()


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | mode | registrations/s | regs/commit | ack ms p50 / p99 (burst) "
        "| ack ms p50 / p99 (light) | telemetry values/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        reg, light, tel = r["registrations"], r["light"], r["telemetry"]
        lines.append(
            f"| {r['backend']} | {r['mode']} | {reg['per_second']:,.0f} "
            f"| {r['mean_batch']['registrations']:.0f} "
            f"| {reg['p50_ms']:.1f} / {reg['p99_ms']:.1f} "
            f"| {light['p50_ms']:.1f} / {light['p99_ms']:.1f} | {tel['per_second']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=4000)
    parser.add_argument("--notifications", type=int, default=20000)
    parser.add_argument("--values", type=int, default=5, help="values per notification")
    parser.add_argument("--window", type=int, default=500, help="registrations in flight")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    backends = [
        Backend("SQLite (synchronous=FULL)", "sqlite", "FULL"),
        Backend("SQLite (synchronous=NORMAL)", "sqlite", "NORMAL"),
    ]
    info = machine()
    if not args.no_pg and (version := pg_version(args.pg_url)) is not None:
        info["postgresql"] = version
        backends.append(Backend(f"PostgreSQL {version.split()[0]}", "postgresql"))
    results = [run_one(b, mode, args) for b in backends for mode in ("batched", "per-write")]
    if args.json:
        print(json.dumps({"machine": info, "args": vars(args), "results": results}, indent=2))
    else:
        print(" ".join(f"{k}={v}" for k, v in info.items()))
        print(
            f"devices={args.devices} window={args.window} notifications={args.notifications} "
            f"values/notification={args.values} (per-write runs: a tenth of each)"
        )
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
