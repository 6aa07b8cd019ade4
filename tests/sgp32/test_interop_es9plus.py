"""The eIM's ES9+ relay (indirect download) against what independently written SM-DP+s require
and answer, over real sockets (TLS on 127.0.0.1, port 0).

* osmo-smdpp (osmocom/pysim ``osmo-smdpp.py``): ``validate_request_headers`` refuses a
  Content-Type not starting ``application/json`` and an X-Admin-Protocol not starting
  ``gsma/rsp/v``; ``initiateAutentication`` reads ``content['euiccInfo1']`` (mandatory) and
  compares ``smdpAddress`` to its host name; transactionIds are ``uuid4().hex.upper()`` looked
  up as strings; errors are ``ApiError.encode()`` -- HTTP 200 with only a header whose
  functionExecutionStatus is ``Failed`` with statusCodeData; ``handleNotification`` returns
  ``None`` -> HTTP 200 with ``{"header": {... "Executed-Success"}}`` (not 204); answers carry
  ``Content-Type: application/json;charset=UTF-8`` and ``X-Admin-Protocol: gsma/rsp/v2.1.0``.
* onomondo-eim (``src/es9p_client.erl``, an eIM's own ES9+ client): sends
  ``Content-Type: application/json;charset=UTF-8`` and ``X-Admin-Protocol: gsma/rsp/v2.1.0``,
  takes 204 and an empty 200 for handleNotification.
* pySim ``pySim/esim/es9p.py``: the ES9+ client's ``User-Agent: gsma-rsp-lpad``; euiccChallenge,
  euiccInfo1 and smdpAddress all mandatory for initiateAuthentication.

The canned SM-DP+ here answers with the bytes osmo-smdpp produces; the full download runs
against :class:`simulators.esim.smdp.SmdpServer`, which now checks headers like osmo-smdpp.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lifecycle.esim import EsimComponent
from lwm2m.store import Store
from sgp32.asn1 import decode, decode_from_eim, encode
from sgp32.eim.schema import create_schema
from sgp32.eim.sessions import SqlSessions
from sgp32.eim.sql import EimStore
from sgp32.es9plus import EuiccContext
from sgp32.esipa.https import EsipaHttpsServer, server_ssl_context
from sgp32.esipa.relay import Es9Relay, TriggerOrigin
from simulators.esim.download import Es10bDownload
from simulators.esim.https import HttpsIpa, client_for
from simulators.esim.smdp import PreparedProfile, SmdpServer
from tests.sgp32.pki import MadePki
from tests.sgp32.test_indirect_download import NEW_ICCID, make_smdp
from tests.sgp32.tls import client_context, make_tls
from tests.sgp32.world import OLD_CARRIER, T0, make_world

# osmo-smdpp.py set_headers()
OSMO_HEADERS = (
    b"Content-Type: application/json;charset=UTF-8\r\nX-Admin-Protocol: gsma/rsp/v2.1.0\r\n"
)
SUCCESS = {"header": {"functionExecutionStatus": {"status": "Executed-Success"}}}
INFO1 = {
    "svn": b"\x02\x01\x00",
    "euiccCiPKIdListForVerification": [b"\x11" * 20],
    "euiccCiPKIdListForSigning": [b"\x11" * 20],
}


def osmo_error(subject: str, reason: str, message: str) -> dict[str, Any]:
    """osmo-smdpp ApiError(subject, reason, message).encode()."""
    status = {"subjectCode": subject, "reasonCode": reason, "message": message}
    return {"header": {"functionExecutionStatus": {"status": "Failed", "statusCodeData": status}}}


@dataclass
class Seen:
    method: bytes
    target: bytes
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class CannedSmdp:
    """An HTTPS listener that answers each function with raw bytes given per test."""

    answers: dict[str, bytes]
    seen: list[Seen] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                method, target, _ = lines[0].split(b" ")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                self.seen.append(Seen(method, target, headers, body))
                function = target.decode().rsplit("/", 1)[1]
                writer.write(self.answers[function])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def http_200(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (
        b"HTTP/1.1 200 OK\r\n"
        + OSMO_HEADERS
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


@asynccontextmanager
async def canned(
    tmp_path: Path, answers: dict[str, bytes], context: EuiccContext | None = None
) -> AsyncIterator[tuple[Es9Relay, CannedSmdp, str]]:
    cert, key, ca = make_tls(tmp_path)
    smdp = CannedSmdp(answers)
    server = await asyncio.start_server(
        smdp.serve, "127.0.0.1", 0, ssl=server_ssl_context(cert, key)
    )
    port = server.sockets[0].getsockname()[1]

    async def known(eid: str) -> EuiccContext | None:
        return context

    relay = Es9Relay(client_context(ca), context=known)
    try:
        yield relay, smdp, f"127.0.0.1:{port}"
    finally:
        await relay.aclose()
        server.close()
        await server.wait_closed()


def test_requests_carry_what_osmo_smdpp_and_sgp22_require(tmp_path: Path) -> None:
    """An initiateAuthentication osmo-smdpp refuses (its ApiError bytes): the request had the
    JSON headers, gsma/rsp/v2.1.0, gsma-rsp-lpad and all three mandatory fields; the Failed
    status becomes the ESipa error and its codes are kept for the audit."""
    answers = {"initiateAuthentication": http_200(osmo_error("8.8.1", "3.8", "Invalid SM-DP+"))}

    async def main() -> tuple[bytes, CannedSmdp, Es9Relay, str]:
        async with canned(tmp_path, answers) as (relay, smdp, address):
            body = {"euiccChallenge": b"\x42" * 16, "smdpAddress": address, "euiccInfo1": INFO1}
            answer = await relay.relay("initiateAuthenticationRequestEsipa", body)
            return answer, smdp, relay, address

    answer, smdp, relay, address = asyncio.run(main())
    (request,) = smdp.seen
    assert (request.method, request.target) == (
        b"POST",
        b"/gsma/rsp2/es9plus/initiateAuthentication",
    )
    assert request.headers[b"content-type"] == b"application/json;charset=UTF-8"
    assert request.headers[b"x-admin-protocol"] == b"gsma/rsp/v2.1.0"
    assert request.headers[b"user-agent"].startswith(b"gsma-rsp-lpad")
    assert request.headers[b"host"] == address.encode()
    sent = request.json()
    assert set(sent) == {"euiccChallenge", "euiccInfo1", "smdpAddress"}
    assert base64.b64decode(sent["euiccChallenge"], validate=True) == b"\x42" * 16
    assert decode("EUICCInfo1", base64.b64decode(sent["euiccInfo1"], validate=True)) == INFO1
    assert sent["smdpAddress"] == address
    message = decode_from_eim(answer)
    assert message.body == ("initiateAuthenticationErrorEsipa", 127)
    assert relay.calls[-1].failure == "8.8.1/3.8: Invalid SM-DP+"


def test_what_esipa_left_out_is_filled_in_before_es9(tmp_path: Path) -> None:
    """SGP.32 lets the IPA leave out smdpAddress and euiccInfo1; ES9+ (and osmo-smdpp) needs
    both: the address comes from the trigger's activation code, EUICCInfo1 from the eUICC's
    IpaEuiccData (here: its EUICCInfo2). Without IpaEuiccData nothing is sent at all."""
    info2 = {**INFO1, "svn": b"\x02\x03\x00", "profileVersion": b"\x02\x01\x00"}
    context = EuiccContext(b"", b"", {"euiccInfo2": info2})
    answers = {"initiateAuthentication": http_200(osmo_error("8.8.1", "3.8", "refused"))}

    async def main(ctx: EuiccContext | None, folder: Path) -> tuple[bytes, CannedSmdp]:
        folder.mkdir()
        async with canned(folder, answers, ctx) as (relay, smdp, address):
            origin = TriggerOrigin(b"\x01" * 16, "89" + "0" * 30, f"1${address}$MATCH-1")
            body = {"euiccChallenge": b"\x42" * 16}
            answer = await relay.relay("initiateAuthenticationRequestEsipa", body, origin)
            return answer, smdp

    _, smdp = asyncio.run(main(context, tmp_path / "known"))
    (request,) = smdp.seen
    sent = request.json()
    assert sent["smdpAddress"].startswith("127.0.0.1:")
    info1 = decode("EUICCInfo1", base64.b64decode(sent["euiccInfo1"]))
    assert info1 == {k: info2[k] for k in INFO1}
    answer, smdp = asyncio.run(main(None, tmp_path / "unknown"))
    assert smdp.seen == []  # no half-built request to the SM-DP+
    assert decode_from_eim(answer).body == ("initiateAuthenticationErrorEsipa", 127)


def test_handle_notification_answers_as_real_smdps_give_them(tmp_path: Path) -> None:
    """204 (SGP.22), an osmo-smdpp 200 with an Executed-Success header, an empty 200 (what
    onomondo-eim tolerates) are taken; a 200 Failed header and an HTTP error are refusals."""
    cases = {
        "204": (b"HTTP/1.1 204 No Content\r\nX-Admin-Protocol: gsma/rsp/v2.1.0\r\n\r\n", True),
        "osmo 200": (http_200(SUCCESS), True),
        "empty 200": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        "failed": (http_200(osmo_error("8.1", "6.1", "Verification failed")), False),
        "500": (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n"
            b"Content-Length: 13\r\n\r\n<html></html>",
            False,
        ),
    }

    async def main() -> dict[str, tuple[bool, str | None, Seen]]:
        results = {}
        for n, (name, (raw, _)) in enumerate(cases.items()):
            folder = tmp_path / str(n)
            folder.mkdir()
            async with canned(folder, {"handleNotification": raw}) as (relay, smdp, address):
                ok = await relay.notify(address, b"\xbf\x37\x03\x80\x01\x00")
                results[name] = (ok, relay.calls[-1].failure, smdp.seen[0])
        return results

    results = asyncio.run(main())
    for name, (_, expected) in cases.items():
        ok, failure, request = results[name]
        assert ok is expected, (name, failure)
        assert request.headers[b"content-type"] == b"application/json;charset=UTF-8"
        assert request.json() == {"pendingNotification": "vzcDgAEA"}
    assert results["failed"][1] == "8.1/6.1: Verification failed"
    assert results["500"][1] == "HTTP 500"


def test_an_answer_with_mime_line_breaks_and_an_http_error_status(
    pki: MadePki, tmp_path: Path
) -> None:
    """Base64 split into 76-character lines (Java MIME encoders do that) decodes; an HTTP 500
    page for a function call is the ESipa undefinedError, not a crash."""
    real = make_smdp(pki, "smdp.example")
    good = real.handle(
        "initiateAuthentication",
        {
            "euiccChallenge": base64.b64encode(b"\x42" * 16).decode(),
            "euiccInfo1": base64.b64encode(encode("EUICCInfo1", INFO1)).decode(),
            "smdpAddress": "smdp.example",
        },
        0.0,
    )
    mime = {
        k: v
        if k in ("header", "transactionId")
        else base64.encodebytes(base64.b64decode(v)).decode()
        for k, v in good.items()
    }
    assert any("\n" in v for v in mime.values() if isinstance(v, str))
    answers = {
        "initiateAuthentication": http_200(mime),
        "authenticateClient": (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!"
        ),
    }

    async def main() -> tuple[bytes, bytes]:
        async with canned(tmp_path, answers) as (relay, _, address):
            first = await relay.relay(
                "initiateAuthenticationRequestEsipa",
                {"euiccChallenge": b"\x42" * 16, "smdpAddress": address, "euiccInfo1": INFO1},
            )
            tid = decode_from_eim(first).body[1]["serverSigned1"]["transactionId"]
            second = await relay.relay(
                "authenticateClientRequestEsipa",
                {
                    "transactionId": tid,
                    "authenticateServerResponse": (
                        "authenticateResponseError",
                        {
                            "transactionId": tid,
                            "authenticateErrorCode": 127,
                        },
                    ),
                },
            )
            return first, second

    first, second = asyncio.run(main())
    assert decode_from_eim(first).body[0] == "initiateAuthenticationOkEsipa"
    assert decode_from_eim(second).body == ("authenticateClientErrorEsipa", 127)


@pytest.mark.integration
def test_a_full_download_passes_the_stricter_loopback_smdp(
    pki: MadePki, store: Store, tmp_path: Path
) -> None:
    """The whole indirect download against SmdpServer (headers checked like osmo-smdpp,
    handleNotification answered 204): every ES9+ request carried the SGP.22 headers, and the
    installation result was taken."""
    world = make_world(pki)
    euicc, ipa = world.device(1, served={OLD_CARRIER, "Carrier C"})
    ipa.downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]

    async def main() -> tuple[list[tuple[str, dict[str, str]]], Es9Relay]:
        create_schema(store, now=0)
        eims = EimStore(store, world.eim)
        cert, key, ca = make_tls(tmp_path)
        smdp = make_smdp(world.pki, "")
        smdp_server = SmdpServer(smdp, cert, key)
        smdp.address = f"127.0.0.1:{await smdp_server.start()}"
        relay = Es9Relay(client_context(ca), sessions=SqlSessions(store))
        component = EsimComponent(eims, None, relay=relay)
        esipa = EsipaHttpsServer(component.handle, tls=server_ssl_context(cert, key))
        host, port = await esipa.start("127.0.0.1", 0)
        client = client_for(client_context(ca))
        try:
            code = smdp.prepare(PreparedProfile("MATCH-1", NEW_ICCID, "Carrier C"))
            await eims.register(
                euicc_certificate=euicc.certificate_der,
                eum_certificate=euicc.eum_certificate_der,
                now=T0,
                actor="alice",
            )
            await eims.queue_download(euicc.eid, code, now=T0, actor="alice")
            await HttpsIpa(ipa, client, f"https://{host}:{port}").settle(T0)
        finally:
            await client.aclose()
            await esipa.stop()
            await component.stop()
            await smdp_server.stop()
        await store.flush()
        return smdp_server.requests, relay

    requests, relay = asyncio.run(main())
    assert [f for f, _ in requests] == [
        "initiateAuthentication",
        "authenticateClient",
        "getBoundProfilePackage",
        "handleNotification",
    ]
    for _, headers in requests:
        assert headers["content-type"] == "application/json;charset=UTF-8"
        assert headers["x-admin-protocol"] == "gsma/rsp/v2.1.0"
        assert headers["user-agent"].startswith("gsma-rsp-lpad")
    assert [(c.function, c.failure) for c in relay.calls][-1] == ("handleNotification", None)
    assert euicc.profiles[NEW_ICCID].carrier == "Carrier C"
