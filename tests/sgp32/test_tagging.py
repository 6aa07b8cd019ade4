"""The tagging pitfalls the module is written around stay fixed."""

from __future__ import annotations

import asn1tools

from sgp32.asn1 import decode, encode, encode_to_eim

RESULT_UNSIGNED = ("euiccPackageErrorUnsigned", {"eimId": "eim.example.com"})


def test_euicc_package_result_is_a_tagged_choice_bf51_a2_not_bf51_30() -> None:
    assert encode("EuiccPackageResult", RESULT_UNSIGNED).hex().startswith("bf5113a211")


def test_a_result_inside_provide_eim_package_result_is_tagged_once() -> None:
    message = encode_to_eim(
        "provideEimPackageResult", {"eimPackageResult": ("euiccPackageResult", RESULT_UNSIGNED)}
    )
    assert message.hex().startswith("bf5016bf5113a211")
    assert "bf51bf51" not in message.hex()


def test_asn1tools_would_double_tag_a_reference_to_a_tagged_choice_without_implicit() -> None:
    naive = asn1tools.compile_string(
        """
        Naive DEFINITIONS AUTOMATIC TAGS ::= BEGIN
        R ::= [81] CHOICE { a INTEGER, b BOOLEAN }
        Wrapped ::= CHOICE { r [81] R, other [0] NULL }
        Fixed ::= CHOICE { r [81] IMPLICIT R, other [0] NULL }
        END
        """,
        "der",
    )
    assert naive.encode("Wrapped", ("r", ("a", 1))).hex().startswith("bf5106bf5103")
    assert naive.encode("Fixed", ("r", ("a", 1))).hex() == "bf5103800101"


def test_enable_rollback_flag_is_an_untagged_null() -> None:
    enable = ("enable", {"iccid": bytes(10), "rollbackFlag": None})
    assert encode("Psmo", enable).hex().endswith("0500")
    assert decode("Psmo", encode("Psmo", enable)) == enable
