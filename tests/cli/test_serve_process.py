"""The real ``fleetloop serve`` as a subprocess on ephemeral ports, and the real ``fleetloop
devices list --json`` against it: the installed console scripts, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simulators.runner import SimulatedDevice


def fleetloop() -> list[str]:
    """The console script next to this interpreter (the venv's), else ``python -m cli.main``."""
    script = Path(sys.executable).parent / "fleetloop"
    if script.exists():
        return [str(script)]
    found = shutil.which("fleetloop")
    return [found] if found else [sys.executable, "-m", "cli.main"]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env.update(FLEETLOOP_DATA_DIR=str(data_dir), **extra)
    return env


def wait_for_api_json(
    data_dir: Path, process: subprocess.Popen[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    path = data_dir / "api.json"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {process.communicate()[1]}")
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.05)
    raise AssertionError("serve did not write api.json in time")


def test_serve_on_ephemeral_ports_and_devices_list_against_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    command = [
        *fleetloop(),
        "serve",
        "--data-dir",
        str(data_dir),
        "--coap",
        "127.0.0.1:0",
        "--coaps",
        "127.0.0.1:0",
        "--bs-coap",
        "0",
        "--api",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
    # the flag beats the environment: nothing may be written to the env's data dir
    env = clean_env(tmp_path / "not-this-one", FLEETLOOP_BS_COAPS="0")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for_api_json(data_dir, process, 20)
        assert info["pid"] == process.pid
        assert info["url"].startswith("http://127.0.0.1:")
        assert info["api"]["port"] != 0 and info["coap"]["port"] != 0
        assert stat.S_IMODE((data_dir / "api.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((data_dir / "api-token").stat().st_mode) == 0o600
        assert (data_dir / "api-token").read_text().strip() == info["token"]
        assert (data_dir / "fleetloop.db").exists()

        async def register_and_list() -> str:
            uri = f"coap://127.0.0.1:{info['coap']['port']}"
            async with SimulatedDevice("proc-dev-1", uri) as device:
                await device.wait_registered()
                listing = await asyncio.to_thread(
                    subprocess.run,
                    [*fleetloop(), "devices", "list", "--json"],
                    env=clean_env(data_dir),
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            assert listing.returncode == 0, listing.stderr
            return listing.stdout

        devices = json.loads(asyncio.run(register_and_list()))
        assert [d["endpoint"] for d in devices] == ["proc-dev-1"]

        second = subprocess.run(
            [*command[:-2], "--log-format", "kv"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "another `fleetloop serve`" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in logs]
    assert "ready" in messages
    assert "stopped" in messages
    assert "bootstrap server listening" in messages
    assert any("NoSec registration is open" in m for m in messages)
    ready = next(entry for entry in logs if entry["msg"] == "ready")
    assert ready["api"] == info["url"]
    assert ready["console"] == f"{info['url']}/console/"  # where a newcomer opens the console
    assert not (data_dir / "api.json").exists()
    assert not (tmp_path / "not-this-one").exists()
    gone = subprocess.run(
        [*fleetloop(), "devices", "list"],
        env=clean_env(data_dir),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gone.returncode == 3
    assert "no running fleetloop server" in gone.stderr


def test_bad_settings_fail_with_one_line_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "fleetloop.toml"
    config.write_text("secure_onyl = true\n")
    result = subprocess.run(
        [*fleetloop(), "serve", "--config", str(config)],
        env=clean_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"error: {config}: unknown key(s) secure_onyl; known keys: data_dir, coap, coaps, "
        "bs_coap, bs_coaps, api, database_url, secure_only, "
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("flag", ["--coap", "--api"])
def test_a_busy_port_is_reported_with_the_fix(tmp_path: Path, flag: str) -> None:
    kind = socket.SOCK_DGRAM if flag == "--coap" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as busy:
        busy.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            busy.listen()
        port = busy.getsockname()[1]
        # every other socket ephemeral or off: the test must pass next to a running server
        args = {
            "--coap": "127.0.0.1:0",
            "--coaps": "off",
            "--bs-coap": "off",
            "--bs-coaps": "off",
            "--api": "127.0.0.1:0",
        }
        args[flag] = f"127.0.0.1:{port}"
        result = subprocess.run(
            [*fleetloop(), "serve", *[x for kv in args.items() for x in kv]],
            env=clean_env(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert flag in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "api.json").exists()


def test_ephemeral_ports_puts_every_listener_on_a_free_port_and_says_which(
    tmp_path: Path,
) -> None:
    """One flag, no port given: DM CoAP/CoAPs, bootstrap CoAP/CoAPs and the API bind free
    ports (so it starts while another server holds the defaults), and the ready line, api.json
    and ``fleetloop status`` name the ports actually bound."""
    data_dir = tmp_path / "data"
    command = [*fleetloop(), "serve", "--data-dir", str(data_dir), "--ephemeral-ports"]
    command += ["--log-format", "json"]
    holders = []
    for port in (5683, 5684, 5783, 5784):  # hold the defaults where we can: they must not matter
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            holder.bind(("0.0.0.0", port))
            holders.append(holder)
        except OSError:
            holder.close()  # taken already (another server): just as good
    process = subprocess.Popen(command, env=clean_env(data_dir), stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for_api_json(data_dir, process, 20)
        assert process.stderr is not None
        ready: dict[str, Any] = {}
        while not ready:
            line = process.stderr.readline()
            assert line, "serve ended before its ready line"
            record = json.loads(line)
            if record.get("msg") == "ready" or record.get("message") == "ready":
                ready = record
        bound = {name: info[name]["port"] for name in ("coap", "coaps", "api")}
        bound.update({name: info["extra"][name]["port"] for name in ("bs_coap", "bs_coaps")})
        assert all(port not in (0, 5683, 5684, 5783, 5784, 8080) for port in bound.values())
        for name in ("coap", "coaps", "bs_coap", "bs_coaps"):
            assert str(ready[name]).endswith(f":{bound[name]}"), (name, ready)
        assert ready["api"].endswith(f":{bound['api']}") and ready["esipa_https"] == "off"
        status = subprocess.run(
            [*fleetloop(), "status", "--json"],
            env=clean_env(data_dir),
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert status.returncode == 0, status.stderr
        ports = json.loads(status.stdout)["ports"]
        for name in ("coap", "coaps", "bs_coap", "bs_coaps", "api"):
            assert ports[name].endswith(f":{bound[name]}"), (name, ports)
        assert ports["esipa_https"] is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        for holder in holders:
            holder.close()


def test_ephemeral_ports_covers_the_eim_listener_and_keeps_hosts() -> None:
    from cli.settings import Listen, resolve

    chosen = resolve(
        {
            "ephemeral_ports": True,
            "api": "0.0.0.0:9000",
            "esipa_https": "127.0.0.1:8443",
            "bs_coaps": "off",
        },
        {},
    )
    assert chosen.api == Listen("0.0.0.0", 0) and chosen.esipa_https == Listen("127.0.0.1", 0)
    assert chosen.coap.port == 0 and chosen.coaps is not None and chosen.coaps.port == 0
    assert chosen.bs_coap is not None and chosen.bs_coap.port == 0
    assert chosen.bs_coaps is None  # off stays off
    assert resolve({}, {"FLEETLOOP_EPHEMERAL_PORTS": "true"}).api.port == 0
