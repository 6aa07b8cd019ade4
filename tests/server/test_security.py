"""The identity check: DTLS-PSK and X.509 over real handshakes, NoSec grants, 4.03 refusals
with an audit line and an event (ETS int-401), and the pure rules in between."""

from __future__ import annotations

import json
import logging

import pytest
from aiocoap.numbers.codes import Code

from lwm2m.server import RegistrationRefused
from lwm2m.server.security import check_certificate, check_nosec, check_psk
from lwm2m.store import EndpointSecurity, IdentityKind, PskCredential, Store, X509Credential
from lwm2m.transport import CertificateIdentity, X509Credentials
from simulators.runner import SimulatedDevice
from tests.server.conftest import (
    RawClient,
    coaps_uri,
    collecting,
    eventually,
    grant_psk,
    location,
    run,
    running_server,
    set_security,
)
from tests.transport.helpers import Pki

KEY = b"fleetloop-secret"


def test_int_401_udp_channel_security_psk_mode(store: Store) -> None:
    grant_psk(store, "psk-dev", b"psk-dev-id", KEY)

    async def scenario() -> None:
        async with (
            running_server(store, secure_only=True) as server,
            SimulatedDevice("psk-dev", coaps_uri(server), psk=(b"psk-dev-id", KEY)) as device,
        ):
            await device.wait_registered()
            reg = server.registration("psk-dev")
            assert reg is not None and reg.identity.kind is IdentityKind.PSK
            assert reg.identity.value == "psk-dev-id"
            result = await server.read("psk-dev", "/3/0/0")
            assert result.ok, result
            observed = await server.observe("psk-dev", "/3/0/9")
            assert observed.ok and observed.observation_id is not None

    run(scenario())


def test_psk_identity_of_another_endpoint_is_refused_with_4_03_and_audited(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    grant_psk(store, "owner", b"owner-id", KEY)

    async def scenario() -> None:
        async with running_server(store) as server, collecting(server) as log:
            client = await RawClient().connect(server.coaps_address, psk=(b"owner-id", KEY))
            response = await client.register("victim")
            assert response.code == Code.FORBIDDEN
            assert b"belongs to endpoint 'owner'" in response.payload
            assert server.registration("victim") is None
            own = await client.register("owner")
            assert own.code == Code.CREATED
            client.close()
            await eventually(lambda: bool(log.of(RegistrationRefused)))
            refused = log.of(RegistrationRefused)[0]
            assert (refused.endpoint, refused.code) == ("victim", "4.03")
            assert refused.identity == "psk:owner-id"

    with caplog.at_level(logging.WARNING, logger="lwm2m.server.audit"):
        run(scenario())
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("audit")]
    assert lines and lines[0]["audit"] == "registration_refused"
    assert (lines[0]["endpoint"], lines[0]["identity"]) == ("victim", "psk:owner-id")


def test_update_of_a_dtls_registration_over_plain_coap_is_refused(store: Store) -> None:
    """Knowing a registration id is not enough to hijack it from another transport."""
    grant_psk(store, "dtls-dev", b"dtls-id", KEY)

    async def scenario() -> None:
        async with running_server(store) as server:
            secure = await RawClient().connect(server.coaps_address, psk=(b"dtls-id", KEY))
            where = location(await secure.register("dtls-dev"))
            plain = await RawClient().connect(server.coap_address)
            update = await plain.request(Code.POST, where)
            assert update.code == Code.FORBIDDEN
            gone = await plain.request(Code.DELETE, where)
            assert gone.code == Code.FORBIDDEN
            assert server.registration("dtls-dev") is not None
            ok = await secure.request(Code.POST, where)
            assert ok.code == Code.CHANGED
            secure.close()
            plain.close()

    run(scenario())


def test_nosec_is_refused_under_secure_only_without_a_grant(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store, secure_only=True) as server, collecting(server) as log:
            client = await RawClient().connect(server.coap_address)
            response = await client.register("plain")
            assert response.code == Code.FORBIDDEN
            assert b"plain CoAP is not allowed" in response.payload
            client.close()
            await eventually(lambda: bool(log.of(RegistrationRefused)))
            assert log.of(RegistrationRefused)[0].identity is None

    run(scenario())


