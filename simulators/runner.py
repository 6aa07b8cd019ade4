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

Bootstrap: ``SimulatedDevice(endpoint, bootstrap_uri="coaps://bs:5784", bootstrap_psk=...)``
leaves the factory with only a bootstrap account. ``start`` bootstraps over that transport,
closes it, then connects to the DM server the bootstrap wrote into objects 0 and 1 (PSK or
certificate from the Security instance) and registers. Execute /1/x/9, or a registration
that fails for good (a refused handshake counts), makes it de-register, bootstrap again and
register with what it got::

    async with SimulatedDevice("sim-1", bootstrap_uri=bs_uri, bootstrap_psk=(b"sim-1", key)) as d:
        await d.wait_registered()
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
from simulators.device.bootstrap import (
    ServerCredentials,
    bootstrap_account,
    bootstrap_template,
    dm_account,
    has_bootstrap_account,
    put_instance,
)
from simulators.device.client import LwM2MClient, State
from simulators.device.config import ClientConfig
from simulators.device.core import DeviceCore
from simulators.device.defaults import default_template
from simulators.device.events import (
    BootstrapFailed,
    BootstrapFinished,
    BootstrapRequested,
    ClientEvent,
    Deregistered,
    Registered,
    RegistrationFailed,
    UpdateFailed,
)
from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceTemplate

E = TypeVar("E")
REHANDSHAKE_FIRST_DELAY = 0.5
REHANDSHAKE_MAX_DELAY = 30.0
REHANDSHAKE_BEFORE_BOOTSTRAP = 3  # failed handshakes before a bootstrap-capable device falls back
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


class BootstrapError(Exception):
    """The device could not bootstrap (refused, or no configuration in time)."""


