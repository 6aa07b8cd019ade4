"""One device-side CoAP socket on the repository's own sans-IO core, both ways: requests out
(confirmable, retransmitted, Block1/Block2 done by :class:`lwm2m.coap.CoapEndpoint`) and --
when a handler is given -- requests in. Plain UDP (:meth:`CoapSocket.open`) or one DTLS-PSK
session with a server (:meth:`CoapSocket.open_dtls`).

The simulated IPA on the CoAP binding (``simulators.esim.coap``) is one: it registers over
LwM2M, polls the eIM and answers the eIM's pushes from the same socket (and DTLS session), as
a device's single CoAP stack does. The eIM's push itself (:mod:`sgp32.esipa.push`) does not
use one: it goes through the DM server's channel to the device
(``LwM2MServer.coap_request``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import CoapEndpoint, Event, RequestFailed, RequestReceived, ResponseReceived
from lwm2m.transport import DtlsClient, DtlsClientConfig, Peer, Transport, UdpTransport
from lwm2m.transport.coap_shell import CoapShell

Address = tuple[str, int]
Handler = Callable[[Message, Address], Message | None]
"""Answers a request that came in (None: not served here, 4.04)."""


class CoapSocket:
    """`open` binds it (port 0: any free port), or `open_dtls` connects it to one server over
    DTLS-PSK; `request` sends one request and waits for its whole response; `handler` answers
    what comes in (without one, everything gets 4.04)."""

    def __init__(self, handler: Handler | None = None, rng: random.Random | None = None) -> None:
        self.handler = handler
        self.core = CoapEndpoint(rng=rng or random.SystemRandom())
        self.shell: CoapShell[Event] = CoapShell(self.core, self._on_event)
        self.transport: Transport | None = None
        self._dtls: tuple[Address, Peer] | None = None
        self._futures: dict[Any, asyncio.Future[Message]] = {}
        self.served = 0

    async def open(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        self.transport = await UdpTransport.create(self.shell, host=host, port=port)
        self.shell.attach(self.transport)
        return self.address

    async def open_dtls(
        self, server: Address, psk: tuple[bytes, bytes], host: str = "127.0.0.1"
    ) -> Address:
        """Connect to `server` over DTLS with `psk` (identity, key) from a socket on `host`
        (any free port); requests to `server` then go in that session, and requests the
        server sends in it reach the handler."""
        dtls = await DtlsClient.connect(
            self.shell,
            server[0],
            server[1],
            DtlsClientConfig(psk=psk),
            local_addr=(host, 0),
            on_session_closed=self.shell.session_closed,
        )
        self.transport = dtls
        self.shell.attach(dtls)
        self._dtls = (server, dtls.peer)
        return self.address

    @property
    def address(self) -> Address:
        assert self.transport is not None, "open() first"
        host, port = self.transport.local_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._dtls = None
        for future in self._futures.values():
            if not future.done():
                future.cancel()
        self._futures.clear()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            reply = None
            if self.handler is not None:
                peer = event.peer
                where: Any = peer.address if isinstance(peer, Peer) else peer
                reply = self.handler(event.message, (str(where[0]), int(where[1])))
                self.served += 1
            if reply is None:
                reply = Message(code=Code.NOT_FOUND)
            self.core.respond(event.request, reply, self.shell.now())
        elif isinstance(event, ResponseReceived | RequestFailed):
            future = self._futures.pop(event.request, None)
            if future is not None and not future.done():
                if isinstance(event, ResponseReceived):
                    future.set_result(event.message)
                else:
                    future.set_exception(TimeoutError(f"CoAP request failed: {event.reason}"))

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        """Send `message` to `address` and wait for the whole response; TimeoutError when
        there is none in `timeout` seconds (or the core gave up retransmitting)."""
        assert self.transport is not None, "open() first"
        peer = Peer((address[0], address[1]))
        if self._dtls is not None:
            server, session = self._dtls
            if (address[0], address[1]) != server:
                raise ValueError(f"this socket's DTLS session is with {server}, not {address}")
            peer = session
        handle = self.core.send_request(peer, message, self.shell.now())
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._futures[handle] = future
        self.shell.flush()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._futures.pop(handle, None)
            self.core.cancel_request(handle, self.shell.now())
            self.shell.flush()
            raise
