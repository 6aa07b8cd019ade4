"""``fleetloop status`` and ``fleetloop watch`` against a real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from objects.enums import BatteryStatus
from tests.cli.harness import Background, background_service, invoke


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    data_dir = tmp_path_factory.mktemp("data")
    with background_service(data_dir) as background:
        background.add_device("stat-1")
        yield background


def test_status_shows_version_ports_devices_store_and_load(served: Background) -> None:
    result = invoke(served.service.data_dir, "status", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["devices_registered"] == 1
    assert found["ports"]["coap"].startswith("127.0.0.1:")
    assert found["ports"]["api"].startswith("127.0.0.1:")
    assert found["store"].startswith("sqlite")
    assert found["uptime_s"] >= 0 and "load1" in found["load"]
    table = invoke(served.service.data_dir, "status")
    assert table.exit_code == 0
    assert "devices registered  1" in table.stdout


def test_watch_streams_a_registration_as_it_happens(served: Background) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env["FLEETLOOP_DATA_DIR"] = str(served.service.data_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "watch", "--type", "registered", "--count=1", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None and process.stdout is not None
        assert "watching events" in process.stderr.readline()
        served.add_device("watched-1")
        line = json.loads(process.stdout.readline())
        assert line["event"] == "registered" and line["data"]["endpoint"] == "watched-1"
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_an_enumerated_value_prints_by_name_with_the_number_in_json(served: Background) -> None:
    shown = invoke(served.service.data_dir, "read", "stat-1", "/3/0/20", "--json")
    assert shown.exit_code == 0, shown.output
    content = json.loads(shown.stdout)["content"]
    assert isinstance(content["value"], int)  # scripts get the number
    expected = BatteryStatus(content["value"]).name.lower().replace("_", " ")
    assert content["label"] == expected
    table = invoke(served.service.data_dir, "read", "stat-1", "/3/0/20")
    assert f"{content['label']} ({content['value']})" in table.stdout  # people get the name


def test_every_data_command_speaks_json_yaml_and_wide(served: Background) -> None:
    data_dir = served.service.data_dir
    as_json = invoke(data_dir, "devices", "list", "-o", "json")
    assert as_json.exit_code == 0
    assert "stat-1" in [d["endpoint"] for d in json.loads(as_json.stdout)]
    as_yaml = invoke(data_dir, "devices", "list", "-o", "yaml")
    assert as_yaml.exit_code == 0
    assert '  "endpoint": "stat-1"' in as_yaml.stdout
    assert not as_yaml.stdout.lstrip().startswith("[")
    wide = invoke(data_dir, "devices", "list", "-o", "wide")
    assert wide.exit_code == 0 and "REGISTRATION" in wide.stdout and "FORMATS" in wide.stdout
    status_yaml = invoke(data_dir, "status", "-o", "yaml")
    assert status_yaml.exit_code == 0 and '"devices_registered": ' in status_yaml.stdout
    bad = invoke(data_dir, "devices", "list", "-o", "xml")
    assert bad.exit_code == 2
