"""Error answers an operator can act on: the device named, and the fix -- for the errors the
exception handlers of ``lifecycle/api/app.py`` build from a server or router exception (a
request the server cannot build, a method a path does not serve). A real LwM2MServer and a
simulated device over UDP on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from lifecycle.api.naming import ErrorOut
from tests.lifecycle.api.harness import run, running_api


def test_a_request_the_server_cannot_build_names_the_device_and_the_fix(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api, api.device("dev-1") as device:
            await device.wait_registered()
            wrong_level = await api.http.post("/v1/devices/dev-1/execute/3/0")
            assert wrong_level.status_code == 400, wrong_level.text
            error = wrong_level.json()
            assert error["status"] == "invalid_request" and error["endpoint"] == "dev-1"
            assert error["message"] == (
                "device 'dev-1': Execute needs a resource path, not /3/0; "
                "nothing was sent to the device"
            )
            ErrorOut.model_validate(error)

            one_value = await api.http.get("/v1/devices/dev-1/data/3/0", params={"format": "text"})
            assert one_value.status_code == 400, one_value.text
            message = one_value.json()["message"]
            assert message.startswith("device 'dev-1': content format 0 carries one value")
            assert "ask for another ?format= or leave it out" in message
            # the advice works: without ?format= the server picks one and the read succeeds
            assert (await api.http.get("/v1/devices/dev-1/data/3/0")).status_code == 200

    run(scenario)


def test_a_method_a_path_does_not_serve_is_a_405_naming_the_methods_it_does(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            refused = await api.http.delete("/v1/devices")
            assert refused.status_code == 405, refused.text
            assert refused.headers["allow"] == "GET"
            error = refused.json()
            assert error["status"] == "method_not_allowed"
            assert "DELETE is not allowed on /v1/devices; use GET" in error["message"]
            ErrorOut.model_validate(error)
            # a path served by several routes: every one of its methods (Starlette names one)
            several = await api.http.post("/v1/security/sec-1")
            assert several.status_code == 405, several.text
            assert several.headers["allow"] == "GET, PUT, DELETE"

    run(scenario)
