"""eIM package signing and eUICC result verification with keys the tests make."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.asn1 import decode, encode
from sgp32.errors import EncodingError, InvalidIdentifier, SignatureInvalid, UnsupportedKey
from sgp32.packages import (
    AddEim,
    Delete,
    Disable,
    EimConfiguration,
    Enable,
    ListEim,
    euicc_package_signed,
)
from sgp32.signing import (
    EimIdentity,
    sign_euicc_package,
    sign_euicc_package_result,
    verify_euicc_package,
    verify_euicc_package_result,
)
from tests.sgp32.pki import TEST_EID, MadePki

TXID = bytes([0x10] * 16)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.BrainpoolP256R1()], ids=lambda c: c.name)
def test_a_signed_package_verifies_with_the_eim_key_and_round_trips(
    curve: ec.EllipticCurve,
) -> None:
    identity = EimIdentity("eim.example.com", ec.generate_private_key(curve))
    package = sign_euicc_package(
        identity,
        eid=TEST_EID,
        counter_value=7,
        transaction_id=TXID,
        operations=[Enable("89019990001234567893", rollback=True)],
        association_token=5,
    )
    assert package.der[:2] == b"\xbf\x51"
    assert len(package.value["eimSignature"]) == 64
    decoded = decode("EuiccPackageRequest", package.der)
    signed = verify_euicc_package(decoded, identity.public_key, association_token=5)
    assert signed["counterValue"] == 7
    with pytest.raises(SignatureInvalid):  # the token is part of the signed input
        verify_euicc_package(decoded, identity.public_key, association_token=6)


def test_a_tampered_package_does_not_verify() -> None:
    identity = EimIdentity("eim.example.com", ec.generate_private_key(ec.SECP256R1()))
    package = sign_euicc_package(
        identity,
        eid=TEST_EID,
        counter_value=1,
        transaction_id=None,
        operations=[Disable("89019990001234567893")],
    )
    tampered: dict[str, Any] = decode("EuiccPackageRequest", package.der)
    tampered["euiccPackageSigned"]["counterValue"] = 2
    with pytest.raises(SignatureInvalid, match=r"eimSignature of eim\.example\.com"):
        verify_euicc_package(tampered, identity.public_key)


def test_builders_reproduce_the_signed_part_of_the_reference_vectors(
    vector_index: list[dict[str, Any]],
) -> None:
    by_file = {v["file"]: v for v in vector_index}
    cases = {
        "e2i-getEimPackageResponse-enable-rollback.der": (
            1,
            0x10,
            [Enable("89019990001234567893", rollback=True)],
        ),
        "e2i-getEimPackageResponse-disable+delete.der": (
            5,
            0x14,
            [Disable("89019990001234567893"), Delete("89019990001234567893")],
        ),
        "e2i-getEimPackageResponse-listEim.der": (12, 0x1B, [ListEim()]),
    }
    for name, (counter, txbyte, operations) in cases.items():
        signed = euicc_package_signed(
            eim_id="eim.example.com",
            eid=TEST_EID,
            counter_value=counter,
            transaction_id=bytes([txbyte] * 16),
            operations=operations,  # type: ignore[arg-type]
        )
        assert encode("EuiccPackageSigned", signed).hex() == by_file[name]["signed_part_hex"], name


def test_add_eim_builder_matches_the_reference_vector_up_to_der_bit_trimming(
    vector_index: list[dict[str, Any]],
) -> None:
    """The vector encodes eimSupportedProtocol '00100'B with its two trailing zero bits
    (87 02 03 20); X.690 11.2.2 has DER drop trailing zeros of a named-bit BIT STRING, which
    is what the builder emits (87 02 05 20). Everything else is byte-identical."""
    vector = next(v for v in vector_index if v["file"].endswith("addEim.der"))
    config = EimConfiguration(
        "eim2.example.com",
        fqdn="eim2.example.com",
        id_type=2,
        counter_value=1,
        association_token=7,
        supported_protocols=(2,),
        indirect_profile_download=True,
    )
    signed = euicc_package_signed(
        eim_id="eim.example.com",
        eid=TEST_EID,
        counter_value=14,
        transaction_id=bytes([0x1D] * 16),
        operations=[AddEim(config)],
    )
    assert "87020520" in encode("EuiccPackageSigned", signed).hex()
    signed["euiccPackage"][1][0][1]["eimSupportedProtocol"] = (b"\x20", 5)
    assert encode("EuiccPackageSigned", signed).hex() == vector["signed_part_hex"]


def test_a_package_mixing_psmos_and_ecos_is_refused() -> None:
    with pytest.raises(EncodingError, match="PSMOs or eCOs"):
        euicc_package_signed(
            eim_id="e",
            eid=TEST_EID,
            counter_value=1,
            transaction_id=None,
            operations=[ListEim(), Disable("89019990001234567893")],
        )


def test_an_eid_with_wrong_check_digits_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="check digits"):
        euicc_package_signed(
            eim_id="e",
            eid=TEST_EID[:-1] + "6",
            counter_value=1,
            transaction_id=None,
            operations=[ListEim()],
        )


def test_an_identity_refuses_other_curves_and_a_certificate_for_another_key(pki: MadePki) -> None:
    with pytest.raises(UnsupportedKey, match="secp384r1"):
        EimIdentity("eim", ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(UnsupportedKey, match="does not match"):
        EimIdentity("eim", ec.generate_private_key(ec.SECP256R1()), certificate=pki.euicc)


def test_euicc_result_signatures_verify_and_forgeries_do_not(pki: MadePki) -> None:
    data = {
        "eimId": "eim.example.com",
        "counterValue": 3,
        "eimTransactionId": TXID,
        "seqNumber": 9,
        "euiccResult": [("enableResult", 0)],
    }
    result = sign_euicc_package_result(pki.euicc_key, "euiccPackageResultSigned", data, 4)
    wire = decode("EuiccPackageResult", encode("EuiccPackageResult", result))
    public = pki.euicc.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    outcome = verify_euicc_package_result(wire, public, association_token=4)
    assert (outcome.counter_value, outcome.seq_number, outcome.results) == (
        3,
        9,
        (("enableResult", 0),),
    )
    assert outcome.authenticated
    with pytest.raises(SignatureInvalid):
        verify_euicc_package_result(wire, public, association_token=0)
    other = x509.load_der_x509_certificate(pki.eum.public_bytes(_der())).public_key()
    assert isinstance(other, ec.EllipticCurvePublicKey)
    with pytest.raises(SignatureInvalid, match="euiccSignEPR"):
        verify_euicc_package_result(wire, other, association_token=4)


def test_signed_errors_verify_and_unsigned_errors_are_reported_unauthenticated(
    pki: MadePki,
) -> None:
    data = {"eimId": "eim.example.com", "counterValue": 3, "euiccPackageErrorCode": 4}
    error = sign_euicc_package_result(pki.euicc_key, "euiccPackageErrorSigned", data)
    public = pki.euicc.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert verify_euicc_package_result(error, public).error_code == 4
    unsigned = ("euiccPackageErrorUnsigned", {"eimId": "eim.example.com"})
    assert not verify_euicc_package_result(unsigned, public).authenticated


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER
