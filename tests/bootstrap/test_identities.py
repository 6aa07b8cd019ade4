"""Factory identity validation: endpoint names, IMEI Luhn, EID check digits, PSK keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrap.errors import InvalidIdentity
from bootstrap.identities import (
    BootstrapCredential,
    FactoryIdentity,
    SecurityMode,
    check_eid,
    check_endpoint,
    check_identity,
    check_imei,
    eid_check_ok,
    eid_with_check_digits,
    luhn_ok,
    parse_psk_key,
)

KEY = bytes(range(16))


def imei_with_check_digit(first14: str) -> str:
    for digit in "0123456789":
        if luhn_ok(first14 + digit):
            return first14 + digit
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "name", ["dev-1", "urn:imei:490154203237518", "a", "x" * 128, "sensor_7.eu@tenant+1"]
)
def test_endpoint_names_a_query_can_carry_are_accepted(name: str) -> None:
    assert check_endpoint(name) == name


@pytest.mark.parametrize("name", ["", "-dev", "dev 1", "dev&x=1", "dev?", "x" * 129, "dév"])
def test_endpoint_names_that_would_break_the_query_are_refused(name: str) -> None:
    with pytest.raises(InvalidIdentity) as info:
        check_endpoint(name)
    assert info.value.field == "endpoint"


def test_a_real_imei_passes_and_a_mistyped_digit_fails() -> None:
    assert check_imei("490154203237518") == "490154203237518"
    with pytest.raises(InvalidIdentity, match="Luhn"):
        check_imei("490154203237519")
    with pytest.raises(InvalidIdentity, match="15 digits"):
        check_imei("49015420323751")


@given(st.text(alphabet="0123456789", min_size=14, max_size=14), st.integers(0, 14))
def test_any_single_digit_typo_in_an_imei_is_caught(first14: str, position: int) -> None:
    imei = imei_with_check_digit(first14)
    assert check_imei(imei) == imei
    original = imei[position]
    wrong = str((int(original) + 1) % 10)
    typo = imei[:position] + wrong + imei[position + 1 :]
    with pytest.raises(InvalidIdentity):
        check_imei(typo)


def test_eid_check_digits_follow_sgp29() -> None:
    eid = eid_with_check_digits("890490320000000000000000000001")
    assert len(eid) == 32 and eid_check_ok(eid)
    assert check_eid(eid) == eid
    broken = eid[:-1] + str((int(eid[-1]) + 1) % 10)
    with pytest.raises(InvalidIdentity, match="check digits"):
        check_eid(broken)


@given(st.text(alphabet="0123456789", min_size=30, max_size=30))
def test_completed_eids_always_verify(first30: str) -> None:
    assert eid_check_ok(eid_with_check_digits(first30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("000102030405060708090a0b0c0d0e0f", bytes(range(16))),
        ("0x000102030405060708090A0B0C0D0E0F", bytes(range(16))),
        ("00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f", bytes(range(16))),
    ],
)
def test_psk_keys_are_read_as_hex(text: str, expected: bytes) -> None:
    assert parse_psk_key(text) == expected


@pytest.mark.parametrize("text", ["xyz", "abc", "00" * 15, "00" * 65, ""])
def test_malformed_or_weak_psk_keys_are_refused(text: str) -> None:
    with pytest.raises(InvalidIdentity) as info:
        parse_psk_key(text)
    assert info.value.field == "psk_key"


def test_check_identity_normalises_and_drops_what_the_mode_does_not_use() -> None:
    identity = FactoryIdentity(
        "dev-1",
        BootstrapCredential(
            SecurityMode.X509, psk_identity="x", psk_key=KEY, certificate_fingerprint="AB" * 32
        ),
        serial="  SN-1 ",
        tenant="",
    )
    checked = check_identity(identity)
    assert checked.credential.psk_key is None and checked.credential.psk_identity is None
    assert checked.credential.certificate_fingerprint == "ab" * 32
    assert checked.serial == "SN-1" and checked.tenant is None


def test_a_psk_key_never_appears_in_the_repr() -> None:
    identity = FactoryIdentity("dev-1", BootstrapCredential.psk("dev-1", b"\xaa" * 16))
    assert "aaaa" not in repr(identity) and "\\xaa" not in repr(identity)


def test_only_selection_attributes_can_change_after_import() -> None:
    identity = FactoryIdentity("dev-1", BootstrapCredential.nosec(), region="eu")
    assert identity.with_attributes(region="us").region == "us"
    with pytest.raises(InvalidIdentity):
        identity.with_attributes(serial="x")
    with pytest.raises(InvalidIdentity):
        identity.with_attributes(region="not a label")
