"""eUICC chain verification: eUICC <- EUM <- configured CI, refusals name what is wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from sgp32.certificates import POLICY_EUICC, verify_euicc_chain
from sgp32.errors import CertificateChainError
from tests.sgp32.pki import NOW, TEST_EID, MadePki, make_cert, make_pki


def _der(pki: MadePki) -> tuple[bytes, bytes]:
    return pki.euicc.public_bytes(Encoding.DER), pki.eum.public_bytes(Encoding.DER)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.BrainpoolP256R1()], ids=lambda c: c.name)
def test_a_chain_to_a_configured_ci_verifies_and_yields_eid_and_key(
    curve: ec.EllipticCurve,
) -> None:
    pki = make_pki(curve)
    verified = verify_euicc_chain(*_der(pki), [pki.ci], NOW, expected_eid=TEST_EID)
    assert verified.eid == TEST_EID
    assert verified.public_key == pki.euicc_key.public_key()


def test_a_chain_to_another_ci_is_refused(pki: MadePki) -> None:
    with pytest.raises(CertificateChainError, match=r"not issued by|not a configured CI"):
        verify_euicc_chain(*_der(pki), [make_pki().ci], NOW)


def test_expired_and_not_yet_valid_chains_are_refused(pki: MadePki) -> None:
    with pytest.raises(CertificateChainError, match="not valid at"):
        verify_euicc_chain(*_der(pki), [pki.ci], NOW + timedelta(days=5000))
    with pytest.raises(CertificateChainError, match="not valid at"):
        verify_euicc_chain(*_der(pki), [pki.ci], NOW - timedelta(days=2))


def test_an_eid_outside_the_eum_name_constraints_is_refused() -> None:
    pki = make_pki(eum_prefix="89049033")
    with pytest.raises(CertificateChainError, match="outside the EUM's permitted names"):
        verify_euicc_chain(*_der(pki), [pki.ci], NOW)


def test_a_certificate_for_another_eid_is_refused(pki: MadePki) -> None:
    other = "89049032123451234512345678901235"[:-2] + "00"
    with pytest.raises(CertificateChainError, match="expected"):
        verify_euicc_chain(*_der(pki), [pki.ci], NOW, expected_eid=other)


def test_an_euicc_certificate_signed_by_a_forged_eum_key_is_refused(pki: MadePki) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = make_cert(
        pki.euicc.subject, pki.euicc_key, pki.eum.subject, forger, ca=False, policy=POLICY_EUICC
    )
    with pytest.raises(CertificateChainError, match=r"eUICC .* not issued by"):
        verify_euicc_chain(forged.public_bytes(Encoding.DER), _der(pki)[1], [pki.ci], NOW)


def test_garbage_instead_of_a_certificate_is_a_typed_error(pki: MadePki) -> None:
    with pytest.raises(CertificateChainError, match="eUICC certificate: not a DER"):
        verify_euicc_chain(b"\x30\x03\x02\x01\x00", _der(pki)[1], [pki.ci], NOW)


def test_the_eid_comes_from_the_subject_serial_number(pki: MadePki) -> None:
    serial = pki.euicc.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    assert serial == verify_euicc_chain(*_der(pki), [pki.ci], NOW).eid