class SimulatedDevice:
    """One simulated device on its own socket. ``start`` it, then use the helpers.

    With ``bootstrap_uri`` the device bootstraps first (see the module docstring);
    ``bootstrap_psk`` / ``bootstrap_x509`` are its factory credentials for a ``coaps://``
    bootstrap server. Giving ``server_uri`` as well pre-provisions that DM account next to the
    bootstrap account (a device that falls back to bootstrap when its DM server refuses it);
    ``registration_retry`` sets that account's Communication Retry resources /1/x/17-20
    (count, timer, sequence delay, sequence count).
    """

    def __init__(
        self,
        endpoint: str,
        server_uri: str | None = None,
        *,
        config: ClientConfig | None = None,
        lifetime: int = 300,
        psk: tuple[bytes, bytes] | None = None,
        x509: X509Credentials | None = None,
        server_hostname: str | None = None,
        template: DeviceTemplate | None = None,
        rng: random.Random | None = None,
        bootstrap_uri: str | None = None,
        bootstrap_psk: tuple[bytes, bytes] | None = None,
        bootstrap_x509: X509Credentials | None = None,
        bootstrap_wait: float = 30.0,
        registration_retry: tuple[int, int, int, int] | None = None,
    ) -> None:
        if server_uri is None and bootstrap_uri is None:
            raise ValueError("a device needs a server_uri, a bootstrap_uri, or both")
        self.endpoint = endpoint
        self.server_uri = ServerUri.parse(server_uri) if server_uri is not None else None
        if (
            self.server_uri is not None
            and self.server_uri.secure
            and (psk is None) == (x509 is None)
        ):
            raise ValueError("a coaps:// device needs exactly one of psk and x509")
        self.bootstrap_uri = ServerUri.parse(bootstrap_uri) if bootstrap_uri is not None else None
        if (
            self.bootstrap_uri is not None
            and self.bootstrap_uri.secure
            and ((bootstrap_psk is None) == (bootstrap_x509 is None))
        ):
            raise ValueError("a coaps:// bootstrap server needs one of bootstrap_psk/_x509")
        self.config = config or ClientConfig()
        self.events: list[ClientEvent] = []
        self._psk = psk
        self._x509 = x509
        self._bootstrap_psk = bootstrap_psk
        self._bootstrap_x509 = bootstrap_x509
        self._bootstrap_wait = bootstrap_wait
        self._registration_retry = registration_retry
        self._server_hostname = server_hostname
        self._rng = rng or random.SystemRandom()
        self._lifetime = lifetime
        if self.bootstrap_uri is not None:
            bs_mode = self._mode(self.bootstrap_uri, bootstrap_psk)
            self._template = template or bootstrap_template(
                bootstrap_uri=str(self.bootstrap_uri), security_mode=bs_mode, lifetime=lifetime
            )
        else:
            assert self.server_uri is not None
            self._template = template or default_template(
                server_uri=str(self.server_uri),
                lifetime=lifetime,
                security_mode=self._mode(self.server_uri, psk),
            )
        self._core: DeviceCore | None = None
        self._shell: CoapShell[ClientEvent] | None = None
        self._changed: asyncio.Event | None = None
        self._cycle: asyncio.Task[None] | None = None
        self._stopping = False
        #: Bootstraps completed (client-initiated, server-initiated and fallback).
        self.bootstraps = 0
        #: New DTLS handshakes after the server lost the session, and failed attempts at one.
        self.rehandshakes = 0
        self.rehandshake_failures = 0

    @staticmethod
    def _mode(uri: ServerUri, psk: tuple[bytes, bytes] | None) -> SecurityMode:
        if not uri.secure:
            return SecurityMode.NO_SEC
        return SecurityMode.PSK if psk is not None else SecurityMode.CERTIFICATE

    # -- lifecycle ----------------------------------------------------------------------------
    async def _open(
        self,
        core: DeviceCore,
        uri: ServerUri,
        *,
        psk: tuple[bytes, bytes] | None,
        x509: X509Credentials | None,
    ) -> tuple[CoapShell[ClientEvent], Peer]:
        """A transport to ``uri`` (DTLS handshake done for coaps) with a shell on ``core``."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(uri.host, uri.port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        shell: CoapShell[ClientEvent] = CoapShell(core, self._on_event)
        transport: Transport
        if uri.secure:
            dtls = await DtlsClient.connect(
                shell,
                uri.host,
                uri.port,
                DtlsClientConfig(psk=psk, x509=x509, server_hostname=self._server_hostname),
                on_session_closed=lambda peer, reason: self._dtls_closed(shell, peer, reason),
            )
            server = dtls.peer
            transport = dtls
        else:
            bind = "0.0.0.0" if family == socket.AF_INET else "::"
            transport = await UdpTransport.create(shell, host=bind, port=0)
            server = Peer(tuple(sockaddr[:2]) if family == socket.AF_INET else tuple(sockaddr))  # type: ignore[arg-type]
        shell.attach(transport)
        return shell, server

    async def start(self) -> None:
        """Open the socket (completing the DTLS handshake for coaps) and start registering;
        a bootstrap-capable device without a DM account bootstraps first."""
        if self._core is not None:
            raise RuntimeError(f"{self.endpoint} is already started")
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        core = DeviceCore(
            self._template,
            self.endpoint,
            None,
            config=self.config,
            rng=self._rng,
            clock_offset=time.time() - loop.time(),
        )
        if self.bootstrap_uri is None:
            if self._psk is not None:
                core.store.set(Path.of(0, 0, 3), self._psk[0])
                core.store.set(Path.of(0, 0, 5), self._psk[1])
            assert self.server_uri is not None
            shell, server = await self._open(core, self.server_uri, psk=self._psk, x509=self._x509)
            core.client.server = server
            self._core, self._shell = core, shell
            core.start(shell.now())
            shell.flush()
            return
        if self._bootstrap_psk is not None:
            core.store.set(Path.of(0, 0, 3), self._bootstrap_psk[0])
            core.store.set(Path.of(0, 0, 5), self._bootstrap_psk[1])
        if self.server_uri is not None:
            self._provision_dm(core)
        self._core = core
        await self._connect(bootstrap_first=dm_account(core.store) is None)

    def _provision_dm(self, core: DeviceCore) -> None:
        """Pre-provisioned DM account next to the bootstrap account: /0/1 and /1/0."""
        assert self.server_uri is not None
        mode = self._mode(self.server_uri, self._psk)
        identity, secret = self._psk if self._psk is not None else (b"", b"")
        put_instance(
            core.store,
            0,
            1,
            {
                0: str(self.server_uri),
                1: False,
                2: int(mode),
                3: identity,
                4: b"",
                5: secret,
                10: 1,
            },
            0.0,
        )
        server: dict[int, object] = {0: 1, 1: self._lifetime, 7: "U"}
        if self._registration_retry is not None:
            server.update(zip((17, 18, 19, 20), self._registration_retry, strict=True))
        put_instance(core.store, 1, 0, server, 0.0)

    async def _connect(self, *, bootstrap_first: bool) -> None:
        """Bootstrap (when asked or needed), then connect to the DM account and register. A
        DM handshake that fails on a device with a bootstrap account falls back to bootstrap
        once per cycle."""
        core = self._core
        assert core is not None
        if bootstrap_first:
            await self._bootstrap()
        try:
            await self._connect_dm()
        except Exception:
            if bootstrap_first or not has_bootstrap_account(core.store):
                raise
            await self._bootstrap()
            await self._connect_dm()

    async def _bootstrap(self) -> None:
        core = self._core
        assert core is not None
        account = bootstrap_account(core.store)
        if account is None or self.bootstrap_uri is None:
            raise BootstrapError(f"{self.endpoint} has no bootstrap account")
        uri = ServerUri.parse(account.uri) if account.uri else self.bootstrap_uri
        psk = (account.identity, account.secret) if account.mode is SecurityMode.PSK else None
        x509 = self._bootstrap_x509 if account.mode.uses_certificates else None
        shell, server = await self._open(core, uri, psk=psk, x509=x509)
        try:
            mark = len(self.events)
            core.start_bootstrap(server, shell.now())
            shell.flush()

            def done(event: ClientEvent) -> bool:
                if isinstance(event, BootstrapFailed):
                    return event.retry_at is None
                return isinstance(event, BootstrapFinished)

            try:
                event = await self.wait_for(done, self._bootstrap_wait, since=mark)
            except TimeoutError:
                raise BootstrapError(f"{self.endpoint}: no bootstrap within the wait") from None
            if isinstance(event, BootstrapFailed):
                raise BootstrapError(f"{self.endpoint}: {event.code or ''} {event.reason}")
            self.bootstraps += 1
        finally:
            core.coap.forget_peer(server, shell.now())
            shell.close()

    def _dm_credentials(
        self, account: ServerCredentials
    ) -> tuple[tuple[bytes, bytes] | None, X509Credentials | None]:
        if account.mode is SecurityMode.PSK:
            return (account.identity, account.secret), None
        if account.mode.uses_certificates:
            chain = (account.identity,)
            return None, X509Credentials(chain, account.secret, (account.server_key,))
        return None, None

    async def _connect_dm(self) -> None:
        core = self._core
        assert core is not None
        account = dm_account(core.store)
        if account is None:
            raise BootstrapError(f"{self.endpoint} has no DM server account")
        psk, x509 = self._dm_credentials(account)
        shell, server = await self._open(core, ServerUri.parse(account.uri), psk=psk, x509=x509)
        core.client.server = server
        self._shell = shell
        core.start(shell.now())
        shell.flush()

    # -- re-handshake (issue 14 item 14) -----------------------------------------------------
    def _dtls_closed(self, shell: CoapShell[ClientEvent], peer: Peer, reason: str) -> None:
        """The server ended the DTLS session (close_notify on a restart, a fatal alert, an
        evicted session). Real clients handshake again and register; before this the device
        kept sending into the closed session ("DTLS session is closed") for ever."""
        shell.session_closed(peer, reason)
        if shell is self._shell:
            self._schedule_rehandshake(f"session closed: {reason}")

    def _schedule_rehandshake(self, reason: str) -> None:
        if self._core is None or self._stopping:
            return
        if self._cycle is not None and not self._cycle.done():
            return  # a bootstrap or an earlier re-handshake is already under way
        self._cycle = asyncio.get_running_loop().create_task(self._rehandshake(reason))

    def _dm_target(
        self, core: DeviceCore
    ) -> tuple[ServerUri, tuple[bytes, bytes] | None, X509Credentials | None]:
        """Where and with what the device reaches its DM server now."""
        account = dm_account(core.store) if self.bootstrap_uri is not None else None
        if account is not None:
            psk, x509 = self._dm_credentials(account)
            return ServerUri.parse(account.uri), psk, x509
        assert self.server_uri is not None
        return self.server_uri, self._psk, self._x509

    async def _rehandshake(self, reason: str) -> None:
        """Drop the dead session, handshake again (backing off while the server is away) and
        register from scratch over the new session, as a real client does."""
        core, shell = self._core, self._shell
        if core is None or shell is None:
            return
        self.rehandshakes += 1
        now = shell.now()
        if core.client.state is not State.STOPPED:
            core.client.stop(now)  # no De-register: the server no longer knows the session
        core.coap.forget_peer(core.client.server, now)
        shell.close()
        self._shell = None
        uri, psk, x509 = self._dm_target(core)
        delay = REHANDSHAKE_FIRST_DELAY
        failures = 0
        while not self._stopping:
            try:
                new_shell, server = await self._open(core, uri, psk=psk, x509=x509)
            except Exception:  # server still down or refusing: back off and try again
                self.rehandshake_failures += 1
                failures += 1
                if failures >= REHANDSHAKE_BEFORE_BOOTSTRAP and has_bootstrap_account(core.store):
                    await self._connect(bootstrap_first=True)  # as after a refused Register
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, REHANDSHAKE_MAX_DELAY)
                continue
            if self._stopping:
                new_shell.close()
                return
            core.client.server = server
            self._shell = new_shell
            core.start(new_shell.now())
            new_shell.flush()
            return

    def _on_timeout_over_dtls(self, event: ClientEvent) -> None:
        """An Update or Register that got no answer over DTLS: the server may have lost the
        session silently (restarted after a crash), so handshake again before retrying."""
        core = self._core
        if self._shell is None or core is None or not self._dm_target(core)[0].secure:
            return
        if isinstance(event, UpdateFailed | RegistrationFailed) and event.code is None:
            self._schedule_rehandshake(f"no answer: {event.reason}")

    async def _rebootstrap(self, reason: str) -> None:
        """Execute /1/x/9 or a failed registration sequence: de-register, bootstrap, register."""
        core, shell = self._core, self._shell
        if core is None:
            return
        if shell is not None:
            if core.client.state not in (State.STOPPED, State.IDLE):
                mark = len(self.events)
                core.stop(shell.now())
                shell.flush()
                if core.client.state is State.DEREGISTERING:
                    with contextlib.suppress(TimeoutError):
                        await self.wait_for(lambda e: isinstance(e, Deregistered), 5.0, since=mark)
            core.coap.forget_peer(core.client.server, shell.now())
            shell.close()
            self._shell = None
        await self._connect(bootstrap_first=True)

    async def stop(self, timeout: float = 5.0) -> None:
        """De-register (waiting up to ``timeout`` for the answer) and close the socket."""
        self._stopping = True
        cycle, self._cycle = self._cycle, None
        if cycle is not None and not cycle.done():
            cycle.cancel()
            with contextlib.suppress(BaseException):
                await cycle
        core, shell = self._core, self._shell
        if core is None:
            return
        if shell is None:
            self._core = None
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
        if isinstance(event, UpdateFailed | RegistrationFailed):
            self._on_timeout_over_dtls(event)
        if (
            isinstance(event, BootstrapRequested)
            and self.bootstrap_uri is not None
            and (self._cycle is None or self._cycle.done())
        ):
            self._cycle = asyncio.get_running_loop().create_task(self._rebootstrap(event.reason))

    async def wait_bootstrapped(
        self, timeout: float = 10.0, *, since: int = 0
    ) -> BootstrapFinished:
        """Wait for a finished bootstrap (from event index ``since`` on)."""
        return await self.wait_event(BootstrapFinished, timeout, since=since)

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