def test_nosec_grant_lets_an_endpoint_register_under_secure_only(store: Store) -> None:
    set_security(store, EndpointSecurity("lab-device", allow_nosec=True))

    async def scenario() -> None:
        async with running_server(store, secure_only=True) as server:
            client = await RawClient().connect(server.coap_address)
            assert (await client.register("lab-device")).code == Code.CREATED
            assert (await client.register("other")).code == Code.FORBIDDEN
            client.close()

    run(scenario())


def test_endpoint_with_credentials_cannot_register_without_dtls(store: Store) -> None:
    """Global NoSec covers endpoints without a record; one with a PSK must use it."""
    grant_psk(store, "has-psk", b"has-psk-id", KEY)

    async def scenario() -> None:
        async with running_server(store, allow_nosec_globally=True) as server:
            client = await RawClient().connect(server.coap_address)
            response = await client.register("has-psk")
            assert response.code == Code.FORBIDDEN
            assert b"connect with DTLS" in response.payload
            assert (await client.register("no-record")).code == Code.CREATED
            client.close()

    run(scenario())


def test_x509_certificate_naming_the_endpoint_registers(store: Store) -> None:
    pki = Pki.create()
    server_cert, server_key = pki.issue("dm.fleetloop.test")
    device_cert, device_key = pki.issue("x509-dev")
    other_cert, other_key = pki.issue("someone-else")
    server_x509 = X509Credentials((server_cert,), server_key, (pki.ca_pem,))

    async def scenario() -> None:
        async with running_server(store, x509=server_x509) as server:
            creds = X509Credentials((device_cert,), device_key, (pki.ca_pem,))
            async with SimulatedDevice("x509-dev", coaps_uri(server), x509=creds) as device:
                await device.wait_registered()
                reg = server.registration("x509-dev")
                assert reg is not None and reg.identity.kind is IdentityKind.X509
                assert (await server.read("x509-dev", "/3/0/0")).ok
            wrong = X509Credentials((other_cert,), other_key, (pki.ca_pem,))
            client = await RawClient().connect(server.coaps_address, x509=wrong)
            response = await client.register("x509-dev-2")
            assert response.code == Code.FORBIDDEN
            assert b"does not name endpoint" in response.payload
            client.close()

    run(scenario())


# -- the pure rules ------------------------------------------------------------------------


def _cert(
    cn: str | None, *, dns: tuple[str, ...] = (), fp: bytes = b"\x01" * 32
) -> CertificateIdentity:
    return CertificateIdentity(
        subject=f"CN={cn}" if cn else "O=x",
        common_name=cn,
        dns_names=dns,
        uris=(),
        fingerprint=fp,
    )


def test_psk_rules() -> None:
    owner = EndpointSecurity("a", psk=PskCredential("id-a", KEY))
    assert check_psk("a", "id-a", owner) is None
    refused = check_psk("b", "id-a", owner)
    assert refused is not None and "belongs to endpoint 'a'" in refused.reason
    assert check_psk("a", "id-a", None) is not None


def test_certificate_rules() -> None:
    named = _cert("dev-1")
    assert check_certificate("dev-1", named, None) is None
    assert check_certificate("dev-2", named, None) is not None
    san = _cert("factory", dns=("dev-3",))
    assert check_certificate("dev-3", san, None) is None
    record = EndpointSecurity("dev-4", x509=X509Credential("CN=dev-1", "01" * 32))
    assert check_certificate("dev-4", named, record) is None
    pinned_other = EndpointSecurity("dev-4", x509=X509Credential("dev-1", "02" * 32))
    refused = check_certificate("dev-4", named, pinned_other)
    assert refused is not None and "fingerprint" in refused.reason
    wrong_subject = EndpointSecurity("dev-4", x509=X509Credential("CN=other"))
    assert check_certificate("dev-4", named, wrong_subject) is not None


def test_nosec_rules() -> None:
    assert check_nosec("x", None, nosec_by_default=True) is None
    assert check_nosec("x", None, nosec_by_default=False) is not None
    grant = EndpointSecurity("x", allow_nosec=True)
    assert check_nosec("x", grant, nosec_by_default=False) is None
    creds = EndpointSecurity("x", psk=PskCredential("i", KEY))
    assert check_nosec("x", creds, nosec_by_default=True) is not None
