"""The ESipa HTTPS ASN.1 binding: `POST /gsma/rsp2/asn1`, DER in, DER out (SGP.32 6.1).

A thin asyncio shell over h11 (the sans-IO HTTP/1.1 state machine): read a request, hand its
body to `handle(body, now)` - in `fleetloop serve` that is `EimStore.handle`, one committed
transaction per exchange - and write the answer: 200 with the DER, or 204 when the eIM has
nothing to say (HandleNotification). Keep-alive, so an IPA polling over TLS pays the handshake
once. What is not an ESipa message gets 400 with a one-line reason; other paths 404; other
methods 405 (``Allow: POST``).

Every answer carries ``X-Admin-Protocol`` (SGP.32 6.1: gsma/rsp/v2.1.0 in request and response;
an IPA's own well-formed ``gsma/rsp/vX.Y.Z`` is echoed) and the DER answers ``Content-Type:
application/x-gsma-rsp-asn1``. What IPAs send is taken liberally (checked against onomondo-ipa's
libcurl client, see docs/SGP32.md "Interop"): a missing or other X-Admin-Protocol, a Content-Type
with parameters or none, HTTP/1.0, a chunked body, ``Expect: 100-continue`` (answered with
``100 Continue`` so libcurl does not stall a second before sending a large body), and the
absolute-form request target or a trailing slash.

TLS uses the deployment's certificate; plain HTTP is refused except on a loopback address
(tests, or a TLS-terminating proxy on the same host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path

import h11

from sgp32.eim.core import Exchange
from sgp32.errors import CodecError, EimError, Sgp32Error

ESIPA_PATH = b"/gsma/rsp2/asn1"
CONTENT_TYPE = b"application/x-gsma-rsp-asn1"
ADMIN_PROTOCOL = b"gsma/rsp/v2.1.0"
"""SGP.32 6.1's X-Admin-Protocol (the SGP.22 version ESipa is aligned with)."""
_ADMIN_PROTOCOL_FORM = re.compile(rb"gsma/rsp/v\d{1,3}\.\d{1,3}\.\d{1,3}")
TEXT = b"text/plain; charset=utf-8"
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
MAX_BODY = 256 * 1024
IDLE_SECONDS = 60.0

Handler = Callable[[bytes, float], Awaitable[Exchange]]
log = logging.getLogger("fleetloop.sgp32.esipa")


class BindingError(Sgp32Error):
    """The binding cannot be set up as configured (plain HTTP off loopback, bad TLS files)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_ssl_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ with the deployment's certificate chain and key (PEM)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # libcurl offers h2 first; this binding is HTTP/1.1
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise BindingError(
            f"ESipa HTTPS: cannot load the certificate {certificate} and key {key}: {exc}"
        ) from exc
    return context


class EsipaHttpsServer:
    """One listener; `start` binds it (port 0: any free port) and returns the bound address."""

    def __init__(
        self,
        handle: Handler,
        *,
        tls: ssl.SSLContext | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._handle = handle
        self._tls = tls
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.exchanges = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        if self._tls is None and not is_loopback(host):
            raise BindingError(
                f"ESipa HTTPS on {host}:{port} without TLS: plain HTTP is only allowed on "
                "loopback; configure --x509-cert/--x509-key or listen on 127.0.0.1"
            )
        self._server = await asyncio.start_server(self._accept, host, port, ssl=self._tls)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # stop(): the connection's own top-level task ends here
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        while True:
            try:
                request, body = await self._read_request(conn, reader, writer)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    reason = f"bad HTTP request: {exc}\n".encode()
                    extra = [(b"x-admin-protocol", ADMIN_PROTOCOL)]
                    await self._send(conn, writer, status, reason, TEXT, extra)
                return
            if request is None:
                return
            status, payload, kind, extra = await self._respond(request, body)
            extra.append((b"x-admin-protocol", admin_protocol_for(request)))
            await self._send(conn, writer, status, payload, kind, extra)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:  # libcurl: bodies over 1 KiB
                    interim = h11.InformationalResponse(
                        status_code=100, headers=[], reason=b"Continue"
                    )
                    writer.write(conn.send(interim) or b"")
                    await writer.drain()
                data = await asyncio.wait_for(reader.read(65536), IDLE_SECONDS)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError(f"body over {MAX_BODY} bytes", 413)
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""

    async def _respond(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        if request_path(request.target) != ESIPA_PATH:
            return 404, b"not found; the ESipa endpoint is POST /gsma/rsp2/asn1\n", TEXT, []
        if request.method != b"POST":
            reason = b"use POST with a DER-encoded ESipa message\n"
            return 405, reason, TEXT, [(b"allow", b"POST")]
        try:
            exchange = await self._handle(body, self._clock())
        except CodecError as exc:
            return 400, f"not an ESipa message: {exc}\n".encode(), TEXT, []
        except EimError as exc:
            return 400, f"{exc}\n".encode(), TEXT, []
        except Exception:
            log.exception("ESipa exchange failed")
            return 500, b"the eIM could not process the message; retry later\n", TEXT, []
        self.exchanges += 1
        if exchange.reply is None:
            return 204, b"", CONTENT_TYPE, []
        return 200, exchange.reply, CONTENT_TYPE, []

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        content_type: bytes = TEXT,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = list(extra or [])
        if status != 204:  # 204: neither a body nor its length/type (RFC 9110 15.3.5)
            headers += [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
            ]
        reason = _REASONS.get(status, b"")  # a reason phrase: strict embedded parsers want one
        response = h11.Response(status_code=status, headers=headers, reason=reason)
        writer.write(conn.send(response) or b"")
        if payload:
            writer.write(conn.send(h11.Data(data=payload)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()


def request_path(target: bytes) -> bytes:
    """The path of a request target: origin-form (``/gsma/rsp2/asn1?x``) or absolute-form
    (``https://eim.example/gsma/rsp2/asn1``, RFC 9112 3.2.2), a trailing slash dropped."""
    path = target.split(b"?", 1)[0]
    if b"://" in path:
        rest = path.split(b"://", 1)[1]
        path = b"/" + rest.split(b"/", 1)[1] if b"/" in rest else b"/"
    return path.rstrip(b"/") or b"/"


def admin_protocol_for(request: h11.Request) -> bytes:
    """The X-Admin-Protocol to answer with: the IPA's own when it is a well-formed
    ``gsma/rsp/vX.Y.Z``, else SGP.32's gsma/rsp/v2.1.0 (a missing or odd one is not refused)."""
    for name, value in request.headers:
        if name == b"x-admin-protocol":
            value = value.strip()
            if _ADMIN_PROTOCOL_FORM.fullmatch(value):
                return value
    return ADMIN_PROTOCOL
