"""Per-endpoint security through the API, on SQLite and PostgreSQL: keys go in and never come
out, a PSK set through the API lets the device register over DTLS, secure-only refuses NoSec
without a grant."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from lwm2m.server import RegistrationRefused
from simulators.runner import SimulatedDevice
from tests.lifecycle.api.harness import run, running_api, wait_until
from tests.transport.helpers import Pki

KEY = bytes(range(16))


def test_set_list_show_and_remove_without_ever_echoing_the_key(
    tmp_path: Path, database_url: str | None
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, database_url=database_url) as api:
            created = await api.http.put(
                "/v1/security/dev-1", json={"psk_identity": "id-1", "psk_key": KEY.hex()}
            )
            assert created.status_code == 200, created.text
            body = created.json()
            assert body["modes"] == ["psk"]
            assert body["psk_identity"] == "id-1"
            assert body["psk_key_length"] == 16
            assert len(body["psk_key_fingerprint"]) == 16  # keyed: no SHA-256 prefix of the key
            assert hashlib.sha256(KEY).hexdigest()[:8] not in created.text
            assert body["replaced"] is False
            for response in [
                created,
                await api.http.get("/v1/security"),
                await api.http.get("/v1/security/dev-1"),
            ]:
                assert KEY.hex() not in response.text
                assert 'psk_key"' not in response.text
            listed = (await api.http.get("/v1/security")).json()
            assert [s["endpoint"] for s in listed["items"]] == ["dev-1"]
            assert listed["next_after"] is None
            conflict = await api.http.put(
                "/v1/security/dev-2", json={"psk_identity": "id-1", "psk_key": "00" * 16}
            )
            assert conflict.status_code == 409
            assert "already belongs to endpoint 'dev-1'" in conflict.json()["message"]
            removed = await api.http.delete("/v1/security/dev-1")
            assert removed.status_code == 200
            assert (await api.http.get("/v1/security/dev-1")).status_code == 404
            assert (await api.http.delete("/v1/security/dev-1")).status_code == 404
            assert (await api.http.get("/v1/security")).json()["items"] == []

    run(scenario)


def test_devices_routes_on_both_databases(tmp_path: Path, database_url: str | None) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, database_url=database_url) as api:
            await api.http.put("/v1/security/dev-1", json={"allow_nosec": True})
            async with api.device("dev-1") as device:
                await device.wait_registered()
                listed = (await api.http.get("/v1/devices")).json()["items"]
                assert [d["endpoint"] for d in listed] == ["dev-1"]
                assert (await api.http.get("/v1/devices/dev-1/data/3/0/9")).status_code == 200
                await api.store.flush()
                shown = (await api.http.get("/v1/devices/dev-1")).json()
                assert shown["security"]["modes"] == ["nosec"]
                assert any(v["path"] == "/3/0/9" for v in shown["last_values"])

    run(scenario)


def test_bad_security_input_names_the_field(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as api:
            cases: list[tuple[dict[str, Any], str]] = [
                ({"psk_identity": "x"}, "body.psk_key"),
                ({"psk_key": "00"}, "body.psk_identity"),
                ({"psk_identity": "x", "psk_key": "zz"}, "body.psk_key"),
                ({"psk_identity": "x", "psk_key": "00" * 65}, "body.psk_key"),
                ({"certificate": "not pem"}, "body.certificate"),
                ({}, "body"),
                ({"psk": "x"}, "body.psk"),
            ]
            for body, field in cases:
                response = await api.http.put("/v1/security/dev-1", json=body)
                assert response.status_code == 422, (body, response.text)
                assert response.json()["field"] == field, (body, response.json())

    run(scenario)


def test_a_certificate_is_pinned_by_subject_and_fingerprint(tmp_path: Path) -> None:
    async def scenario() -> None:
        pem, _ = Pki.create().issue("dev-x509")
        der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        fingerprint = hashlib.sha256(der).hexdigest()
        async with running_api(tmp_path) as api:
            response = await api.http.put(
                "/v1/security/dev-x509", json={"certificate": pem.decode()}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["modes"] == ["x509"]
            assert body["x509_subject"] == "CN=dev-x509"
            assert body["x509_fingerprint_sha256"] == fingerprint

    run(scenario)


def test_a_psk_set_through_the_api_lets_the_device_register_over_dtls(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, secure_only=True) as api:
            response = await api.http.put(
                "/v1/security/dev-psk", json={"psk_identity": "dev-psk-id", "psk_key": KEY.hex()}
            )
            assert response.status_code == 200
            device = SimulatedDevice("dev-psk", api.coaps_uri, psk=(b"dev-psk-id", KEY))
            async with device:
                await device.wait_registered()
                listed = (await api.http.get("/v1/devices")).json()["items"]
                assert listed[0]["endpoint"] == "dev-psk"
                assert listed[0]["secure"] is True
                assert listed[0]["identity"] == {"kind": "psk", "value": "dev-psk-id"}
                read = await api.http.get("/v1/devices/dev-psk/data/3/0/0")
                assert read.json()["content"]["value"] == "fleetloop-sim"

    run(scenario)


def test_secure_only_refuses_nosec_unless_the_endpoint_has_a_grant(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, secure_only=True) as api:
            refusals: list[RegistrationRefused] = []
            subscription = api.server.subscribe()

            async def collect() -> None:
                async for event in subscription:
                    if isinstance(event, RegistrationRefused):
                        refusals.append(event)

            collector = asyncio.create_task(collect())
            stranger = api.device("stranger")
            await stranger.start()
            await wait_until(lambda: bool(refusals))
            await stranger.stop(timeout=0.1)
            assert refusals[0].endpoint == "stranger"
            assert (await api.http.get("/v1/devices")).json()["items"] == []
            granted = await api.http.put("/v1/security/lab-1", json={"allow_nosec": True})
            assert granted.status_code == 200
            async with api.device("lab-1") as lab:
                await lab.wait_registered()
                listed = (await api.http.get("/v1/devices")).json()["items"]
                assert [d["endpoint"] for d in listed] == ["lab-1"]
            subscription.close()
            collector.cancel()

    run(scenario)
