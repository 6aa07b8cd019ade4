"""Every SGP.32 v1.2 reference vector decodes, re-encodes byte-identical, its signature verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.asn1 import decode_from_eim, decode_from_ipa, encode, encode_to_eim, encode_to_ipa
from sgp32.certificates import load_certificate, verify_euicc_chain
from sgp32.eim import MemoryLedger
from sgp32.packages import Enable
from sgp32.signing import signature_input, verify_euicc_package, verify_euicc_package_result
from tests.sgp32.pki import NOW, MadePki
from tests.sgp32.world import NEW_ICCID, OLD_CARRIER, T0, make_world, step

EXPECTED_VECTORS = 29


def _key(certs: dict[str, bytes], name: str) -> ec.EllipticCurvePublicKey:
    key = x509.load_der_x509_certificate(certs[name]).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _signed_parts(message: Any) -> list[tuple[str, Any]]:
    """(kind, value) of each signed object in a decoded message: package requests and results."""
    name, body = message.name, message.body
    if name == "getEimPackageResponse" and body[0] == "euiccPackageRequest":
        return [("request", body[1])]
    if name == "provideEimPackageResult":
        result = body["eimPackageResult"]
        if result[0] == "euiccPackageResult":
            return [("result", result[1])]
    return []


def test_every_vector_decodes_and_reencodes_byte_identical(
    vectors_dir: Path, vector_index: list[dict[str, Any]]
) -> None:
    assert len(vector_index) == EXPECTED_VECTORS
    for vector in vector_index:
        data = (vectors_dir / "vectors" / vector["file"]).read_bytes()
        assert data.hex() == vector["hex"], vector["file"]
        if vector["type"] == "EsipaMessageFromEimToIpa":
            message = decode_from_eim(data)
            assert encode_to_ipa(message.name, message.body) == data, vector["file"]
        else:
            message = decode_from_ipa(data)
            assert encode_to_eim(message.name, message.body) == data, vector["file"]


def test_every_vector_signature_verifies_over_data_and_association_token(
    vectors_dir: Path, vector_index: list[dict[str, Any]], vector_certs: dict[str, bytes]
) -> None:
    eim_key = _key(vector_certs, "CERT_S_EIMsign_ECDSA_NIST")
    euicc_key = _key(vector_certs, "CERT_EUICC_SIG_NIST")
    verified = 0
    for vector in vector_index:
        data = (vectors_dir / "vectors" / vector["file"]).read_bytes()
        decoder = (
            decode_from_eim if vector["type"] == "EsipaMessageFromEimToIpa" else decode_from_ipa
        )
        for kind, value in _signed_parts(decoder(data)):
            if kind == "request":
                signed = verify_euicc_package(value, eim_key)
                der = encode("EuiccPackageSigned", signed)
            else:
                outcome = verify_euicc_package_result(value, euicc_key)
                if not outcome.authenticated:
                    assert "signature_input_hex" not in vector
                    continue
                data_type, field = (
                    ("EuiccPackageResultDataSigned", "euiccPackageResultDataSigned")
                    if value[0] == "euiccPackageResultSigned"
                    else ("EuiccPackageErrorDataSigned", "euiccPackageErrorDataSigned")
                )
                der = encode(data_type, value[1][field])
            assert der.hex() == vector["signed_part_hex"], vector["file"]
            assert signature_input(der, 0).hex() == vector["signature_input_hex"], vector["file"]
            verified += 1
    signed_vectors = sum("signature_input_hex" in v for v in vector_index)
    assert verified == signed_vectors == 21


def test_the_vector_certificates_chain_to_the_test_ci(vector_certs: dict[str, bytes]) -> None:
    ci = load_certificate(vector_certs["CERT_CI_SIG_NIST"], "CI")
    euicc = verify_euicc_chain(
        vector_certs["CERT_EUICC_SIG_NIST"], vector_certs["CERT_EUM_SIG_NIST"], [ci], NOW
    )
    assert euicc.eid == "89049032123451234512345678901235"
    eim = load_certificate(vector_certs["CERT_S_EIMsign_ECDSA_NIST"], "eIM")
    eim.verify_directly_issued_by(ci)


def test_the_simulated_rollback_result_has_the_reference_vectors_shape(
    vectors_dir: Path, pki: MadePki
) -> None:
    """SGP.32 5.9.16: ProfileRollbackResponse carries eUICCPackageResult [81] -- the rolled-back
    package's result, re-signed: same eimId, counterValue, eimTransactionId and seqNumber, the
    enable's own enableResult kept and rollbackResult appended (docs/SGP32.md, "The rolled-back
    result's shape"). The simulated eUICC answers a rollback in exactly the shape of the
    independent reference vector."""
    data = vectors_dir / "vectors" / "i2e-provideEimPackageResult-enable-ok-rolledback.der"
    reference = decode_from_ipa(data.read_bytes()).body["eimPackageResult"][1]
    ref_data = reference[1]["euiccPackageResultDataSigned"]
    world = make_world(pki)
    ledger = MemoryLedger()
    euicc, ipa = world.device(1, served={OLD_CARRIER}, rollback_after=30)
    world.register(ledger, euicc)
    world.eim.queue(ledger, euicc.eid, [Enable(NEW_ICCID, rollback=True)], now=T0, actor="a")
    step(world, ledger, ipa, T0)  # the IPA fetched the package; its result cannot leave
    original = ipa.pending[0].result[1]["euiccPackageResultDataSigned"]
    kind, rolled = euicc.rollback()
    assert kind == reference[0] == "euiccPackageResultSigned"
    data_signed = rolled["euiccPackageResultDataSigned"]
    assert set(data_signed) == set(ref_data)
    assert [k for k, _ in data_signed["euiccResult"]] == [k for k, _ in ref_data["euiccResult"]]
    assert data_signed["euiccResult"] == [*original["euiccResult"], ("rollbackResult", 0)]
    for field in ("eimId", "counterValue", "eimTransactionId", "seqNumber"):
        assert data_signed[field] == original[field], field
    outcome = verify_euicc_package_result((kind, rolled), euicc.key.public_key())
    assert outcome.authenticated
