"""Random and mutated bytes only ever produce a decoded message or a typed CodecError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgp32.asn1 import decode, decode_from_eim, decode_from_ipa, encode
from sgp32.errors import CodecError, NonCanonicalEncoding, UnknownMessageTag
from sgp32.esipa.push import injects_coap

# Copies of the reference vectors (tests/fixtures/sgp32/), so fuzzing runs without ../shared.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sgp32"
SEEDS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.der"))]


def _decode_both_ways(data: bytes) -> None:
    for decoder in (decode_from_ipa, decode_from_eim):
        with contextlib.suppress(CodecError):
            decoder(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    _decode_both_ways(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.binary(min_size=1, max_size=2).map(list), st.data())
def test_mutated_messages_raise_only_codec_errors(
    seed: bytes, replacement: list[int], data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(seed) - 1))
    mutated = seed[:position] + bytes(replacement) + seed[position + 1 :]
    _decode_both_ways(mutated)
    _decode_both_ways(seed[:position])  # every truncation too


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused_as_non_der(seed: bytes, tail: bytes) -> None:
    decoder = decode_from_ipa if seed[:2] in (b"\xbf\x4f", b"\xbf\x50") else decode_from_eim
    with pytest.raises(CodecError):
        decoder(seed + tail)


def test_a_long_form_length_is_refused_as_non_der() -> None:
    with pytest.raises(NonCanonicalEncoding):
        decode_from_eim(bytes.fromhex("bf4f8103020101"))


def test_an_unknown_outer_tag_names_the_tag() -> None:
    with pytest.raises(UnknownMessageTag, match="BF51"):
        decode_from_ipa(bytes.fromhex("bf5100"))


def test_a_sequence_of_element_with_a_wrong_tag_is_refused_not_looped_on() -> None:
    # asn1tools 0.169 loops forever here without sgp32/asn1/_asn1tools_fix.py
    with pytest.raises(CodecError, match="unexpected tag"):
        decode_from_eim(bytes.fromhex("bf5005bf5303810104"))


oids = st.builds(
    lambda first, second, rest: ".".join(str(a) for a in (first, second, *rest)),
    st.integers(0, 2),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**40), max_size=6),
) | st.builds(
    lambda second, rest: ".".join(str(a) for a in (2, second, *rest)),
    st.integers(40, 2**20),
    st.lists(st.integers(0, 2**40), max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(oids)
def test_object_identifiers_round_trip(oid: str) -> None:
    """An OID in a message decodes to itself -- 2.999.x included, which asn1tools alone
    decoded as 26.39.x (sgp32/asn1/_asn1tools_fix.py)."""
    value = (
        "cancelSessionResponseOk",
        {
            "euiccCancelSessionSigned": {"transactionId": b"\x01", "smdpOid": oid, "reason": 0},
            "euiccCancelSessionSignature": b"\x00" * 64,
        },
    )
    assert decode("CancelSessionResponse", encode("CancelSessionResponse", value)) == value


def test_an_object_identifier_ending_inside_a_subidentifier_is_refused() -> None:
    value = (
        "cancelSessionResponseOk",
        {
            "euiccCancelSessionSigned": {
                "transactionId": b"\x01",
                "smdpOid": "2.999.10",
                "reason": 0,
            },
            "euiccCancelSessionSignature": b"\x00" * 64,
        },
    )
    der = encode("CancelSessionResponse", value)
    oid = bytes.fromhex("810388370a")  # smdpOid [1] 2.999.10 (automatic tags)
    assert oid in der
    with pytest.raises(CodecError):
        decode("CancelSessionResponse", der.replace(oid, bytes.fromhex("810388378a")))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_the_push_capability_check_never_raises(data: bytes) -> None:
    assert injects_coap(data) in (True, False)
