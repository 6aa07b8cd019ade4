"""ES9+ (SGP.22 6.5, HTTPS + JSON) for the eIM's indirect-download relay, sans-IO.

In an indirect profile download (SGP.32 3.2.3) the IPA does not talk to the SM-DP+ itself: it
sends its ES9+ calls to the eIM over ESipa as ASN.1 (InitiateAuthenticationRequestEsipa BF39,
AuthenticateClientRequestEsipa BF3B, GetBoundProfilePackageRequestEsipa BF3A,
CancelSessionRequestEsipa BF41, pending notifications), and the eIM makes the ES9+ call to the
SM-DP+ on its behalf. This module converts both ways:

* :func:`request_for` -- an ESipa message from the IPA -> the ES9+ function and its JSON body;
* :func:`answer_for` -- the SM-DP+'s JSON answer -> the ESipa answer's DER for the IPA.

ES9+ carries the binary data objects base64-encoded *with their tags* (serverSigned1 as its
SEQUENCE, serverSignature1 as its 5F37 TLV, euiccCiPKIdToBeUsed as an OCTET STRING TLV) and the
transactionId as upper-case hex. An SM-DP+ error ("Failed" with a subject/reason code) becomes
the ESipa error alternative of the function; what does not decode raises :class:`Es9Error`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from sgp32.asn1 import decode, decode_from_eim, encode, encode_to_ipa
from sgp32.errors import Sgp32Error

ES9_PATH = "/gsma/rsp2/es9plus/"
ADMIN_PROTOCOL = "gsma/rsp/v2.1.0"
"""The SGP.22 version the relay speaks: 2.1.0, what osmo-smdpp and onomondo-eim send and answer,
and a version every SGP.22 v2.x SM-DP+ takes (a v2.2 SM-DP+ may refuse a newer one)."""
USER_AGENT = "gsma-rsp-lpad; fleetloop-eim"
"""SGP.22 6.5.1's User-Agent of the ES9+ client (in indirect download the eIM makes the LPAd's
ES9+ calls; pySim's ES9+ client sends the same token)."""
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
ES9_HEADERS = {
    "Content-Type": JSON_CONTENT_TYPE,
    "X-Admin-Protocol": ADMIN_PROTOCOL,
    "User-Agent": USER_AGENT,
    "Accept": "application/json",
}
"""The request headers of every ES9+ call (SGP.22 6.5.1)."""
SIGNATURE_TAG = b"\x5f\x37"
UNDEFINED = 127


class Es9Error(Sgp32Error):
    """An ES9+ answer the relay cannot use (not JSON of the expected shape, bad base64/DER)."""


@dataclass(frozen=True)
class Es9Request:
    """One ES9+ call: the function (path suffix), its JSON body, and the SM-DP+ it goes to
    (None: the one this transaction's session started with)."""

    function: str
    body: dict[str, Any]
    smdp_address: str | None = None
    transaction_id: bytes | None = None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any, field: str) -> bytes:
    """Base64 from an SM-DP+; line breaks (MIME-style encoders) and missing padding tolerated."""
    if not isinstance(text, str):
        raise Es9Error(f"ES9+ answer: {field} is missing or not a string")
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Es9Error(f"ES9+ answer: {field} is not base64") from None


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: bytes, value: bytes) -> bytes:
    return tag + _length(len(value)) + value


def untlv(data: bytes, tag: bytes, field: str) -> bytes:
    """The value of a single TLV with `tag` (DER lengths)."""
    if not data.startswith(tag) or len(data) < len(tag) + 1:
        raise Es9Error(f"ES9+ answer: {field} does not start with tag {tag.hex().upper()}")
    rest = data[len(tag) :]
    first = rest[0]
    if first < 0x80:
        length, start = first, 1
    else:
        size = first & 0x7F
        length, start = int.from_bytes(rest[1 : 1 + size], "big"), 1 + size
    value = rest[start : start + length]
    if len(value) != length or start + length != len(rest):
        raise Es9Error(f"ES9+ answer: {field} has a wrong length")
    return value


def transaction_hex(tid: bytes) -> str:
    return tid.hex().upper()


