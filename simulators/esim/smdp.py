"""A small SM-DP+ for tests: ES9+ over HTTPS (SGP.22 6.5: JSON, base64 data objects with their
tags) -- initiateAuthentication, authenticateClient, getBoundProfilePackage, handleNotification,
cancelSession -- signing with a key and certificate issued by the test CI.

`LoopbackSmdp` is the sans-IO core (one dict per session, time passed in); `SmdpServer` runs it with
uvicorn on a socket the caller binds (port 0 on 127.0.0.1 in tests). What it checks as an
SM-DP+ does: the eUICC's certificate chain to the CI and euiccSignature1 (over euiccSigned1),
the server challenge and transaction id, euiccSignature2 (over euiccSigned2 || smdpSignature2),
the matching id of a prepared profile. What it does not do (a test double, see
`simulators.esim.download`): SCP03t -- the bound profile package carries the profile's metadata
in the clear and a placeholder for the profile elements; one key and certificate stand for
both CERT.DPauth and CERT.DPpb.

HTTP as a real SM-DP+ does it (osmo-smdpp's validate_request_headers/set_headers, SGP.22 6.5.1):
a request whose Content-Type is not application/json, or whose X-Admin-Protocol is not
``gsma/rsp/v...``, fails with 1.2.1/1.2.2 (status "Failed", HTTP 200); answers carry
``Content-Type: application/json;charset=UTF-8`` and ``X-Admin-Protocol: gsma/rsp/v2.1.0``;
handleNotification is answered 204 No Content; initiateAuthentication without euiccInfo1 fails.
Each request's function and headers are kept (`SmdpServer.requests`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.asn1 import decode, encode
from sgp32.certificates import verify_euicc_chain
from sgp32.errors import Sgp32Error, SignatureInvalid
from sgp32.identifiers import iccid_to_bytes
from sgp32.signing import sign_raw, verify_raw
from simulators.esim.download import (
    TEST_SMDP_OID,
    encode_cancel_session_signed,
    encode_euicc_signed2,
    encode_init_unsigned,
    sig_tlv,
)

ES9_PATH = "/gsma/rsp2/es9plus/"
ADMIN_PROTOCOL = "gsma/rsp/v2.1.0"
RESPONSE_HEADERS = {
    "Content-Type": "application/json;charset=UTF-8",
    "X-Admin-Protocol": ADMIN_PROTOCOL,
}


@dataclass(frozen=True)
class PreparedProfile:
    """A profile ordered for download (ES2+ DownloadOrder + ConfirmOrder, done beforehand)."""

    matching_id: str
    iccid: str
    carrier: str
    name: str = "test profile"


@dataclass
class _Session:
    euicc_challenge: bytes
    server_challenge: bytes
    created: float
    matching_id: str | None = None
    eid: str | None = None
    euicc_key: ec.EllipticCurvePublicKey | None = None
    smdp_signature2: bytes = b""
    done: bool = False
    bpp_euicc_otpk: bytes | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ok(**fields: Any) -> dict[str, Any]:
    return {"header": {"functionExecutionStatus": {"status": "Executed-Success"}}, **fields}


def _failed(subject: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "header": {
            "functionExecutionStatus": {
                "status": "Failed",
                "statusCodeData": {
                    "subjectCode": subject,
                    "reasonCode": reason,
                    "message": message,
                },
            }
        }
    }


@dataclass
class LoopbackSmdp:
    address: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    ci: x509.Certificate
    profiles: dict[str, PreparedProfile] = field(default_factory=dict)
    sessions: dict[bytes, _Session] = field(default_factory=dict)
    notifications: list[bytes] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    bound: dict[tuple[str, str], bytes] = field(default_factory=dict)
    """(matching ID, EID) -> the eUICC otPK a package was bound to: that eUICC's retry names
    it in smdpSigned2.bppEuiccOtpk (SGP.22 3.1.3.2) and must be signed with it."""
    cancelled: list[tuple[bytes, int]] = field(default_factory=list)
    """(transactionId, reason) of every verified CancelSession."""
    #: The time certificates are checked at (tests with a fixed-date PKI pass theirs).
    at: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def prepare(self, profile: PreparedProfile) -> str:
        """Order a profile; the activation code an operator hands to the eIM."""
        self.profiles[profile.matching_id] = profile
        return f"1${self.address}${profile.matching_id}"

    def _cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def handle(self, function: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        """One ES9+ call; never raises for what the caller sent (an ES9+ failure instead)."""
        self.calls.append(function)
        try:
            if function == "initiateAuthentication":
                return self._initiate(body, now)
            if function == "authenticateClient":
                return self._authenticate(body)
            if function == "getBoundProfilePackage":
                return self._bpp(body)
            if function == "handleNotification":
                self.notifications.append(base64.b64decode(body["pendingNotification"]))
                return _ok()  # SmdpServer: 204 No Content
            if function == "cancelSession":
                return self._cancel(body)
        except (KeyError, ValueError, TypeError, Sgp32Error) as exc:
            return _failed("8.1", "2.1", f"{function}: malformed request ({exc})")
        return _failed("8.1", "1.1", f"unknown function {function}")

    def oid(self) -> str:
        """This SM-DP+'s OID: its certificate's subjectAltName registeredID."""
        try:
            names = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
            found = names.get_values_for_type(x509.RegisteredID)
        except x509.ExtensionNotFound:
            found = []
        return found[0].dotted_string if found else TEST_SMDP_OID

    def _cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        """ES9+ CancelSession (SGP.22 5.6.5): euiccCancelSessionSignature verified over
        euiccCancelSessionSigned -- this transactionId and this SM-DP+'s OID -- with the key
        of the eUICC that authenticated in the session."""
        tid, session = self._session(body)
        if session is None:
            return _failed("8.10.1", "3.9", "unknown transactionId")
        kind, value = decode(
            "CancelSessionResponse", base64.b64decode(body["cancelSessionResponse"])
        )
        if kind != "cancelSessionResponseOk":
            return _failed("8.1", "6.1", f"not a signed cancellation: {kind}")
        signed = value["euiccCancelSessionSigned"]
        if signed["transactionId"] != tid or signed["smdpOid"] != self.oid():
            return _failed("8.1", "6.1", "transactionId or smdpOid does not match")
        if session.euicc_key is None:
            return _failed("8.1", "6.1", "no authenticated eUICC in this session")
        try:
            verify_raw(
                session.euicc_key,
                encode_cancel_session_signed(signed),
                value["euiccCancelSessionSignature"],
                "euiccCancelSessionSignature",
            )
        except SignatureInvalid as exc:
            return _failed("8.1", "6.1", str(exc))
        self.sessions.pop(tid, None)
        self.cancelled.append((tid, signed["reason"]))
        return _ok()

    def _session(self, body: dict[str, Any]) -> tuple[bytes, _Session | None]:
        tid = bytes.fromhex(body["transactionId"])
        return tid, self.sessions.get(tid)

    def _initiate(self, body: dict[str, Any], now: float) -> dict[str, Any]:
        if body.get("smdpAddress") != self.address:
            return _failed("8.8.1", "3.8", f"this is {self.address}, not {body.get('smdpAddress')}")
        decode("EUICCInfo1", base64.b64decode(body["euiccInfo1"]))  # mandatory in ES9+
        tid = os.urandom(16)
        session = _Session(base64.b64decode(body["euiccChallenge"]), os.urandom(16), now)
        self.sessions[tid] = session
        signed1 = {
            "transactionId": tid,
            "euiccChallenge": session.euicc_challenge,
            "serverAddress": self.address,
            "serverChallenge": session.server_challenge,
        }
        der = encode("ServerSigned1", signed1)
        try:
            ski = self.ci.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            ski = x509.SubjectKeyIdentifier.from_public_key(self.ci.public_key()).digest
        return _ok(
            transactionId=tid.hex().upper(),
            serverSigned1=_b64(der),
            serverSignature1=_b64(sig_tlv(sign_raw(self.key, der))),
            euiccCiPKIdToBeUsed=_b64(b"\x04" + bytes([len(ski)]) + ski),
            serverCertificate=_b64(self._cert_der()),
        )

    def _authenticate(self, body: dict[str, Any]) -> dict[str, Any]:
        tid, session = self._session(body)
        if session is None:
            return _failed("8.10.1", "3.9", "unknown transactionId")
        kind, value = decode(
            "AuthenticateServerResponse", base64.b64decode(body["authenticateServerResponse"])
        )
        if kind != "authenticateResponseOk":
            return _failed("8.1", "6.1", f"the eUICC refused: {value}")
        signed1 = value["euiccSigned1"]
        euicc_der = encode("Certificate", value["euiccCertificate"])
        eum_der = encode("Certificate", value["eumCertificate"])
        try:
            verified = verify_euicc_chain(euicc_der, eum_der, [self.ci], self.at())
            key = verified.certificate.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            verify_raw(key, encode("EuiccSigned1", signed1), value["euiccSignature1"], "sig1")
        except (Sgp32Error, SignatureInvalid) as exc:
            return _failed("8.1.2", "6.1", f"eUICC authentication failed: {exc}")
        if (
            signed1["transactionId"] != tid
            or signed1["serverChallenge"] != session.server_challenge
        ):
            return _failed("8.1", "6.1", "serverChallenge or transactionId does not match")
        matching = signed1["ctxParams1"][1].get("matchingId")
        profile = self.profiles.get(matching or "")
        if profile is None:
            return _failed("8.2.6", "3.8", f"no profile prepared for matching id {matching!r}")
        session.matching_id, session.eid, session.euicc_key = matching, verified.eid, key
        signed2: dict[str, Any] = {"transactionId": tid, "ccRequiredFlag": False}
        rebind = self.bound.get((profile.matching_id, verified.eid))
        if rebind is not None:  # a retry of this eUICC: bind to the same otPK again
            signed2["bppEuiccOtpk"] = session.bpp_euicc_otpk = rebind
        signed2_der = encode("SmdpSigned2", signed2)
        session.smdp_signature2 = sign_raw(
            self.key, signed2_der + sig_tlv(value["euiccSignature1"])
        )
        metadata = {
            "iccid": iccid_to_bytes(profile.iccid),
            "serviceProviderName": profile.carrier,
            "profileName": profile.name,
        }
        return _ok(
            transactionId=tid.hex().upper(),
            profileMetadata=_b64(encode("StoreMetadataRequest", metadata)),
            smdpSigned2=_b64(signed2_der),
            smdpSignature2=_b64(sig_tlv(session.smdp_signature2)),
            smdpCertificate=_b64(self._cert_der()),
        )

    def _bpp(self, body: dict[str, Any]) -> dict[str, Any]:
        tid, session = self._session(body)
        if session is None or session.euicc_key is None or session.matching_id is None:
            return _failed("8.10.1", "3.9", "unknown transactionId")
        kind, value = decode(
            "PrepareDownloadResponse", base64.b64decode(body["prepareDownloadResponse"])
        )
        if kind != "downloadResponseOk":
            return _failed("8.1", "6.1", f"the eUICC refused: {value}")
        signed = value["euiccSigned2"]
        data = encode_euicc_signed2(signed) + sig_tlv(session.smdp_signature2)
        try:
            verify_raw(session.euicc_key, data, value["euiccSignature2"], "euiccSignature2")
        except SignatureInvalid as exc:
            return _failed("8.1", "6.1", str(exc))
        if session.bpp_euicc_otpk is not None and signed["euiccOtpk"] != session.bpp_euicc_otpk:
            return _failed("8.2.7", "3.8", "bppRebindingRefused: another otPK than bound before")
        profile = self.profiles[session.matching_id]
        self.bound[(profile.matching_id, session.eid or "")] = signed["euiccOtpk"]
        otpk = ec.generate_private_key(ec.SECP256R1()).public_key()
        init = {
            "remoteOpId": 1,
            "transactionId": tid,
            "controlRefTemplate": {"keyType": b"\x88", "keyLen": b"\x10", "hostId": b"TESTSMDP"},
            "smdpOtpk": otpk.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            ),
        }
        init["smdpSign"] = sign_raw(self.key, encode_init_unsigned(init))
        metadata = {
            "iccid": iccid_to_bytes(profile.iccid),
            "serviceProviderName": profile.carrier,
            "profileName": profile.name,
        }
        bpp = {
            "initialiseSecureChannelRequest": init,
            "firstSequenceOf87": [b"configureISDP (simulated)"],
            "sequenceOf88": [encode("StoreMetadataRequest", metadata)],
            "sequenceOf86": [b"profile elements (simulated, not SCP03t)"],
        }
        session.done = True
        return _ok(
            transactionId=tid.hex().upper(),
            boundProfilePackage=_b64(encode("BoundProfilePackage", bpp)),
        )


class SmdpServer:
    """`LoopbackSmdp` over HTTPS (uvicorn on a socket bound here; port 0: any free port)."""

    def __init__(self, smdp: LoopbackSmdp, certificate: Path, key: Path) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.smdp = smdp
        #: (function, request headers with lower-case names) of every request, in order.
        self.requests: list[tuple[str, dict[str, str]]] = []

        def answer(body: dict[str, Any]) -> Response:
            return Response(json.dumps(body), media_type=None, headers=RESPONSE_HEADERS)

        async def es9(request: Request) -> Response:
            function = request.path_params["function"]
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append((function, headers))
            if not headers.get("content-type", "").startswith("application/json"):
                return answer(_failed("1.2.1", "2.1", "Invalid Content-Type header"))
            admin = headers.get("x-admin-protocol")
            if admin is not None and not admin.startswith("gsma/rsp/v"):
                return answer(_failed("1.2.2", "2.1", "Unsupported X-Admin-Protocol version"))
            try:
                body = json.loads(await request.body())
            except ValueError:
                return answer(_failed("8.1", "2.1", "body is not JSON"))
            result = smdp.handle(function, body, asyncio.get_running_loop().time())
            executed = result["header"]["functionExecutionStatus"]["status"] == "Executed-Success"
            if function == "handleNotification" and executed:
                return Response(status_code=204, headers={"X-Admin-Protocol": ADMIN_PROTOCOL})
            return answer(result)

        app = Starlette(routes=[Route(ES9_PATH + "{function}", es9, methods=["POST"])])
        self._config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=str(certificate),
            ssl_keyfile=str(key),
        )
        self._server = uvicorn.Server(self._config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        self.port = int(sock.getsockname()[1])
        self._config.load()
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)


def client_ssl(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))
