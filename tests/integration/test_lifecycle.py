"""The lifecycle spine end to end, as an operator runs it against the real ``fleetloop serve``:

a thousand devices from a factory identity CSV (with tenants, regions, carriers, policy groups
and labels) bootstrap over DTLS-PSK and register; the inventory joins each identity with what
the device reports; dynamic groups created before any device came online fill up by events,
a snapshot group keeps the members it had; desired config and flags set by selector are
applied by the reconciler and verified with their generation; every step is in the audit
log, which verifies -- and stops verifying after an edit, a deletion or a truncation of its
table.

This module runs its own server: it tampers with the audit log's table on purpose.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.fleet.runner import DeviceFleet
from simulators.identities import from_csv, spread_attributes
from tests.integration.conftest import Api, Serve, eventually, run, start_serve

pytestmark = pytest.mark.integration

FLEET = 1000
PREFIX = "lc-"


@pytest.fixture(scope="module")
def lc_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with start_serve(tmp_path_factory.mktemp("lifecycle") / "data") as running:
        yield running


def _expected(predicate: Any) -> set[str]:
    """Endpoints of the spread fleet whose attributes satisfy ``predicate``."""
    return {f"{PREFIX}{n:06d}" for n in range(1, FLEET + 1) if predicate(spread_attributes(n), n)}


async def _all_members(api: Api, group: str, tenant: str) -> set[str]:
    members: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, "tenant": tenant}
        if cursor:
            params["cursor"] = cursor
        page = await api.get(f"/v1/groups/{group}/members", params=params)
        members.update(m["endpoint"] for m in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return members


async def _count(api: Api, select: str) -> int:
    page = await api.get("/v1/inventory", params={"select": select, "limit": 1})
    return int(page["count"])


async def _out_of_line(api: Api, select: str) -> list[Any]:
    drift = await api.get("/v1/state/drift", params={"select": select, "limit": 10_000})
    return list(drift["items"])


def test_a_thousand_devices_from_an_identity_csv_are_grouped_and_converge_to_desired_state(
    lc_serve: Serve, tmp_path: Path
) -> None:
    serve = lc_serve
    csv_file = tmp_path / "factory.csv"
    made = serve.cli(
        "sim", "identities", "-n", str(FLEET), "--prefix", PREFIX, "--spread", "--out",
        str(csv_file),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    imported = serve.cli("identities", "import", str(csv_file))
    assert imported.returncode == 0, imported.stdout + imported.stderr

    # groups made before any device is online: a dynamic group on the stage fills up by
    # events as devices come online; one on factory attributes has its members at once
    for args in (
        ("eu-online", "--select", "region=eu-west,stage=active", "--tenant", "acme"),
        ("us-pilot", "--select", "region=us-east,label:pilot", "--tenant", "acme"),
        ("vzw-trackers", "--select", "carrier in (vzw),policy_group=trackers", "--tenant", "acme"),
        ("apac-at-import", "--select", "region=apac", "--snapshot", "--tenant", "globex"),
    ):
        created = serve.cli("groups", "create", *args)
        assert created.returncode == 0, created.stdout + created.stderr

    eu = _expected(lambda a, n: a["region"] == "eu-west")
    us_pilot = _expected(lambda a, n: a["region"] == "us-east" and n % 10 == 0)
    vzw = _expected(lambda a, n: a["carrier"] == "vzw")
    apac = _expected(lambda a, n: a["region"] == "apac")
    pilots = _expected(lambda a, n: n % 10 == 0)

    async def case() -> None:
        api = Api(serve)
        try:
            # at import: records exist, nothing is online yet
            assert await _count(api, f"endpoint={PREFIX}*,stage=manufactured") == FLEET
            assert await _all_members(api, "eu-online", "acme") == set()
            assert await _all_members(api, "us-pilot", "acme") == us_pilot  # by attributes
            assert await _all_members(api, "apac-at-import", "globex") == apac

            identities = from_csv(csv_file.read_text())
            async with DeviceFleet(bootstrap_uri=serve.bootstrap_coaps_uri, seed=1) as fleet:
                fleet.spawn(identities=identities)
                await fleet.wait_registered(timeout=240)

                async def all_active() -> bool:
                    return await _count(api, f"endpoint={PREFIX}*,stage=active") == FLEET

                await eventually(all_active, timeout=60)
                record = await api.get(f"/v1/inventory/{PREFIX}000004")
                assert (record["tenant"], record["region"], record["carrier"]) == (
                    "acme",
                    "us-east",
                    "vzw",
                )
                assert record["policy_group"] == "trackers"
                assert [m["stage"] for m in record["stage_history"]][:3] == [
                    "manufactured",
                    "bootstrapped",
                    "active",
                ]
                assert await _count(api, f"endpoint={PREFIX}*,region=eu-west") == len(eu)
                assert await _count(api, f"endpoint={PREFIX}*,label:pilot") == len(pilots)

                async def groups_filled() -> bool:
                    return await _all_members(api, "eu-online", "acme") == eu

                await eventually(groups_filled, timeout=30)
                assert await _all_members(api, "us-pilot", "acme") == us_pilot
                assert await _all_members(api, "vzw-trackers", "acme") == vzw
                assert await _all_members(api, "apac-at-import", "globex") == apac

                # desired state by selector: config for the EU region, flags for the pilots
                bundle = await api.put("/v1/config-bundles/eu-v9", {"region": "eu", "v": 9})
                config = await api.put(
                    "/v1/state", {"select": "region=eu-west", "values": {"config": "eu-v9"}}
                )
                assert config["selected"] == len(eu)
                flags = await api.put(
                    "/v1/state", {"select": "label:pilot", "values": {"flags": {"pilot": "on"}}}
                )
                assert flags["selected"] == len(pilots)

                async def converged() -> bool:
                    return not await _out_of_line(api, f"endpoint={PREFIX}*")

                try:
                    await eventually(converged, timeout=150)
                except AssertionError:
                    left = await _out_of_line(api, f"endpoint={PREFIX}*")
                    raise AssertionError(f"{len(left)} out of line, e.g. {left[:3]}") from None
                some_eu = sorted(eu)[7]
                state = await api.get(f"/v1/devices/{some_eu}/state")
                rows = {r["dimension"]: r for r in state["dimensions"]}
                assert rows["config"]["status"] == "applied"
                assert (rows["config"]["generation"], rows["config"]["observed_generation"]) == (
                    1,
                    1,
                )
                assert rows["config"]["desired"]["digest"] == bundle["digest"]
                index = next(i for i, ident in enumerate(identities) if ident.endpoint == some_eu)
                assert fleet.device(index).read("/32001/0/4") == "eu-v9"  # the device runs it
                not_eu = sorted(_expected(lambda a, n: a["region"] != "eu-west"))[0]
                other = await api.get(f"/v1/devices/{not_eu}/state")
                assert {r["dimension"]: r for r in other["dimensions"]}["config"]["desired"] is None

                # the audit log has it all: import, groups, bootstrap, state changes, steps
                for wanted in (
                    "identities.import",
                    "group.create",
                    "bootstrap.provisioned",
                    "state.set",
                    "state.reconcile",
                ):
                    assert await _audit(api, action=wanted, limit=1), wanted
                steps = await _audit(api, action="state.reconcile", endpoint=some_eu)
                assert steps and all(some_eu in r["endpoints"] for r in steps)
                by_selector = await _audit(
                    api, action="state.reconcile", select="region=eu-west", limit=1000
                )
                assert by_selector
                assert all(set(r["endpoints"]) & eu for r in by_selector)
                pilots_only = await _audit(api, action="state.", select="label:pilot,region=apac")
                assert all(set(r["endpoints"]) & apac for r in pilots_only)
                # what the devices reported is in the inventory: firmware, semantically
                # comparable in selectors
                record = await api.get(f"/v1/inventory/{PREFIX}000004")
                assert record["firmware"] and record["model"]
                assert await _count(api, f"endpoint={PREFIX}*,firmware>=0.0.1") == FLEET
        finally:
            await api.aclose()

    run(case(), timeout=600)


async def _audit(api: Api, **params: Any) -> list[dict[str, Any]]:
    page = await api.get("/v1/audit", params=params)
    return list(page["items"] if isinstance(page, dict) else page)


def _verify(serve: Serve, *extra: str) -> tuple[int, dict[str, Any] | str]:
    done = serve.cli("audit", "verify", "--json", *extra)
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.returncode, done.stdout + done.stderr


def test_the_audit_log_verifies_and_any_edit_deletion_or_truncation_is_detected(
    lc_serve: Serve, tmp_path: Path
) -> None:
    serve = lc_serve

    async def make_records() -> None:
        api = Api(serve)
        try:
            for n in range(5):
                await api.put(f"/v1/config-bundles/audit-{n}", {"n": n})
        finally:
            await api.aclose()

    asyncio.run(make_records())
    kept = tmp_path / "checkpoint.json"
    made = serve.cli("audit", "checkpoint", "--new", "--out", str(kept))
    assert made.returncode == 0, made.stdout + made.stderr
    code, verdict = _verify(serve, "--checkpoint", str(kept))
    assert code == 0, verdict

    database = serve.data_dir / "fleetloop.db"
    with sqlite3.connect(database, timeout=30) as db:
        (last,) = db.execute("SELECT max(seq) FROM audit_log").fetchone()
        target = last - 2
        row = db.execute("SELECT * FROM audit_log WHERE seq = ?", (target,)).fetchone()
        columns = [c[1] for c in db.execute("PRAGMA table_info(audit_log)")]
        original = dict(zip(columns, row, strict=True))

    def tampered(statement: str, *args: Any) -> str:
        with sqlite3.connect(database, timeout=30) as db:
            db.execute(statement, args)
        code, verdict = _verify(serve, "--checkpoint", str(kept))
        assert code == 1, f"verify passed after: {statement}"
        return json.dumps(verdict)

    def restore() -> None:
        with sqlite3.connect(database, timeout=30) as db:
            db.execute("DELETE FROM audit_log WHERE seq = ?", (target,))
            placeholders = ", ".join("?" for _ in columns)
            db.execute(
                f"INSERT INTO audit_log ({', '.join(columns)}) VALUES ({placeholders})",
                [original[c] for c in columns],
            )
        code, verdict = _verify(serve, "--checkpoint", str(kept))
        assert code == 0, verdict

    # an edit of one record's outcome
    report = tampered("UPDATE audit_log SET outcome = 'ok-edited' WHERE seq = ?", target)
    assert str(target) in report
    restore()
    # a deletion of one record
    report = tampered("DELETE FROM audit_log WHERE seq = ?", target)
    assert str(target) in report
    restore()
    # a truncation of the table's tail, past the kept checkpoint
    tampered("DELETE FROM audit_log WHERE seq >= ?", target)
