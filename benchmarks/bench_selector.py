"""Inventory selector benchmark: selectors over a large fleet, and group upkeep per event.

    .venv/bin/python -m benchmarks.bench_selector [--devices 100000] [--runs 3] [--groups 20]
        [--events 2000] [--pg-url postgresql+psycopg://postgres@127.0.0.1/test] [--no-pg]
        [--json]

For each backend (a temporary SQLite file; a fresh PostgreSQL schema, dropped afterwards) it
inserts ``--devices`` inventory records with varied tenant, region, SKU, carrier, stage,
firmware and labels, then times, through :class:`lifecycle.inventory.InventoryRepository`
exactly as the API runs them, each selector's ``count`` and its first page of 100
(``select``), the median of ``--runs`` runs each, in a read transaction of its own.

Group upkeep: ``--groups`` dynamic groups are created, then ``--events`` single-device changes
(a firmware report: one record rewritten through ``upsert``) are timed in group-commit-sized
transactions of 500 -- once without groups, once with them -- so the difference is what keeping
dynamic membership current costs per event (evaluating every group's selector on the one record
in memory plus the membership query and writes).

No ANALYZE is run: the figures are what a freshly loaded database answers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bootstrap.repository import create_schema as create_bootstrap_schema
from lifecycle.groups import GroupRegistry
from lifecycle.inventory import Actor, DeviceRecord, InventoryRepository
from lifecycle.schema import create_schema as create_lifecycle_schema
from lifecycle.selector import parse_selector
from lwm2m.store import Store

DEFAULT_PG_URL = os.environ.get(
    "FLEETLOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

SELECTORS = [
    "region=eu-west,sku=T1,carrier in (tmo,vzw),label:pilot,firmware<2.3.0,stage=active",
    "region=eu-west",
    "firmware<2.3.0",
    "label:pilot",
    "!label:pilot,stage=active",
    "carrier notin (tmo),registered=true",
    "endpoint=dev-0012*",
    "tenant=acme,label:batch=7,firmware>=2.10.0",
    "",
]

REGIONS = ["eu-west", "eu-central", "eu-north", "us-east", "us-west", "ap-south"]
SKUS = ["T1", "T2", "T3", "X9", "M1"]
CARRIERS = ["tmo", "vzw", "att", "vodafone", "orange", "telefonica"]
TENANTS = ["acme", "globex", "initech", "umbrella"]
STAGES = ["active"] * 8 + ["manufactured", "bootstrapped", "suspended", "retired"]
FIRMWARE = ["1.9.4", "2.0.0", "2.2.9", "2.3.0-rc.1", "2.3.0", "2.3.1", "2.9.1", "2.10.0",
            "2.10.1", "3.0.0-beta.2", "3.0.0", None]  # fmt: skip


def fleet(count: int, seed: int = 9) -> Iterator[DeviceRecord]:
    rng = random.Random(seed)
    for i in range(count):
        labels: dict[str, str] = {}
        if rng.random() < 0.05:
            labels["pilot"] = ""
        if rng.random() < 0.3:
            labels["batch"] = str(rng.randrange(1, 20))
        if rng.random() < 0.01:
            labels["canary"] = ""
        stage = rng.choice(STAGES)
        yield DeviceRecord(
            endpoint=f"dev-{i:07d}",
            tenant=rng.choice(TENANTS),
            region=rng.choice(REGIONS),
            country=rng.choice(["DE", "FR", "US", "IN", "SE"]),
            carrier=rng.choice(CARRIERS),
            sku=rng.choice(SKUS),
            policy_group=rng.choice(["default", "beta", "strict"]),
            labels=labels,
            stage=stage,
            stage_history=((stage, 1.0),),
            firmware=rng.choice(FIRMWARE),
            registered=rng.random() < 0.7,
            last_seen=1.0,
            created_at=1.0,
            updated_at=1.0,
        )


@contextmanager
def backend(name: str, pg_url: str) -> Iterator[Store]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(None, tmp)
            try:
                yield store
            finally:
                store.close()
        return
    admin = create_engine(pg_url)
    schema = f"bench_sel_{secrets.token_hex(4)}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    store = Store.open(url.render_as_string(hide_password=False))
    try:
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def run_backend(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with backend(name, args.pg_url) as store:
        store.create_schema()
        create_bootstrap_schema(store)
        create_lifecycle_schema(store)
        repo = InventoryRepository()
        started = time.perf_counter()
        batch: list[DeviceRecord] = []
        for record in fleet(args.devices):
            batch.append(record)
            if len(batch) == 5000:
                with store.transaction() as tx:
                    repo.upsert_many(tx, batch)
                batch = []
        if batch:
            with store.transaction() as tx:
                repo.upsert_many(tx, batch)
        load_s = time.perf_counter() - started

        selectors: list[dict[str, Any]] = []
        for text_ in SELECTORS:
            selector = parse_selector(text_)
            counts: list[float] = []
            pages: list[float] = []
            matched = 0
            for _ in range(args.runs):
                t0 = time.perf_counter()
                matched = store.read_sync(lambda tx, s=selector: repo.count(tx, s))
                t1 = time.perf_counter()
                store.read_sync(lambda tx, s=selector: repo.select(tx, s, limit=100))
                t2 = time.perf_counter()
                counts.append(t1 - t0)
                pages.append(t2 - t1)
            selectors.append(
                {
                    "select": text_ or "(everything)",
                    "matched": matched,
                    "count_ms": median_ms(counts),
                    "first_page_ms": median_ms(pages),
                }
            )

        events = groups_cost(store, repo, args)
        return {
            "backend": name,
            "devices": args.devices,
            "load_s": round(load_s, 1),
            "selectors": selectors,
            "events": events,
        }


def groups_cost(store: Store, repo: InventoryRepository, args: argparse.Namespace) -> Any:
    """µs per single-device change without and with ``--groups`` dynamic groups."""
    rng = random.Random(3)
    targets = [f"dev-{rng.randrange(args.devices):07d}" for _ in range(args.events)]
    records = {r.endpoint: r for r in store.read_sync(lambda tx: repo.get_many(tx, targets))}

    def changes(round_: int) -> float:
        started = time.perf_counter()
        for start in range(0, len(targets), 500):
            with store.transaction() as tx:
                for i, endpoint in enumerate(targets[start : start + 500]):
                    firmware = FIRMWARE[(start + i + round_) % (len(FIRMWARE) - 1)]
                    previous = records[endpoint]
                    repo.upsert(tx, replace(previous, firmware=firmware), previous)
        return (time.perf_counter() - started) / len(targets)

    without = changes(0)
    groups = GroupRegistry(repo)
    repo.on_change.append(groups.on_change)
    created = time.perf_counter()
    for g in range(args.groups):
        text_ = SELECTORS[g % (len(SELECTORS) - 1)]
        with store.transaction() as tx:
            groups.create(tx, f"g{g}", parse_selector(text_), kind="dynamic", tenant=None,
                          actor=Actor("bench"), now=2.0)  # fmt: skip
    create_s = (time.perf_counter() - created) / max(args.groups, 1)
    with_groups = changes(1)
    return {
        "groups": args.groups,
        "changes": len(targets),
        "per_change_us_without_groups": round(without * 1e6),
        "per_change_us_with_groups": round(with_groups * 1e6),
        "group_upkeep_us_per_change": round((with_groups - without) * 1e6),
        "membership_rows_changed": groups.joined + groups.left,
        "group_create_ms": round(create_s * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "backends": [run_backend(name, args) for name in ("sqlite", "postgresql")
                     if name == "sqlite" or not args.no_pg],
    }  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{results['date']}  commit {commit}  {results['machine']}")
    for result in results["backends"]:
        print(f"\n{result['backend']}: {result['devices']} devices (load {result['load_s']} s)")
        print(f"  {'count ms':>9} {'page ms':>8} {'matched':>8}  selector")
        for row in result["selectors"]:
            print(f"  {row['count_ms']:>9} {row['first_page_ms']:>8} {row['matched']:>8}  "
                  f"{row['select']}")  # fmt: skip
        print(f"  events: {json.dumps(result['events'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
