"""fleetloop's own small certificate authority (``cryptography``, EC P-256 throughout).

Why a CA of our own: certificate-mode devices need a certificate the bootstrap server and the
DM server trust, and the DM credentials a bootstrap provisions in certificate mode are fresh
certificates. An operator with a corporate PKI can still load an existing CA directory
(``ca.crt.pem`` + ``ca.key.pem``) instead of creating one.

What it does: create/load the CA, issue device certificates (CN = endpoint name, clientAuth)
and server certificates (CN + subjectAltName DNS/IP, serverAuth), build a CRL from the
revocations the repository records, and check that a certificate is one of ours.

What it keeps where: the CA key file is written with mode 0600 (directory 0700) through
``os.open(..., 0o600)`` so it never exists with wider permissions, encrypted with a passphrase
(``serve`` derives it from the secrets key, :mod:`lwm2m.store.secrets`; a key file written in
clear by an older version is re-written encrypted the first time it is loaded with one). The CA
object keeps no revocation state; :mod:`bootstrap.repository` records every
issued certificate (public part) and its revocation in the database. Issued private keys are
returned to the caller once and never stored by the CA.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bootstrap.errors import CaError
from lwm2m.transport import X509Credentials

CA_CERT_FILE = "ca.crt.pem"
CA_KEY_FILE = "ca.key.pem"
DEFAULT_CA_DAYS = 3650
DEFAULT_DEVICE_DAYS = 3650  # devices live in the field for years; revocation ends them early
DEFAULT_SERVER_DAYS = 825
_SKEW = dt.timedelta(minutes=5)  # not_before slack for device clocks a little behind


def _utc(now: dt.datetime | None) -> dt.datetime:
    return dt.datetime.now(dt.UTC) if now is None else now.astimezone(dt.UTC)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file that is 0600 from the moment it exists (no umask race)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def fingerprint_of(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, 64 lowercase hex digits (what the store pins)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CaError(f"not a certificate: {exc}") from exc


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate the CA just issued, with its private key when the CA generated it."""

    kind: str
    endpoint: str | None
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.certificate)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def not_before(self) -> float:
        return self.certificate.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.certificate.not_valid_after_utc.timestamp()

    def key_pem(self) -> bytes:
        """The private key, PKCS#8 PEM, unencrypted (for the device or a 0600 file)."""
        if self.private_key is None:
            raise CaError("this certificate was issued for a key the caller holds")
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def key_der(self) -> bytes:
        """The private key, PKCS#8 DER (what Security /0/x/5 carries in certificate mode)."""
        if self.private_key is None:
            raise CaError("this certificate was issued for a key the caller holds")
        return self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    """One CRL entry: the certificate serial (hex), when and why."""

    serial: str
    revoked_at: float
    reason: str | None = None


