"""Shared setup of the inventory tests: a store with every schema on SQLite or PostgreSQL
(``database_url`` from the API conftest: None is SQLite under the test's directory), and a
varied device population."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bootstrap.repository import create_schema as create_bootstrap_schema
from lifecycle.inventory import DeviceRecord
from lifecycle.schema import create_schema as create_lifecycle_schema
from lwm2m.store import Store

REGIONS = ["eu-west", "eu-central", "us-east", None]
SKUS = ["T1", "T2", "X9", None]
CARRIERS = ["tmo", "vzw", "att", "vodafone", None]
TENANTS = ["acme", "globex", None]
STAGES = ["manufactured", "bootstrapped", "active", "suspended", "retired"]
FIRMWARE = ["2.2.9", "2.3.0", "2.3.0-rc.1", "2.10.0", "v2.9.1", "1.0", "R12a", "", None]
LABELS = ["pilot", "batch", "canary"]
LABEL_VALUES = ["", "7", "x"]


@contextmanager
def open_store(database_url: str | None, data_dir: Path) -> Iterator[Store]:
    store = Store.open(database_url, data_dir)
    try:
        store.create_schema()
        create_bootstrap_schema(store)
        create_lifecycle_schema(store)
        yield store
    finally:
        store.close()


def population(count: int, seed: int = 7) -> list[DeviceRecord]:
    """``count`` devices with every attribute drawn from small pools (so selectors hit)."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        labels = {name: rng.choice(LABEL_VALUES) for name in LABELS if rng.random() < 0.4}
        records.append(
            DeviceRecord(
                endpoint=f"dev-{i:04d}" if i % 5 else f"Dev_{i:04d}",
                tenant=rng.choice(TENANTS),
                region=rng.choice(REGIONS),
                carrier=rng.choice(CARRIERS),
                sku=rng.choice(SKUS),
                stage=rng.choice(STAGES),
                firmware=rng.choice(FIRMWARE),
                registered=rng.random() < 0.5,
                labels=labels,
                created_at=1000.0,
                updated_at=1000.0,
            )
        )
    return records
