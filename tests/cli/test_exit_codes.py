"""Issue 11's CLI findings: honest exit codes, CLI words for usage mistakes, no silent waits,
SIGTERM cancels like Ctrl-C. Real service, real UDP, real subprocesses where signals matter."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.harness import Background, background_service, invoke

API_WORDS = ("body.", "query.", "openapi", "('", "Traceback")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    data_dir = tmp_path_factory.mktemp("data")
    with background_service(data_dir) as background:
        background.add_device("dev-1")
        yield background


def run(served: Background, *args: str) -> tuple[int, str, str]:
    result = invoke(served.service.data_dir, *args)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("read", "dev-1", "/3/0", "--format", "bogus"), "--format"),
        (("write", "dev-1", "/1/0/1", "abc"), "VALUE"),
        (("read", "dev-1", "/3/0/7/0/1"), "at most four"),
        (("read", "dev-1", "/3/70000"), "above 65535"),
        (("attributes", "dev-1", "/3/0/9", "often=5"), "not a notification attribute"),
        (("security", "set", "dev-x", "--psk-identity", "x", "--psk-key", "zz"), "--psk-key"),
    ],
)
def test_a_mistake_on_the_command_line_exits_2_in_cli_words(
    served: Background, args: tuple[str, ...], names: str
) -> None:
    code, out, err = run(served, *args)
    assert code == 2, (args, out, err)
    assert names in err
    assert not [w for w in API_WORDS if w in err], err


def test_a_dry_run_with_rejected_rows_fails_so_it_can_gate_ci(
    served: Background, tmp_path: Path
) -> None:
    rows = tmp_path / "broken.csv"
    rows.write_text(
        "endpoint,psk_identity,psk_key\n"
        "gate-1,gate-1,000102030405060708090a0b0c0d0e0f\n"
        "gate-2,gate-2,not-hex\n"
    )
    code, out, err = run(served, "identities", "import", str(rows), "--dry-run")
    assert code == 1, (out, err)
    assert "gate-2" in out  # the rejected row is shown
    assert "dry run" in err and "1 of 2 rows" in err
    good = tmp_path / "good.csv"
    good.write_text(
        "endpoint,psk_identity,psk_key\ngate-3,gate-3,000102030405060708090a0b0c0d0e0f\n"
    )
    code, out, err = run(served, "identities", "import", str(good), "--dry-run")
    assert code == 0, (out, err)


def _register_silently(coap_port: int) -> socket.socket:
    """A 'device' that registers over plain CoAP and then never answers anything.

    The datagram is a CON POST /rd?ep=silent-1&lt=300&lwm2m=1.1 with two object links; the
    socket stays open (no ICMP port-unreachable), so the server can only retransmit."""
    register = b"B\x02\x00\x07\x01\x02\xb2rd\x11(;ep=silent-1\x06lt=300\tlwm2m=1.1\xff</1/0>,</3/0>"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    sock.sendto(register, ("127.0.0.1", coap_port))
    answer, _ = sock.recvfrom(2048)
    assert answer[1] == 0x41, answer  # 2.01 Created
    return sock


def test_a_read_of_a_device_that_does_not_answer_says_so_and_stops_at_timeout(
    served: Background,
) -> None:
    assert served.info is not None and served.info.coap is not None
    silent = _register_silently(int(served.info.coap["port"]))
    try:
        started = time.monotonic()
        code, out, err = run(served, "read", "silent-1", "/3/0/0", "--timeout", "3")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert code == 1, (out, err)
    assert "waiting for device 'silent-1'" in err and "retrying" in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert took < 3 + 3 + 2  # --timeout, the CLI's grace, slack for a loaded machine


def test_sim_run_against_a_port_where_nothing_answers_says_so(tmp_path: Path) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    result = invoke(
        tmp_path,
        *("sim", "run", "--devices", "1", "--server", f"coap://127.0.0.1:{port}"),
        *("--give-up-after", "2", "--interval", "0.5"),
    )
    assert result.exit_code == 1, result.output
    assert "no device registered in 2 s" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr


def test_sigterm_cancels_an_observation_like_ctrl_c(served: Background) -> None:
    server = served.service.server
    assert server is not None

    def cli_observations() -> list[object]:
        held = served.on_loop(server.observations, "dev-1")
        return [o for o in held if [str(p) for p in o.paths] == ["/3/0/10"]]

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env["FLEETLOOP_DATA_DIR"] = str(served.service.data_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "observe", "dev-1", "/3/0/10", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert first["status"] == "success"
        assert cli_observations(), "the CLI's observation is active"
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert not cli_observations(), "SIGTERM left the observation active on the server"


def test_failure_messages_name_commands_not_api_paths(served: Background) -> None:
    code, _, err = run(served, "groups", "show", "no-such-group")
    assert code == 1, err
    assert "`fleetloop groups list`" in err and "/v1/" not in err


def test_sim_run_says_why_devices_were_refused(tmp_path: Path) -> None:
    """A --secure-only server answers a NoSec Register with 4.03: `sim run` counts the codes
    (fleet counters), prints them as they come and names them when it gives up."""
    with background_service(tmp_path / "strict", secure_only=True) as strict:
        result = invoke(
            tmp_path,
            *("sim", "run", "--devices", "2", "--server", strict.coap_uri),
            *("--give-up-after", "2", "--interval", "0.5"),
        )
    assert result.exit_code == 1, result.output
    assert "no device registered in 2 s" in result.stderr
    assert "Register attempts were refused or failed: 4.03 Forbidden x" in result.stderr
    assert "refused register 4.03 x" in result.stderr  # the progress lines


def test_the_fleet_counters_keep_a_count_per_coap_code() -> None:
    from simulators.fleet.engine import Counters

    counters = Counters()
    for code in ("4.03", "4.03", None):
        counters.failed("register", code)
    counters.failed("update", "4.04")
    assert counters.snapshot()["failure_codes"] == {
        "register 4.03": 2,
        "register no answer": 1,
        "update 4.04": 1,
    }
