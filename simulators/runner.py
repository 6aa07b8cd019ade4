"""Run simulated LwM2M devices on asyncio: one UDP socket (or DTLS session) per device, any
number of devices on one loop.

The protocol work is all in the sans-IO :class:`~simulators.device.core.DeviceCore`; this module
only opens the socket, runs the core on it through :class:`lwm2m.transport.coap_shell.CoapShell`,
supplies the clock (the loop's) and randomness, and turns client events into awaitables for
tests::

    async with Fleet("coap://127.0.0.1:5683") as fleet:
        device = fleet.add("sim-0001")
        await device.wait_registered()
        device.set("/3/0/9", 42)             # observers are notified
        assert device.read("/3/0/2") == "sim-0001"
    # leaving the block de-registers every device

``coaps://`` URIs use DTLS with ``psk=(identity, key)`` or ``x509=X509Credentials(...)``.
Profiles, network emulation and the CLI belong to the later fleet work.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

from lwm2m.model import Path, ValueType
from lwm2m.transport import (
    DtlsClient,
    DtlsClientConfig,
    Peer,
    Transport,
    UdpTransport,
    X509Credentials,
)
from lwm2m.transport.coap_shell import CoapShell
from objects.enums import SecurityMode
from simulators.device.client import LwM2MClient, State
from simulators.device.config import ClientConfig
from simulators.device.core import DeviceCore
from simulators.device.defaults import default_template
from simulators.device.events import ClientEvent, Deregistered, Registered, RegistrationFailed
from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceTemplate

E = TypeVar("E")
DEFAULT_PORTS = {"coap": 5683, "coaps": 5684}


@dataclass(frozen=True, slots=True)
class ServerUri:
    """A parsed ``coap://host:port`` or ``coaps://host:port``."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, uri: str) -> ServerUri:
        parts = urlsplit(uri)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"expected coap://host[:port] or coaps://host[:port], got {uri!r}")
        return cls(parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme])

    @property
    def secure(self) -> bool:
        return self.scheme == "coaps"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class RegistrationError(Exception):
    """The device gave up registering (its retry policy is exhausted)."""


