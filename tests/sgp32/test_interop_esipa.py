"""The ESipa HTTPS ASN.1 binding against what independently written peers put on the wire.

Requests are written byte for byte from the peers' code, over TLS on 127.0.0.1 port 0, to the
real eIM core (a memory ledger) behind :class:`sgp32.esipa.https.EsipaHttpsServer`:

* onomondo-ipa (the IPAd of Onomondo/sysmocom), ``src/ipa/http.c`` ``ipa_http_req`` and
  ``include/onomondo/ipa/http_hdr.h``: libcurl POST to ``https://<eimFqdn>/gsma/rsp2/asn1``
  (``src/ipa/esipa.c``) with ``Accept:`` removed, ``User-Agent: gsma-rsp-ipad;
  Onomondo-IPAd/1.0.0``, ``X-Admin-Protocol: gsma/rsp/v2.1.0``, ``Content-Type:
  application/x-gsma-rsp-asn1``, one curl handle kept across requests (keep-alive); the answer
  is BER-decoded as EsipaMessageFromEimToIpa, an empty one is fine for HandleNotification.
* onomondo-eim (Erlang), ``src/esipa_asn1_http_handler.erl``: how an eIM answers -- 200 with
  ``content-type: application/x-gsma-rsp-asn1`` and ``x-admin-protocol: gsma/rsp/v2.1.0``.
* libcurl itself (the curl binary, when installed): ALPN offering h2, ``Expect: 100-continue``
  (older libcurl: on any body over 1 KiB).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sgp32.asn1 import decode_from_eim, encode_to_eim
from sgp32.eim import MemoryLedger
from sgp32.esipa.https import EsipaHttpsServer, server_ssl_context
from sgp32.identifiers import eid_to_bytes
from sgp32.packages import Enable
from simulators.esim.euicc import SimEuicc
from simulators.esim.ipa import SimIpa
from tests.sgp32.pki import MadePki
from tests.sgp32.tls import client_context, make_tls
from tests.sgp32.world import NEW_ICCID, T0, World, make_world

# include/onomondo/ipa/http_hdr.h (onomondo/onomondo-ipa)
ONOMONDO_USER_AGENT = b"gsma-rsp-ipad; Onomondo-IPAd/1.0.0"
ONOMONDO_ADMIN_PROTOCOL = b"gsma/rsp/v2.1.0"
ASN1 = b"application/x-gsma-rsp-asn1"


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    interim: list[int]


@dataclass
class Rig:
    world: World
    ledger: MemoryLedger
    euicc: SimEuicc
    ipa: SimIpa
    host: str
    port: int
    ca: Path
    server: EsipaHttpsServer

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            self.host, self.port, ssl=client_context(self.ca), server_hostname=self.host
        )

    def get_package_request(self) -> bytes:
        return encode_to_eim("getEimPackageRequest", {"eidValue": eid_to_bytes(self.euicc.eid)})


@asynccontextmanager
async def rig(pki: MadePki, tmp_path: Path) -> AsyncIterator[Rig]:
    world = make_world(pki)
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)

    async def handle(data: bytes, now: float) -> Any:
        return world.eim.handle(ledger, data, now)

    cert, key, ca = make_tls(tmp_path)
    server = EsipaHttpsServer(handle, tls=server_ssl_context(cert, key), clock=lambda: T0 + 1)
    host, port = await server.start("127.0.0.1", 0)
    try:
        yield Rig(world, ledger, euicc, ipa, host, port, ca, server)
    finally:
        await server.stop()


def libcurl_post(host: str, port: int, body: bytes, *, extra: bytes = b"") -> bytes:
    """The request libcurl builds for onomondo-ipa's ipa_http_req (src/ipa/http.c): POST with
    CURLOPT_POSTFIELDS/POSTFIELDSIZE, "Accept:" removed, its three headers in its order."""
    return (
        b"POST /gsma/rsp2/asn1 HTTP/1.1\r\n"
        + f"Host: {host}:{port}\r\n".encode()
        + b"User-Agent: "
        + ONOMONDO_USER_AGENT
        + b"\r\nX-Admin-Protocol: "
        + ONOMONDO_ADMIN_PROTOCOL
        + b"\r\nContent-Type: "
        + ASN1
        + b"\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.x response parsed by hand (interim 1xx skipped and noted)."""
    interim: list[int] = []
    while True:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head[:-4].split(b"\r\n")
        version, code = lines[0].split(b" ")[:2]
        assert version in (b"HTTP/1.1", b"HTTP/1.0")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            assert name.lower() not in headers, f"{name!r} twice"
            headers[name.lower()] = value.strip()
        status = int(code)
        if 100 <= status < 200:
            interim.append(status)
            continue
        if status == 204:
            return Answer(status, headers, b"", interim)
        length = int(headers[b"content-length"])
        body = await asyncio.wait_for(reader.readexactly(length), 30)
        return Answer(status, headers, body, interim)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> Answer:
    writer.write(request)
    await writer.drain()
    return await read_answer(reader)


