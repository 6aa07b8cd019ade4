"""The simulated eUICC's side of a profile download (ES10b, SGP.22 3.1.3 / 5.7), sans-IO.

`Es10bDownload` runs the eUICC's four steps of a download on a `SimEuicc`: GetEUICCChallenge,
AuthenticateServer (check the SM-DP+ certificate was issued by the CI and serverSignature1;
sign euiccSigned1), PrepareDownload (check smdpSignature2 over smdpSigned2 || euiccSignature1;
sign euiccSigned2 with a one-time key) and LoadBoundProfilePackage (check smdpSign, install the
profile the package's metadata names, disabled; sign the ProfileInstallationResult).

What is simulated, not real: the bound profile package is not SCP03t-protected (the test
SM-DP+, `simulators.esim.smdp`, puts the StoreMetadataRequest in sequenceOf88 in the clear and
a placeholder in sequenceOf86); the key agreement is not used to derive session keys. The
signatures, certificates, challenges and transaction ids are checked as an eUICC does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.asn1 import decode, encode
from sgp32.errors import SignatureInvalid
from sgp32.identifiers import iccid_from_bytes
from sgp32.notifications import INSTALL
from sgp32.packages import bit_string
from sgp32.signing import sign_raw, verify_raw
from simulators.esim.euicc import SimEuicc, SimProfile

SIGNATURE_TAG = b"\x5f\x37"
TEST_SMDP_OID = "2.999.10"
ISDP_AID = bytes.fromhex("A0000005591010FFFFFFFF8900001000")


def sig_tlv(signature: bytes) -> bytes:
    return SIGNATURE_TAG + bytes([len(signature)]) + signature


def _issued_by(cert: x509.Certificate, issuer_key: ec.EllipticCurvePublicKey) -> bool:
    hash_algorithm = cert.signature_hash_algorithm or hashes.SHA256()
    try:
        issuer_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
    except InvalidSignature:
        return False
    return True


class DownloadRefused(Exception):
    """The simulated eUICC refused a download step; `code` is the ES10b error code."""

    def __init__(self, step: str, code: int, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.code = code


@dataclass
class _Session:
    transaction_id: bytes
    server_address: str
    smdp_key: ec.EllipticCurvePublicKey | None = None
    euicc_signature1: bytes = b""
    smdp_signature2: bytes = b""
    otpk: ec.EllipticCurvePrivateKey | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    smdp_oid: str = TEST_SMDP_OID
    """The SM-DP+ OID of its CERT.DPauth (subjectAltName registeredID), signed in
    euiccCancelSessionSigned and ProfileInstallationResultData."""


@dataclass
class Es10bDownload:
    """ES10b download functions for `euicc`; `ci_key` is the CI the eUICC trusts."""

    euicc: SimEuicc
    ci_key: ec.EllipticCurvePublicKey
    challenge: bytes | None = None
    session: _Session | None = None
    ext_card_resource: bytes = bytes.fromhex("810100820400012000830200FF")
    """EUICCInfo2.extCardResource now (installed apps, free memory): it changes over time."""
    used_otpks: dict[bytes, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    """One-time keys of earlier PrepareDownloads (public point -> key): an SM-DP+ that bound a
    package to one names it in smdpSigned2.bppEuiccOtpk and the eUICC reuses it."""

    def device_info(self) -> dict[str, Any]:
        return {"tac": b"\x35\x29\x06\x11", "deviceCapabilities": {}}

    def euicc_info1(self) -> dict[str, Any]:
        return {
            "svn": b"\x02\x05\x00",
            "euiccCiPKIdListForVerification": [],
            "euiccCiPKIdListForSigning": [],
        }

    def get_challenge(self) -> bytes:
        self.challenge = os.urandom(16)
        return self.challenge

    def authenticate_server(
        self,
        ok: dict[str, Any],
        matching_id: str,
        ctx_params1: Any = None,
        compact: bool = False,
    ) -> tuple[str, Any]:
        """AuthenticateServerResponse for an initiateAuthenticationOkEsipa body. `ctx_params1`:
        the one the eIM generated (signed as given), else the IPA's own; `compact`: the
        minimizeEsipaBytes form (compactEuiccSigned1 without ctxParams1 when the eIM made it,
        no certificates) that the eIM expands for the SM-DP+."""
        signed1 = ok["serverSigned1"]
        tid = signed1["transactionId"]

        def refuse(code: int) -> tuple[str, Any]:
            return (
                "authenticateResponseError",
                {"transactionId": tid, "authenticateErrorCode": code},
            )

        cert = x509.load_der_x509_certificate(encode("Certificate", ok["serverCertificate"]))
        if not _issued_by(cert, self.ci_key):
            return refuse(1)  # invalidCertificate
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        try:
            verify_raw(key, encode("ServerSigned1", signed1), ok["serverSignature1"], "sig1")
        except SignatureInvalid:
            return refuse(2)  # invalidSignature
        if signed1["euiccChallenge"] != self.challenge:
            return refuse(6)  # euiccChallengeMismatch
        own = ctx_params1 is None
        if own:
            ctx_params1 = (
                "ctxParamsForCommonAuthentication",
                {"matchingId": matching_id, "deviceInfo": self.device_info()},
            )
        euicc_signed1 = {
            "transactionId": tid,
            "serverAddress": signed1["serverAddress"],
            "serverChallenge": signed1["serverChallenge"],
            "euiccInfo2": self._euicc_info2(),
            "ctxParams1": ctx_params1,
        }
        signature = sign_raw(self.euicc.key, encode("EuiccSigned1", euicc_signed1))
        self.session = _Session(
            tid,
            signed1["serverAddress"],
            euicc_signature1=signature,
            smdp_oid=_registered_id(cert) or TEST_SMDP_OID,
        )
        if compact:
            small: dict[str, Any] = {"extCardResource": self.ext_card_resource}
            if own:
                small["ctxParams1"] = ctx_params1
            return (
                "compactAuthenticateResponseOk",
                {"signedData": ("compactEuiccSigned1", small), "euiccSignature1": signature},
            )
        return (
            "authenticateResponseOk",
            {
                "euiccSigned1": euicc_signed1,
                "euiccSignature1": signature,
                "euiccCertificate": decode("Certificate", self.euicc.certificate_der),
                "eumCertificate": decode("Certificate", self.euicc.eum_certificate_der),
            },
        )

    def _euicc_info2(self) -> dict[str, Any]:
        return {
            "profileVersion": b"\x02\x03\x01",
            "svn": b"\x02\x05\x00",
            "euiccFirmwareVer": b"\x01\x00\x00",
            "extCardResource": self.ext_card_resource,
            "uiccCapability": (b"\x00", 0),
            "rspCapability": (b"\x00", 0),
            "euiccCiPKIdListForVerification": [],
            "euiccCiPKIdListForSigning": [],
            "ppVersion": b"\x00\x00\x01",
            "sasAcreditationNumber": "SIMULATED",
            "ipaMode": 0,
        }

    def prepare_download(self, ok: dict[str, Any], compact: bool = False) -> tuple[str, Any]:
        """PrepareDownloadResponse for an authenticateClientOkDPEsipa body. `compact`: the
        minimizeEsipaBytes form (compactDownloadResponseOk: no transactionId, and no euiccOtpk
        when the eUICC reused the one smdpSigned2.bppEuiccOtpk names)."""
        session = self.session
        signed2 = ok["smdpSigned2"]
        tid = signed2["transactionId"]

        def refuse(code: int) -> tuple[str, Any]:
            return ("downloadResponseError", {"transactionId": tid, "downloadErrorCode": code})

        if session is None or tid != session.transaction_id:
            return refuse(5)  # invalidTransactionId
        cert = x509.load_der_x509_certificate(encode("Certificate", ok["smdpCertificate"]))
        key = cert.public_key()
        if not _issued_by(cert, self.ci_key) or not isinstance(key, ec.EllipticCurvePublicKey):
            return refuse(1)
        data = encode("SmdpSigned2", signed2) + sig_tlv(session.euicc_signature1)
        try:
            verify_raw(key, data, ok["smdpSignature2"], "smdpSignature2")
        except SignatureInvalid:
            return refuse(2)
        session.smdp_key = key
        session.smdp_signature2 = ok["smdpSignature2"]
        session.metadata = dict(ok.get("profileMetaData") or {})
        reused = self.used_otpks.get(signed2.get("bppEuiccOtpk") or b"")
        session.otpk = reused or ec.generate_private_key(ec.SECP256R1())
        point = session.otpk.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.used_otpks[point] = session.otpk
        signed = {"transactionId": tid, "euiccOtpk": point}
        data = encode_euicc_signed2(signed) + sig_tlv(session.smdp_signature2)
        signature = sign_raw(self.euicc.key, data)
        if compact:
            small = {} if reused is not None else {"euiccOtpk": point}
            return (
                "compactDownloadResponseOk",
                {"compactEuiccSigned2": small, "euiccSignature2": signature},
            )
        return ("downloadResponseOk", {"euiccSigned2": signed, "euiccSignature2": signature})

    def cancel_session(self, reason: int, compact: bool = False) -> tuple[str, Any]:
        """ES10b.CancelSession (SGP.22 5.7.14): the signed euiccCancelSessionSigned
        (transactionId, the SM-DP+'s OID, reason); the session ends. `compact`: the
        minimizeEsipaBytes form (only the reason and the signature)."""
        session = self.session
        if session is None:
            return ("cancelSessionResponseError", 5)  # invalidTransactionId
        signed = {
            "transactionId": session.transaction_id,
            "smdpOid": session.smdp_oid,
            "reason": reason,
        }
        signature = sign_raw(self.euicc.key, encode_cancel_session_signed(signed))
        self.session = None
        self.challenge = None
        if compact:
            return (
                "compactCancelSessionResponseOk",
                {
                    "compactEuiccCancelSessionSigned": {"reason": reason},
                    "euiccCancelSessionSignature": signature,
                },
            )
        return (
            "cancelSessionResponseOk",
            {"euiccCancelSessionSigned": signed, "euiccCancelSessionSignature": signature},
        )

    def load_bound_profile_package(self, bpp: dict[str, Any]) -> dict[str, Any]:
        """Install the profile (disabled); the signed ProfileInstallationResult value."""
        session = self.session
        if session is None:
            raise DownloadRefused("loadBoundProfilePackage", 3, "no download session")
        init = bpp["initialiseSecureChannelRequest"]
        error: dict[str, Any] | None = None
        iccid: str | None = None
        if init["transactionId"] != session.transaction_id:
            error = {"bppCommandId": 0, "errorReason": 3}  # invalidTransactionId
        else:
            assert session.smdp_key is not None
            unsigned = {k: v for k, v in init.items() if k != "smdpSign"}
            try:
                verify_raw(
                    session.smdp_key,
                    encode_init_unsigned(unsigned),
                    init["smdpSign"],
                    "smdpSign",
                )
            except SignatureInvalid:
                error = {"bppCommandId": 0, "errorReason": 2}  # invalidSignature
        if error is None:
            metadata = decode("StoreMetadataRequest", bpp["sequenceOf88"][0])
            iccid = iccid_from_bytes(metadata["iccid"])
            if iccid in self.euicc.profiles:
                error = {"bppCommandId": 2, "errorReason": 9}  # iccid already exists
            else:
                carrier = str(metadata["serviceProviderName"])
                self.euicc.profiles[iccid] = SimProfile(iccid, carrier)
        seq = self.euicc.seq_number = self.euicc.seq_number + 1
        notification: dict[str, Any] = {
            "seqNumber": seq,
            "profileManagementOperation": bit_string([INSTALL]),
            "notificationAddress": session.server_address,
        }
        raw_iccid = session.metadata.get("iccid")
        if raw_iccid is not None:
            notification["iccid"] = raw_iccid
        final: tuple[str, Any] = (
            ("successResult", {"aid": ISDP_AID, "simaResponse": b"\x30\x00"})
            if error is None
            else ("errorResult", error)
        )
        data = {
            "transactionId": session.transaction_id,
            "notificationMetadata": notification,
            "smdpOid": session.smdp_oid,
            "finalResult": final,
        }
        signature = sign_raw(self.euicc.key, encode("ProfileInstallationResultData", data))
        self.session = None
        self.challenge = None
        return {"profileInstallationResultData": data, "euiccSignPIR": signature}


def encode_euicc_signed2(value: dict[str, Any]) -> bytes:
    """euiccSigned2 has no type of its own in the module: encode it through the CHOICE and
    cut the outer tags (BF21, the alternative's SEQUENCE) off."""
    whole = encode(
        "PrepareDownloadResponse",
        ("downloadResponseOk", {"euiccSigned2": value, "euiccSignature2": b"\x00" * 64}),
    )
    return _first_inner(_first_inner(whole))


def encode_cancel_session_signed(value: dict[str, Any]) -> bytes:
    """euiccCancelSessionSigned's DER (what euiccCancelSessionSignature covers): encoded
    through the CancelSessionResponse CHOICE with the outer tags cut off, as for
    euiccSigned2."""
    whole = encode(
        "CancelSessionResponse",
        (
            "cancelSessionResponseOk",
            {"euiccCancelSessionSigned": value, "euiccCancelSessionSignature": b"\x00" * 64},
        ),
    )
    return _first_inner(_first_inner(whole))


def _registered_id(cert: x509.Certificate) -> str | None:
    """The certificate's subjectAltName registeredID (an RSP server's OID), if any."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = names.get_values_for_type(x509.RegisteredID)
    return found[0].dotted_string if found else None


def encode_init_unsigned(value: dict[str, Any]) -> bytes:
    """What smdpSign covers in this simulation: initialiseSecureChannelRequest's DER with an
    empty smdpSign (SGP.22 signs its fields with the eUICC's otpk appended; the key agreement
    is not simulated)."""
    bpp = {
        "initialiseSecureChannelRequest": {**value, "smdpSign": b""},
        "firstSequenceOf87": [],
        "sequenceOf88": [],
        "sequenceOf86": [],
    }
    return _first_inner(encode("BoundProfilePackage", bpp))


def _first_inner(der: bytes) -> bytes:
    """The first TLV inside a constructed TLV (DER)."""
    i = 1
    if der[0] & 0x1F == 0x1F:
        while der[i] & 0x80:
            i += 1
        i += 1
    first = der[i]
    i += 1 if first < 0x80 else 1 + (first & 0x7F)
    inner = der[i:]
    j = 1
    if inner[0] & 0x1F == 0x1F:
        while inner[j] & 0x80:
            j += 1
        j += 1
    length_byte = inner[j]
    if length_byte < 0x80:
        length, start = length_byte, j + 1
    else:
        size = length_byte & 0x7F
        length, start = int.from_bytes(inner[j + 1 : j + 1 + size], "big"), j + 1 + size
    return inner[: start + length]
