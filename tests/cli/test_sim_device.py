"""``fleetloop sim device``: the one-device simulator of docs/FIRST_RUN.md, against a real
service; the walk-through's own commands (read, create on /11) work on it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.harness import Background, background_service, invoke


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with background_service(tmp_path_factory.mktemp("data")) as background:
        yield background


def start(served: Background, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env["FLEETLOOP_DATA_DIR"] = str(served.service.data_dir)
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "sim", "device", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_one_simulated_device_runs_the_walkthrough_and_leaves_on_sigterm(
    served: Background,
) -> None:
    device = start(served, "demo-1", served.coap_uri, "--battery-every", "0")
    try:
        assert device.stderr is not None
        assert "demo-1 registered with" in device.stderr.readline()
        data_dir = served.service.data_dir
        read = invoke(data_dir, "read", "demo-1", "/3/0/9")
        assert read.exit_code == 0 and "Battery Level" in read.stdout
        created = invoke(data_dir, "create", "demo-1", "/11", "0=iot-apn", "4=0")
        assert created.exit_code == 0, created.output
        assert "created /11/" in created.stdout
        device.send_signal(signal.SIGTERM)
        assert device.wait(20) == 0
        assert "de-registered" in device.stderr.read()
    finally:
        if device.poll() is None:
            device.kill()
    listed = invoke(served.service.data_dir, "devices", "list", "--json")
    assert listed.exit_code == 0 and "demo-1" not in listed.stdout


def test_a_device_with_no_server_to_talk_to_says_so(tmp_path: Path) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    result = invoke(
        tmp_path, "sim", "device", "lost-1", f"coap://127.0.0.1:{port}", "--give-up-after", "2"
    )
    assert result.exit_code == 1
    assert "lost-1 did not register" in result.stderr and f"127.0.0.1:{port}" in result.stderr


def test_a_device_the_server_refuses_says_so(tmp_path: Path) -> None:
    with background_service(tmp_path / "data", secure_only=True) as strict:
        result = invoke(
            strict.service.data_dir,
            *("sim", "device", "nosec-1", strict.coap_uri, "--give-up-after", "10"),
        )
    assert result.exit_code == 1
    assert "nosec-1 did not register" in result.stderr and "4.03" in result.stderr
