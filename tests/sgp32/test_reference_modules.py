"""The project's own module encodes like the GSMA modules it was written from.

The vectors cover the package path; the relay and notification messages (no vectors) are
checked here by encoding the same values with both compilations and comparing the bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sgp32.asn1 import encode
from sgp32.asn1.codec import type_names


def _relay_values(cert: Any) -> list[tuple[str, str, Any]]:
    """(type in the project module, type in the GSMA module, value) triples."""
    device_info = {
        "tac": b"\x35\x29\x06\x11",
        "deviceCapabilities": {"eutranEpcSupportedRelease": b"\x0f\x00\x00"},
    }
    euicc_info1 = {
        "svn": b"\x02\x05\x00",
        "euiccCiPKIdListForVerification": [b"\xf5" * 20],
        "euiccCiPKIdListForSigning": [b"\xf5" * 20],
    }
    notification = {
        "seqNumber": 7,
        "profileManagementOperation": (b"\x40", 2),
        "notificationAddress": "smdp.example.com",
        "iccid": bytes.fromhex("98109909002143658739"),
    }
    pir = {
        "profileInstallationResultData": {
            "transactionId": b"\x01" * 16,
            "notificationMetadata": notification,
            "smdpOid": "2.999.10",
            "finalResult": (
                "successResult",
                {
                    "aid": b"\xa0\x00\x00\x05\x59\x10\x10\xff",
                    "simaResponse": b"\x30\x07\xa0\x05\x30\x03\x80\x01\x00",
                },
            ),
        },
        "euiccSignPIR": b"\x11" * 64,
    }
    return [
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "initiateAuthenticationRequestEsipa",
                {
                    "euiccChallenge": b"\x22" * 16,
                    "smdpAddress": "smdp.example.com",
                    "euiccInfo1": euicc_info1,
                    "eimTransactionId": b"\x33" * 16,
                },
            ),
        ),
        (
            "EsipaMessageFromEimToIpa",
            "EsipaMessageFromEimToIpa",
            (
                "initiateAuthenticationResponseEsipa",
                (
                    "initiateAuthenticationOkEsipa",
                    {
                        "transactionId": b"\x01" * 16,
                        "serverSigned1": {
                            "transactionId": b"\x01" * 16,
                            "euiccChallenge": b"\x22" * 16,
                            "serverAddress": "smdp.example.com",
                            "serverChallenge": b"\x44" * 16,
                        },
                        "serverSignature1": b"\x55" * 64,
                        "euiccCiPKIdentifierToBeUsed": b"\x04\x14" + b"\xf5" * 20,
                        "serverCertificate": cert,
                        "matchingId": "ABC-123",
                        "ctxParams1": (
                            "ctxParamsForCommonAuthentication",
                            {"matchingId": "ABC-123", "deviceInfo": device_info},
                        ),
                    },
                ),
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "authenticateClientRequestEsipa",
                {
                    "transactionId": b"\x01" * 16,
                    "authenticateServerResponse": (
                        "compactAuthenticateResponseOk",
                        {
                            "signedData": (
                                "compactEuiccSigned1",
                                {
                                    "extCardResource": b"\x81\x01\x00",
                                    "ctxParams1": (
                                        "ctxParamsForCommonAuthentication",
                                        {"deviceInfo": device_info},
                                    ),
                                },
                            ),
                            "euiccSignature1": b"\x66" * 64,
                            "euiccCertificate": cert,
                        },
                    ),
                },
            ),
        ),
        (
            "EsipaMessageFromEimToIpa",
            "EsipaMessageFromEimToIpa",
            (
                "authenticateClientResponseEsipa",
                (
                    "authenticateClientOkDSEsipa",
                    {
                        "transactionId": b"\x01" * 16,
                        "profileDownloadTrigger": {
                            "profileDownloadData": ("activationCode", "1$smdp.example.com$ABC")
                        },
                    },
                ),
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "getBoundProfilePackageRequestEsipa",
                {
                    "transactionId": b"\x01" * 16,
                    "prepareDownloadResponse": (
                        "downloadResponseOk",
                        {
                            "euiccSigned2": {
                                "transactionId": b"\x01" * 16,
                                "euiccOtpk": b"\x04" + b"\x77" * 64,
                            },
                            "euiccSignature2": b"\x88" * 64,
                        },
                    ),
                },
            ),
        ),
        (
            "EsipaMessageFromEimToIpa",
            "EsipaMessageFromEimToIpa",
            (
                "getBoundProfilePackageResponseEsipa",
                (
                    "getBoundProfilePackageOkEsipa",
                    {
                        "transactionId": b"\x01" * 16,
                        "boundProfilePackage": {
                            "initialiseSecureChannelRequest": {
                                "remoteOpId": 1,
                                "transactionId": b"\x01" * 16,
                                "controlRefTemplate": {
                                    "keyType": b"\x88",
                                    "keyLen": b"\x10",
                                    "hostId": b"\x99" * 8,
                                },
                                "smdpOtpk": b"\x04" + b"\x12" * 64,
                                "smdpSign": b"\x13" * 64,
                            },
                            "firstSequenceOf87": [b"\x87" * 10],
                            "sequenceOf88": [b"\x88" * 10, b"\x88" * 3],
                            "sequenceOf86": [b"\x86" * 200],
                        },
                    },
                ),
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "cancelSessionRequestEsipa",
                {
                    "transactionId": b"\x01" * 16,
                    "cancelSessionResponse": (
                        "cancelSessionResponseOk",
                        {
                            "euiccCancelSessionSigned": {
                                "transactionId": b"\x01" * 16,
                                "smdpOid": "2.999.10",
                                "reason": 2,
                            },
                            "euiccCancelSessionSignature": b"\x14" * 64,
                        },
                    ),
                },
            ),
        ),
        (
            "EsipaMessageFromEimToIpa",
            "EsipaMessageFromEimToIpa",
            ("cancelSessionResponseEsipa", ("cancelSessionOk", {})),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "handleNotificationEsipa",
                ("pendingNotification", ("profileInstallationResult", pir)),
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "handleNotificationEsipa",
                (
                    "pendingNotification",
                    (
                        "otherSignedNotification",
                        {
                            "tbsOtherNotification": notification,
                            "euiccNotificationSignature": b"\x15" * 64,
                            "euiccCertificate": cert,
                            "eumCertificate": cert,
                        },
                    ),
                ),
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "provideEimPackageResult",
                {
                    "eidValue": b"\x89" * 16,
                    "eimPackageResult": (
                        "profileDownloadTriggerResult",
                        {
                            "eimTransactionId": b"\x02" * 4,
                            "profileDownloadTriggerResultData": ("profileInstallationResult", pir),
                        },
                    ),
                },
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "provideEimPackageResult",
                {
                    "eidValue": b"\x89" * 16,
                    "eimPackageResult": (
                        "ipaEuiccDataResponse",
                        (
                            "ipaEuiccData",
                            {
                                "defaultSmdpAddress": "smdp.example.com",
                                "euiccInfo1": euicc_info1,
                                "associationToken": 7,
                                "eumCertificate": cert,
                                "euiccCertificate": cert,
                                "eimTransactionId": b"\x03" * 8,
                                "ipaCapabilities": {"ipaFeatures": (b"\xc0", 2)},
                                "deviceInfo": device_info,
                                "notificationsList": [
                                    (
                                        "compactOtherSignedNotification",
                                        {
                                            "tbsOtherNotification": notification,
                                            "euiccNotificationSignature": b"\x16" * 64,
                                        },
                                    )
                                ],
                            },
                        ),
                    ),
                },
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "transferEimPackageResponse",
                (
                    "euiccPackageResult",
                    (
                        "euiccPackageErrorUnsigned",
                        {"eimId": "eim.example.com", "associationToken": 3},
                    ),
                ),
            ),
        ),
        (
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            ("transferEimPackageResponse", ("eimPackageReceived", None)),
        ),
        (  # the IPA could not process a package (handled since issue 12's follow-up)
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "provideEimPackageResult",
                {
                    "eidValue": b"\x89" * 16,
                    "eimPackageResult": (
                        "eimPackageResultResponseError",
                        {"eimTransactionId": b"\x04" * 8, "eimPackageResultErrorCode": 2},
                    ),
                },
            ),
        ),
        (  # a result and the notifications of the same exchange
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "provideEimPackageResult",
                {
                    "eimPackageResult": (
                        "ePRAndNotifications",
                        {
                            "euiccPackageResult": (
                                "euiccPackageErrorUnsigned",
                                {"eimId": "eim.example.com", "eimTransactionId": b"\x05" * 4},
                            ),
                            "notificationList": [
                                (
                                    "compactOtherSignedNotification",
                                    {
                                        "tbsOtherNotification": notification,
                                        "euiccNotificationSignature": b"\x17" * 64,
                                    },
                                )
                            ],
                        },
                    ),
                },
            ),
        ),
        (  # what the eIM asks for before generating ctxParams1
            "EsipaMessageFromEimToIpa",
            "EsipaMessageFromEimToIpa",
            (
                "getEimPackageResponse",
                (
                    "ipaEuiccDataRequest",
                    {"tagList": bytes.fromhex("BF20BF22A8A9"), "eimTransactionId": b"\x06" * 8},
                ),
            ),
        ),
        (  # minimizeEsipaBytes: compactEuiccSigned1 without ctxParams1, no certificates
            "EsipaMessageFromIpaToEim",
            "EsipaMessageFromIpaToEim",
            (
                "authenticateClientRequestEsipa",
                {
                    "transactionId": b"\x01" * 16,
                    "authenticateServerResponse": (
                        "compactAuthenticateResponseOk",
                        {
                            "signedData": (
                                "compactEuiccSigned1",
                                {"extCardResource": bytes.fromhex("810102")},
                            ),
                            "euiccSignature1": b"\x18" * 64,
                        },
                    ),
                },
            ),
        ),
        (
            "EsipaMessageFromEimToIpa",
            "EsipaMessageFromEimToIpa",
            ("transferEimPackageRequest", ("eimAcknowledgements", [1, 2, 300])),
        ),
    ]


@pytest.fixture(scope="module")
def certificate_value(vector_certs: dict[str, bytes], reference_spec: Any) -> Any:
    return reference_spec.decode("Certificate", vector_certs["CERT_EUICC_SIG_NIST"])


@pytest.fixture(scope="module")
def own_certificate_value(vector_certs: dict[str, bytes]) -> Any:
    from sgp32.asn1 import decode

    return decode("Certificate", vector_certs["CERT_EUICC_SIG_NIST"])


def test_relay_and_notification_messages_encode_like_the_gsma_modules(
    reference_spec: Any, certificate_value: Any, own_certificate_value: Any
) -> None:
    own = _relay_values(own_certificate_value)
    ref = _relay_values(certificate_value)
    for (own_type, ref_type, own_value), (_, _, ref_value) in zip(own, ref, strict=True):
        expected = reference_spec.encode(ref_type, ref_value)
        assert encode(own_type, own_value) == expected, own_value[0]


def test_every_vector_decodes_to_the_same_value_with_both_modules(
    reference_spec: Any, vectors_dir: Path, vector_index: list[dict[str, Any]]
) -> None:
    from sgp32.asn1 import decode

    for vector in vector_index:
        data = (vectors_dir / "vectors" / vector["file"]).read_bytes()
        assert decode(vector["type"], data) == reference_spec.decode(vector["type"], data)


def test_the_project_module_defines_the_types_the_issue_lists() -> None:
    required = {
        "GetEimPackageRequest",
        "GetEimPackageResponse",
        "ProvideEimPackageResult",
        "ProvideEimPackageResultResponse",
        "HandleNotificationEsipa",
        "TransferEimPackageRequest",
        "TransferEimPackageResponse",
        "InitiateAuthenticationRequestEsipa",
        "AuthenticateClientRequestEsipa",
        "GetBoundProfilePackageRequestEsipa",
        "CancelSessionRequestEsipa",
        "EuiccPackageRequest",
        "EuiccPackageSigned",
        "EuiccPackageResult",
        "Psmo",
        "Eco",
        "ProfileDownloadTriggerRequest",
        "ProfileDownloadTriggerResult",
        "IpaEuiccDataRequest",
        "IpaEuiccDataResponse",
        "PendingNotification",
        "StateChangeCause",
        "ProfileInstallationResult",
    }
    assert required <= type_names()