class SimulatedDevice:
    """One simulated device on its own socket. ``start`` it, then use the helpers."""

    def __init__(
        self,
        endpoint: str,
        server_uri: str,
        *,
        config: ClientConfig | None = None,
        lifetime: int = 300,
        psk: tuple[bytes, bytes] | None = None,
        x509: X509Credentials | None = None,
        server_hostname: str | None = None,
        template: DeviceTemplate | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.server_uri = ServerUri.parse(server_uri)
        if self.server_uri.secure and (psk is None) == (x509 is None):
            raise ValueError("a coaps:// device needs exactly one of psk and x509")
        self.config = config or ClientConfig()
        self.events: list[ClientEvent] = []
        self._psk = psk
        self._x509 = x509
        self._server_hostname = server_hostname
        self._rng = rng or random.SystemRandom()
        mode = (
            SecurityMode.NO_SEC
            if not self.server_uri.secure
            else SecurityMode.PSK
            if psk is not None
            else SecurityMode.CERTIFICATE
        )
        self._template = template or default_template(
            server_uri=str(self.server_uri), lifetime=lifetime, security_mode=mode
        )
        self._core: DeviceCore | None = None
        self._shell: CoapShell[ClientEvent] | None = None
        self._changed: asyncio.Event | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the socket (completing the DTLS handshake for coaps) and start registering."""
        if self._core is not None:
            raise RuntimeError(f"{self.endpoint} is already started")
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        uri = self.server_uri
        infos = await loop.getaddrinfo(uri.host, uri.port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        core = DeviceCore(
            self._template,
            self.endpoint,
            None,
            config=self.config,
            rng=self._rng,
            clock_offset=time.time() - loop.time(),
        )
        if self._psk is not None:
            core.store.set(Path.of(0, 0, 3), self._psk[0])
            core.store.set(Path.of(0, 0, 5), self._psk[1])
        shell: CoapShell[ClientEvent] = CoapShell(core, self._on_event)
        transport: Transport
        if uri.secure:
            dtls = await DtlsClient.connect(
                shell,
                uri.host,
                uri.port,
                DtlsClientConfig(
                    psk=self._psk, x509=self._x509, server_hostname=self._server_hostname
                ),
                on_session_closed=shell.session_closed,
            )
            server = dtls.peer
            transport = dtls
        else:
            bind = "0.0.0.0" if family == socket.AF_INET else "::"
            transport = await UdpTransport.create(shell, host=bind, port=0)
            server = Peer(tuple(sockaddr[:2]) if family == socket.AF_INET else tuple(sockaddr))  # type: ignore[arg-type]
        core.client.server = server
        self._core, self._shell = core, shell
        shell.attach(transport)
        core.start(shell.now())
        shell.flush()

    async def stop(self, timeout: float = 5.0) -> None:
        """De-register (waiting up to ``timeout`` for the answer) and close the socket."""
        core, shell = self._core, self._shell
        if core is None or shell is None:
            return
        if core.client.state is not State.STOPPED:
            mark = len(self.events)
            core.stop(shell.now())
            shell.flush()
            if core.client.state is State.DEREGISTERING:
                with contextlib.suppress(TimeoutError):
                    await self.wait_for(lambda e: isinstance(e, Deregistered), timeout, since=mark)
        shell.close()
        self._core = self._shell = None

    async def __aenter__(self) -> SimulatedDevice:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- events -------------------------------------------------------------------------------
    def _on_event(self, event: ClientEvent) -> None:
        self.events.append(event)
        if self._changed is not None:
            self._changed.set()

    async def wait_for(
        self,
        predicate: Callable[[ClientEvent], bool],
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> ClientEvent:
        """The first event from index ``since`` of :attr:`events` on (past or future) that
        matches ``predicate``; ``since=len(device.events)`` waits for a new one."""
        start = since

        async def scan() -> ClientEvent:
            index = start
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if predicate(event):
                        return event
                assert self._changed is not None
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def wait_event(self, kind: type[E], timeout: float = 10.0, *, since: int = 0) -> E:
        event = await self.wait_for(lambda e: isinstance(e, kind), timeout, since=since)
        assert isinstance(event, kind)
        return event

    async def wait_registered(self, timeout: float = 10.0) -> Registered:
        """Wait for the registration; raises :class:`RegistrationError` if the device gave up."""

        def done(event: ClientEvent) -> bool:
            if isinstance(event, RegistrationFailed) and event.retry_at is None:
                return True
            return isinstance(event, Registered)

        event = await self.wait_for(done, timeout)
        if isinstance(event, RegistrationFailed):
            raise RegistrationError(f"{self.endpoint}: {event.code or ''} {event.reason}")
        assert isinstance(event, Registered)
        return event

    # -- the device ---------------------------------------------------------------------------
    @property
    def core(self) -> DeviceCore:
        if self._core is None:
            raise RuntimeError(f"{self.endpoint} is not started")
        return self._core

    @property
    def store(self) -> ObjectStore:
        return self.core.store

    @property
    def client(self) -> LwM2MClient:
        return self.core.client

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._shell is not None
        address = self._shell.transport.local_address
        return address[0], address[1]

    def _now(self) -> float:
        assert self._shell is not None
        return self._shell.now()

    def read(self, path: Path | str) -> ValueType | dict[int, ValueType]:
        """A value as the device sees it (no operation checks)."""
        return self.store.get(path, self._now())

    def set(self, path: Path | str, value: object) -> None:
        """Change a value as the device would; observers are notified per their attributes."""
        self.client.set(path, value, self._now())
        self._flush()

    def send(self, paths: Iterable[Path | str]) -> None:
        """LwM2M Send of the current values at ``paths``."""
        self.client.send(paths, self._now())
        self._flush()

    def trigger_update(self) -> None:
        self.client.trigger_update(self._now())
        self._flush()

    def _flush(self) -> None:
        assert self._shell is not None
        self._shell.flush()


class Fleet:
    """Many :class:`SimulatedDevice` on one loop; leaving the ``async with`` stops them all.

    ``seed`` makes every device's randomness (tokens, Message IDs) reproducible.
    """

    def __init__(
        self,
        server_uri: str,
        *,
        config: ClientConfig | None = None,
        lifetime: int = 300,
        seed: int | None = None,
    ) -> None:
        self.server_uri = server_uri
        self.config = config or ClientConfig()
        self.lifetime = lifetime
        self.devices: dict[str, SimulatedDevice] = {}
        self._seed = seed
        self._starts: dict[str, asyncio.Task[None]] = {}

    def add(
        self,
        endpoint: str,
        *,
        psk: tuple[bytes, bytes] | None = None,
        x509: X509Credentials | None = None,
        config: ClientConfig | None = None,
    ) -> SimulatedDevice:
        """Create a device and start it in the background (await ``wait_registered``)."""
        if endpoint in self.devices:
            raise ValueError(f"{endpoint} is already in the fleet")
        rng = None if self._seed is None else random.Random(f"{self._seed}/{endpoint}")
        device = SimulatedDevice(
            endpoint,
            self.server_uri,
            config=config or self.config,
            lifetime=self.lifetime,
            psk=psk,
            x509=x509,
            rng=rng,
        )
        self.devices[endpoint] = device
        self._starts[endpoint] = asyncio.get_running_loop().create_task(device.start())
        return device

    async def started(self) -> None:
        """Wait until every device added so far has its socket (raises a start failure)."""
        await asyncio.gather(*self._starts.values())

    async def wait_registered(self, timeout: float = 10.0) -> None:
        """Wait until every device is registered."""

        async def one(device: SimulatedDevice) -> None:
            await self._starts[device.endpoint]
            await device.wait_registered(timeout)

        await asyncio.wait_for(asyncio.gather(*(one(d) for d in self.devices.values())), timeout)

    async def stop(self) -> None:
        for task in self._starts.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._starts.values(), return_exceptions=True)
        await asyncio.gather(*(d.stop() for d in self.devices.values()))

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __getitem__(self, endpoint: str) -> SimulatedDevice:
        return self.devices[endpoint]

    def __len__(self) -> int:
        return len(self.devices)


__all__ = ["Fleet", "RegistrationError", "ServerUri", "SimulatedDevice"]
