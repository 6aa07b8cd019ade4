"""The management API against a real LwM2MServer and simulated devices over UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from simulators.device.config import ClientConfig
from tests.lifecycle.api.harness import (
    TOKEN,
    MuteDevice,
    apn_template,
    run,
    running_api,
    sse_events,
    wait_until,
)


def leaf(node: dict[str, Any], rid: int) -> dict[str, Any]:
    return next(r for r in node["resources"] if r["id"] == rid)


def test_health_and_the_api_description_need_no_token_and_everything_else_does(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, httpx.AsyncClient(base_url=api.url) as anonymous:
            health = await anonymous.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
            assert health.json()["coap"].startswith("127.0.0.1:")
            described = await anonymous.get("/openapi.json")
            assert described.status_code == 200
            assert "/v1/devices" in described.json()["paths"]
            page = await anonymous.get("/docs")
            assert page.status_code == 200
            assert "/openapi.json" in page.text
            for method, url in [
                ("GET", "/v1/devices"),
                ("GET", "/v1/devices/x/data/3/0"),
                ("PUT", "/v1/security/x"),
                ("GET", "/v1/events"),
                ("GET", "/v1/tokens"),
            ]:
                missing = await anonymous.request(method, url)
                assert missing.status_code == 401, url
                assert missing.headers["www-authenticate"] == "Bearer"
                assert missing.json()["status"] == "unauthorized"
                assert "missing bearer token" in missing.json()["message"]
                wrong = await anonymous.request(
                    method, url, headers={"Authorization": f"Bearer {TOKEN}x"}
                )
                assert wrong.status_code == 401
                assert "wrong bearer token" in wrong.json()["message"]

    run(scenario)


def test_the_openapi_document_lists_every_route(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            response = await api.http.get("/openapi.json")
            assert response.status_code == 200
            document = response.json()
            assert document["openapi"].startswith("3.")
            paths = document["paths"]
            data = "/v1/devices/{endpoint}/data/{path}"
            assert set(paths[data]) == {"get", "put", "patch", "post", "delete"}
            for route in [
                "/health",
                "/v1/devices",
                "/v1/devices/{endpoint}",
                "/v1/devices/{endpoint}/execute/{path}",
                "/v1/devices/{endpoint}/discover/{path}",
                "/v1/devices/{endpoint}/attributes/{path}",
                "/v1/devices/{endpoint}/observe/{path}",
                "/v1/devices/{endpoint}/composite/read",
                "/v1/devices/{endpoint}/composite/write",
                "/v1/devices/{endpoint}/composite/observe",
                "/v1/devices/{endpoint}/queue",
                "/v1/observations",
                "/v1/observations/{observation_id}",
                "/v1/security",
                "/v1/security/{endpoint}",
                "/v1/events",
            ]:
                assert route in paths, route
            assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
            # every route but /health declares the bearer scheme
            for route, operations in paths.items():
                for operation in operations.values():
                    secured = bool(operation.get("security"))
                    open_route = route in ("/health", "/ready")  # liveness and readiness
                    assert secured == (not open_route), (route, operation.get("security"))

    run(scenario)


def test_devices_list_and_show_a_registered_device(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            listed = (await api.http.get("/v1/devices")).json()["items"]
            assert [d["endpoint"] for d in listed] == ["dev-1"]
            assert listed[0]["identity"]["kind"] == "nosec"
            assert listed[0]["registered_at"].endswith("Z")
            assert isinstance(listed[0]["registered_at_epoch"], float)
            none = await api.http.get("/v1/devices", params={"prefix": "zz"})
            assert none.json()["items"] == []
            await api.http.get("/v1/devices/dev-1/data/3/0/9")
            await api.store.flush()  # reads are recorded fire-and-forget (group commit)
            shown = (await api.http.get("/v1/devices/dev-1")).json()
            objects = {o["id"]: o for o in shown["objects"]}
            assert objects[3]["name"] == "Device"
            assert objects[3]["instances"] == [0]
            battery = next(v for v in shown["last_values"] if v["path"] == "/3/0/9")
            assert battery["name"] == "Battery Level"
            assert battery["value"] == 95
            assert shown["security"] is None

    run(scenario)


def test_an_unknown_endpoint_is_a_404_naming_it_and_the_fix(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            for method, url in [
                ("GET", "/v1/devices/ghost"),
                ("GET", "/v1/devices/ghost/data/3/0"),
                ("POST", "/v1/devices/ghost/execute/3/0/4"),
            ]:
                response = await api.http.request(method, url)
                assert response.status_code == 404, url
                body = response.json()
                assert body["status"] == "unknown_endpoint"
                assert body["endpoint"] == "ghost"
                assert "'ghost' is not registered" in body["message"]
                assert "GET /v1/devices" in body["message"]

    run(scenario)


def test_read_renders_names_types_and_values(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            response = await api.http.get("/v1/devices/dev-1/data/3/0")
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["status"] == "success"
            assert body["coap_code"] == "2.05"
            node = body["content"]
            assert node["path"] == "/3/0"
            manufacturer = leaf(node, 0)
            assert manufacturer["name"] == "Manufacturer"
            assert manufacturer["type"] == "String"
            assert manufacturer["value"] == "fleetloop-sim"
            clock = leaf(node, 13)
            assert clock["type"] == "Time" and clock["iso"].endswith("Z")
            single = (await api.http.get("/v1/devices/dev-1/data/3/0/2")).json()
            assert single["content"]["value"] == "dev-1"
            text = (await api.http.get("/v1/devices/dev-1/data/3/0/2?format=text")).json()
            assert text["content_format"] == "text"

    run(scenario)


def test_device_error_codes_come_back_as_502_with_the_coap_code(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            response = await api.http.get("/v1/devices/dev-1/data/3/0/99")
            assert response.status_code == 502
            body = response.json()
            assert body["status"] == "device_error"
            assert body["coap_code"] == "4.04"
            assert body["endpoint"] == "dev-1"
            assert "device 'dev-1' answered 4.04" in body["message"]
            refused = await api.http.put("/v1/devices/dev-1/data/3/0/0", json={"value": "x"})
            assert refused.status_code == 502
            assert refused.json()["coap_code"] == "4.05"

    run(scenario)


def test_a_device_that_does_not_answer_is_a_504(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            address = api.server.coap_address
            assert address is not None
            mute = await MuteDevice.register(address[1], "mute-1")
            try:
                response = await api.http.get("/v1/devices/mute-1/data/3/0?timeout=0.5")
                assert response.status_code == 504
                assert response.json()["status"] == "timeout"
                assert "did not answer in time" in response.json()["message"]
            finally:
                mute.close()

    run(scenario)


def test_write_a_value_a_node_and_a_partial_update(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            response = await api.http.put("/v1/devices/dev-1/data/1/0/1", json={"value": "120"})
            assert response.status_code == 200, response.text
            assert response.json()["coap_code"] == "2.04"
            assert device.read("/1/0/1") == 120
            await api.http.put("/v1/devices/dev-1/data/3/0/14", json={"value": "+02:00"})
            assert device.read("/3/0/14") == "+02:00"
            patch = await api.http.patch(
                "/v1/devices/dev-1/data/1/0",
                json={"resources": [{"id": 2, "value": 5}, {"id": 3, "value": 50}]},
            )
            assert patch.status_code == 200, patch.text
            assert (device.read("/1/0/2"), device.read("/1/0/3"), device.read("/1/0/1")) == (
                5,
                50,
                120,
            )

    run(scenario)


def test_bad_input_is_a_422_naming_the_field(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            cases: list[tuple[str, str, Any, str]] = [
                ("PUT", "/v1/devices/dev-1/data/1/0/1", {"value": "soon"}, "body.value"),
                ("PUT", "/v1/devices/dev-1/data/3/0/x", {"value": "1"}, "path"),
                ("GET", "/v1/devices/dev-1/data/3/0?format=xml", None, "query.format"),
                ("GET", "/v1/devices/dev-1/data/3/0?timeout=-1", None, "query.timeout"),
                ("PUT", "/v1/devices/dev-1/attributes/3/0/9", {"pmim": 1}, "body.pmim"),
                ("PUT", "/v1/devices/dev-1/attributes/3/0/9", {"unset": ["ver"]}, "body.unset[0]"),
                ("POST", "/v1/devices/dev-1/composite/read", {"paths": []}, "body.paths"),
            ]
            for method, url, body, field in cases:
                response = await api.http.request(method, url, json=body)
                assert response.status_code == 422, (url, response.text)
                error = response.json()
                assert error["status"] == "invalid_input"
                assert error["field"] == field, (url, error)
                assert error["message"]
            assert device.read("/1/0/1") == 300

    run(scenario)


def test_execute_discover_and_write_attributes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            executed = await api.http.post("/v1/devices/dev-1/execute/1/0/8", json={})
            assert executed.status_code == 200, executed.text
            assert executed.json()["coap_code"] == "2.04"
            attributes = await api.http.put(
                "/v1/devices/dev-1/attributes/3/0/9", json={"pmin": 1, "pmax": 60}
            )
            assert attributes.status_code == 200, attributes.text
            discovered = await api.http.get("/v1/devices/dev-1/discover/3/0")
            assert discovered.status_code == 200
            links = {link["path"]: link for link in discovered.json()["links"]}
            assert links["/3/0/0"]["name"] == "Manufacturer"
            assert links["/3/0/9"]["attributes"] == {"pmin": "1", "pmax": "60"}
            not_executable = await api.http.post("/v1/devices/dev-1/execute/3/0/0")
            assert not_executable.status_code == 502
            assert not_executable.json()["coap_code"] == "4.05"

    run(scenario)


def test_create_and_delete_an_instance(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_api(tmp_path) as api,
            api.device("dev-1", template=apn_template()) as device,
        ):
            await device.wait_registered()
            created = await api.http.post(
                "/v1/devices/dev-1/data/11",
                json={"id": 3, "resources": [{"id": 0, "value": "iot-apn"}, {"id": 4, "value": 0}]},
            )
            assert created.status_code == 201, created.text
            assert created.json()["location"] == "/11/3"
            assert device.read("/11/3/0") == "iot-apn"
            deleted = await api.http.delete("/v1/devices/dev-1/data/11/3")
            assert deleted.status_code == 200, deleted.text
            gone = await api.http.get("/v1/devices/dev-1/data/11/3")
            assert gone.status_code == 502 and gone.json()["coap_code"] == "4.04"

    run(scenario)


def test_composite_read_and_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            written = await api.http.post(
                "/v1/devices/dev-1/composite/write",
                json={
                    "content": [
                        {"path": "/1/0/1", "value": 77},
                        {"path": "/3/0/14", "value": "+01"},
                    ]
                },
            )
            assert written.status_code == 200, written.text
            assert (device.read("/1/0/1"), device.read("/3/0/14")) == (77, "+01")
            read = await api.http.post(
                "/v1/devices/dev-1/composite/read", json={"paths": ["/1/0/1", "/3/0/0"]}
            )
            assert read.status_code == 200, read.text
            content = {node["path"]: node for node in read.json()["content"]}
            assert content["/1/0/1"]["value"] == 77
            assert content["/3/0/0"]["name"] == "Manufacturer"

    run(scenario)


def test_observe_streams_notifications_as_server_sent_events(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            events: list[tuple[str, Any]] = []
            ready = asyncio.Event()
            reader = asyncio.create_task(sse_events(api, {"endpoint": "dev-1"}, events, ready))
            await asyncio.wait_for(ready.wait(), 5)
            observed = await api.http.post("/v1/devices/dev-1/observe/3/0/9")
            assert observed.status_code == 200, observed.text
            observation_id = observed.json()["observation_id"]
            assert observed.json()["content"][0]["value"] == 95
            listed = (await api.http.get("/v1/observations", params={"endpoint": "dev-1"})).json()
            assert [o["observation_id"] for o in listed] == [observation_id]
            device.set("/3/0/9", 42)
            await wait_until(lambda: any(name == "notification" for name, _ in events))
            _, notification = next(e for e in events if e[0] == "notification")
            assert notification["observation_id"] == observation_id
            assert notification["content"][0]["name"] == "Battery Level"
            assert notification["content"][0]["value"] == 42
            cancelled = await api.http.delete(f"/v1/observations/{observation_id}")
            assert cancelled.status_code == 200, cancelled.text
            assert (await api.http.get("/v1/observations")).json() == []
            again = await api.http.delete(f"/v1/observations/{observation_id}")
            assert again.status_code == 404
            reader.cancel()

    run(scenario)


def test_registrations_appear_on_the_event_stream(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            events: list[tuple[str, Any]] = []
            ready = asyncio.Event()
            reader = asyncio.create_task(
                sse_events(api, {"type": ["registered", "deregistered"]}, events, ready)
            )
            await asyncio.wait_for(ready.wait(), 5)
            async with api.device("dev-7") as device:
                await device.wait_registered()
                await wait_until(lambda: any(name == "registered" for name, _ in events))
            await wait_until(lambda: any(name == "deregistered" for name, _ in events))
            kinds = [name for name, _ in events]
            assert kinds == ["ready", "registered", "deregistered"]
            assert events[1][1]["device"]["endpoint"] == "dev-7"
            reader.cancel()

    run(scenario)


def test_observe_composite_notifies_for_any_of_its_paths(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            events: list[tuple[str, Any]] = []
            ready = asyncio.Event()
            reader = asyncio.create_task(
                sse_events(api, {"type": "notification,observation_ended"}, events, ready)
            )
            await asyncio.wait_for(ready.wait(), 5)
            observed = await api.http.post(
                "/v1/devices/dev-1/composite/observe", json={"paths": ["/3/0/9", "/1/0/1"]}
            )
            assert observed.status_code == 200, observed.text
            body = observed.json()
            assert body["paths"] == ["/3/0/9", "/1/0/1"]
            assert {n["path"] for n in body["content"]} == {"/3/0/9", "/1/0/1"}
            device.set("/1/0/1", 444)
            await wait_until(lambda: any(name == "notification" for name, _ in events))
            notification = next(data for name, data in events if name == "notification")
            assert notification["observation_id"] == body["observation_id"]
            values = {n["path"]: n.get("value") for n in notification["content"]}
            assert values["/1/0/1"] == 444
            reader.cancel()

    run(scenario)


def test_a_request_for_a_sleeping_device_waits_in_the_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = ClientConfig(queue_mode=True, awake_time=0.2)
        async with (
            running_api(tmp_path, queue_awake_time=0.2) as api,
            api.device("sleepy", config=config) as device,
        ):
            await device.wait_registered()
            assert (await api.http.get("/v1/devices")).json()["items"][0]["queue_mode"] is True
            await asyncio.sleep(0.5)  # both sides now consider the device asleep
            read = asyncio.create_task(api.http.get("/v1/devices/sleepy/data/3/0/9"))
            queued: list[Any] = []

            async def poll() -> None:
                while not queued:
                    queued.extend((await api.http.get("/v1/devices/sleepy/queue")).json())
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(poll(), 5)
            assert queued[0]["operation"] == "read"
            assert queued[0]["paths"] == ["/3/0/9"]
            assert queued[0]["state"] == "pending"
            assert not read.done()
            device.trigger_update()  # the device wakes up and the queue is flushed
            response = await asyncio.wait_for(read, 5)
            assert response.status_code == 200, response.text
            assert response.json()["queued"] is True
            assert response.json()["content"]["value"] == 95
            missing = await api.http.delete("/v1/queue/12345")
            assert missing.status_code == 404

    run(scenario)
