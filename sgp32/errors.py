"""The one error hierarchy of the eIM layer (sgp32/).

Everything the codec, the signing code and the certificate checks refuse raises a subclass of
`Sgp32Error`, so a binding (HTTPS, CoAP, object 3443) can catch exactly one type and turn it
into the ESipa error answer, and nothing an IPA sends can surface as an unexpected exception.
"""

from __future__ import annotations


class Sgp32Error(Exception):
    """Base of every refusal raised by sgp32/."""


class CodecError(Sgp32Error):
    """An ASN.1 message could not be decoded or encoded."""


class MalformedMessage(CodecError):
    """The bytes are not a valid DER encoding of the expected SGP.32 type."""


class UnknownMessageTag(CodecError):
    """The outer tag names no ESipa message of the expected direction."""


class NonCanonicalEncoding(CodecError):
    """Valid BER but not DER (e.g. long-form length, trailing bytes).

    SGP.32 signatures are computed over DER; accepting another encoding of the same value
    would make the signed bytes ambiguous, so the codec refuses it outright.
    """


class EncodingError(CodecError):
    """A value the eIM built does not fit its ASN.1 type (wrong field, size, range)."""


class InvalidIdentifier(Sgp32Error):
    """An EID, ICCID or eimId that does not have the form SGP.22/SGP.32 require."""


class SignatureInvalid(Sgp32Error):
    """An ECDSA signature (eIM or eUICC) does not verify over the expected input."""


class UnsupportedKey(Sgp32Error):
    """A key or curve the eIM cannot sign or verify with (only P-256 and brainpoolP256r1)."""


class CertificateChainError(Sgp32Error):
    """An eUICC certificate chain does not lead, valid and well-formed, to a configured CI."""


class EimError(Sgp32Error):
    """An operator request the eIM core cannot carry out (unknown eUICC, unknown eIM, ...)."""


class UnknownEuicc(EimError):
    """No eUICC with this EID is registered with the eIM; import it (with its chain) first."""


class UnknownEim(EimError):
    """The eimId names none of the eIM identities this deployment is configured with."""


class EuiccConflict(EimError):
    """The EID is already registered with another certificate; delete it before re-importing."""