def json_body(body: dict[str, Any]) -> bytes:
    """An ES9+ request body: UTF-8 JSON, as the Content-Type says."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def notification_accepted(status: int, content: bytes) -> str | None:
    """None when an SM-DP+ took a handleNotification, else why not. SGP.22 6.5.1: 204 No
    Content; also taken: 200 with no body or with a header whose functionExecutionStatus is
    Executed-* (osmo-smdpp answers so); a 200 JSON "Failed" or any other status is a refusal."""
    if status == 204 or (status == 200 and not content.strip()):
        return None
    if status != 200:
        return f"HTTP {status}"
    try:
        failure = _failed(json.loads(content))
    except (ValueError, Es9Error, AttributeError) as exc:
        return f"the answer is not an ES9+ status ({exc})"
    return failure


def request_for(name: str, body: Any) -> Es9Request:
    """The ES9+ call for an ESipa message from the IPA (`decode_from_ipa`'s name and body)."""
    if name == "initiateAuthenticationRequestEsipa":
        # ES9+ has all three mandatory (SGP.22 6.5.2.6; osmo-smdpp fails without euiccInfo1);
        # the relay fills in what ESipa let the IPA leave out before it gets here
        address = body.get("smdpAddress")
        if address is None:
            raise Es9Error("initiateAuthentication: no smdpAddress, and no trigger names one")
        if "euiccInfo1" not in body:
            raise Es9Error("initiateAuthentication: no euiccInfo1, and the eIM has none")
        request: dict[str, Any] = {
            "euiccChallenge": b64(body["euiccChallenge"]),
            "euiccInfo1": b64(encode("EUICCInfo1", body["euiccInfo1"])),
            "smdpAddress": address,
        }
        return Es9Request("initiateAuthentication", request, address)
    if name == "authenticateClientRequestEsipa":
        tid = body["transactionId"]
        response = encode("AuthenticateServerResponse", body["authenticateServerResponse"])
        return Es9Request(
            "authenticateClient",
            {"transactionId": transaction_hex(tid), "authenticateServerResponse": b64(response)},
            transaction_id=tid,
        )
    if name == "getBoundProfilePackageRequestEsipa":
        tid = body["transactionId"]
        response = encode("PrepareDownloadResponse", body["prepareDownloadResponse"])
        return Es9Request(
            "getBoundProfilePackage",
            {"transactionId": transaction_hex(tid), "prepareDownloadResponse": b64(response)},
            transaction_id=tid,
        )
    if name == "cancelSessionRequestEsipa":
        tid = body["transactionId"]
        response = encode("CancelSessionResponse", body["cancelSessionResponse"])
        return Es9Request(
            "cancelSession",
            {"transactionId": transaction_hex(tid), "cancelSessionResponse": b64(response)},
            transaction_id=tid,
        )
    raise Es9Error(f"{name} is not relayed to an SM-DP+")


def _failed(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        raise Es9Error("ES9+ answer: not a JSON object")
    header = answer.get("header")
    status = header.get("functionExecutionStatus") if isinstance(header, dict) else None
    if not isinstance(status, dict):
        raise Es9Error("ES9+ answer: header.functionExecutionStatus is not an object")
    if str(status.get("status", "")).startswith("Executed"):
        return None
    data = status.get("statusCodeData")
    data = data if isinstance(data, dict) else {}
    return (
        f"{data.get('subjectCode', '?')}/{data.get('reasonCode', '?')}: {data.get('message', '')}"
    )


def answer_for(function: str, answer: Any) -> tuple[bytes, str | None]:
    """The ESipa answer (DER) for the SM-DP+'s JSON `answer` to `function`, and the SM-DP+'s
    failure text when it failed (for the log/audit; the IPA gets the function's ESipa error)."""
    if not isinstance(answer, dict):
        raise Es9Error(f"ES9+ {function}: the answer is not a JSON object")
    try:
        failure = _failed(answer)
        return _answer(function, answer, failure), failure
    except Es9Error:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, Sgp32Error) as exc:
        raise Es9Error(f"ES9+ {function}: the answer does not decode ({exc})") from None


def _answer(function: str, answer: dict[str, Any], failure: str | None) -> bytes:
    tid_text = answer.get("transactionId")
    tid = bytes.fromhex(tid_text) if isinstance(tid_text, str) else None
    if function == "initiateAuthentication":
        if failure is not None:
            return encode_to_ipa(
                "initiateAuthenticationResponseEsipa",
                ("initiateAuthenticationErrorEsipa", UNDEFINED),
            )
        signed1 = decode("ServerSigned1", unb64(answer["serverSigned1"], "serverSigned1"))
        ok: dict[str, Any] = {
            "serverSigned1": signed1,
            "serverSignature1": untlv(
                unb64(answer["serverSignature1"], "serverSignature1"),
                SIGNATURE_TAG,
                "serverSignature1",
            ),
            "euiccCiPKIdentifierToBeUsed": untlv(
                unb64(answer["euiccCiPKIdToBeUsed"], "euiccCiPKIdToBeUsed"),
                b"\x04",
                "euiccCiPKIdToBeUsed",
            ),
            "serverCertificate": decode(
                "Certificate", unb64(answer["serverCertificate"], "serverCertificate")
            ),
        }
        if tid is not None:
            ok["transactionId"] = tid
        return encode_to_ipa(
            "initiateAuthenticationResponseEsipa", ("initiateAuthenticationOkEsipa", ok)
        )
    if function == "authenticateClient":
        if failure is not None:
            return encode_to_ipa(
                "authenticateClientResponseEsipa", ("authenticateClientErrorEsipa", UNDEFINED)
            )
        ok = {
            "smdpSigned2": decode("SmdpSigned2", unb64(answer["smdpSigned2"], "smdpSigned2")),
            "smdpSignature2": untlv(
                unb64(answer["smdpSignature2"], "smdpSignature2"), SIGNATURE_TAG, "smdpSignature2"
            ),
            "smdpCertificate": decode(
                "Certificate", unb64(answer["smdpCertificate"], "smdpCertificate")
            ),
        }
        if tid is not None:
            ok["transactionId"] = tid
        if "profileMetadata" in answer:
            ok["profileMetaData"] = decode(
                "StoreMetadataRequest", unb64(answer["profileMetadata"], "profileMetadata")
            )
        return encode_to_ipa("authenticateClientResponseEsipa", ("authenticateClientOkDPEsipa", ok))
    if function == "getBoundProfilePackage":
        if failure is not None:
            return encode_to_ipa(
                "getBoundProfilePackageResponseEsipa",
                ("getBoundProfilePackageErrorEsipa", UNDEFINED),
            )
        bpp = decode(
            "BoundProfilePackage", unb64(answer["boundProfilePackage"], "boundProfilePackage")
        )
        ok = {"boundProfilePackage": bpp}
        if tid is not None:
            ok["transactionId"] = tid
        return encode_to_ipa(
            "getBoundProfilePackageResponseEsipa", ("getBoundProfilePackageOkEsipa", ok)
        )
    if function == "cancelSession":
        value: tuple[str, Any] = (
            ("cancelSessionError", UNDEFINED) if failure else ("cancelSessionOk", {})
        )
        return encode_to_ipa("cancelSessionResponseEsipa", value)
    raise Es9Error(f"ES9+ function {function} is not relayed")


# ---- eIM-side data handling for the IPA (SGP.32 ipaFeatures eimCtxParams1Generation,
# minimizeEsipaBytes): ctxParams1 made by the eIM, compact AuthenticateServerResponse expanded


EIM_CTX_PARAMS1_GENERATION = 3
"""IpaCapabilities.ipaFeatures bit: the IPA wants the eIM to generate ctxParams1."""


@dataclass(frozen=True)
class EuiccContext:
    """What the eIM knows of the eUICC of a download: its certificates (from the import) and
    the last IpaEuiccData its IPA sent (asn1tools value; None: never asked)."""

    euicc_certificate: bytes
    eum_certificate: bytes
    ipa_data: dict[str, Any] | None = None


def _has_bit(bits: Any, number: int) -> bool:
    data, length = bits
    return number < length and bool(data[number // 8] & (0x80 >> (number % 8)))


MINIMIZE_ESIPA_BYTES = 5
"""IpaCapabilities.ipaFeatures bit: the IPA sends compact forms and wants lean answers."""


def minimizes_esipa_bytes(context: EuiccContext | None) -> bool:
    """Whether the eUICC's IPA declared minimizeEsipaBytes in its last IpaEuiccData."""
    data = context.ipa_data if context is not None else None
    if data is None or "ipaCapabilities" not in data:
        return False
    return _has_bit(data["ipaCapabilities"]["ipaFeatures"], MINIMIZE_ESIPA_BYTES)


def without_transaction_id(answer: bytes) -> bytes:
    """An ESipa answer of the relay without its optional transactionId (SGP.32 6.3: for an
    IPA with minimizeEsipaBytes; the IPA has it from serverSigned1 and keeps it for the
    session). Error alternatives and answers without one come back unchanged."""
    message = decode_from_eim(answer)
    kind, value = message.body
    if not isinstance(value, dict) or "transactionId" not in value:
        return answer
    lean = {k: v for k, v in value.items() if k != "transactionId"}
    return encode_to_ipa(message.name, (kind, lean))


def euicc_info1_of(context: EuiccContext | None) -> Any | None:
    """EUICCInfo1 for an InitiateAuthentication whose IPA left it out (SGP.32: optional in
    ESipa, mandatory in ES9+): the one of the IPA's last IpaEuiccData, else the same three
    fields of its EUICCInfo2. None: the eIM has neither."""
    data = context.ipa_data if context is not None else None
    if data is None:
        return None
    if "euiccInfo1" in data:
        return data["euiccInfo1"]
    info2 = data.get("euiccInfo2")
    if info2 is None:
        return None
    return {
        k: info2[k] for k in ("svn", "euiccCiPKIdListForVerification", "euiccCiPKIdListForSigning")
    }


def smdp_address_of(activation_code: str | None) -> str | None:
    """The SM-DP+ address of an activation code ``1$address$...`` (None: none)."""
    parts = (activation_code or "").split("$")
    return parts[1] if len(parts) >= 2 and parts[1] else None


def matching_id_of(activation_code: str | None) -> str | None:
    """The matching ID of an activation code ``1$address$matchingId[$...]`` (None: none)."""
    parts = (activation_code or "").split("$")
    return parts[2] if len(parts) >= 3 and parts[2] else None


def ctx_params1_for(activation_code: str | None, context: EuiccContext | None) -> Any | None:
    """CtxParams1 the eIM generates (ctxParamsForCommonAuthentication: the matching ID of
    the trigger's activation code, the DeviceInfo from the IPA's IpaEuiccData) -- only when
    the IPA declared eimCtxParams1Generation in its IpaCapabilities; None otherwise."""
    data = context.ipa_data if context is not None else None
    if data is None or "deviceInfo" not in data or "ipaCapabilities" not in data:
        return None
    if not _has_bit(data["ipaCapabilities"]["ipaFeatures"], EIM_CTX_PARAMS1_GENERATION):
        return None
    params: dict[str, Any] = {"deviceInfo": data["deviceInfo"]}
    matching = matching_id_of(activation_code)
    if matching is not None:
        params["matchingId"] = matching
    return ("ctxParamsForCommonAuthentication", params)


def expand_authenticate_response(
    value: dict[str, Any],
    *,
    transaction_id: bytes,
    server_address: str | None,
    server_challenge: bytes | None,
    ctx_params1: Any | None,
    context: EuiccContext | None,
) -> tuple[str, Any]:
    """The SGP.22 authenticateResponseOk for a compactAuthenticateResponseOk from the IPA:
    certificates the IPA left out come from the eUICC's registered chain; a
    compactEuiccSigned1 becomes the EuiccSigned1 the eUICC signed -- transactionId,
    serverAddress and serverChallenge of this session, the EUICCInfo2 of the IPA's
    IpaEuiccData with the compact extCardResource put in, and the ctxParams1 the IPA sent
    or else the one the eIM generated. Raises :class:`Es9Error` naming what is missing."""
    kind, signed = value["signedData"]
    if kind == "euiccSigned1":
        euicc_signed1 = signed
    else:
        if server_address is None or server_challenge is None:
            raise Es9Error("compactEuiccSigned1: the session has no serverSigned1 to rebuild from")
        data = context.ipa_data if context is not None else None
        if data is None or "euiccInfo2" not in data:
            raise Es9Error(
                "compactEuiccSigned1: the eIM has no EUICCInfo2 of this eUICC (queue an "
                "IpaEuiccDataRequest first)"
            )
        params = signed.get("ctxParams1", ctx_params1)
        if params is None:
            raise Es9Error("compactEuiccSigned1 without ctxParams1, and the eIM generated none")
        info2 = dict(data["euiccInfo2"])
        info2["extCardResource"] = signed["extCardResource"]
        euicc_signed1 = {
            "transactionId": transaction_id,
            "serverAddress": server_address,
            "serverChallenge": server_challenge,
            "euiccInfo2": info2,
            "ctxParams1": params,
        }
    certificates = {}
    for field, known in (
        ("euiccCertificate", context.euicc_certificate if context else None),
        ("eumCertificate", context.eum_certificate if context else None),
    ):
        if field in value:
            certificates[field] = value[field]
        elif known is not None:
            certificates[field] = decode("Certificate", known)
        else:
            raise Es9Error(f"compact AuthenticateServerResponse: no {field} for this eUICC")
    return (
        "authenticateResponseOk",
        {
            "euiccSigned1": euicc_signed1,
            "euiccSignature1": value["euiccSignature1"],
            **certificates,
        },
    )


def smdp_oid_of(certificate_der: bytes) -> str | None:
    """The SM-DP+ OID of an RSP server certificate: its subjectAltName registeredID (SGP.22
    4.5.2.1; the smdpOid the eUICC signs in euiccCancelSessionSigned). None: the certificate
    has none, or does not parse."""
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return None
    for oid in names.value.get_values_for_type(x509.RegisteredID):
        return oid.dotted_string
    return None


def expand_prepare_download_response(
    value: dict[str, Any], *, transaction_id: bytes, bpp_euicc_otpk: bytes | None
) -> tuple[str, Any]:
    """The SGP.22 downloadResponseOk for a compactDownloadResponseOk from the IPA:
    EUICCSigned2 = the session's transactionId, the euiccOtpk the IPA sent -- or, when the
    eUICC reused the one the SM-DP+ named in smdpSigned2.bppEuiccOtpk, that one -- and the
    hashCc the IPA sent (the eIM hands out none: eimDownloadDataHandling is not done here).
    The field order is EUICCSigned2's, so the DER is the one the eUICC signed. Raises
    :class:`Es9Error` when the otPK is known from neither side."""
    small = value["compactEuiccSigned2"]
    otpk = small.get("euiccOtpk", bpp_euicc_otpk)
    if otpk is None:
        raise Es9Error(
            "compactEuiccSigned2 without euiccOtpk, and the SM-DP+ named no bppEuiccOtpk in "
            "this session"
        )
    signed2: dict[str, Any] = {"transactionId": transaction_id, "euiccOtpk": otpk}
    if "hashCc" in small:
        signed2["hashCc"] = small["hashCc"]
    return (
        "downloadResponseOk",
        {"euiccSigned2": signed2, "euiccSignature2": value["euiccSignature2"]},
    )


def expand_cancel_session_response(
    value: dict[str, Any], *, transaction_id: bytes, smdp_oid: str | None
) -> tuple[str, Any]:
    """The SGP.22 cancelSessionResponseOk for a compactCancelSessionResponseOk from the IPA:
    euiccCancelSessionSigned = the session's transactionId, the smdpOid of the SM-DP+'s
    CERT.DPauth (kept from InitiateAuthentication) and the reason the IPA sent. A compact form
    without a reason is one the IPA may send only when the eIM gave the reason itself
    (eimProfileMetadataVerification, not done here), so it is refused like a missing smdpOid:
    :class:`Es9Error`, and nothing half-built goes to the SM-DP+."""
    if smdp_oid is None:
        raise Es9Error(
            "compact CancelSession: the SM-DP+'s certificate named no smdpOid (subjectAltName "
            "registeredID) to rebuild euiccCancelSessionSigned with"
        )
    reason = value["compactEuiccCancelSessionSigned"].get("reason")
    if reason is None:
        raise Es9Error("compact CancelSession without a reason: the eIM gave none to put back")
    return (
        "cancelSessionResponseOk",
        {
            "euiccCancelSessionSigned": {
                "transactionId": transaction_id,
                "smdpOid": smdp_oid,
                "reason": reason,
            },
            "euiccCancelSessionSignature": value["euiccCancelSessionSignature"],
        },
    )
