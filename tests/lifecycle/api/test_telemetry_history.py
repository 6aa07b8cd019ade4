"""``GET /v1/devices/{ep}/telemetry/{path}`` and ``fleetloop history``: a resource's reported
values over time, paged without gaps or repeats, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from lwm2m.model import Path as LwPath
from lwm2m.model import Value
from lwm2m.store import ReportedValue, Source, Store
from tests.lifecycle.api.harness import TOKEN, run, running_api, wait_until


def _append(store: Store, endpoint: str, path: str, values: list[tuple[float, int]]) -> None:
    with store.transaction() as tx:
        store.telemetry.append(
            tx,
            [
                ReportedValue(endpoint, LwPath.parse(path), Value.integer(v), at, Source.SEND)
                for at, v in values
            ],
        )


async def _all_pages(http: Any, url: str, **params: Any) -> tuple[list[Any], int]:
    """Every value by following next_cursor; and how many pages it took."""
    seen: list[Any] = []
    pages = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor is not None else {})}
        answer = await http.get(url, params=query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages += 1
        seen.extend((item["at_epoch"], item["value"]) for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 50, "paging does not end"


def test_notified_values_come_back_newest_first_with_names_and_sources(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, database_url=database_url) as api:
            async with api.device("dev-1") as device:
                await device.wait_registered()
                observed = await api.http.post("/v1/devices/dev-1/observe/3/0/9")
                assert observed.status_code == 200, observed.text
                for level in (80, 70, 60):
                    device.set("/3/0/9", level)
                    await asyncio.sleep(0.05)

                async def stored() -> list[Any]:
                    await api.store.flush()
                    page = await api.http.get("/v1/devices/dev-1/telemetry/3/0/9")
                    assert page.status_code == 200, page.text
                    return list(page.json()["items"])

                items: list[Any] = []

                async def three() -> bool:
                    nonlocal items
                    items = await stored()
                    return [i["value"] for i in items][:3] == [60, 70, 80]

                deadline = asyncio.get_running_loop().time() + 10
                while not await three():
                    assert asyncio.get_running_loop().time() < deadline, items
                    await asyncio.sleep(0.1)
                assert {i["source"] for i in items[:3]} == {"notify"}
                assert items[0]["name"] == "Battery Level" and items[0]["path"] == "/3/0/9"
                assert items[0]["at"].endswith("Z")
                assert [i["at_epoch"] for i in items] == sorted(
                    (i["at_epoch"] for i in items), reverse=True
                )
                oldest = await api.http.get(
                    "/v1/devices/dev-1/telemetry/3/0/9", params={"order": "oldest"}
                )
                assert [i["value"] for i in oldest.json()["items"]][-3:] == [80, 70, 60]
            # de-registered: its history is what an operator looks at now
            await wait_until(lambda: api.server.registration("dev-1") is None)
            after = await api.http.get("/v1/devices/dev-1/telemetry/3/0/9")
            assert after.status_code == 200 and after.json()["items"][0]["value"] == 60

    run(scenario)


def test_paging_never_splits_a_timestamp_and_skips_or_repeats_nothing(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, database_url=database_url) as api:
            # a Send can carry several values of one path at one timestamp
            values = [(100.0, 1), (101.0, 2), (101.0, 3), (101.0, 4), (102.0, 5), (103.0, 6)]
            values += [(200.0, 10 + i) for i in range(5)]  # a run longer than a page
            _append(api.store, "dev-9", "/3/0/9", values)
            url = "/v1/devices/dev-9/telemetry/3/0/9"
            for order, expect in (
                ("newest", sorted(values, key=lambda v: -v[0])),
                ("oldest", sorted(values, key=lambda v: v[0])),
            ):
                seen, pages = await _all_pages(api.http, url, limit=2, order=order)
                assert sorted(seen) == sorted(values), order  # nothing lost, nothing twice
                assert [at for at, _ in seen] == [at for at, _ in expect], order
                assert pages >= 4, order
            windowed, _ = await _all_pages(
                api.http, url, limit=2, since="101", until="200", order="oldest"
            )
            assert sorted(windowed) == sorted(v for v in values if 101 <= v[0] < 200)

    run(scenario)


def test_bad_requests_say_what_to_fix(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            _append(api.store, "dev-2", "/3/0/9", [(1.0, 5)])
            whole = await api.http.get("/v1/devices/dev-2/telemetry/3/0")
            assert whole.status_code == 422
            assert "not a resource" in whole.text and "/3/0/9" in whole.text
            unknown = await api.http.get("/v1/devices/nobody/telemetry/3/0/9")
            assert unknown.status_code == 404 and "nobody" in unknown.text
            cursor = await api.http.get(
                "/v1/devices/dev-2/telemetry/3/0/9", params={"cursor": "nan"}
            )
            assert cursor.status_code == 422 and "cursor" in cursor.text
            naive = await api.http.get(
                "/v1/devices/dev-2/telemetry/3/0/9", params={"since": "2026-01-01T00:00:00"}
            )
            assert naive.status_code == 422 and "time zone" in naive.text
            none = await api.http.get("/v1/devices/dev-2/telemetry/3/0/9", params={"since": "2"})
            assert none.status_code == 200 and none.json()["items"] == []

    run(scenario)


def test_fleetloop_history_prints_the_values_and_pages_on(tmp_path: Path, monkeypatch: Any) -> None:
    from cli.main import main

    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            _append(api.store, "dev-3", "/5/0/3", [(1000.0, 0), (1001.0, 1), (1002.0, 2)])
            monkeypatch.setenv("FLEETLOOP_URL", api.url)
            monkeypatch.setenv("FLEETLOOP_TOKEN", TOKEN)
            runner = CliRunner()

            def history(*args: str) -> Any:
                return runner.invoke(main, ["history", "dev-3", "/5/0/3", *args])

            shown = await asyncio.to_thread(history, "--limit", "2")
            assert shown.exit_code == 0, shown.output
            lines = shown.output.splitlines()
            assert lines[0] == "dev-3 /5/0/3 (State)"
            assert "downloaded (2)" in lines[2] and "downloading (1)" in lines[3]
            assert "(more: --cursor 1001.0)" in shown.output
            rest = await asyncio.to_thread(history, "--cursor", "1001.0")
            assert rest.exit_code == 0 and "idle (0)" in rest.output
            as_json = await asyncio.to_thread(history, "--since", "1001.5", "-o", "json")
            assert as_json.exit_code == 0 and '"label": "downloaded"' in as_json.output
            bad = await asyncio.to_thread(runner.invoke, main, ["history", "dev-3", "/5/0"])
            assert bad.exit_code == 2 and "not a resource" in bad.output

    run(scenario)


def test_last_values_name_enumerated_values(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-4") as device:
            await device.wait_registered()
            for path in ("5/0/3", "3/0/9"):
                read = await api.http.get(f"/v1/devices/dev-4/data/{path}")
                assert read.status_code == 200, read.text
            await api.store.flush()  # reads are recorded fire-and-forget (group commit)
            shown = (await api.http.get("/v1/devices/dev-4")).json()
            state = next(v for v in shown["last_values"] if v["path"] == "/5/0/3")
            assert (state["value"], state["label"]) == (0, "idle")
            battery = next(v for v in shown["last_values"] if v["path"] == "/3/0/9")
            assert "label" not in battery  # not an enumeration

    run(scenario)
