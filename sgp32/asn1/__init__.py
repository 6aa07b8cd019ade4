"""SGP.32 v1.2 ASN.1 codec: the project's own module files compiled with asn1tools (DER).

Sans-IO: bytes in, Python values out (asn1tools' representation: SEQUENCE -> dict,
CHOICE -> (name, value), OCTET STRING -> bytes, BIT STRING -> (bytes, bit count), NULL -> None).
"""

from sgp32.asn1.codec import (
    EIM_TO_IPA,
    IPA_TO_EIM,
    EsipaMessage,
    decode,
    decode_from_eim,
    decode_from_ipa,
    encode,
    encode_to_eim,
    encode_to_ipa,
)

__all__ = [
    "EIM_TO_IPA",
    "IPA_TO_EIM",
    "EsipaMessage",
    "decode",
    "decode_from_eim",
    "decode_from_ipa",
    "encode",
    "encode_to_eim",
    "encode_to_ipa",
]
