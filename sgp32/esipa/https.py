"""The ESipa HTTPS ASN.1 binding: `POST /gsma/rsp2/asn1`, DER in, DER out (SGP.32 6.1).

A thin asyncio shell over h11 (the sans-IO HTTP/1.1 state machine): read a request, hand its
body to `handle(body, now)` - in `fleetloop serve` that is `EimStore.handle`, one committed
transaction per exchange - and write the answer: 200 with the DER, or 204 when the eIM has
nothing to say (HandleNotification). Keep-alive, so an IPA polling over TLS pays the handshake
once. What is not an ESipa message gets 400 with a one-line reason; other paths 404.

TLS uses the deployment's certificate; plain HTTP is refused except on a loopback address
(tests, or a TLS-terminating proxy on the same host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11

from sgp32.eim.core import Exchange
from sgp32.errors import CodecError, EimError, Sgp32Error

ESIPA_PATH = b"/gsma/rsp2/asn1"
CONTENT_TYPE = b"application/x-gsma-rsp-asn1"
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
                request, body = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    await self._send(conn, writer, status, f"bad HTTP request: {exc}\n".encode())
                return
            if request is None:
                return
            status, payload, kind = await self._respond(request, body)
            await self._send(conn, writer, status, payload, kind)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
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

    async def _respond(self, request: h11.Request, body: bytes) -> tuple[int, bytes, bytes]:
        text = b"text/plain; charset=utf-8"
        target = request.target.split(b"?", 1)[0]
        if target != ESIPA_PATH:
            return 404, b"not found; the ESipa endpoint is POST /gsma/rsp2/asn1\n", text
        if request.method != b"POST":
            return 405, b"use POST with a DER-encoded ESipa message\n", text
        try:
            exchange = await self._handle(body, self._clock())
        except CodecError as exc:
            return 400, f"not an ESipa message: {exc}\n".encode(), text
        except EimError as exc:
            return 400, f"{exc}\n".encode(), text
        except Exception:
            log.exception("ESipa exchange failed")
            return 500, b"the eIM could not process the message; retry later\n", text
        self.exchanges += 1
        if exchange.reply is None:
            return 204, b"", CONTENT_TYPE
        return 200, exchange.reply, CONTENT_TYPE

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
    ) -> None:
        headers = [(b"content-length", str(len(payload)).encode())]
        if status != 204:
            headers.append((b"content-type", content_type))
        else:
            headers = []
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        if payload:
            writer.write(conn.send(h11.Data(data=payload)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
