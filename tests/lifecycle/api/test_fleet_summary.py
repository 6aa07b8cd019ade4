"""``GET /v1/fleet/summary``: breakdowns over the whole fleet, computed by the server.

12 345 device records (more than the console's old 10 000-record sample) with desired and
reported config are written straight into the store; the served route must count every one
of them, by stage, region, carrier, firmware, SKU, tenant, config (reported and desired) and
drift status, on SQLite and on PostgreSQL, and narrow by selector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lifecycle.state.tables import DESIRED, REPORTED
from lifecycle.tables import DEVICE
from lwm2m.store import Tx
from tests.lifecycle.api.harness import run, running_api

N = 12_345


def _device(n: int) -> dict[str, Any]:
    return {
        "endpoint": f"fs-{n:06d}",
        "tenant": "acme" if n % 2 else "globex",
        "region": ("eu", "us", "ap")[n % 3],
        "carrier": "telco-a" if n % 5 else None,
        "sku": "T1",
        "stage": "active" if n % 4 else "manufactured",
        "firmware": "1.2.0" if n < 11_000 else "1.3.0",
        "registered": n % 10 == 0,
        "iccids": "[]",
        "stage_history": "[]",
        "created_at": 1.0,
        "updated_at": 1.0,
    }


def _seed(tx: Tx) -> None:
    tx.execute(DEVICE.insert(), [_device(n) for n in range(N)])
    desired = [
        {
            "endpoint": f"fs-{n:06d}",
            "dimension": "config",
            "value": json.dumps({"version": "v2", "digest": "ab"}),
            "generation": 2,
            "policy": "enforce",
            "set_by": "test",
            "set_at": 1.0,
        }
        for n in range(0, N, 3)  # the eu devices want v2
    ]
    tx.execute(DESIRED.insert(), desired)
    reported = [
        {
            "endpoint": f"fs-{n:06d}",
            "dimension": "config",
            "value": json.dumps({"version": "v2" if n % 2 else "v1", "result": "applied"}),
            "observed_generation": 2 if n % 2 else 1,
            "detail": "",
            "reported_at": 2.0,
            "source": "test",
        }
        for n in range(0, N, 3)  # odd ones run v2 (applied); even ones still v1 (pending)
    ]
    tx.execute(REPORTED.insert(), reported)


def _counts(found: dict[str, Any], key: str) -> dict[str | None, int]:
    return {c["value"]: c["count"] for c in found[key]}


def test_the_summary_counts_every_device_not_a_sample(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, database_url=database_url) as api:
            await api.store.write(_seed)
            answer = await api.http.get("/v1/fleet/summary")
            assert answer.status_code == 200, answer.text
            found = answer.json()
            assert found["devices"] == N and found["select"] == ""
            assert found["registered"] == len(range(0, N, 10))
            stages = _counts(found, "stage")
            assert stages == {
                "active": N - len(range(0, N, 4)),
                "manufactured": len(range(0, N, 4)),
            }
            assert _counts(found, "firmware") == {"1.2.0": 11_000, "1.3.0": N - 11_000}
            assert _counts(found, "carrier")[None] == len(range(0, N, 5))
            assert sum(_counts(found, "region").values()) == N
            assert _counts(found, "tenant") == {"acme": N // 2, "globex": N - N // 2}
            eu = range(0, N, 3)
            v2 = len([n for n in eu if n % 2])
            assert _counts(found, "config") == {"v2": v2, "v1": len(eu) - v2}
            assert _counts(found, "config_desired") == {"v2": len(eu)}
            drift = {(d["dimension"], d["status"]): d["count"] for d in found["drift"]}
            assert drift == {("config", "applied"): v2, ("config", "pending"): len(eu) - v2}
            assert found["out_of_line"] == len(eu) - v2

            narrowed = (await api.http.get("/v1/fleet/summary?select=region=us")).json()
            assert narrowed["select"] == "region=us"
            assert narrowed["devices"] == len(range(1, N, 3))
            assert narrowed["config"] == [] and narrowed["out_of_line"] == 0
            bad = await api.http.get("/v1/fleet/summary?select=region%3D%3D")
            assert bad.status_code == 422 and bad.json()["field"] == "select"

    run(scenario, timeout=60)
