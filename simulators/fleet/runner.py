"""Run the fleet engine on asyncio: one UDP socket (or DTLS session) per device, one event
loop, no thread and no task per device.

::

    async with DeviceFleet("coap://127.0.0.1:5683", seed=1) as fleet:
        fleet.spawn(1000, profile=PROFILES["nbiot"])
        await fleet.wait_registered(timeout=60)
        device = fleet.device("sim-000042")
        device.read("/3/0/9"); device.set("/3/0/9", 42)
        fleet.inject("sim-000042", "reboot")
    # leaving the block de-registers every device and closes every socket

How the I/O is arranged, and why:

* **Plain UDP**: each device has its own non-blocking socket (the server tells devices apart
  by source address, as it must for NATed devices). The sockets are not registered with the
  event loop one by one -- that costs a selector key and a handle object per device -- but
  with one private ``epoll`` object whose single descriptor the loop watches; a readiness
  callback reads every ready socket, feeds the engine, and lets it run once for the batch.
  (Where ``epoll`` does not exist, each socket gets ``loop.add_reader``.)
* **DTLS** (``coaps://``): each device gets a :class:`~lwm2m.transport.DtlsClient` (its own
  socket and Mbed TLS context). Handshakes run in a small pool of worker tasks
  (``handshake_concurrency``), so a thousand devices do not start a thousand handshakes --
  the server would refuse most of them (per-source handshake limit) and the rest would
  time out together.
* **Bootstrap**: a device with ``bootstrap_uri`` bootstraps first (over UDP or DTLS), then
  connects to the DM server the bootstrap server wrote into objects 0/1; Execute /1/x/9 or a
  registration that fails for good sends it back to bootstrap.
* **Timers**: the engine keeps every device's deadlines in one heap; the runner arms one
  ``loop.call_at`` at its head.
* **Start ramp**: ``start_rate`` devices per second (0: all at once, a registration storm).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import socket
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from lwm2m.coap import EndpointConfig
from lwm2m.model import Node, Path, ValueType
from lwm2m.transport import (
    DtlsClient,
    DtlsClientConfig,
    Peer,
    TransportError,
    X509Credentials,
)
from objects.enums import SecurityMode
from simulators.device.bootstrap import bootstrap_account, dm_account
from simulators.device.client import LwM2MClient
from simulators.device.events import (
    BootstrapFailed,
    BootstrapFinished,
    BootstrapRequested,
    ClientEvent,
    RegistrationFailed,
    UpdateFailed,
)
from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceTemplate
from simulators.fleet.engine import (
    FAILED,
    REGISTERED,
    STATUS_NAMES,
    Address,
    Counters,
    FleetEngine,
    Group,
    Outcome,
)
from simulators.identities import Identity, endpoint_name
from simulators.profiles import DeviceProfile
from simulators.runner import ServerUri

E = TypeVar("E")
RECV_SIZE = 4096
READ_BATCH = 32
FAULTS = ("reboot", "factory-reset", "rebind", "cut", "restore", "deregister", "update")


_START_CHUNK = 128
"""Devices started per event-loop turn when starting "all at once" (see DeviceFleet.start)."""


class FleetError(Exception):
    """The fleet cannot do what was asked (bad URI, unknown device, closed fleet)."""


@dataclass(slots=True)
class _GroupIO:
    """What the runner needs to know about a group besides the engine's view of it."""

    group: Group
    server: ServerUri | None
    bootstrap: ServerUri | None
    x509: X509Credentials | None
    bootstrap_x509: X509Credentials | None


class _Session:
    """A DTLS session of one device to one server: the sink of its :class:`DtlsClient`."""

    __slots__ = ("address", "client", "fleet", "index", "psk", "uri", "x509")

    def __init__(
        self,
        fleet: DeviceFleet,
        index: int,
        uri: ServerUri,
        address: Address,
        psk: tuple[bytes, bytes] | None,
        x509: X509Credentials | None,
    ) -> None:
        self.fleet = fleet
        self.index = index
        self.uri = uri
        self.address = address
        self.psk = psk
        self.x509 = x509
        self.client: DtlsClient | None = None

    def datagram_received(self, data: bytes, peer: Peer) -> None:
        fleet = self.fleet
        now = fleet.loop.time()
        fleet.engine.receive(self.index, data, self.address, now)
        fleet._after_io(now)

    def session_closed(self, peer: Peer, reason: str) -> None:
        self.fleet._session_closed(self, reason)