def test_onomondo_ipad_requests_on_one_connection_200_then_204(
    pki: MadePki, tmp_path: Path
) -> None:
    """An Enable delivered to, and its result and notifications taken from, the simulated IPA
    -- every message sent with onomondo-ipa's libcurl request, all on one TLS connection."""

    async def main() -> list[tuple[str, Answer]]:
        async with rig(pki, tmp_path) as r:
            r.world.eim.queue(r.ledger, r.euicc.eid, [Enable(NEW_ICCID)], now=T0, actor="t")
            reader, writer = await r.connect()
            seen: list[tuple[str, Answer]] = []
            try:
                for _ in range(12):
                    sent = r.ipa.outgoing(T0 + 1)
                    assert sent is not None
                    answer = await exchange(reader, writer, libcurl_post(r.host, r.port, sent))
                    seen.append((sent[:2].hex(), answer))
                    r.ipa.incoming(sent, answer.body if answer.status == 200 else None, T0 + 1)
                    if answer.body and decode_from_eim(answer.body).body[0] == "eimPackageError":
                        break  # polled, and nothing is left
            finally:
                writer.close()
            assert r.server.exchanges == len(seen)
            return seen

    seen = asyncio.run(main())
    statuses = {tag: answer.status for tag, answer in seen}
    assert statuses["bf4f"] == 200  # GetEimPackage
    assert statuses["bf50"] == 200  # ProvideEimPackageResult
    assert statuses["bf3d"] == 204  # HandleNotification: nothing to answer
    for _, answer in seen:
        assert answer.headers[b"x-admin-protocol"] == ONOMONDO_ADMIN_PROTOCOL
        if answer.status == 200:
            # onomondo-eim's RESPONSE_HEADERS; the IPA BER-decodes the body
            assert answer.headers[b"content-type"] == ASN1
            assert decode_from_eim(answer.body).name
        else:
            assert answer.body == b""
            assert b"content-length" not in answer.headers
            assert b"content-type" not in answer.headers
        assert answer.interim == []
    assert r_enabled(seen)


def r_enabled(seen: list[tuple[str, Answer]]) -> bool:
    """The Enable went out (a euiccPackageRequest in a 200 answer)."""
    return any(a.body and decode_from_eim(a.body).body[0] == "euiccPackageRequest" for _, a in seen)


