"""``fleetloop audit`` against a real ``fleetloop serve`` subprocess (ephemeral ports), then
offline: a proof checks without any server, and tampering with the database file is named by
``audit verify`` against a kept checkpoint."""

from __future__ import annotations

import json
import signal
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.cli.harness import invoke
from tests.cli.test_serve_process import clean_env, fleetloop, wait_for_api_json

SECRET = b"0123456789abcdef"


@contextmanager
def serve(data_dir: Path) -> Iterator[dict[str, Any]]:
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
    ]
    env = clean_env(data_dir, FLEETLOOP_BS_COAPS="0")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        yield wait_for_api_json(data_dir, process, 30)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def set_security(info: dict[str, Any], endpoint: str) -> None:
    response = httpx.put(
        f"{info['url']}/v1/security/{endpoint}",
        headers={"Authorization": f"Bearer {info['token']}"},
        json={
            "psk_identity": f"id-{endpoint}",
            "psk_key": SECRET.hex(),
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_audit_log_checkpoint_verify_prove_and_offline_check(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir) as info:
        assert stat.S_IMODE((data_dir / "audit-key.pem").stat().st_mode) == 0o600
        for n in range(3):
            set_security(info, f"dev-{n}")

        shown = invoke(data_dir, "audit", "log", "--endpoint", "dev-1", "--json")
        assert shown.exit_code == 0, shown.output
        (record,) = json.loads(shown.output)["items"]
        assert record["action"] == "security.set" and record["endpoints"] == ["dev-1"]
        assert record["actor"] == "operator:admin" and record["token_id"] == "serve"
        assert SECRET.hex() not in shown.output  # the key never enters the log
        recent = invoke(data_dir, "audit", "log", "--since", "1h", "--action", "security.")
        assert recent.exit_code == 0 and recent.output.count("security.set") == 3

        kept = tmp_path / "kept-checkpoint.json"
        made = invoke(data_dir, "audit", "checkpoint", "--new", "--out", str(kept))
        assert made.exit_code == 0, made.output
        checkpoint = json.loads(kept.read_text())
        size = checkpoint["checkpoint"]["tree_size"]
        assert size >= 3

        verified = invoke(data_dir, "audit", "verify", "--checkpoint", str(kept))
        assert verified.exit_code == 0, verified.output
        assert "audit log intact" in verified.output

        proof_file = tmp_path / "proof.json"
        proved = invoke(data_dir, "audit", "prove", str(record["seq"]), "--out", str(proof_file))
        assert proved.exit_code == 0, proved.output

    # the server is gone: the proof checks offline, with the key id the auditor kept
    key_id = checkpoint["key_id"]
    offline = invoke(
        tmp_path / "nowhere", "audit", "check-proof", str(proof_file), "--key-id", key_id
    )
    assert offline.exit_code == 0, offline.output
    assert f"record {record['seq']} is in the audit log of {size} records" in offline.output

    forged = json.loads(proof_file.read_text())
    forged["record"]["endpoints"] = ["someone-else"]
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))
    refused = invoke(tmp_path / "nowhere", "audit", "check-proof", str(forged_file))
    assert refused.exit_code == 1 and "does NOT verify" in refused.output

    # an attacker with the database edits a record (and rewrites the checkpoint table)
    with sqlite3.connect(data_dir / "fleetloop.db") as db:
        db.execute(
            "UPDATE audit_log SET outcome = 'nothing-happened' WHERE seq = ?", (record["seq"],)
        )
        db.execute("DELETE FROM audit_checkpoint")
    with serve(data_dir):
        failed = invoke(data_dir, "audit", "verify", "--checkpoint", str(kept))
        assert failed.exit_code == 1
        assert f"record {record['seq']}" in failed.output and "edited" in failed.output

    # ... or truncates the table: the kept checkpoint still knows how long the log was
    with sqlite3.connect(data_dir / "fleetloop.db") as db:
        db.execute("DELETE FROM audit_log")
        db.execute("DELETE FROM audit_checkpoint")
    with serve(data_dir):
        truncated = invoke(data_dir, "audit", "verify", "--checkpoint", str(kept), "--json")
        assert truncated.exit_code == 1
        assert '"problem": "truncated"' in truncated.output
