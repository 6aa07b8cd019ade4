"""The operator commands through click's CliRunner against a real service (API + LwM2M server in
a background loop) and simulated devices: tables by default, JSON with --json, one-line errors
with the fix and a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.harness import Background, background_service, invoke
from tests.lifecycle.api.harness import apn_template


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """One service with devices dev-1 (default) and dev-apn (with object 11) for the module."""
    data_dir = tmp_path_factory.mktemp("data")
    with background_service(data_dir) as background:
        background.add_device("dev-1")
        background.add_device("dev-apn", template=apn_template())
        yield background


def data_dir(served: Background) -> Path:
    return served.service.data_dir


def ok(served: Background, *args: str) -> str:
    result = invoke(data_dir(served), *args)
    assert result.exit_code == 0, (args, result.output, result.stderr)
    return result.stdout


def fails(served: Background, *args: str, code: int = 1) -> str:
    result = invoke(data_dir(served), *args)
    assert result.exit_code == code, (args, result.output)
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_devices_list_as_json_and_as_a_table(served: Background) -> None:
    devices = json.loads(ok(served, "devices", "list", "--json"))
    assert isinstance(devices, list)
    assert sorted(d["endpoint"] for d in devices) == ["dev-1", "dev-apn"]
    table = ok(served, "devices", "list")
    assert table.splitlines()[0].split()[:3] == ["ENDPOINT", "ADDRESS", "SECURITY"]
    assert any(line.startswith("dev-1 ") for line in table.splitlines())


def test_devices_show_lists_objects_with_names(served: Background) -> None:
    shown = ok(served, "devices", "show", "dev-1")
    assert "endpoint" in shown and "dev-1" in shown
    assert any(line.split()[:2] == ["/3", "Device"] for line in shown.splitlines())
    as_json = json.loads(ok(served, "devices", "show", "dev-1", "--json"))
    assert as_json["endpoint"] == "dev-1"


def test_read_prints_values_with_resource_names(served: Background) -> None:
    out = ok(served, "read", "dev-1", "/3/0")
    lines = out.splitlines()
    assert lines[0].split() == ["PATH", "NAME", "VALUE"]
    manufacturer = next(line for line in lines if line.startswith("/3/0/0 "))
    assert "Manufacturer" in manufacturer and manufacturer.endswith("fleetloop-sim")
    assert any(line.startswith("/3/0/7/0 ") and "Power Source Voltage" in line for line in lines)
    raw = json.loads(ok(served, "read", "dev-1", "/3/0/2", "--json"))
    assert raw["content"]["value"] == "dev-1"


def test_write_one_resource_then_read_it_back(served: Background) -> None:
    out = ok(served, "write", "dev-1", "/1/0/1", "120")
    assert out.strip() == "wrote /1/0/1 on dev-1 (2.04)"
    assert ok(served, "read", "dev-1", "/1/0/1").splitlines()[1].split()[-1] == "120"
    ok(
        served,
        "write",
        "dev-1",
        "/1/0",
        "--update",
        "--node",
        '{"resources": [{"id": 3, "value": 7}]}',
    )
    device = served.devices[0]
    assert served.on_loop(device.read, "/1/0/3") == 7
    ok(served, "write", "dev-1", "/3/0/14", "-05:00")  # a value, not an option
    assert served.on_loop(device.read, "/3/0/14") == "-05:00"


def test_errors_are_one_line_naming_the_device_and_the_fix(served: Background) -> None:
    line = fails(served, "read", "ghost", "/3/0")
    assert line == "error: device 'ghost' is not registered; see `fleetloop devices list`"
    device_error = fails(served, "read", "dev-1", "/3/0/99")
    assert "device 'dev-1' answered 4.04" in device_error
    bad_value = fails(served, "write", "dev-1", "/1/0/1", "soon", code=2)  # a usage mistake
    assert "VALUE" in bad_value and "not an integer" in bad_value
    usage = invoke(data_dir(served), "read", "dev-1", "three")
    assert usage.exit_code == 2
    assert "is not an LwM2M path" in usage.stderr


def test_no_server_exits_3_and_a_refused_token_1_with_the_fix(
    served: Background, tmp_path: Path
) -> None:
    nothing = invoke(tmp_path, "devices", "list")
    assert nothing.exit_code == 3
    assert "no running fleetloop server found" in nothing.stderr
    assert "`fleetloop serve`" in nothing.stderr
    assert served.info is not None
    wrong = invoke(
        tmp_path,
        "devices",
        "list",
        env={"FLEETLOOP_URL": served.info.url, "FLEETLOOP_TOKEN": "wrong-token"},
    )
    assert wrong.exit_code == 1  # the server answered: the request failed, the server is there
    assert "refused the token" in wrong.stderr
    right = invoke(
        tmp_path,
        "devices",
        "list",
        "--json",
        env={"FLEETLOOP_URL": served.info.url, "FLEETLOOP_TOKEN": served.info.token},
    )
    assert right.exit_code == 0
    unreachable = invoke(
        tmp_path,
        "devices",
        "list",
        env={"FLEETLOOP_URL": "http://127.0.0.1:9", "FLEETLOOP_TOKEN": "t"},
    )
    assert unreachable.exit_code == 3
    assert "cannot reach the fleetloop API" in unreachable.stderr


def test_exec_discover_and_attributes(served: Background) -> None:
    assert ok(served, "exec", "dev-1", "/1/0/8").startswith("executed /1/0/8 on dev-1")
    ok(served, "attributes", "dev-1", "/3/0/9", "pmin=1", "pmax=30")
    discovered = ok(served, "discover", "dev-1", "/3/0")
    battery = next(line for line in discovered.splitlines() if line.startswith("/3/0/9 "))
    assert "Battery Level" in battery and "pmin=1;pmax=30" in battery
    ok(served, "attributes", "dev-1", "/3/0/9", "pmax")
    line = fails(served, "exec", "dev-1", "/3/0/0")
    assert "4.05" in line


def test_create_and_delete(served: Background) -> None:
    out = ok(served, "create", "dev-apn", "/11", "--id", "2", "0=iot-apn", "4=0")
    assert out.startswith("created /11/2 on dev-apn")
    assert ok(served, "read", "dev-apn", "/11/2/0").splitlines()[1].endswith("iot-apn")
    ok(served, "delete", "dev-apn", "/11/2")
    assert "4.04" in fails(served, "read", "dev-apn", "/11/2")


def test_composite_read_and_write(served: Background) -> None:
    ok(served, "composite", "write", "dev-1", "/1/0/2=4", "/3/0/14=+03:00")
    out = ok(served, "composite", "read", "dev-1", "/1/0/2", "/3/0/14")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["/1/0/2"].endswith(" 4")
    assert rows["/3/0/14"].endswith("+03:00")


def test_security_set_list_remove_never_prints_the_key(served: Background) -> None:
    key = "00112233445566778899aabbccddeeff"
    out = ok(served, "security", "set", "dev-9", "--psk-identity", "dev-9", "--psk-key", key)
    assert out.strip() == "security of dev-9: psk"
    listed = ok(served, "security", "list")
    assert "dev-9" in listed and "16 bytes" in listed
    assert key not in listed
    as_json = json.loads(ok(served, "security", "list", "--json"))
    assert [s["endpoint"] for s in as_json] == ["dev-9"]
    assert key not in json.dumps(as_json)
    ok(served, "security", "remove", "dev-9")
    assert "no security record" in fails(served, "security", "remove", "dev-9")
    usage = invoke(data_dir(served), "security", "set", "dev-9")
    assert usage.exit_code == 2


def test_observe_prints_notifications_then_cancels(served: Background) -> None:
    device = served.devices[0]

    def change_when_observed() -> None:
        server = served.service.server
        assert server is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            held = served.on_loop(server.observations, "dev-1")
            # the lifecycle observer holds its own observations: wait for the CLI's one
            if any(str(p) == "/3/0/9" and not o.composite for o in held for p in o.paths):
                served.on_loop(device.set, "/3/0/9", 33)
                return
            time.sleep(0.02)

    changer = threading.Thread(target=change_when_observed)
    changer.start()
    out = ok(served, "observe", "dev-1", "/3/0/9", "--count", "1", "--json")
    changer.join()
    first, notification = (json.loads(line) for line in out.strip().splitlines())
    assert first["status"] == "success"
    assert notification["type"] == "notification"
    assert notification["content"][0]["value"] == 33
    assert notification["content"][0]["name"] == "Battery Level"
    left = json.loads(ok(served, "observations", "--json"))
    assert not [o for o in left if o["paths"] == ["/3/0/9"]], left  # the CLI's one is cancelled
    assert "no observation" in fails(served, "cancel", "dev-1", "/3/0/9")


def test_remove_a_stale_device_then_it_registers_again_when_it_talks(served: Background) -> None:
    device = served.add_device("dev-stale")
    refused = invoke(data_dir(served), "devices", "remove", "dev-stale", input="n\n")
    assert refused.exit_code == 1  # not confirmed: nothing removed
    assert "dev-stale" in ok(served, "devices", "list")
    removed = json.loads(ok(served, "devices", "remove", "dev-stale", "--yes", "--json"))
    assert removed["status"] == "removed" and removed["endpoint"] == "dev-stale"
    listed = json.loads(ok(served, "devices", "list", "--json"))
    assert "dev-stale" not in [d["endpoint"] for d in listed]
    assert "is not registered" in fails(served, "devices", "remove", "dev-stale", "--yes")
    records = json.loads(ok(served, "audit", "log", "--endpoint", "dev-stale", "--json"))
    assert any(r["action"] == "dm.remove" for r in records["items"]), records
    # The device was alive all along: its next Update gets 4.04 and it registers again.
    since = len(device.events)
    served.on_loop(device.trigger_update)
    served.call(device.wait_for(lambda e: type(e).__name__ == "Registered", 15.0, since=since))
    listed = json.loads(ok(served, "devices", "list", "--json"))
    assert "dev-stale" in [d["endpoint"] for d in listed]


def test_a_reader_that_leaves_early_ends_the_command_quietly(served: Background) -> None:
    """`fleetloop devices list | head -1`: the pipe closes before the table is written; the
    command stops without an error line (it said "internal error (BrokenPipeError)")."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env["FLEETLOOP_DATA_DIR"] = str(data_dir(served))
    env["FLEETLOOP_CONTEXTS"] = str(data_dir(served) / "no-contexts.json")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "devices", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=30) == 141, stderr
    assert stderr == ""
