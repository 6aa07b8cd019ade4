"""DTLS with X.509 certificates (P-256, generated per test run): identities, refusals, interop."""

from __future__ import annotations

from pathlib import Path

import pytest

from lwm2m.transport import (
    CertificateIdentity,
    DtlsClient,
    DtlsClientConfig,
    DtlsServerConfig,
    HandshakeFailed,
    MappingPskStore,
    PskIdentity,
    X509Credentials,
)
from tests.transport.helpers import (
    PSK_IDENTITY,
    PSK_KEY,
    Collector,
    Pki,
    dtls_echo_server,
    echo_roundtrip,
    psk_client,
    require_binary,
    run,
    run_process,
)

DEVICE = "urn:imei:352656100000017"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture(scope="module")
def server_credentials(pki: Pki) -> X509Credentials:
    return pki.credentials("lwm2m.example.net", pki.ca_pem, dns=("localhost", "lwm2m.example.net"))


async def cert_client(
    port: int, credentials: X509Credentials, **config: object
) -> tuple[DtlsClient, Collector]:
    sink = Collector()
    client = await DtlsClient.connect(
        sink,
        "127.0.0.1",
        port,
        DtlsClientConfig(x509=credentials, **config),  # type: ignore[arg-type]
        local_addr=("127.0.0.1", 0),
    )
    return client, sink


def test_certificate_client_is_delivered_with_its_cn_and_san(
    pki: Pki, server_credentials: X509Credentials
) -> None:
    device = pki.credentials(DEVICE, pki.ca_pem, uris=(DEVICE,), dns=("dev17.fleet.example",))

    async def scenario() -> None:
        server, responder = await dtls_echo_server(DtlsServerConfig(x509=server_credentials))
        try:
            client, sink = await cert_client(
                server.local_address[1], device, server_hostname="lwm2m.example.net"
            )
            assert client.cipher == "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8"
            server_identity = client.peer.identity
            assert isinstance(server_identity, CertificateIdentity)
            assert server_identity.common_name == "lwm2m.example.net"
            assert await echo_roundtrip(client, sink, 1) == f"echo x509:{DEVICE}".encode()
            client.close()
        finally:
            server.close()
        identity = responder.requests[0][1].identity
        assert isinstance(identity, CertificateIdentity)
        assert identity.common_name == DEVICE
        assert identity.uris == (DEVICE,)
        assert identity.dns_names == ("dev17.fleet.example",)
        assert identity.subject == f"CN={DEVICE}"
        assert len(identity.fingerprint) == 32
        assert server.stats.handshakes_completed == 1

    run(scenario())


def test_a_client_certificate_from_an_untrusted_ca_is_refused_and_counted(
    pki: Pki, server_credentials: X509Credentials
) -> None:
    rogue = Pki.create("rogue CA")
    intruder = rogue.credentials(DEVICE, pki.ca_pem)  # trusts our server, but is not trusted

    async def scenario() -> None:
        server, responder = await dtls_echo_server(DtlsServerConfig(x509=server_credentials))
        try:
            with pytest.raises(HandshakeFailed):
                await cert_client(server.local_address[1], intruder)
        finally:
            server.close()
        assert server.stats.certificate_rejected == 1
        assert server.stats.handshakes_completed == 0
        assert responder.requests == []

    run(scenario())


def test_a_client_refuses_a_server_whose_name_does_not_match(
    pki: Pki, server_credentials: X509Credentials
) -> None:
    device = pki.credentials(DEVICE, pki.ca_pem)

    async def scenario() -> None:
        server, _ = await dtls_echo_server(DtlsServerConfig(x509=server_credentials))
        try:
            with pytest.raises(HandshakeFailed):
                await cert_client(server.local_address[1], device, server_hostname="evil.example")
        finally:
            server.close()
        assert server.stats.handshakes_completed == 0

    run(scenario())


def test_one_socket_serves_psk_and_certificate_devices(
    pki: Pki, server_credentials: X509Credentials
) -> None:
    device = pki.credentials(DEVICE, pki.ca_pem)

    async def scenario() -> None:
        config = DtlsServerConfig(
            psk_store=MappingPskStore({PSK_IDENTITY: PSK_KEY}), x509=server_credentials
        )
        server, _ = await dtls_echo_server(config)
        try:
            port = server.local_address[1]
            cert, cert_sink = await cert_client(port, device)
            psk, psk_sink = await psk_client(port)
            assert await echo_roundtrip(cert, cert_sink, 1) == f"echo x509:{DEVICE}".encode()
            assert await echo_roundtrip(psk, psk_sink, 2) == b"echo psk:" + PSK_IDENTITY
            assert psk.peer.identity == PskIdentity(PSK_IDENTITY)
            cert.close()
            psk.close()
        finally:
            server.close()
        assert server.stats.handshakes_completed == 2

    run(scenario())


def _write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def test_libcoap_openssl_client_with_a_certificate_gets_an_answer(
    pki: Pki, server_credentials: X509Credentials, tmp_path: Path
) -> None:
    binary = require_binary("coap-client-openssl")
    cert, key = pki.issue(DEVICE)
    args = (
        "-c",
        _write(tmp_path, "device.pem", cert),
        "-j",
        _write(tmp_path, "device.key", key),
        "-C",
        _write(tmp_path, "ca.pem", pki.ca_pem),
    )

    async def scenario() -> None:
        server, responder = await dtls_echo_server(DtlsServerConfig(x509=server_credentials))
        try:
            uri = f"coaps://localhost:{server.local_address[1]}/echo"
            rc, out, err = await run_process(binary, "-m", "get", "-B", "10", *args, uri)
        finally:
            server.close()
        assert rc == 0, err
        assert out.strip() == f"echo x509:{DEVICE}".encode()
        identity = responder.requests[0][1].identity
        assert isinstance(identity, CertificateIdentity) and identity.common_name == DEVICE

    run(scenario())


def test_libcoap_openssl_client_without_a_certificate_is_refused(
    pki: Pki, server_credentials: X509Credentials, tmp_path: Path
) -> None:
    binary = require_binary("coap-client-openssl")
    ca = _write(tmp_path, "ca.pem", pki.ca_pem)

    async def scenario() -> None:
        server, responder = await dtls_echo_server(DtlsServerConfig(x509=server_credentials))
        try:
            uri = f"coaps://localhost:{server.local_address[1]}/echo"
            _, out, _ = await run_process(binary, "-m", "get", "-B", "1", "-C", ca, uri)
        finally:
            server.close()
        assert b"echo" not in out
        assert responder.requests == []
        assert server.stats.certificate_rejected == 1

    run(scenario())
