"""EID and ICCID conversions between operator text and SGP.32 bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgp32.errors import InvalidIdentifier
from sgp32.identifiers import eid_from_bytes, eid_to_bytes, iccid_from_bytes, iccid_to_bytes


def test_iccid_uses_the_ef_iccid_nibble_swapped_coding() -> None:
    assert iccid_to_bytes("89019990001234567893").hex() == "98109909002143658739"
    assert iccid_to_bytes("8901999000123456789").hex() == "981099090021436587f9"


@given(st.text("0123456789", min_size=18, max_size=20))
def test_iccid_round_trips(iccid: str) -> None:
    assert iccid_from_bytes(iccid_to_bytes(iccid)) == iccid


def test_eid_round_trips_and_check_digits_are_enforced() -> None:
    eid = "89049032123451234512345678901235"
    assert eid_from_bytes(eid_to_bytes(eid)) == eid
    for bad in (eid[:-1] + "4", eid[:-1], "8904903212345123451234567890123x"):
        with pytest.raises(InvalidIdentifier):
            eid_to_bytes(bad)