class DeviceView:
    """One device of the fleet, for tests and operators: inspect, act, wait."""

    __slots__ = ("fleet", "index")

    def __init__(self, fleet: DeviceFleet, index: int) -> None:
        self.fleet = fleet
        self.index = index

    @property
    def client(self) -> LwM2MClient:
        return self.fleet.engine.clients[self.index]

    @property
    def store(self) -> ObjectStore:
        return self.client.store

    @property
    def endpoint(self) -> str:
        return self.store.endpoint

    @property
    def status(self) -> str:
        """``new``, ``waiting``, ``registering``, ``registered``, ``failed``, ..."""
        return STATUS_NAMES[self.fleet.engine.status[self.index]]

    @property
    def registered(self) -> bool:
        return self.fleet.engine.status[self.index] == REGISTERED

    @property
    def events(self) -> list[ClientEvent | Outcome]:
        """What the device did (fleet created with ``record_events=True``)."""
        events = self.fleet.engine.events
        if events is None:
            raise FleetError("create the fleet with record_events=True to keep device events")
        return events.setdefault(self.index, [])

    @property
    def local_address(self) -> Address | None:
        """The device's current source address (changes on reboot and NAT rebinding)."""
        return self.fleet._local_address(self.index)

    def read(self, path: Path | str) -> ValueType | dict[int, ValueType]:
        """A value as the device holds it (no operation checks)."""
        return self.store.get(path, self.fleet.loop.time())

    def node(self, path: Path | str) -> Node:
        """An object, instance or resource as a server Read would see it (readable only)."""
        path = Path.parse(path) if isinstance(path, str) else path
        return self.store.read(path, self.fleet.loop.time())

    def set(self, path: Path | str, value: object) -> None:
        """Change a value as the device would; observers are notified per their attributes."""
        self.fleet._act(lambda now: self.fleet.engine.set_value(self.index, path, value, now))

    def send(self, paths: Iterable[Path | str]) -> None:
        """LwM2M Send of the current values at ``paths``."""
        wanted = list(paths)
        self.fleet._act(lambda now: self.fleet.engine.send(self.index, wanted, now))

    def trigger_update(self) -> None:
        self.fleet._act(lambda now: self.fleet.engine.trigger_update(self.index, now))

    def inject(self, fault: str) -> None:
        self.fleet.inject(self.index, fault)

    async def wait_event(self, kind: type[E], timeout: float = 10.0, *, since: int = 0) -> E:
        """The first recorded event of ``kind`` from index ``since`` on (past or future)."""
        found: list[E] = []

        def seen() -> bool:
            for event in self.events[since:]:
                if isinstance(event, kind):
                    found.append(event)
                    return True
            return False

        await self.fleet.wait_until(seen, timeout)
        return found[0]

    async def wait_outcome(self, name: str, timeout: float = 10.0, *, since: int = 0) -> None:
        """Wait for a behaviour outcome (``firmware_updated``, ``apn_lost``...)."""
        await self.fleet.wait_until(
            lambda: any(isinstance(e, Outcome) and e.name == name for e in self.events[since:]),
            timeout,
        )


