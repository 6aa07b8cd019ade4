"""``fleetloop tokens create|list|revoke`` against a real ``fleetloop serve`` subprocess, and a
created token used through ``FLEETLOOP_TOKEN`` by other commands -- as an operator runs them.

The commands run in-process through click's runner (a console script costs seconds of start-up
on this machine), except one through the installed script to prove the command is wired."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import main
from tests.cli.test_serve_process import clean_env, fleetloop, wait_for_api_json


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    command = [
        *fleetloop(),
        "serve",
        "--data-dir",
        str(data_dir),
        "--coap",
        "127.0.0.1:0",
        "--coaps",
        "off",
        "--bs-coap",
        "off",
        "--bs-coaps",
        "off",
        "--api",
        "127.0.0.1:0",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=clean_env(data_dir), stderr=subprocess.PIPE, text=True)
    try:
        wait_for_api_json(data_dir, process, 30)
        yield data_dir
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def cli(data_dir: Path, *args: str, token: str | None = None) -> Result:
    env: dict[str, str | None] = {
        "FLEETLOOP_DATA_DIR": str(data_dir),
        "FLEETLOOP_URL": None,
        "FLEETLOOP_TOKEN": token,
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_create_list_use_and_revoke_a_token_from_the_command_line(served: Path) -> None:
    made = cli(served, "tokens", "create", "ci-bot", "--role", "viewer", "--tenant", "acme")
    assert made.exit_code == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    assert token.startswith("flt_")
    assert "created token 'ci-bot'" in made.stdout and "viewer, acme" in made.stdout
    assert f"export FLEETLOOP_TOKEN={token}" in made.stderr
    assert "not shown again" in made.stderr

    ops = cli(served, "tokens", "create", "ops", "--role", "operator", "--json")
    assert ops.exit_code == 0, ops.stderr
    ops_doc = json.loads(ops.stdout)
    assert ops_doc["tenants"] is None and ops_doc["role"] == "operator"
    assert ops_doc["token"].startswith(f"flt_{ops_doc['id']}_")

    listed = cli(served, "tokens", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert [(t["name"], t["role"], t["tenants"]) for t in items] == [
        ("ci-bot", "viewer", ["acme"]),
        ("ops", "operator", None),
    ]
    assert token not in listed.stdout and ops_doc["token"] not in listed.stdout
    table = cli(served, "tokens", "list")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:4] == ["ID", "NAME", "ROLE", "TENANTS"]
    assert "ci-bot" in table.stdout and "*" in table.stdout

    # the new token works through FLEETLOOP_TOKEN, within its role and its tenant
    devices = cli(served, "devices", "list", "--json", token=token)
    assert devices.exit_code == 0, devices.stderr
    assert json.loads(devices.stdout) == []
    denied = cli(served, "tokens", "list", token=token)
    assert denied.exit_code == 1
    assert denied.stderr.startswith("error: ") and "needs admin" in denied.stderr
    after_use = json.loads(cli(served, "tokens", "list", "--json").stdout)["items"]
    assert after_use[0]["last_used_at"] is not None

    taken = cli(served, "tokens", "create", "ci-bot", "--role", "admin")
    assert taken.exit_code == 1
    assert "already named 'ci-bot'" in taken.stderr
    bad_role = cli(served, "tokens", "create", "x", "--role", "root")
    assert bad_role.exit_code == 2

    revoked = cli(served, "tokens", "revoke", "ci-bot")
    assert revoked.exit_code == 0, revoked.stderr
    assert "revoked token 'ci-bot'" in revoked.stdout
    refused = cli(served, "devices", "list", token=token)
    assert refused.exit_code == 1  # the server answered: a failed request
    assert "refused the token" in refused.stderr
    again = cli(served, "tokens", "revoke", "ci-bot")
    assert again.exit_code == 1 and "no token 'ci-bot'" in again.stderr
    script = subprocess.run(  # the installed console script, with the operator token
        [*fleetloop(), "tokens", "revoke", ops_doc["id"], "--json"],
        env=clean_env(served, FLEETLOOP_TOKEN=ops_doc["token"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 1 and "needs admin" in script.stderr
    by_id = cli(served, "tokens", "revoke", ops_doc["id"], "--json")
    assert by_id.exit_code == 0 and json.loads(by_id.stdout)["revoked"] is True
    empty = cli(served, "tokens", "list")
    assert "no named tokens" in empty.stdout