class CertificateAuthority:
    """A loaded CA: its certificate and signing key (see the module docstring)."""

    def __init__(
        self,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        directory: Path | None = None,
    ) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise CaError("the CA key must be EC P-256")
        public = certificate.public_key()
        if (
            not isinstance(public, ec.EllipticCurvePublicKey)
            or public.public_numbers() != key.public_key().public_numbers()
        ):
            raise CaError("the CA certificate and key do not belong together")
        self.certificate = certificate
        self._key = key
        self.directory = directory

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.subject!r})"

    # -- creating and loading -------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: Path | str,
        *,
        name: str = "fleetloop device CA",
        days: int = DEFAULT_CA_DAYS,
        passphrase: bytes | None = None,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """Create a new CA in ``directory`` (refuses to overwrite an existing one)."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        key_path, cert_path = folder / CA_KEY_FILE, folder / CA_CERT_FILE
        if key_path.exists() or cert_path.exists():
            raise CaError(f"{folder} already holds a CA; load it instead of creating one")
        stamp = _utc(now)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(stamp - _SKEW)
            .not_valid_after(stamp + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private_file(key_path, _private_pem(key, passphrase))
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate, key, folder)

    @classmethod
    def load(
        cls, directory: Path | str, *, passphrase: bytes | None = None
    ) -> CertificateAuthority:
        """Load the CA in ``directory``; refuses a key file readable by group or others."""
        folder = Path(directory)
        key_path, cert_path = folder / CA_KEY_FILE, folder / CA_CERT_FILE
        if not key_path.exists() or not cert_path.exists():
            raise CaError(f"no CA in {folder} (expected {CA_CERT_FILE} and {CA_KEY_FILE})")
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise CaError(
                f"{key_path} has mode {mode:o}; the CA key must not be readable by others "
                f"(chmod 600 {key_path})"
            )
        data = key_path.read_bytes()
        legacy_plaintext = passphrase is not None and b"ENCRYPTED" not in data
        try:
            key = serialization.load_pem_private_key(data, None if legacy_plaintext else passphrase)
        except (ValueError, TypeError) as exc:
            raise CaError(f"cannot read {key_path}: {exc} (wrong or missing passphrase?)") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{key_path} is not an EC key")
        if legacy_plaintext and passphrase is not None:
            # a key written before encryption at rest: seal it now (issue 14 item 11)
            write_private_file(key_path, _private_pem(key, passphrase))
        return cls(load_certificate(cert_path.read_bytes()), key, folder)

    @classmethod
    def open(
        cls, directory: Path | str, *, passphrase: bytes | None = None, name: str | None = None
    ) -> CertificateAuthority:
        """Load the CA in ``directory``, creating it on first use."""
        folder = Path(directory)
        if (folder / CA_KEY_FILE).exists():
            return cls.load(folder, passphrase=passphrase)
        return cls.create(folder, passphrase=passphrase, name=name or "fleetloop device CA")

    # -- properties -----------------------------------------------------------------------------
    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.certificate)

    # -- issuing --------------------------------------------------------------------------------
    def _builder(
        self,
        common_name: str,
        public_key: ec.EllipticCurvePublicKey,
        days: int,
        now: dt.datetime | None,
    ) -> x509.CertificateBuilder:
        stamp = _utc(now)
        not_after = min(stamp + dt.timedelta(days=days), self.certificate.not_valid_after_utc)
        issuer_ski = self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(stamp - _SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )

    @staticmethod
    def _key_for(
        public_key: ec.EllipticCurvePublicKey | None,
    ) -> tuple[ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey | None]:
        if public_key is not None:
            if not isinstance(public_key.curve, ec.SECP256R1):
                raise CaError("device and server keys must be EC P-256 (LwM2M's ECDHE-ECDSA)")
            return public_key, None
        private = ec.generate_private_key(ec.SECP256R1())
        return private.public_key(), private

    def issue_device(
        self,
        endpoint: str,
        *,
        kind: str = "device-bootstrap",
        public_key: ec.EllipticCurvePublicKey | None = None,
        days: int = DEFAULT_DEVICE_DAYS,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A client certificate with CN = ``endpoint`` (LwM2M's name binding); a fresh P-256
        key is generated unless the device's ``public_key`` is given."""
        public, private = self._key_for(public_key)
        certificate = (
            self._builder(endpoint, public, days, now)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate(kind, endpoint, certificate, private)

    def issue_server(
        self,
        common_name: str,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        public_key: ec.EllipticCurvePublicKey | None = None,
        days: int = DEFAULT_SERVER_DAYS,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A server certificate (bootstrap or DM server) for DTLS in certificate mode."""
        public, private = self._key_for(public_key)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        try:
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        except ValueError as exc:
            raise CaError(f"bad IP address for the server certificate: {exc}") from exc
        builder = self._builder(common_name, public, days, now).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return IssuedCertificate("server", None, builder.sign(self._key, hashes.SHA256()), private)

    def credentials(self, issued: IssuedCertificate) -> X509Credentials:
        """DTLS material for the holder of ``issued``: its chain and key, trusting this CA."""
        return X509Credentials(
            chain=(issued.pem,), private_key=issued.key_pem(), trust_anchors=(self.pem,)
        )

    # -- checking and revoking ------------------------------------------------------------------
    def verify(
        self, certificate: x509.Certificate | bytes, *, now: dt.datetime | None = None
    ) -> None:
        """Raise :class:`CaError` unless ``certificate`` was signed by this CA and is within
        its validity period (revocation is the repository's business)."""
        cert = (
            certificate
            if isinstance(certificate, x509.Certificate)
            else load_certificate(certificate)
        )
        if cert.issuer != self.certificate.subject:
            raise CaError(
                f"certificate {cert.subject.rfc4514_string()} was not issued by {self.subject}"
            )
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CaError(f"certificate signature does not verify against {self.subject}") from exc
        stamp = _utc(now)
        if not cert.not_valid_before_utc <= stamp <= cert.not_valid_after_utc:
            raise CaError(
                f"certificate {format(cert.serial_number, 'x')} is not valid at "
                f"{stamp:%Y-%m-%dT%H:%M:%SZ}"
            )

    def crl(
        self,
        revocations: Iterable[Revocation],
        *,
        now: dt.datetime | None = None,
        next_update_days: int = 7,
    ) -> bytes:
        """A signed CRL (PEM) listing ``revocations``."""
        stamp = _utc(now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(stamp)
            .next_update(stamp + dt.timedelta(days=next_update_days))
        )
        for item in revocations:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(item.serial, 16))
                .revocation_date(dt.datetime.fromtimestamp(item.revoked_at, dt.UTC))
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def write_issued(issued: IssuedCertificate, directory: Path | str, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.crt.pem`` (0644) and ``<stem>.key.pem`` (0600) into ``directory``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{stem}.crt.pem", folder / f"{stem}.key.pem"
    write_private_file(key_path, issued.key_pem())
    cert_path.write_bytes(issued.pem)
    return cert_path, key_path


__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CertificateAuthority",
    "IssuedCertificate",
    "Revocation",
    "fingerprint_of",
    "load_certificate",
    "write_issued",
    "write_private_file",
]