class DeviceFleet:
    """Simulated devices on one asyncio loop (see the module docstring).

    ``server_uri``: the DM server (``coap://`` or ``coaps://``) for devices without their own;
    ``bootstrap_uri``: make devices bootstrap there first. ``seed`` makes tokens, Message
    IDs, link emulation and misbehaviour reproducible. ``record_events`` keeps every device's
    events (for tests; costs memory). ``start_rate``: devices started per second (0: at once).
    ``bind_host``: the local address device sockets bind (default: loopback for a loopback
    server, else every interface).
    """

    def __init__(
        self,
        server_uri: str | None = None,
        *,
        bootstrap_uri: str | None = None,
        seed: int | None = None,
        record_events: bool = False,
        start_rate: float = 0.0,
        handshake_concurrency: int = 16,
        handshake_timeout: float = 30.0,
        connect_attempts: int = 5,
        coap_config: EndpointConfig | None = None,
        bind_host: str | None = None,
        on_event: Callable[[int, ClientEvent | Outcome], None] | None = None,
    ) -> None:
        if server_uri is None and bootstrap_uri is None:
            raise FleetError("a fleet needs a server_uri, a bootstrap_uri, or both")
        self.server_uri = ServerUri.parse(server_uri) if server_uri else None
        self.bootstrap_uri = ServerUri.parse(bootstrap_uri) if bootstrap_uri else None
        self.seed = seed
        self.start_rate = start_rate
        self.handshake_timeout = handshake_timeout
        self.connect_attempts = connect_attempts
        self._handshake_concurrency = max(1, handshake_concurrency)
        self._coap_config = coap_config
        self._record = record_events
        self._bind_host = bind_host
        self._user_on_event = on_event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: FleetEngine | None = None
        self._groups: list[_GroupIO] = []
        self._group_io: list[int] = []
        self._socks: list[socket.socket | None] = []
        self._fd_index = array("i")
        self._sessions: dict[int, _Session] = {}
        self._epoll: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._starter: asyncio.TimerHandle | None = None
        self._pending: deque[int] = deque()
        self._work: asyncio.Queue[tuple[str, int]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._attempts: dict[int, int] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._resolved: dict[tuple[str, int], Address] = {}
        self._closed = False
        self.started_at = 0.0
        #: I/O counters (the engine's :attr:`counters` count protocol events).
        self.send_errors = 0
        self.handshakes = 0
        self.handshake_failures = 0
        self.unreachable = 0

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise FleetError("the fleet is not open (use `async with DeviceFleet(...)`)")
        return self._loop

    @property
    def engine(self) -> FleetEngine:
        if self._engine is None:
            raise FleetError("the fleet is not open (use `async with DeviceFleet(...)`)")
        return self._engine

    async def open(self) -> None:
        """Bind to the running loop and start the connection workers."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.started_at = loop.time()
        rng = random.Random(self.seed) if self.seed is not None else random.Random()
        self._engine = FleetEngine(
            self,
            seed=self.seed,
            rng=rng,
            coap_config=self._coap_config,
            on_event=self._on_event,
            record_events=self._record,
        )
        if hasattr(select, "epoll"):
            self._epoll = select.epoll()
            loop.add_reader(self._epoll.fileno(), self._epoll_ready)
        self._work = asyncio.Queue()
        self._workers = [
            loop.create_task(self._worker()) for _ in range(self._handshake_concurrency)
        ]

    async def __aenter__(self) -> DeviceFleet:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, *, deregister: bool = True, timeout: float = 10.0) -> None:
        """De-register every registered device (waiting up to ``timeout`` for the answers),
        then close every socket and session."""
        if self._closed or self._engine is None:
            return
        if self._starter is not None:
            self._starter.cancel()
            self._starter = None
        self._pending.clear()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if deregister:
            await self.deregister_all(timeout=timeout)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for session in list(self._sessions.values()):
            if session.client is not None:
                session.client.close()
        self._sessions.clear()
        for index in range(len(self._socks)):
            self._close_socket(index)
        if self._epoll is not None:
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(FleetError("the fleet was closed"))
        self._waiters.clear()

    async def deregister_all(self, *, timeout: float = 10.0, rate: float = 2000.0) -> None:
        """De-register every registered device, ``rate`` per second, and wait for the answers
        (or ``timeout``)."""
        engine = self.engine
        registered = [i for i, s in enumerate(engine.status) if s == REGISTERED]
        batch = max(1, int(rate / 50))
        for first in range(0, len(registered), batch):
            now = self.loop.time()
            for index in registered[first : first + batch]:
                engine.stop(index, now)
            self._after_io(now)
            if first + batch < len(registered):
                await asyncio.sleep(0.02)
        with contextlib.suppress(TimeoutError):
            await self.wait_until(
                lambda: engine.by_status[REGISTERED] == 0 and engine.by_status[4] == 0, timeout
            )

    # -- building the fleet -------------------------------------------------------------------
    def spawn(
        self,
        count: int | None = None,
        *,
        profile: DeviceProfile | None = None,
        identities: Sequence[Identity] | None = None,
        prefix: str = "sim-",
        server_uri: str | None = None,
        bootstrap_uri: str | None = None,
        x509: X509Credentials | None = None,
        bootstrap_x509: X509Credentials | None = None,
        start: bool = True,
        template: DeviceTemplate | None = None,
    ) -> list[int]:
        """Add ``count`` devices named ``<prefix>000001``... (or one per identity) with
        ``profile``; start them (at ``start_rate``) unless ``start`` is false. Returns their
        indices. A ``coaps://`` server needs PSK identities (or ``x509``). ``template``: a
        device model of the caller's instead of the fleet's (e.g. ``simulators.esim.fleet``:
        an object 3443 with an IPA behind it)."""
        engine = self.engine
        profile = profile or DeviceProfile()
        server = ServerUri.parse(server_uri) if server_uri else self.server_uri
        bootstrap = ServerUri.parse(bootstrap_uri) if bootstrap_uri else self.bootstrap_uri
        if identities is None:
            if count is None:
                raise FleetError("give a count or identities")
            first = len(engine) + 1
            identities = [Identity(endpoint_name(prefix, first + i)) for i in range(count)]
        elif count is not None and count != len(identities):
            raise FleetError(f"count {count} does not match {len(identities)} identities")
        secure = bootstrap.secure if bootstrap is not None else bool(server and server.secure)
        if secure and x509 is None and bootstrap_x509 is None:
            missing = [i.endpoint for i in identities if i.psk is None]
            if missing:
                raise FleetError(
                    f"{missing[0]} has no PSK: a coaps:// server needs PSK identities "
                    "(fleetloop sim identities) or a certificate"
                )
        if bootstrap is not None:
            mode = self._mode(bootstrap, bootstrap_x509)
            group = engine.add_group(profile, bootstrap_uri=str(bootstrap), bootstrap_mode=mode)
        else:
            if server is None:
                raise FleetError("no server_uri for these devices")
            group = engine.add_group(
                profile,
                server_uri=str(server),
                security_mode=self._mode(server, x509),
                template=template,
            )
        self._groups.append(_GroupIO(group, server, bootstrap, x509, bootstrap_x509))
        group_io = len(self._groups) - 1
        offset = time.time() - self.loop.time()
        indices = []
        for identity in identities:
            index = engine.add_device(group, identity.endpoint, clock_offset=offset)
            store = engine.clients[index].store
            psk = identity.psk
            if psk is not None:
                store.set(Path.of(0, 0, 3), psk[0])
                store.set(Path.of(0, 0, 5), psk[1])
            self._socks.append(None)
            self._group_io.append(group_io)
            indices.append(index)
        if start:
            self.start(indices)
        return indices

    @staticmethod
    def _mode(uri: ServerUri, x509: X509Credentials | None) -> SecurityMode:
        if not uri.secure:
            return SecurityMode.NO_SEC
        return SecurityMode.CERTIFICATE if x509 is not None else SecurityMode.PSK

    def start(self, indices: Iterable[int]) -> None:
        """Start devices (at ``start_rate`` per second, or all now).

        "All now" starts them as fast as the fleet can build their Registers, in chunks of
        ``_START_CHUNK`` per event-loop turn: answers are read and due retransmissions sent
        between chunks, and each chunk's timers start from that chunk's clock. (Starting
        10 000 devices in one go took seconds, and every retransmission timer, armed from a
        clock read before the loop, was overdue before the first answer was read.)"""
        self._pending.extend(indices)
        if self.start_rate <= 0:
            if self._starter is None:
                self._start_chunk()
        elif self._starter is None:
            self._ramp_last = self.loop.time()
            self._ramp_credit = 1.0
            self._starter = self.loop.call_later(0.0, self._ramp)

    def _ramp(self) -> None:
        now = self.loop.time()
        self._ramp_credit += (now - self._ramp_last) * self.start_rate
        self._ramp_last = now
        count = int(self._ramp_credit)
        if count:
            self._ramp_credit -= count
            self._start_batch(count)
        if self._pending:
            self._starter = self.loop.call_later(0.01, self._ramp)
        else:
            self._starter = None

    def _start_chunk(self) -> None:
        self._starter = None
        if self._closed:
            return
        self._start_batch(_START_CHUNK)
        if self._pending:
            self._starter = self.loop.call_at(self.loop.time(), self._start_chunk)

    def _start_batch(self, count: int) -> None:
        pending, engine = self._pending, self.engine
        now = self.loop.time()
        for started in range(min(count, len(pending))):
            if started and not started % _START_CHUNK:  # timers from the clock of their send
                self._after_io(now)
                now = self.loop.time()
            index = pending.popleft()
            io = self._groups[self._group_io[index]]
            if io.bootstrap is not None:
                self._enqueue("bootstrap", index)
            elif io.server is not None and io.server.secure:
                self._enqueue("dm", index)
            else:
                assert io.server is not None
                address = self._resolve_now(io.server)
                self._open_socket(index)
                engine.start(index, now, server=address)
        self._after_io(now)

    # -- the Python API -----------------------------------------------------------------------
    @property
    def counters(self) -> Counters:
        return self.engine.counters

    def counts(self) -> dict[str, int]:
        """Devices per status (``new``, ``registering``, ``registered``, ``failed``, ...)."""
        engine = self.engine
        out = dict(zip(STATUS_NAMES, engine.by_status, strict=True))
        out["failed"] += self.unreachable
        return out

    def __len__(self) -> int:
        return len(self.engine)

    def device(self, key: int | str) -> DeviceView:
        """A device by index or endpoint name."""
        engine = self.engine
        if isinstance(key, str):
            try:
                key = engine.index(key)
            except KeyError:
                raise FleetError(f"no device {key!r} in the fleet") from None
        if not 0 <= key < len(engine):
            raise FleetError(f"no device #{key} in the fleet")
        return DeviceView(self, key)

    def inject(self, key: int | str, fault: str) -> None:
        """Inject a fault into one device: ``reboot`` (power cycle, no De-register),
        ``factory-reset``, ``rebind`` (NAT rebinding: new source port), ``cut`` / ``restore``
        (link down / up), ``deregister``, ``update`` (Registration Update now)."""
        index = self.device(key).index
        engine = self.engine
        actions: dict[str, Callable[[float], None]] = {
            "reboot": lambda now: engine.reboot(index, now),
            "factory-reset": lambda now: engine.reboot(index, now, factory_reset=True),
            "rebind": lambda now: engine.rebind(index, now),
            "cut": lambda now: engine.cut(index, True, now),
            "restore": lambda now: engine.cut(index, False, now),
            "deregister": lambda now: engine.stop(index, now),
            "update": lambda now: engine.trigger_update(index, now),
        }
        try:
            action = actions[fault]
        except KeyError:
            choices = ", ".join(FAULTS)
            raise FleetError(f"unknown fault {fault!r}; choose one of {choices}") from None
        self._act(action)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked after every batch of fleet activity);
        TimeoutError after ``timeout`` seconds."""
        if predicate():
            return
        future: asyncio.Future[None] = self.loop.create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def wait_registered(self, count: int | None = None, timeout: float = 30.0) -> None:
        """Wait until ``count`` devices (default: all) are registered; TimeoutError says how
        many were."""
        engine = self.engine
        want = len(engine) if count is None else count
        try:
            await self.wait_until(lambda: engine.by_status[REGISTERED] >= want, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{engine.by_status[REGISTERED]} of {want} devices registered within {timeout} s"
                f" ({self.progress_line()})"
            ) from None

    def progress_line(self) -> str:
        """One line of progress: ``registered / updates / failed`` and friends."""
        engine = self.engine
        counts = self.counts()
        counters = engine.counters
        elapsed = self.loop.time() - self.started_at
        parts = [
            f"{elapsed:7.1f}s",
            f"registered {counts['registered']}/{len(engine)}",
            f"updates {counters.updates}",
            f"failed {counts['failed']}",
        ]
        handshaking = counts["new"] - len(self._pending)  # started, no CoAP yet (DTLS)
        busy = counts["registering"] + counts["waiting"] + counts["bootstrapping"] + handshaking
        if busy:
            parts.append(f"connecting {busy}")
        if counters.notifications:
            parts.append(f"notifications {counters.notifications}")
        if counters.reboots:
            parts.append(f"reboots {counters.reboots}")
        if self.handshake_failures:
            parts.append(f"handshake failures {self.handshake_failures}")
        lost = counters.dropped_loss + counters.dropped_mtu + counters.dropped_nat
        if lost:
            parts.append(f"lost {lost}")
        if counters.failure_codes:  # why attempts failed: "refused register 4.03 x12"
            worst = sorted(counters.failure_codes.items(), key=lambda item: -item[1])[:3]
            parts.append("refused " + ", ".join(f"{key} x{n}" for key, n in worst))
        return "  ".join(parts)

    def summary(self) -> dict[str, Any]:
        """Everything counted, for the end of a run (JSON-friendly)."""
        return {
            "devices": len(self.engine),
            "seconds": round(self.loop.time() - self.started_at, 3),
            "status": self.counts(),
            "counters": self.engine.counters.snapshot(),
            "io": {
                "send_errors": self.send_errors,
                "handshakes": self.handshakes,
                "handshake_failures": self.handshake_failures,
                "unreachable": self.unreachable,
            },
        }

    # -- engine plumbing ----------------------------------------------------------------------
    def _act(self, action: Callable[[float], None]) -> None:
        now = self.loop.time()
        action(now)
        self._after_io(now)

    def _after_io(self, now: float) -> None:
        """After feeding or acting on the engine: run it, re-arm the timer, wake waiters."""
        self.engine.process(now)
        self._arm()
        if self._waiters:
            for predicate, future in list(self._waiters):
                if not future.done() and predicate():
                    future.set_result(None)

    def _arm(self) -> None:
        deadline = self.engine.get_timer()
        if deadline is None or self._closed:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        now = self.loop.time()
        self.engine.handle_timer(now)
        self._after_io(now)

    def _on_event(self, index: int, event: ClientEvent | Outcome) -> None:
        if self._user_on_event is not None:
            self._user_on_event(index, event)
        if isinstance(event, BootstrapFinished):
            self.loop.call_soon(self._bootstrap_finished, index)
        elif isinstance(event, BootstrapRequested):
            self.loop.call_soon(self._bootstrap_requested, index)
        elif isinstance(event, BootstrapFailed) and event.retry_at is None:
            self.loop.call_soon(self._close_session, index)
        elif isinstance(event, UpdateFailed | RegistrationFailed) and event.code is None:
            self.loop.call_soon(self._rehandshake_after_timeout, index)

    def _rehandshake_after_timeout(self, index: int) -> None:
        """An Update or Register over DTLS got no answer: the server may have lost the session
        silently (restarted after a crash) and drops records of a session it does not know, so
        handshake again, as real clients do, before the device's retry goes out."""
        session = self._sessions.get(index) if self._sessions else None
        if self._closed or session is None or session.client is None:
            return
        session.client.abort()
        session.client = None
        self._enqueue("reconnect", index)

    # -- Wire (called by the engine) ----------------------------------------------------------
    def send(self, index: int, data: bytes, address: Address) -> None:
        session = self._sessions.get(index) if self._sessions else None
        if session is not None and session.address == address:
            client = session.client
            if client is None:
                self.send_errors += 1  # handshaking (again): CoAP retransmits later
                return
            try:
                client.send(data)
            except TransportError:
                self.send_errors += 1
            return
        sock = self._socks[index] or self._open_socket(index)
        try:
            sock.sendto(data, address)
        except OSError:
            self.send_errors += 1

    def rebind(self, index: int) -> None:
        if self._closed:
            return
        if self._socks[index] is not None:
            self._close_socket(index)
            self._open_socket(index)
        session = self._sessions.get(index) if self._sessions else None
        if session is not None and session.client is not None:
            # A new source port means a new DTLS handshake (no Connection ID in Mbed TLS 2.28).
            session.client.abort()
            session.client = None
            self._enqueue("reconnect", index)

    # -- UDP sockets --------------------------------------------------------------------------
    def _bind_address(self, family: int) -> str:
        if self._bind_host is not None:
            return self._bind_host
        servers = [u for u in (self.server_uri, self.bootstrap_uri) if u is not None]
        loopback = all(u.host in ("127.0.0.1", "localhost", "::1") for u in servers)
        if family == socket.AF_INET6:
            return "::1" if loopback else "::"
        return "127.0.0.1" if loopback else "0.0.0.0"

    def _open_socket(self, index: int) -> socket.socket:
        io = self._groups[self._group_io[index]]
        uri = io.server or io.bootstrap
        family = socket.AF_INET6 if uri is not None and ":" in uri.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self._bind_address(family), 0))
        except OSError:
            sock.close()
            raise
        fd = sock.fileno()
        fd_index = self._fd_index
        if fd >= len(fd_index):
            fd_index.extend([-1] * (fd + 1024 - len(fd_index)))
        fd_index[fd] = index
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            self.loop.add_reader(fd, self._socket_ready, index)
        self._socks[index] = sock
        return sock

    def _close_socket(self, index: int) -> None:
        sock = self._socks[index]
        if sock is None:
            return
        self._socks[index] = None
        fd = sock.fileno()
        if fd >= 0:
            if self._epoll is not None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
            else:
                self.loop.remove_reader(fd)
            self._fd_index[fd] = -1
        sock.close()

    def _local_address(self, index: int) -> Address | None:
        session = self._sessions.get(index)
        if session is not None and session.client is not None:
            return tuple(session.client.local_address)
        sock = self._socks[index]
        return None if sock is None else tuple(sock.getsockname()[:2])

    def _epoll_ready(self) -> None:
        now = self.loop.time()
        receive = self.engine.receive
        socks, fd_index = self._socks, self._fd_index
        for fd, _ in self._epoll.poll(0):
            index = fd_index[fd] if fd < len(fd_index) else -1
            if index < 0:
                continue
            sock = socks[index]
            if sock is None:
                continue
            for _ in range(READ_BATCH):
                try:
                    data, addr = sock.recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                receive(index, data, (addr[0], addr[1]), now)
        self._after_io(now)

    def _socket_ready(self, index: int) -> None:
        sock = self._socks[index]
        if sock is None:
            return
        now = self.loop.time()
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            self.engine.receive(index, data, (addr[0], addr[1]), now)
        self._after_io(now)

    # -- resolving, DTLS, bootstrap -----------------------------------------------------------
    def _resolve_now(self, uri: ServerUri) -> Address:
        """Resolve a server URI once per fleet (a literal address costs nothing)."""
        key = (uri.host, uri.port)
        address = self._resolved.get(key)
        if address is None:
            infos = socket.getaddrinfo(uri.host, uri.port, type=socket.SOCK_DGRAM)
            sockaddr = infos[0][4]
            address = (str(sockaddr[0]), int(sockaddr[1]))
            self._resolved[key] = address
        return address

    def _enqueue(self, kind: str, index: int) -> None:
        if self._work is not None and not self._closed:
            self._work.put_nowait((kind, index))

    async def _worker(self) -> None:
        assert self._work is not None
        while True:
            kind, index = await self._work.get()
            try:
                if kind == "bootstrap":
                    await self._connect_bootstrap(index)
                elif kind == "dm":
                    await self._connect_dm(index)
                elif kind == "reconnect":
                    await self._reconnect(index)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._retry_later(kind, index)

    def _retry_later(self, kind: str, index: int) -> None:
        attempts = self._attempts.get(index, 0) + 1
        self._attempts[index] = attempts
        if attempts >= self.connect_attempts and kind != "reconnect":
            # a lost session is retried for as long as the fleet runs (the server may take a
            # while to come back); a first connection gives up and counts as unreachable
            self._attempts.pop(index, None)
            self.unreachable += 1
            return
        delay = min(60.0, 2.0**attempts) * (0.5 + random.random())
        self.loop.call_later(delay, self._enqueue, kind, index)

    async def _handshake(
        self,
        index: int,
        uri: ServerUri,
        psk: tuple[bytes, bytes] | None,
        x509: X509Credentials | None,
    ) -> _Session:
        address = self._resolve_now(uri)
        session = _Session(self, index, uri, address, psk, x509)
        old = self._sessions.get(index)
        if old is not None and old.client is not None:
            old.client.close()
        self._sessions[index] = session
        try:
            client = await DtlsClient.connect(
                session,
                uri.host,
                uri.port,
                DtlsClientConfig(psk=psk, x509=x509),
                timeout=self.handshake_timeout,
                on_session_closed=session.session_closed,
            )
        except BaseException:
            # The session stays, without a client: the device's datagrams for that server are
            # dropped (CoAP retransmits) until a retry's handshake succeeds.
            self.handshake_failures += 1
            raise
        self.handshakes += 1
        self._attempts.pop(index, None)
        session.client = client
        return session

    def _credentials(
        self,
        index: int,
        mode: SecurityMode,
        identity: bytes,
        secret: bytes,
        server_key: bytes,
        x509: X509Credentials | None,
    ) -> tuple[tuple[bytes, bytes] | None, X509Credentials | None]:
        if mode is SecurityMode.PSK:
            return (identity, secret), None
        if mode.uses_certificates:
            if x509 is not None:
                return None, x509
            return None, X509Credentials((identity,), secret, (server_key,))
        return None, None

    async def _reconnect(self, index: int) -> None:
        """A new handshake for the session the device lost (same server, same credentials)."""
        session = self._sessions.get(index)
        if session is None or session.client is not None or self._closed:
            return
        await self._handshake(index, session.uri, session.psk, session.x509)

    async def _connect_dm(self, index: int) -> None:
        engine = self.engine
        store = engine.clients[index].store
        io = self._groups[self._group_io[index]]
        account = dm_account(store)
        if account is None:
            raise FleetError(f"{store.endpoint} has no DM server account")
        uri = ServerUri.parse(account.uri)
        address = self._resolve_now(uri)
        if uri.secure:
            psk, x509 = self._credentials(
                index,
                account.mode,
                account.identity,
                account.secret,
                account.server_key,
                io.x509,
            )
            await self._handshake(index, uri, psk, x509)
        else:
            self._close_session(index)
            if self._socks[index] is None:
                self._open_socket(index)
        now = self.loop.time()
        engine.start(index, now, server=address)
        self._after_io(now)

    async def _connect_bootstrap(self, index: int) -> None:
        engine = self.engine
        store = engine.clients[index].store
        io = self._groups[self._group_io[index]]
        account = bootstrap_account(store)
        if account is None or io.bootstrap is None:
            raise FleetError(f"{store.endpoint} has no bootstrap account")
        uri = ServerUri.parse(account.uri) if account.uri else io.bootstrap
        address = self._resolve_now(uri)
        self._close_session(index)
        if uri.secure:
            psk, x509 = self._credentials(
                index,
                account.mode,
                account.identity,
                account.secret,
                account.server_key,
                io.bootstrap_x509,
            )
            await self._handshake(index, uri, psk, x509)
        elif self._socks[index] is None:
            self._open_socket(index)
        now = self.loop.time()
        engine.start_bootstrap(index, address, now)
        self._after_io(now)

    def _bootstrap_finished(self, index: int) -> None:
        if self._closed:
            return
        now = self.loop.time()
        self.engine.end_bootstrap(index, now)
        self._close_session(index)
        self._after_io(now)
        self._enqueue("dm", index)

    def _bootstrap_requested(self, index: int) -> None:
        if self._closed:
            return
        now = self.loop.time()
        engine = self.engine
        if engine.status[index] == REGISTERED:
            engine.stop(index, now)
            self._after_io(now)
        # Let the De-register go out (and usually be answered) before the DM session closes.
        self.loop.call_later(1.0, self._enqueue, "bootstrap", index)

    def _close_session(self, index: int) -> None:
        session = self._sessions.pop(index, None)
        if session is not None and session.client is not None:
            session.client.close()

    def _session_closed(self, session: _Session, reason: str) -> None:
        """The server ended a DTLS session (evicted, expired, closed): handshake again."""
        if self._closed or self._sessions.get(session.index) is not session:
            return
        session.client = None
        if self.engine.status[session.index] != FAILED:
            self.loop.call_later(1.0, self._enqueue, "reconnect", session.index)


__all__ = ["FAULTS", "DeviceFleet", "DeviceView", "FleetError"]
