"""Issue 14 item 12 (the rest): no answer of the API and no audit record names a key by a plain
SHA-256 prefix -- ``GET /v1/security`` showed ``psk_key_sha256_prefix`` (8 hex digits of the
key's SHA-256) and the bootstrap plan's audit detail ``psk_key_sha256_16``; a short or
low-entropy key is recovered from those by trying keys. Everything now shows
``psk_key_fingerprint``, the HMAC keyed with the server's secrets key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bootstrap.repository import create_schema
from lwm2m.store import Store
from lwm2m.store.secrets import key_fingerprint
from tests.bootstrap.conftest import run
from tests.bootstrap.stack import running
from tests.hardening.serve_proc import ServeProcess

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def _sha256_prefixes(key: bytes) -> list[str]:
    digest = hashlib.sha256(key).hexdigest()
    return [digest[:8], digest[:16], digest]


def test_the_api_names_a_psk_by_its_keyed_fingerprint_only(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    try:
        with server.api() as api:
            put = api.put("/security/fp-1", json={"psk_identity": "fp-1", "psk_key": KEY.hex()})
            assert put.status_code == 200, put.text
            answers = [
                put,
                api.get("/security"),
                api.get("/security/fp-1"),
                api.get("/audit", params={"endpoint": "fp-1"}),
            ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            for prefix in _sha256_prefixes(KEY):
                assert prefix not in answer.text, answer.request.url
            assert KEY.hex() not in answer.text
        shown = {
            put.json()["psk_key_fingerprint"],
            answers[1].json()["items"][0]["psk_key_fingerprint"],
            answers[2].json()["psk_key_fingerprint"],
            answers[3].json()["items"][0]["detail"]["psk_key_fingerprint"],
        }
        assert len(shown) == 1 and len(next(iter(shown))) == 16  # one name for the key
    finally:
        assert server.stop() == 0


def test_the_bootstrap_audit_names_the_provisioned_psk_by_its_keyed_fingerprint(
    store: Store,
) -> None:
    create_schema(store)
    dm_key = b"\x5a" * 16

    async def scenario() -> None:
        async with running(store, token_bytes=lambda n: b"\x5a" * n) as s:
            device = s.device("dev-psk")
            await device.start()
            await device.wait_registered()
            records = await s.bs.manager.audit(subject="dev-psk")
        provisioned = next(r for r in records if r.action == "bootstrap.provisioned")
        text = json.dumps([r.detail for r in records])
        for prefix in _sha256_prefixes(dm_key):
            assert prefix not in text
        assert provisioned.detail["psk_key_fingerprint"] == key_fingerprint(store, dm_key)

    run(scenario())
