"""``fleetloop bundle`` and ``fleetloop apn-profile`` through click's CliRunner against a real
service (API + server in a background loop): publish (immutable, 409 naming the fix, exit 1),
versions, show with an overlay, diff, APN profile CRUD, one-line errors, never a traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import response_schema_conformance, status_code_conformance

from tests.cli.harness import Background, background_service, invoke


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with background_service(tmp_path_factory.mktemp("data")) as background:
        yield background


def _run(served: Background, *args: str, code: int = 0) -> tuple[str, str]:
    result = invoke(served.service.data_dir, *args)
    assert result.exit_code == code, (args, result.output)
    assert "Traceback" not in result.output
    return result.stdout, result.stderr


def test_publish_list_show_diff(served: Background, tmp_path: Path) -> None:
    (tmp_path / "v1.json").write_text(json.dumps({"interval": 60, "debug": False}))
    (tmp_path / "eu.json").write_text(json.dumps({"set": {"server": "eu"}, "remove": ["debug"]}))
    out, _ = _run(
        served,
        "bundle",
        "publish",
        "tracker",
        "1.0.0",
        f"@{tmp_path / 'v1.json'}",
        "--overlay",
        f"region=eu=@{tmp_path / 'eu.json'}",
    )
    assert "tracker@1.0.0 published: sha-256" in out and "overlay region=eu" in out
    out, _ = _run(
        served,
        "bundle",
        "publish",
        "tracker",
        "1.0.0",
        f"@{tmp_path / 'v1.json'}",
        "--overlay",
        f"region=eu=@{tmp_path / 'eu.json'}",
    )
    assert "already published" in out
    _, err = _run(served, "bundle", "publish", "tracker", "1.0.0", '{"interval": 5}', code=1)
    assert err.count("\n") == 1 and "tracker@1.0.1" in err and "immutable" in err
    _run(served, "bundle", "publish", "tracker", "1.1.0", '{"interval": 30, "apn_watchdog": true}')
    out, _ = _run(served, "bundle", "list")
    assert "tracker" in out and "1.1.0" in out
    versions = json.loads(_run(served, "bundle", "list", "tracker", "--json")[0])
    assert [v["version"] for v in versions] == ["1.0.0", "1.1.0"]
    shown = json.loads(_run(served, "bundle", "show", "tracker@1.0.0", "--overlay", "region=eu")[0])
    assert shown["content"] == {"interval": 60, "server": "eu"}
    out, _ = _run(served, "bundle", "diff", "tracker", "1.0.0", "1.1.0")
    assert out.splitlines() == [
        "+ apn_watchdog: true",
        "- debug: false",
        "~ interval: 60 -> 30",
    ]
    _, err = _run(served, "bundle", "show", "tracker@9.0.0", code=1)
    assert "no published config bundle tracker@9.0.0" in err
    _, err = _run(served, "bundle", "publish", "tracker", "newest", "{}", code=2)  # 422
    assert "version" in err and "semantic version" in err


def test_apn_profile_crud(served: Background) -> None:
    out, _ = _run(
        served,
        "apn-profile",
        "create",
        "iot",
        "--apn",
        "iot.global",
        "--variant",
        "carrier=acme=iot.acme,iot.global",
    )
    assert "revision 1" in out and "carrier=acme: iot.acme of iot.acme,iot.global" in out
    _, err = _run(served, "apn-profile", "create", "iot", "--apn", "x", code=1)
    assert "apn-profile update" in err
    out, _ = _run(served, "apn-profile", "update", "iot", "--apn", "iot.world")
    assert "revision 2" in out
    listed = json.loads(_run(served, "apn-profile", "list", "--json")[0])
    assert [(p["name"], p["active"]) for p in listed] == [("iot", "iot.world")]
    _, err = _run(served, "apn-profile", "create", "bad", "--apn", "not an apn!", code=2)
    assert "apns" in err
    _run(served, "apn-profile", "delete", "iot")
    _, err = _run(served, "apn-profile", "show", "iot", code=1)
    assert "no APN profile 'iot'" in err
    _, err = _run(served, "apn-profile", "create", "x", code=2)


def test_state_set_takes_a_versioned_bundle_and_the_device_applies_it(
    served: Background,
) -> None:
    device = served.add_device("dev-bundle")
    _run(served, "bundle", "publish", "fleet-cfg", "2.0.0", '{"interval": 15}')
    _run(served, "bundle", "publish", "fleet-cfg", "2.1.0", '{"interval": 20}')
    _run(served, "state", "set", "--endpoint", "dev-bundle", "config=fleet-cfg@2.0.0")
    shown = json.loads(_run(served, "state", "show", "dev-bundle", "--json")[0])
    config = {r["dimension"]: r for r in shown["dimensions"]}["config"]
    assert config["desired"]["bundle"] == "fleet-cfg@2.0.0"
    assert config["desired"]["version"] == "2.0.0"
    # a plain name with no flat bundle of that name means its latest version
    _run(served, "state", "set", "--endpoint", "dev-bundle", "config=fleet-cfg")
    shown = json.loads(_run(served, "state", "show", "dev-bundle", "--json")[0])
    config = {r["dimension"]: r for r in shown["dimensions"]}["config"]
    assert config["desired"]["version"] == "2.1.0"
    deadline = time.monotonic() + 20
    while served.on_loop(device.read, "/32001/0/4") != "2.1.0":
        assert time.monotonic() < deadline, "the device did not apply fleet-cfg@2.1.0"
        time.sleep(0.1)
    _, err = _run(
        served, "state", "set", "--endpoint", "dev-bundle", "config=fleet-cfg@9.0.0", code=2
    )
    assert "fleetloop bundle publish" in err


def test_schemathesis_finds_no_server_error_on_the_artifact_routes(served: Background) -> None:
    """Generated requests against the artifact routes only: every answer is a documented one
    (never a 500), whatever the names, versions, bodies and queries."""
    assert served.info is not None
    url, headers = served.info.url, {"Authorization": f"Bearer {served.info.token}"}
    document = httpx.get(f"{url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    prefixes = ("/v1/bundles", "/v1/apn-profiles", "/v1/credentials")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path.startswith(prefixes)
    ]
    assert len(operations) == 11

    @settings(
        max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(operation.as_strategy())
        parameters = case.path_parameters or {}
        if "name" in parameters and data.draw(st.booleans()):
            parameters["name"] = "tracker"  # a real bundle, so versions and diffs are reached
        response = case.call(base_url=url, headers=headers, timeout=30)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(
            response, checks=[response_schema_conformance, status_code_conformance]
        )

    check()
