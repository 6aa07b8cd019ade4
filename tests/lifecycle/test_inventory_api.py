"""The inventory and groups API against a real LwM2MServer: simulated devices register over
real UDP, land in a dynamic group by event, leave it when they de-register; bulk changes and
stage moves through the API are audited under the caller; selector errors are 422 with the
position and the fix. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bootstrap.repository import create_schema as create_bootstrap_schema
from lifecycle.inventory_events import InventoryService
from lifecycle.schema import create_schema as create_lifecycle_schema
from lifecycle.service import LifecycleService
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture)
from tests.lifecycle.api.harness import Api, run, running_api


@asynccontextmanager
async def inventory_api(data_dir: Path, url: str | None) -> AsyncIterator[Api]:
    """The test API with the lifecycle event loop and the inventory wired as serve does."""
    async with running_api(data_dir, database_url=url) as api:
        create_bootstrap_schema(api.store)
        create_lifecycle_schema(api.store)
        service = LifecycleService(api.server)
        inventory = InventoryService(api.store)
        inventory.attach(service)
        api.context.inventory = inventory
        service.start()
        try:
            yield api
        finally:
            await service.stop()


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def members(api: Api, group: str) -> set[str]:
    page = await ok(await api.http.get(f"/v1/groups/{group}/members", params={"limit": 1000}))
    return {m["endpoint"] for m in page["items"]}


async def eventually(check: Any, timeout: float = 10.0) -> None:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_registered_devices_land_in_a_dynamic_group_and_leave_it(
    tmp_path: Path,
    database_url: str | None,  # noqa: F811
) -> None:
    async def scenario() -> None:
        async with inventory_api(tmp_path, database_url) as api:
            http = api.http
            online = {"name": "sims-online", "select": "endpoint=sim-*,registered=true"}
            made = await ok(await http.post("/v1/groups", json=online), 201)
            assert made["kind"] == "dynamic" and made["members"] == 0
            snapshot = {"name": "before", "select": "endpoint=sim-*", "kind": "snapshot"}
            await ok(await http.post("/v1/groups", json=snapshot), 201)
            async with (
                api.device("sim-1") as one,
                api.device("sim-2") as two,
                api.device("other-1") as other,
            ):
                for device in (one, two, other):
                    await device.wait_registered()

                async def both_in() -> bool:
                    return await members(api, "sims-online") == {"sim-1", "sim-2"}

                await eventually(both_in)
                listed = await ok(
                    await http.get("/v1/inventory", params={"select": "endpoint=sim-*"})
                )
                assert listed["count"] == 2 and listed["next_cursor"] is None
                first = listed["items"][0]
                assert (first["endpoint"], first["stage"], first["registered"]) == (
                    "sim-1", "active", True)  # fmt: skip
                assert [m["stage"] for m in first["stage_history"]] == ["active"]
                shown = await ok(await http.get("/v1/inventory/sim-2"))
                assert shown["groups"] == ["sims-online"]

                relabel = await ok(await http.post("/v1/inventory/bulk", json={
                    "select": "endpoint=sim-*", "labels": {"add": {"pilot": ""}}}))  # fmt: skip
                assert relabel["count"] == 2 and relabel["endpoints"] == ["sim-1", "sim-2"]
                pilots = await ok(await http.get("/v1/inventory", params={"select": "label:pilot"}))
                assert pilots["count"] == 2
                moved = await ok(await http.post("/v1/inventory/bulk", json={
                    "select": "label:pilot,endpoint=sim-2", "region": "eu-north"}))  # fmt: skip
                assert moved["action"] == "inventory.move_region" and moved["count"] == 1

                suspended = await ok(
                    await http.post("/v1/inventory/sim-1/stage", json={"action": "suspend"})
                )
                assert suspended["stage"] == "suspended"
                again = await http.post("/v1/inventory/sim-1/stage", json={"action": "suspend"})
                assert again.status_code == 409 and "is suspended" in again.json()["message"]
                await two.stop()

                async def two_left() -> bool:
                    return await members(api, "sims-online") == {"sim-1"}

                await eventually(two_left)
            assert await members(api, "before") == set()  # a snapshot keeps its (no) members
            records = await api.store.read(
                lambda tx: api.store.audit.list(tx, action_prefix="inventory.")
            )
            assert [(r.action, r.actor) for r in records] == [
                ("inventory.relabel", "operator:admin"),
                ("inventory.move_region", "operator:admin"),
                ("inventory.suspend", "operator:admin"),
            ]
            gone = await ok(await http.delete("/v1/groups/sims-online"))
            assert gone["name"] == "sims-online"
            missing = await http.get("/v1/groups/sims-online")
            assert missing.status_code == 404 and missing.json()["status"] == "not_found"

    run(scenario, timeout=60)


def test_bad_input_is_a_422_naming_the_position_and_the_fix(
    tmp_path: Path,
    database_url: str | None,  # noqa: F811
) -> None:
    async def scenario() -> None:
        async with inventory_api(tmp_path, database_url) as api:
            http = api.http
            bad = await http.get("/v1/inventory", params={"select": "region=eu,regon=x"})
            assert bad.status_code == 422
            body = bad.json()
            assert body["status"] == "invalid_input" and body["field"] == "select"
            assert body["position"] == 10 and "did you mean 'region'" in body["fix"]
            assert "unknown key 'regon'" in body["message"]
            everything = await http.post("/v1/inventory/bulk", json={"select": "", "region": "x"})
            assert everything.status_code == 422 and "endpoint=*" in everything.json()["message"]
            two = await http.post("/v1/inventory/bulk", json={"select": "sku=T1", "region": "a",
                                                            "policy_group": "b"})  # fmt: skip
            assert two.status_code == 422 and "exactly one change" in two.json()["message"]
            nobody = await http.get("/v1/inventory/ghost")
            assert nobody.status_code == 404 and nobody.json()["endpoint"] == "ghost"
            group = await http.post("/v1/groups", json={"name": "g", "select": "stage=on"})
            assert group.status_code == 422 and "unknown stage 'on'" in group.json()["message"]

    run(scenario, timeout=60)


def test_the_cli_lists_labels_moves_and_groups_through_the_api(
    tmp_path: Path,
    database_url: str | None,  # noqa: F811
) -> None:
    import asyncio
    import json

    from click.testing import CliRunner

    from cli.main import main
    from tests.lifecycle.api.harness import TOKEN

    async def scenario() -> None:
        async with inventory_api(tmp_path, database_url) as api:
            env = {"FLEETLOOP_URL": api.url, "FLEETLOOP_TOKEN": TOKEN}

            async def cli(*args: str) -> tuple[int, str]:
                result = await asyncio.to_thread(
                    CliRunner().invoke, main, list(args), env=env, catch_exceptions=False
                )
                return result.exit_code, result.output

            async with api.device("cli-1") as device:
                await device.wait_registered()

                async def listed() -> bool:
                    code, out = await cli("inventory", "list", "--json")
                    return code == 0 and [d["endpoint"] for d in json.loads(out)] == ["cli-1"]

                await eventually(listed)
            code, out = await cli("inventory", "label", "--select", "endpoint=cli-*",
                                  "--add", "ring=2", "--add", "pilot")  # fmt: skip
            assert code == 0 and "inventory.relabel: 1 device(s) changed" in out
            code, out = await cli("inventory", "move", "--select", "label:ring=2",
                                  "--policy-group", "beta")  # fmt: skip
            assert code == 0, out
            code, out = await cli("inventory", "show", "cli-1")
            assert code == 0 and "pilot;ring=2" in out and "beta" in out
            code, out = await cli("groups", "create", "betas", "--select", "group=beta")
            assert code == 0 and "group betas (dynamic): 1 member(s)" in out
            code, out = await cli("groups", "members", "betas")
            assert code == 0 and "cli-1" in out
            code, out = await cli("inventory", "stage", "cli-1", "retire")
            assert code == 0 and "cli-1: retired" in out
            code, out = await cli("inventory", "list", "--select", "regon=x")
            assert code == 2 and out.startswith("error: ") and "did you mean 'region'" in out
            code, out = await cli("groups", "delete", "betas")
            assert code == 0 and "deleted" in out

    run(scenario, timeout=60)


def test_select_filters_the_security_list_and_pages_exactly(
    tmp_path: Path,
    database_url: str | None,  # noqa: F811
) -> None:
    """`select=` on GET /v1/security keeps only the selected devices' records, and a page
    limit smaller than the selection pages on from the last record read (issue 11: a
    selector on every list)."""

    async def scenario() -> None:
        async with inventory_api(tmp_path, database_url) as api:
            http = api.http
            names = [f"sec-{i}" for i in range(6)]
            devices = [api.device(name) for name in names]
            for device in devices:
                await device.__aenter__()
            try:
                for device in devices:
                    await device.wait_registered()

                async def all_known() -> bool:
                    page = await ok(
                        await http.get("/v1/inventory", params={"select": "endpoint=sec-*"})
                    )
                    return bool(page["count"] == 6)

                await eventually(all_known)
                pick = {"select": "endpoint in (sec-1,sec-4)", "labels": {"add": {"pilot": ""}}}
                assert (await ok(await http.post("/v1/inventory/bulk", json=pick)))["count"] == 2
            finally:
                for device in devices:
                    await device.__aexit__(None, None, None)
            for name in names:
                body = {"psk_identity": name, "psk_key": "00112233445566778899aabbccddeeff"}
                await ok(await http.put(f"/v1/security/{name}", json=body))
            everything = await ok(await http.get("/v1/security"))
            assert [s["endpoint"] for s in everything["items"]] == names
            first = await ok(
                await http.get("/v1/security", params={"select": "label:pilot", "limit": 1})
            )
            assert [s["endpoint"] for s in first["items"]] == ["sec-1"]
            assert first["next_cursor"] == "sec-1"
            rest = await ok(await http.get(
                "/v1/security",
                params={"select": "label:pilot", "limit": 1, "cursor": first["next_cursor"]},
            ))  # fmt: skip
            assert [s["endpoint"] for s in rest["items"]] == ["sec-4"]
            last = await ok(await http.get(
                "/v1/security",
                params={"select": "label:pilot", "limit": 1, "cursor": rest["next_cursor"]},
            ))  # fmt: skip
            assert last["items"] == [] and last["next_cursor"] is None
            bad = await http.get("/v1/security", params={"select": "regon=x"})
            assert bad.status_code == 422 and bad.json()["field"] == "select"

    run(scenario, timeout=60)
