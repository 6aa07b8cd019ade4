"""Issue 14 item 12, against a real ``fleetloop serve``: a PSK shorter than 16 bytes is refused
naming the field, and the audit log shows a keyed fingerprint of the key -- not a SHA-256
prefix that a short key is recovered from -- stable across a restart (same secrets key)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.hardening.serve_proc import ServeProcess

KEY = bytes.fromhex("6a1f5c0e9b7d42a8c3e1f09d7b5a3c21")


def fingerprints(server: ServeProcess, endpoint: str) -> list[Any]:
    with server.api() as api:
        answer = api.get("/audit", params={"endpoint": endpoint, "action": "security."})
    assert answer.status_code == 200, answer.text
    return [r["detail"].get("psk_key_fingerprint") for r in answer.json()["items"]]


def test_short_psks_are_refused_and_the_audit_shows_a_keyed_fingerprint(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    try:
        with server.api() as api:
            for short in ("aa", "00" * 15):
                answer = api.put(
                    "/security/dev-short", json={"psk_identity": "dev-short", "psk_key": short}
                )
                assert answer.status_code == 422, answer.text
                assert answer.json()["field"] == "body.psk_key"
                assert "16" in answer.json()["message"]
            good = api.put(
                "/security/dev-ok", json={"psk_identity": "dev-ok", "psk_key": KEY.hex()}
            )
            assert good.status_code < 300, good.text
            audit = api.get("/audit", params={"endpoint": "dev-ok"}).json()["items"]
        assert KEY.hex() not in json.dumps(audit)
        assert hashlib.sha256(KEY).hexdigest()[:16] not in json.dumps(audit)
        first = fingerprints(server, "dev-ok")
        assert len(first) == 1 and isinstance(first[0], str) and len(first[0]) >= 16
    finally:
        assert server.stop() == 0
    server.start()  # same data directory, same secrets key: the same fingerprint
    try:
        with server.api() as api:
            again = api.put(
                "/security/dev-ok", json={"psk_identity": "dev-ok", "psk_key": KEY.hex()}
            )
            assert again.status_code < 300, again.text
        assert fingerprints(server, "dev-ok")[-1] == first[0]
    finally:
        assert server.stop() == 0
