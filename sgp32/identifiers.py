"""EID and ICCID: the text operators type and the bytes SGP.32 carries.

An EID is 32 decimal digits whose value mod 97 is 1 (GSMA SGP.29 check digits) and travels as
16 bytes, two digits per byte in reading order ('5A' eidValue). An ICCID is 18-20 digits
(ITU-T E.118) and travels as EF.ICCID does: 10 bytes, nibbles swapped, padded with F.
"""

from __future__ import annotations

from sgp32.errors import InvalidIdentifier

EID_DIGITS = 32
ICCID_BYTES = 10


def eid_to_bytes(eid: str) -> bytes:
    """The 16-byte eidValue of a 32-digit EID; a typo (wrong length, check digits) is refused."""
    if len(eid) != EID_DIGITS or not eid.isdigit() or not eid.isascii():
        raise InvalidIdentifier(f"EID {eid!r}: expected 32 decimal digits")
    if int(eid) % 97 != 1:
        raise InvalidIdentifier(f"EID {eid}: check digits do not match (value mod 97 must be 1)")
    return bytes.fromhex(eid)


def eid_from_bytes(value: bytes) -> str:
    """The 32-digit EID of a received eidValue (validated like `eid_to_bytes`)."""
    eid = value.hex()
    eid_to_bytes(eid)
    return eid


def iccid_to_bytes(iccid: str) -> bytes:
    """EF.ICCID coding: swapped nibbles, F padding (e.g. '8901999000...' -> 98 10 99 09 ...)."""
    if not 18 <= len(iccid) <= 20 or not iccid.isdigit() or not iccid.isascii():
        raise InvalidIdentifier(f"ICCID {iccid!r}: expected 18 to 20 decimal digits")
    padded = iccid.ljust(2 * ICCID_BYTES, "F")
    return bytes.fromhex("".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2)))


def iccid_from_bytes(value: bytes) -> str:
    """The digits of a received 10-byte ICCID (padding removed)."""
    if len(value) != ICCID_BYTES:
        raise InvalidIdentifier(f"ICCID {value.hex()}: expected {ICCID_BYTES} bytes")
    swapped = "".join(f"{b & 0x0F:x}{b >> 4:x}" for b in value).rstrip("f")
    if not swapped.isdigit():
        raise InvalidIdentifier(f"ICCID {value.hex()}: not BCD digits")
    return swapped


def check_activation_code(code: str) -> tuple[str, str]:
    """An SGP.22 4.1 activation code ``1$SM-DP+ address$matching ID[$...]``: (address,
    matching ID). The eIM hands it to the IPA as it is; this only refuses what could never
    work, naming the part."""
    parts = code.split("$")
    if len(code) > 255 or len(parts) < 3 or parts[0] != "1":
        raise InvalidIdentifier(
            f"activation code {code[:64]!r}: expected 1$SM-DP+ address$matching ID"
        )
    address, matching_id = parts[1], parts[2]
    if not address or any(c.isspace() or c == "/" for c in address):
        raise InvalidIdentifier(f"activation code: {address!r} is no SM-DP+ address (an FQDN)")
    return address, matching_id
