"""The messages the compact relay and the CoAP push put on the wire encode like the GSMA
modules (../shared/reference/sgp32-asn1): the compact PrepareDownloadResponse and
CancelSession forms, answers without the optional transactionId, IpaCapabilities with
ipaSupportedProtocols, every TransferEimPackageResponse alternative the push reads and the
eimAcknowledgements push. No reference vector covers them, so the same value is encoded with
both compilations and the bytes compared (as tests/sgp32/test_reference_modules.py does)."""

from __future__ import annotations

from typing import Any

import pytest

from sgp32.asn1 import decode, encode

TID = b"\x5a" * 16
SIG = b"\x11" * 64
OTPK = b"\x04" + b"\x22" * 64


def _result() -> tuple[str, Any]:
    return (
        "euiccPackageResultSigned",
        {
            "euiccPackageResultDataSigned": {
                "eimId": "eim.example.com",
                "counterValue": 5,
                "eimTransactionId": b"\x10" * 8,
                "seqNumber": 12,
                "euiccResult": [("enableResult", 0), ("rollbackResult", 0)],
            },
            "euiccSignEPR": SIG,
        },
    )


CASES: list[tuple[str, tuple[str, Any]]] = [
    (
        "EsipaMessageFromIpaToEim",
        (
            "getBoundProfilePackageRequestEsipa",
            {
                "transactionId": TID,
                "prepareDownloadResponse": (
                    "compactDownloadResponseOk",
                    {"compactEuiccSigned2": {"euiccOtpk": OTPK}, "euiccSignature2": SIG},
                ),
            },
        ),
    ),
    (
        "EsipaMessageFromIpaToEim",
        (  # the eUICC reused smdpSigned2.bppEuiccOtpk: no otPK, a hashCc
            "getBoundProfilePackageRequestEsipa",
            {
                "transactionId": TID,
                "prepareDownloadResponse": (
                    "compactDownloadResponseOk",
                    {"compactEuiccSigned2": {"hashCc": b"\xcc" * 32}, "euiccSignature2": SIG},
                ),
            },
        ),
    ),
    (
        "EsipaMessageFromIpaToEim",
        (
            "cancelSessionRequestEsipa",
            {
                "transactionId": TID,
                "cancelSessionResponse": (
                    "compactCancelSessionResponseOk",
                    {
                        "compactEuiccCancelSessionSigned": {"reason": 5},
                        "euiccCancelSessionSignature": SIG,
                    },
                ),
            },
        ),
    ),
    (
        "EsipaMessageFromIpaToEim",
        (
            "cancelSessionRequestEsipa",
            {
                "transactionId": TID,
                "cancelSessionResponse": (
                    "compactCancelSessionResponseOk",
                    {"compactEuiccCancelSessionSigned": {}, "euiccCancelSessionSignature": SIG},
                ),
            },
        ),
    ),
    (
        "EsipaMessageFromIpaToEim",
        (
            "cancelSessionRequestEsipa",
            {
                "transactionId": TID,
                "cancelSessionResponse": (
                    "cancelSessionResponseOk",
                    {
                        "euiccCancelSessionSigned": {
                            "transactionId": TID,
                            "smdpOid": "2.999.10.7",
                            "reason": 5,
                        },
                        "euiccCancelSessionSignature": SIG,
                    },
                ),
            },
        ),
    ),
    (
        "EsipaMessageFromEimToIpa",
        (  # a lean answer (minimizeEsipaBytes): no transactionId
            "getBoundProfilePackageResponseEsipa",
            (
                "getBoundProfilePackageOkEsipa",
                {
                    "boundProfilePackage": {
                        "initialiseSecureChannelRequest": {
                            "remoteOpId": 1,
                            "transactionId": TID,
                            "controlRefTemplate": {
                                "keyType": b"\x88",
                                "keyLen": b"\x10",
                                "hostId": b"TESTSMDP",
                            },
                            "smdpOtpk": OTPK,
                            "smdpSign": SIG,
                        },
                        "firstSequenceOf87": [b"\x01"],
                        "sequenceOf88": [b"\x02"],
                        "sequenceOf86": [b"\x03"],
                    }
                },
            ),
        ),
    ),
    ("EsipaMessageFromIpaToEim", ("transferEimPackageResponse", ("euiccPackageResult", _result()))),
    (
        "EsipaMessageFromIpaToEim",
        (
            "transferEimPackageResponse",
            (
                "ipaEuiccDataResponse",
                (
                    "ipaEuiccData",
                    {
                        "ipaCapabilities": {
                            "ipaFeatures": (b"\x44", 6),  # indirect download, minimize
                            "ipaSupportedProtocols": (b"\x50", 4),  # retrieve/inject CoAPs
                        },
                        "eimTransactionId": b"\x10" * 8,
                    },
                ),
            ),
        ),
    ),
    ("EsipaMessageFromIpaToEim", ("transferEimPackageResponse", ("eimPackageError", 1))),
    ("EsipaMessageFromEimToIpa", ("transferEimPackageRequest", ("eimAcknowledgements", [12]))),
    (
        "EsipaMessageFromIpaToEim",
        (
            "provideEimPackageResult",
            {
                "eidValue": b"\x89" + b"\x04" * 15,
                "eimPackageResult": (
                    "eimPackageResultResponseError",
                    {"eimTransactionId": b"\x10" * 8, "eimPackageResultErrorCode": 1},
                ),
            },
        ),
    ),
]


@pytest.mark.parametrize(
    ("type_name", "value"), CASES, ids=[f"{n}-{v[0]}" for n, (_, v) in enumerate(CASES)]
)
def test_encodes_like_the_gsma_modules(reference_spec: Any, type_name: str, value: Any) -> None:
    expected = reference_spec.encode(type_name, value)
    assert encode(type_name, value) == expected
    assert decode(type_name, expected) == value
