"""Random and mutated bytes only ever produce a decoded message or a typed CodecError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgp32.asn1 import decode_from_eim, decode_from_ipa
from sgp32.errors import CodecError, NonCanonicalEncoding, UnknownMessageTag

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
