"""ES9+ conversion of the indirect-download relay (sgp32.es9plus): what an SM-DP+ answers is
turned into the ESipa answer or refused with Es9Error -- never an unexpected exception."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgp32.asn1 import decode_from_eim, encode
from sgp32.es9plus import Es9Error, answer_for, request_for, tlv, untlv

FUNCTIONS = ["initiateAuthentication", "authenticateClient", "getBoundProfilePackage"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)
b64_blobs = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())


@settings(max_examples=300, deadline=None)
@given(
    function=st.sampled_from(FUNCTIONS),
    answer=st.dictionaries(
        st.sampled_from(
            [
                "header",
                "transactionId",
                "serverSigned1",
                "serverSignature1",
                "euiccCiPKIdToBeUsed",
                "serverCertificate",
                "smdpSigned2",
                "smdpSignature2",
                "smdpCertificate",
                "profileMetadata",
                "boundProfilePackage",
            ]
        ),
        json_values | b64_blobs,
    ),
)
def test_garbage_answers_are_es9_errors_or_valid_esipa(function: str, answer: Any) -> None:
    try:
        der, _ = answer_for(function, answer)
    except Es9Error:
        return
    decode_from_eim(der)  # whatever was produced is a valid ESipa answer


def test_a_failed_function_becomes_the_esipa_error_alternative() -> None:
    failed = {
        "header": {
            "functionExecutionStatus": {
                "status": "Failed",
                "statusCodeData": {"subjectCode": "8.2.6", "reasonCode": "3.8", "message": "x"},
            }
        }
    }
    for function, alternative in [
        ("initiateAuthentication", "initiateAuthenticationErrorEsipa"),
        ("authenticateClient", "authenticateClientErrorEsipa"),
        ("getBoundProfilePackage", "getBoundProfilePackageErrorEsipa"),
    ]:
        der, failure = answer_for(function, failed)
        assert failure == "8.2.6/3.8: x"
        assert decode_from_eim(der).body == (alternative, 127)


def test_tlv_round_trip_and_requests() -> None:
    for n in (0, 5, 127, 128, 300):
        value = bytes(range(256))[: n % 256] * (1 + n // 256)
        assert untlv(tlv(b"\x5f\x37", value), b"\x5f\x37", "x") == value
    with pytest.raises(Es9Error):
        untlv(b"\x04\x05ab", b"\x04", "x")
    info1 = {
        "svn": b"\x02\x01\x00",
        "euiccCiPKIdListForVerification": [],
        "euiccCiPKIdListForSigning": [],
    }
    request = request_for(
        "initiateAuthenticationRequestEsipa",
        {"euiccChallenge": b"\x01" * 16, "smdpAddress": "smdp.example", "euiccInfo1": info1},
    )
    assert request.function == "initiateAuthentication"
    assert request.body == {
        "euiccChallenge": base64.b64encode(b"\x01" * 16).decode(),
        "euiccInfo1": base64.b64encode(encode("EUICCInfo1", info1)).decode(),
        "smdpAddress": "smdp.example",
    }
    with pytest.raises(Es9Error, match="euiccInfo1"):  # mandatory in ES9+ (SGP.22 6.5.2.6)
        request_for(
            "initiateAuthenticationRequestEsipa",
            {"euiccChallenge": b"\x01" * 16, "smdpAddress": "smdp.example"},
        )
    with pytest.raises(Es9Error):
        request_for("initiateAuthenticationRequestEsipa", {"euiccChallenge": b"\x01" * 16})