VARIANTS: dict[str, tuple[bytes, bytes | None]] = {
    # name: (request head up to the blank line, expected X-Admin-Protocol answer)
    "no X-Admin-Protocol, no Content-Type": (
        b"POST /gsma/rsp2/asn1 HTTP/1.1\r\nHost: eim\r\nContent-Length: {n}\r\n",
        b"gsma/rsp/v2.1.0",
    ),
    "a newer X-Admin-Protocol is echoed": (
        b"POST /gsma/rsp2/asn1 HTTP/1.1\r\nHost: eim\r\nX-Admin-Protocol: gsma/rsp/v2.5.0\r\n"
        b"Content-Type: application/x-gsma-rsp-asn1\r\nContent-Length: {n}\r\n",
        b"gsma/rsp/v2.5.0",
    ),
    "an odd X-Admin-Protocol is not echoed": (
        b"POST /gsma/rsp2/asn1 HTTP/1.1\r\nHost: eim\r\nX-Admin-Protocol: v2\r\n"
        b"Content-Length: {n}\r\n",
        b"gsma/rsp/v2.1.0",
    ),
    "content type with parameters, lower-case names": (
        b"POST /gsma/rsp2/asn1 HTTP/1.1\r\nhost: eim\r\nx-admin-protocol: gsma/rsp/v2.1.0\r\n"
        b"content-type: application/x-gsma-rsp-asn1; charset=binary\r\ncontent-length: {n}\r\n",
        b"gsma/rsp/v2.1.0",
    ),
    "application/octet-stream": (
        b"POST /gsma/rsp2/asn1 HTTP/1.1\r\nHost: eim\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: {n}\r\n",
        b"gsma/rsp/v2.1.0",
    ),
    "HTTP/1.0 without Host": (
        b"POST /gsma/rsp2/asn1 HTTP/1.0\r\nX-Admin-Protocol: gsma/rsp/v2.1.0\r\n"
        b"Content-Type: application/x-gsma-rsp-asn1\r\nContent-Length: {n}\r\n",
        b"gsma/rsp/v2.1.0",
    ),
    "absolute-form target with a trailing slash": (
        b"POST https://eim.example:443/gsma/rsp2/asn1/ HTTP/1.1\r\nHost: eim.example\r\n"
        b"Content-Length: {n}\r\n",
        b"gsma/rsp/v2.1.0",
    ),
    "chunked body": (
        b"POST /gsma/rsp2/asn1 HTTP/1.1\r\nHost: eim\r\nTransfer-Encoding: chunked\r\n"
        b"X-Admin-Protocol: gsma/rsp/v2.1.0\r\n",
        b"gsma/rsp/v2.1.0",
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_requests_are_served(variant: str, pki: MadePki, tmp_path: Path) -> None:
    head, admin = VARIANTS[variant]

    async def main() -> tuple[Answer, bytes]:
        async with rig(pki, tmp_path) as r:
            body = r.get_package_request()
            if b"chunked" in head:
                half = len(body) // 2
                wire = b"".join(
                    f"{len(part):x}\r\n".encode() + part + b"\r\n"
                    for part in (body[:half], body[half:])
                )
                request = head + b"\r\n" + wire + b"0\r\n\r\n"
            else:
                request = head.replace(b"{n}", str(len(body)).encode()) + b"\r\n" + body
            reader, writer = await r.connect()
            try:
                answer = await exchange(reader, writer, request)
                rest = await asyncio.wait_for(reader.read(), 30) if b"HTTP/1.0" in head else b""
            finally:
                writer.close()
            return answer, rest

    answer, rest = asyncio.run(main())
    assert answer.status == 200, answer.body
    assert answer.headers[b"content-type"] == ASN1
    assert answer.headers[b"x-admin-protocol"] == admin
    assert decode_from_eim(answer.body).name == "getEimPackageResponse"
    if b"HTTP/1.0" in head:
        assert rest == b""  # HTTP/1.0 without keep-alive: the eIM closed the connection


def test_expect_100_continue_is_answered_before_the_body(pki: MadePki, tmp_path: Path) -> None:
    """libcurl sends ``Expect: 100-continue`` for bodies over 1 KiB and waits (1 s by default)
    for the interim answer before the body; the eIM sends ``100 Continue`` at once."""

    async def main() -> Answer:
        async with rig(pki, tmp_path) as r:
            body = r.get_package_request()
            reader, writer = await r.connect()
            try:
                head = libcurl_post(r.host, r.port, b"", extra=b"Expect: 100-continue\r\n")
                head = head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
                writer.write(head)
                await writer.drain()
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                assert interim.startswith(b"HTTP/1.1 100 ")
                writer.write(body)
                await writer.drain()
                return await read_answer(reader)
            finally:
                writer.close()

    answer = asyncio.run(main())
    assert answer.status == 200
    assert decode_from_eim(answer.body).name == "getEimPackageResponse"


def test_errors_carry_the_admin_protocol_and_a_reason(pki: MadePki, tmp_path: Path) -> None:
    async def main() -> list[Answer]:
        async with rig(pki, tmp_path) as r:
            answers = []
            for request in (
                b"GET /gsma/rsp2/asn1 HTTP/1.1\r\nHost: eim\r\n\r\n",
                b"POST /gsma/rsp2/es9plus/x HTTP/1.1\r\nHost: eim\r\nContent-Length: 0\r\n\r\n",
                libcurl_post(r.host, r.port, b"\x30\x03\x02\x01\x01"),
            ):
                reader, writer = await r.connect()
                try:
                    answers.append(await exchange(reader, writer, request))
                finally:
                    writer.close()
            return answers

    get, other, garbage = asyncio.run(main())
    assert (get.status, get.headers[b"allow"]) == (405, b"POST")
    assert other.status == 404
    assert garbage.status == 400 and b"tag 30" in garbage.body
    for answer in (get, other, garbage):
        assert answer.headers[b"x-admin-protocol"] == b"gsma/rsp/v2.1.0"
        assert answer.headers[b"content-type"].startswith(b"text/plain")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the curl binary is not installed")
def test_the_curl_binary_with_onomondo_headers(pki: MadePki, tmp_path: Path) -> None:
    """The real libcurl with onomondo-ipa's header list: a GetEimPackageRequest answered 200
    over TLS (curl offers ALPN h2, the eIM picks http/1.1), and a 2 KiB body with ``Expect:
    100-continue`` (older libcurl sends it by itself for bodies over 1 KiB; newer ones only
    over 1 MiB, so it is asked for here) answered without curl waiting out its
    expect100-timeout (set above --max-time, so a missing 100 fails the request)."""
    request = tmp_path / "request.der"
    large = tmp_path / "large.der"
    large.write_bytes(b"\x30\x82\x08\x00" + b"\x00" * 2048)

    async def curl(r: Rig, data: Path, out: Path, *more: str) -> tuple[int, bytes, str]:
        process = await asyncio.create_subprocess_exec(
            "curl", "--verbose", "--cacert", str(r.ca),
            "--max-time", "20", "--expect100-timeout", "60",
            "-H", "Accept:",
            "-H", "User-Agent: " + ONOMONDO_USER_AGENT.decode(),
            "-H", "X-Admin-Protocol: " + ONOMONDO_ADMIN_PROTOCOL.decode(),
            "-H", "Content-Type: " + ASN1.decode(),
            *more, "--data-binary", f"@{data}",
            "--output", str(out), "--write-out", "%{http_code} %{http_version}",
            "--dump-header", str(out) + ".head",
            f"https://{r.host}:{r.port}/gsma/rsp2/asn1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        code, _, version = stdout.decode().partition(" ")
        assert version == "1.1"
        return int(code), out.read_bytes(), stderr.decode(errors="replace")

    async def main() -> tuple[tuple[int, bytes, str], tuple[int, bytes, str]]:
        async with rig(pki, tmp_path) as r:
            request.write_bytes(r.get_package_request())
            small = await curl(r, request, tmp_path / "small.out")
            big = await curl(r, large, tmp_path / "large.out", "-H", "Expect: 100-continue")
            return small, big

    (code, body, _), (big_code, big_body, trace) = asyncio.run(main())
    assert code == 200
    assert decode_from_eim(body).name == "getEimPackageResponse"
    head = (tmp_path / "small.out.head").read_bytes().lower()
    assert b"content-type: application/x-gsma-rsp-asn1" in head
    assert b"x-admin-protocol: gsma/rsp/v2.1.0" in head
    assert big_code == 400 and b"not an ESipa message" in big_body
    assert "> Expect: 100-continue" in trace  # curl asked ...
    assert "< HTTP/1.1 100 Continue" in trace  # ... and was told at once
