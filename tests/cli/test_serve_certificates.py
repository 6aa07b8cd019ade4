"""``serve`` in certificate mode: --x509-cert/--x509-key/--x509-ca reach the DTLS listener, a
device with a certificate from the device CA registers, and pinning it through the CLI works."""

from __future__ import annotations

import json
from pathlib import Path

from lwm2m.transport import X509Credentials
from tests.cli.harness import background_service, invoke
from tests.transport.helpers import Pki


def test_a_certificate_device_registers_and_can_be_pinned(tmp_path: Path) -> None:
    pki = Pki.create()
    server_cert, server_key = pki.issue("dm.test", dns=("dm.test",))
    (tmp_path / "server.pem").write_bytes(server_cert)
    (tmp_path / "server.key").write_bytes(server_key)
    (tmp_path / "ca.pem").write_bytes(pki.ca_pem)
    device_cert, device_key = pki.issue("cert-dev")
    (tmp_path / "device.pem").write_bytes(device_cert)
    data_dir = tmp_path / "data"
    with background_service(
        data_dir,
        secure_only=True,
        x509_cert=tmp_path / "server.pem",
        x509_key=tmp_path / "server.key",
        x509_ca=tmp_path / "ca.pem",
    ) as served:
        pinned = invoke(
            served.service.data_dir,
            "security",
            "set",
            "cert-dev",
            "--cert",
            str(tmp_path / "device.pem"),
        )
        assert pinned.exit_code == 0, pinned.output
        assert pinned.stdout.strip() == "security of cert-dev: x509"
        served.add_device(
            "cert-dev",
            uri=served.coaps_uri,
            x509=X509Credentials((device_cert,), device_key, (pki.ca_pem,)),
            server_hostname="dm.test",
        )
        listed = invoke(served.service.data_dir, "devices", "list", "--json")
        device = json.loads(listed.stdout)[0]
        assert device["endpoint"] == "cert-dev"
        assert device["identity"] == {"kind": "x509", "value": "CN=cert-dev"}
        shown = json.loads(
            invoke(served.service.data_dir, "security", "show", "cert-dev", "--json").stdout
        )
        assert shown["x509_subject"] == "CN=cert-dev"


def test_an_unreadable_key_fails_start_up_with_the_fix(tmp_path: Path) -> None:
    pki = Pki.create()
    server_cert, _ = pki.issue("dm.test")
    (tmp_path / "server.pem").write_bytes(server_cert)
    (tmp_path / "server.key").write_bytes(b"not a key")
    (tmp_path / "ca.pem").write_bytes(pki.ca_pem)
    result = invoke(
        tmp_path / "data",
        "serve",
        "--coap",
        "127.0.0.1:0",
        "--coaps",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--x509-cert",
        str(tmp_path / "server.pem"),
        "--x509-key",
        str(tmp_path / "server.key"),
        "--x509-ca",
        str(tmp_path / "ca.pem"),
    )
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot set up CoAPs")
    assert "--x509-key" in last
    assert not (tmp_path / "data" / "api.json").exists()
