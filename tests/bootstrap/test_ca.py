"""The certificate authority: files and permissions, issuing, verifying, revoking."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bootstrap.ca import CA_KEY_FILE, CertificateAuthority
from bootstrap.errors import CaError
from bootstrap.manager import BootstrapManager
from lwm2m.store import Store
from tests.bootstrap.conftest import run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_key_is_0600_in_a_0700_directory_and_loads_again(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    created = CertificateAuthority.create(folder, name="unit CA")
    assert mode(folder / CA_KEY_FILE) == 0o600 and mode(folder) == 0o700
    loaded = CertificateAuthority.load(folder)
    assert loaded.fingerprint == created.fingerprint and loaded.subject == "CN=unit CA"
    with pytest.raises(CaError, match="already holds a CA"):
        CertificateAuthority.create(folder)
    assert CertificateAuthority.open(folder).fingerprint == created.fingerprint


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    CertificateAuthority.create(folder)
    (folder / CA_KEY_FILE).chmod(0o644)
    with pytest.raises(CaError, match="chmod 600"):
        CertificateAuthority.load(folder)


def test_a_passphrase_protects_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    CertificateAuthority.create(folder, passphrase=b"s3cret")
    assert b"ENCRYPTED" in (folder / CA_KEY_FILE).read_bytes()
    with pytest.raises(CaError, match="passphrase"):
        CertificateAuthority.load(folder)
    CertificateAuthority.load(folder, passphrase=b"s3cret")


def test_device_certificates_name_the_endpoint_and_verify(ca: CertificateAuthority) -> None:
    issued = ca.issue_device("dev-7")
    cert = issued.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-7"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    ca.verify(issued.der)
    assert b"PRIVATE KEY" in issued.key_pem()


def test_a_device_key_held_by_the_device_is_certified_without_the_ca_seeing_it(
    ca: CertificateAuthority,
) -> None:
    device_key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_device("dev-8", public_key=device_key.public_key())
    assert issued.private_key is None
    with pytest.raises(CaError):
        issued.key_pem()
    with pytest.raises(CaError, match="P-256"):
        ca.issue_device("dev-9", public_key=ec.generate_private_key(ec.SECP384R1()).public_key())


def test_server_certificates_carry_names_and_addresses(ca: CertificateAuthority) -> None:
    issued = ca.issue_server("dm.example", dns_names=["dm.example"], ip_addresses=["127.0.0.1"])
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["dm.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    credentials = ca.credentials(issued)
    assert credentials.trust_anchors == (ca.pem,)


def test_certificates_of_another_ca_or_out_of_date_do_not_verify(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority.create(tmp_path / "other", name="test CA")  # same name!
    with pytest.raises(CaError, match="does not verify"):
        ca.verify(other.issue_device("x").certificate)
    issued = ca.issue_device("dev-old", days=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    with pytest.raises(CaError, match="not valid"):
        ca.verify(issued.certificate, now=later)


def test_revocations_end_up_in_the_crl_and_the_audit(
    store: Store, ca: CertificateAuthority
) -> None:
    async def scenario() -> None:
        m = BootstrapManager(store, ca=ca)
        issued = ca.issue_device("dev-crl")
        await store.write(lambda tx: m.certificates.record(tx, issued, 1.0))
        assert await m.revoke_certificate(issued.serial, reason="key compromise")
        assert not await m.revoke_certificate(issued.serial, reason="again")
        crl = x509.load_pem_x509_crl(await m.crl())
        assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
        revoked = crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
        assert revoked is not None
        (record,) = await m.audit(action_prefix="certificate.")
        assert record.subject == f"certificate:{issued.serial}"

    run(scenario())
