"""The fleet engine: thousands of simulated LwM2M devices as one sans-IO object.

Like :class:`~simulators.device.core.DeviceCore` for one device, the engine does no I/O and
reads no clock; it is driven aioquic-style by whoever owns the sockets
(:mod:`simulators.fleet.runner`) or by a test on a fake clock::

    engine = FleetEngine(wire, seed=1)
    group = engine.add_group(PROFILES["nbiot"], server_uri="coap://127.0.0.1:5683")
    index = engine.add_device(group, "sim-000001")
    engine.start(index, now, server=("127.0.0.1", 5683))
    engine.receive(index, data, ("127.0.0.1", 5683), now)   # a datagram for device ``index``
    engine.process(now)                  # after a batch of receives: run the devices, send
    engine.get_timer() / engine.handle_timer(now)

and it sends through the injected :class:`Wire` (``send(index, data, address)``,
``rebind(index)`` for a new source port).

Why one engine and not one core per device: the costs that grow with the fleet are what
matters at ten thousand devices, so everything per device that can be shared is.

* **One CoAP endpoint for all devices.** Device ``i`` talks to a server at ``address`` as the
  CoAP peer ``(i, address)``; the endpoint keeps separate Message IDs, tokens, dedup and
  NSTART per peer, exactly as if each device had its own, and one timer heap for every
  retransmission. An idle device's peer state is freed after EXCHANGE_LIFETIME.
* **One timer heap for all devices.** Each device has at most one live entry
  ``(deadline, index)``; its current deadline lives in a flat array, so an entry whose
  deadline changed is recognised as stale when popped. Link emulation deliveries have a heap
  of their own. The owner arms a single loop timer at :meth:`get_timer`.
* **Flat per-device arrays** (status, flags, link state, traffic counters) instead of an
  object per device; per-device dicts only for the few devices doing something unusual
  (bootstrapping, downloading, offline after an APN change, counting traffic).
* **One template per group**, shared by its devices (see ``simulators/device/models.py``).

The engine is also the devices' :class:`~simulators.device.services.DeviceServices`: it
downloads firmware through the shared endpoint, re-attaches devices after an APN change,
counts their traffic, draws their misbehaviour from the seeded RNG, and counts outcomes.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import random
from array import array
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import (
    CoapEndpoint,
    EndpointConfig,
    Event,
    NotificationReceived,
    ObservationCancelled,
    ObserverRemoved,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.model import Path
from objects.enums import SecurityMode
from simulators.device import cellular, firmware
from simulators.device.bootstrap import BootstrapClient
from simulators.device.client import LwM2MClient, State
from simulators.device.events import (
    BootstrapFailed,
    BootstrapFinished,
    BootstrapRequested,
    ClientEvent,
    Deregistered,
    Notified,
    Rebooted,
    Registered,
    RegistrationFailed,
    SendCompleted,
    SendFailed,
    Updated,
    UpdateFailed,
)
from simulators.device.models import fleet_template
from simulators.device.objects import ObjectStore
from simulators.device.services import FetchDone
from simulators.device.template import DeviceActions, DeviceTemplate
from simulators.netem import LinkProfile, transit
from simulators.profiles import DeviceProfile

Address = tuple[Any, ...]
"""A socket address as the owner's sockets report it: ``(host, port)``."""

INF = float("inf")
NOWHERE: Address = ("", 0)

# Device status (one byte per device; ``FleetEngine.status``).
NEW, WAITING, REGISTERING, REGISTERED, DEREGISTERING, STOPPED, FAILED, BOOTSTRAPPING = range(8)
STATUS_NAMES = (
    "new",
    "waiting",
    "registering",
    "registered",
    "deregistering",
    "stopped",
    "failed",
    "bootstrapping",
)

# Device flags (one byte per device).
STARTED, GAVE_UP, NO_APN, CUT, SLOW, REBOOT_PRONE, COUNTING, SILENT = 1, 2, 4, 8, 16, 32, 64, 128
REBOOT_LOOP = 4
"""Reboots a device makes after booting a reboot-looping image (``build_image(...,
reboot_loop=True)``), one every :data:`REBOOT_LOOP_EVERY` seconds after each boot."""
REBOOT_LOOP_EVERY = 1.0
OFFLINE = NO_APN | CUT


class Wire(Protocol):
    """How the engine reaches the network (the runner's sockets, or a test's fake)."""

    def send(self, index: int, data: bytes, address: Address) -> None:
        """Send ``data`` from device ``index`` to ``address`` now."""

    def rebind(self, index: int) -> None:
        """Device ``index`` gets a new source port (NAT rebinding, reboot, new IP)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A behaviour outcome of one device (recorded with its events when recording):
    ``firmware_updated``, ``firmware_reverted``, ``config_rejected``, ``apn_lost``, ..."""

    name: str


@dataclass(slots=True)
class Counters:
    """Fleet-wide counters (monotonic)."""

    registrations: int = 0
    registration_failures: int = 0
    updates: int = 0
    update_failures: int = 0
    deregistrations: int = 0
    reboots: int = 0
    notifications: int = 0
    sends: int = 0
    send_failures: int = 0
    bootstraps: int = 0
    bootstrap_failures: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    dropped_loss: int = 0
    dropped_mtu: int = 0
    dropped_offline: int = 0
    dropped_asleep: int = 0
    dropped_nat: int = 0
    #: Requests a silent device (``Behaviour.silent``) left unanswered.
    dropped_silent: int = 0
    nat_rebinds: int = 0
    duplicated: int = 0
    apn_changes: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    #: Failed Register / Update / Bootstrap attempts by operation and CoAP response code
    #: (``"register 4.03"``; ``"register no answer"`` when nothing came back): why devices were
    #: refused, not only how often.
    failure_codes: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__slots__
            if name not in ("outcomes", "failure_codes")
        }
        out["outcomes"] = dict(self.outcomes)
        out["failure_codes"] = dict(sorted(self.failure_codes.items()))
        return out

    def failed(self, operation: str, code: str | None) -> None:
        key = f"{operation} {code or 'no answer'}"
        self.failure_codes[key] = self.failure_codes.get(key, 0) + 1


@dataclass(frozen=True, slots=True)
class Group:
    """Devices spawned together: one profile, one template (shared), one client config."""

    id: int
    profile: DeviceProfile
    template: DeviceTemplate
    #: The APN the template's devices attach with (None: no APN profiles).
    apn: str | None

    @property
    def link(self) -> LinkProfile:
        return self.profile.link


def _unit(seed: object, endpoint: str, salt: str) -> float:
    """A per-device uniform draw in [0, 1) that depends only on seed, name and purpose."""
    digest = hashlib.blake2b(f"{seed}/{endpoint}/{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _is_request(data: bytes) -> bool:
    """Whether a CoAP datagram carries a request (code class 0, not the empty message)."""
    return len(data) >= 2 and 0 < data[1] < 32


def _peer_of(event: Event) -> Hashable:
    if isinstance(event, RequestReceived):
        return event.peer
    if isinstance(event, ObserverRemoved):
        return event.observation.peer
    return event.request.peer  # ResponseReceived, RequestFailed, Notification..., Observation...


def numeric_resolver(host: str, port: int) -> Address | None:
    """Resolve IP literals (and ``localhost``) without DNS: the engine must not block."""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (str(ip), port)


class FleetEngine:
    """Many simulated devices on one shared CoAP endpoint (see the module docstring)."""

    def __init__(
        self,
        wire: Wire,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        coap_config: EndpointConfig | None = None,
        on_event: Callable[[int, ClientEvent | Outcome], None] | None = None,
        record_events: bool = False,
        resolver: Callable[[str, int], Address | None] = numeric_resolver,
    ) -> None:
        self.wire = wire
        self.seed = seed
        self.rng = rng or random.Random(seed)
        self.coap = CoapEndpoint(
            rng=self.rng,
            config=coap_config or EndpointConfig(max_peers=1_000_000, max_dedup_entries=1_000_000),
        )
        self.on_event = on_event
        self.resolver = resolver
        self.counters = Counters()
        self.groups: list[Group] = []
        self.clients: list[LwM2MClient] = []
        #: Per-device arrays, indexed like ``clients``.
        self.group_of = array("H")
        self.status = bytearray()
        self.flags = bytearray()
        #: Devices running a reboot-looping image: reboots still to come (firmware.py).
        self.reboot_loops: dict[int, int] = {}
        self.timer_at = array("d")
        self.last_tx = array("d")
        self._up_free = array("d")
        self._up_last = array("d")
        self._down_free = array("d")
        self._down_last = array("d")
        self.tx_bytes = array("Q")
        self.rx_bytes = array("Q")
        self.messages = array("L")
        self.max_message = array("L")
        #: Devices per status (``STATUS_NAMES``).
        self.by_status = [0] * len(STATUS_NAMES)
        #: Recorded events per device (``record_events=True``; for tests).
        self.events: dict[int, list[ClientEvent | Outcome]] | None = {} if record_events else None
        self._timers: list[tuple[float, int]] = []
        self._deliveries: list[tuple[float, int, int, bool, bytes, Address]] = []
        self._seq = 0
        self._touched: set[int] = set()
        self._busy = False
        self._bootstraps: dict[int, BootstrapClient] = {}
        self._downloads: dict[RequestHandle, tuple[int, FetchDone]] = {}
        self._download_of: dict[int, RequestHandle] = {}
        self._apn: dict[int, str | None] = {}
        self._traffic_base: dict[int, tuple[int, int, int]] = {}
        self._traffic_frozen: dict[int, tuple[int, int, int, int]] = {}
        self._by_name: dict[str, int] | None = None

    # -- building the fleet -------------------------------------------------------------------
    def add_group(
        self,
        profile: DeviceProfile,
        *,
        server_uri: str = "coap://127.0.0.1:5683",
        security_mode: SecurityMode = SecurityMode.NO_SEC,
        bootstrap_uri: str | None = None,
        bootstrap_mode: SecurityMode = SecurityMode.NO_SEC,
        template: DeviceTemplate | None = None,
    ) -> Group:
        """A group of devices with ``profile`` (the template is built once for all of them)."""
        if template is None:
            template = fleet_template(
                self,
                server_uri=server_uri,
                lifetime=profile.lifetime,
                security_mode=security_mode,
                bootstrap_uri=bootstrap_uri,
                bootstrap_mode=bootstrap_mode,
                behaviour=profile.behaviour,
            )
        apn = cellular.active_apn(ObjectStore(template, ""))
        group = Group(len(self.groups), profile, template, apn)
        self.groups.append(group)
        return group

    def add_device(self, group: Group, endpoint: str, *, clock_offset: float = 0.0) -> int:
        """A new device (not started); returns its index."""
        index = len(self.clients)
        store = ObjectStore(group.template, endpoint, clock_offset=clock_offset)
        client = LwM2MClient(
            store, self.coap, (index, NOWHERE), config=group.profile.config, rng=self.rng
        )
        self.clients.append(client)
        self.group_of.append(group.id)
        self.status.append(NEW)
        self.by_status[NEW] += 1
        behaviour = group.profile.behaviour
        flags = 0
        if behaviour.slow and _unit(self.seed, endpoint, "slow") < behaviour.slow:
            flags |= SLOW
        if behaviour.reboot_prone and _unit(self.seed, endpoint, "reboot") < behaviour.reboot_prone:
            flags |= REBOOT_PRONE
        if behaviour.silent and _unit(self.seed, endpoint, "silent") < behaviour.silent:
            flags |= SILENT
        self.flags.append(flags)
        for column in (
            self.timer_at,
            self.last_tx,
            self._up_free,
            self._up_last,
            self._down_free,
            self._down_last,
        ):
            column.append(0.0)
        self.timer_at[index] = INF
        for counter in (self.tx_bytes, self.rx_bytes, self.messages, self.max_message):
            counter.append(0)
        if self._by_name is not None:
            self._by_name[endpoint] = index
        return index

    def __len__(self) -> int:
        return len(self.clients)

    def index(self, endpoint: str) -> int:
        """The index of the device named ``endpoint`` (KeyError if none)."""
        if self._by_name is None:
            self._by_name = {c.store.endpoint: i for i, c in enumerate(self.clients)}
        return self._by_name[endpoint]

    # -- driving the devices ------------------------------------------------------------------
    def start(self, index: int, now: float, *, server: Address | None = None) -> None:
        """Register device ``index`` with the DM server at ``server`` (or the one it knows)."""
        client = self.clients[index]
        if server is not None:
            client.server = (index, server)
        first = not self.flags[index] & STARTED
        self.flags[index] = (self.flags[index] | STARTED) & ~GAVE_UP
        if first and self.flags[index] & REBOOT_PRONE:
            self._schedule_unexpected_reboot(index, now)
        client.start(now)
        self._touch(index, now)

    def start_bootstrap(self, index: int, server: Address, now: float) -> None:
        """Bootstrap device ``index`` from the bootstrap server at ``server``."""
        client = self.clients[index]
        self.flags[index] |= STARTED
        bootstrap = BootstrapClient(
            client.store, self.coap, (index, server), config=client.config, emit=client._emit
        )
        bootstrap.version = client.lwm2m_version
        self._bootstraps[index] = bootstrap
        bootstrap.start(now)
        self._touch(index, now)

    def end_bootstrap(self, index: int, now: float) -> None:
        """Forget the bootstrap client of device ``index`` (the runner closed its transport)."""
        bootstrap = self._bootstraps.pop(index, None)
        if bootstrap is not None:
            self.coap.forget_peer(bootstrap.server, now)
            self._touch(index, now)

    def stop(self, index: int, now: float) -> None:
        """De-register device ``index`` (or stop it trying)."""
        self.clients[index].stop(now)
        self._touch(index, now)

    def reboot(self, index: int, now: float, *, factory_reset: bool = False) -> None:
        """Restart device ``index`` without warning (no De-register), as a power cut does."""
        self.clients[index].reboot(now, factory_reset=factory_reset)
        self._touch(index, now)

    def set_value(self, index: int, path: Path | str, value: object, now: float) -> None:
        self.clients[index].set(path, value, now)
        self._touch(index, now)

    def send(self, index: int, paths: Iterable[Path | str], now: float) -> None:
        self.clients[index].send(paths, now)
        self._touch(index, now)

    def trigger_update(self, index: int, now: float) -> None:
        self.clients[index].trigger_update(now)
        self._touch(index, now)

    def cut(self, index: int, offline: bool, now: float) -> None:
        """Cut (or restore) device ``index``'s link: nothing gets through either way."""
        if offline:
            self.flags[index] |= CUT
        else:
            self.flags[index] &= ~CUT
        self._touch(index, now)

    def rebind(self, index: int, now: float) -> None:
        """NAT rebinding now: the device's next datagrams leave from a new source port."""
        self.counters.nat_rebinds += 1
        self.wire.rebind(index)

    def forget(self, index: int, address: Address, now: float) -> None:
        """The transport to ``address`` is gone (DTLS session closed): its exchanges fail."""
        self.coap.forget_peer((index, address), now)
        self._touch(index, now)

    def receive(self, index: int, data: bytes, address: Address, now: float) -> None:
        """A datagram for device ``index`` from ``address`` (call :meth:`process` after a
        batch)."""
        size = len(data)
        self.rx_bytes[index] += size
        self.messages[index] += 1
        if size > self.max_message[index]:
            self.max_message[index] = size
        counters = self.counters
        counters.datagrams_received += 1
        counters.bytes_received += size
        flags = self.flags[index]
        if flags & OFFLINE:
            counters.dropped_offline += 1
            return
        if flags & SILENT and _is_request(data) and self.status[index] == REGISTERED:
            counters.dropped_silent += 1  # a hung application: it never answers a server
            return
        link = self.groups[self.group_of[index]].profile.link
        if link.nat_timeout and now - self.last_tx[index] > link.nat_timeout:
            counters.dropped_nat += 1
            return
        if link.ideal:
            self._deliver(index, data, address, now)
            return
        arrivals, self._down_free[index], self._down_last[index], too_big = transit(
            link,
            size,
            now,
            self._down_free[index],
            self._down_last[index],
            link.downlink_bps,
            self.rng,
        )
        self._schedule(index, False, data, address, arrivals, too_big, now)

    def process(self, now: float) -> None:
        """Run the devices after receives or actions: events, answers, datagrams out."""
        if self._busy:
            return
        self._busy = True
        try:
            for _ in range(64):
                self._pump(now)
                if not self._touched:
                    break
                touched, self._touched = self._touched, set()
                for index in touched:
                    self._drain(index, now)
                    self._rearm(index)
            self._flush(now)
        finally:
            self._busy = False

    def get_timer(self) -> float | None:
        """The earliest deadline of any device, delivery or retransmission."""
        timers, timer_at = self._timers, self.timer_at
        while timers and timer_at[timers[0][1]] != timers[0][0]:
            heapq.heappop(timers)
        due = timers[0][0] if timers else INF
        if self._deliveries and self._deliveries[0][0] < due:
            due = self._deliveries[0][0]
        coap = self.coap.get_timer()
        if coap is not None and coap < due:
            due = coap
        return None if due == INF else due

    def handle_timer(self, now: float) -> None:
        """Run everything due at ``now``."""
        timers, timer_at = self._timers, self.timer_at
        due: list[int] = []
        while timers and timers[0][0] <= now:
            at, index = heapq.heappop(timers)
            if timer_at[index] == at:
                timer_at[index] = INF
                due.append(index)
        for index in due:
            self.clients[index].handle_timer(now)
            bootstrap = self._bootstraps.get(index) if self._bootstraps else None
            if bootstrap is not None:
                deadline = bootstrap.get_timer()
                if deadline is not None and deadline <= now:
                    bootstrap.handle_timer(now)
            self._touched.add(index)
        deliveries = self._deliveries
        while deliveries and deliveries[0][0] <= now:
            _, _, index, up, data, address = heapq.heappop(deliveries)
            if up:
                self._transmit(index, data, address)
            else:
                self._deliver(index, data, address, now)
        coap = self.coap.get_timer()
        if coap is not None and coap <= now:
            self.coap.handle_timer(now)
        self.process(now)

    # -- internals ----------------------------------------------------------------------------
    def _touch(self, index: int, now: float) -> None:
        self._touched.add(index)
        self.process(now)

    def _pump(self, now: float) -> None:
        coap, touched, clients = self.coap, self._touched, self.clients
        while (event := coap.next_event()) is not None:
            peer = _peer_of(event)
            assert isinstance(peer, tuple)
            index = peer[0]
            touched.add(index)
            if self._downloads and isinstance(
                event, ResponseReceived | RequestFailed | ObservationCancelled
            ):
                download = self._downloads.pop(event.request, None)
                if download is not None:
                    self._download_done(index, download[1], event, now)
                    continue
            if isinstance(event, NotificationReceived):
                continue  # devices observe nothing
            bootstrap = self._bootstraps.get(index) if self._bootstraps else None
            if bootstrap is not None and bootstrap.owns(event):
                bootstrap.handle_coap_event(event, now)
            else:
                clients[index].handle_coap_event(event, now)

    def _drain(self, index: int, now: float) -> None:
        client = self.clients[index]
        counters = self.counters
        while (event := client.next_event()) is not None:
            kind = type(event)
            if kind is Registered:
                counters.registrations += 1
                self.flags[index] &= ~GAVE_UP
            elif kind is Updated:
                counters.updates += 1
            elif kind is Notified:
                counters.notifications += 1
            elif kind is UpdateFailed:
                counters.update_failures += 1
                assert isinstance(event, UpdateFailed)
                counters.failed("update", event.code)
            elif kind is RegistrationFailed:
                counters.registration_failures += 1
                assert isinstance(event, RegistrationFailed)
                counters.failed("register", event.code)
                if event.retry_at is None:
                    self.flags[index] |= GAVE_UP
            elif kind is Deregistered:
                counters.deregistrations += 1
            elif kind is Rebooted:
                self._rebooted(index, now)
            elif kind is SendCompleted:
                counters.sends += 1
            elif kind is SendFailed:
                counters.send_failures += 1
            elif kind is BootstrapFinished:
                counters.bootstraps += 1
            elif kind is BootstrapFailed:
                counters.bootstrap_failures += 1
                assert isinstance(event, BootstrapFailed)
                counters.failed("bootstrap", event.code)
            elif kind is BootstrapRequested:
                pass
            self._record(index, event)
        self._set_status(index)

    def _record(self, index: int, event: ClientEvent | Outcome) -> None:
        if self.events is not None:
            self.events.setdefault(index, []).append(event)
        if self.on_event is not None:
            self.on_event(index, event)

    def _set_status(self, index: int) -> None:
        bootstrap = self._bootstraps.get(index) if self._bootstraps else None
        state = self.clients[index].state
        if bootstrap is not None and (bootstrap.active or bootstrap.get_timer() is not None):
            status = BOOTSTRAPPING
        elif state is State.REGISTERED:
            status = REGISTERED
        elif state is State.REGISTERING:
            status = REGISTERING
        elif state is State.DEREGISTERING:
            status = DEREGISTERING
        elif state is State.STOPPED:
            status = FAILED if self.flags[index] & GAVE_UP else STOPPED
        else:
            status = WAITING if self.flags[index] & STARTED else NEW
        old = self.status[index]
        if old != status:
            self.by_status[old] -= 1
            self.by_status[status] += 1
            self.status[index] = status

    def _rearm(self, index: int) -> None:
        due = self.clients[index].get_timer()
        at = INF if due is None else due
        bootstrap = self._bootstraps.get(index) if self._bootstraps else None
        if bootstrap is not None:
            deadline = bootstrap.get_timer()
            if deadline is not None and deadline < at:
                at = deadline
        if at != self.timer_at[index]:
            self.timer_at[index] = at
            if at != INF:
                timers = self._timers
                heapq.heappush(timers, (at, index))
                if len(timers) > 2 * len(self.clients) + 1024:
                    self._compact()

    def _compact(self) -> None:
        timer_at = self.timer_at
        self._timers = [(at, i) for i, at in enumerate(timer_at) if at != INF]
        heapq.heapify(self._timers)

    def _flush(self, now: float) -> None:
        for data, peer in self.coap.datagrams_to_send(now):
            assert isinstance(peer, tuple)
            self._uplink(peer[0], data, peer[1], now)

    def _uplink(self, index: int, data: bytes, address: Address, now: float) -> None:
        flags = self.flags[index]
        if flags & OFFLINE:
            self.counters.dropped_offline += 1
            return
        profile = self.groups[self.group_of[index]].profile
        link = profile.link
        if link.nat_timeout:
            last = self.last_tx[index]
            if last and now - last > link.nat_timeout:
                self.rebind(index, now)
        self.last_tx[index] = now
        slow = profile.behaviour.slow_delay if flags & SLOW else 0.0
        if link.ideal and not slow:
            self._transmit(index, data, address)
            return
        arrivals, self._up_free[index], self._up_last[index], too_big = transit(
            link,
            len(data),
            now + slow,
            self._up_free[index],
            self._up_last[index],
            link.uplink_bps,
            self.rng,
        )
        self._schedule(index, True, data, address, arrivals, too_big, now)

    def _schedule(
        self,
        index: int,
        up: bool,
        data: bytes,
        address: Address,
        arrivals: tuple[float, ...],
        too_big: bool,
        now: float,
    ) -> None:
        counters = self.counters
        if not arrivals:
            if too_big:
                counters.dropped_mtu += 1
            else:
                counters.dropped_loss += 1
            return
        if len(arrivals) > 1:
            counters.duplicated += 1
        for at in arrivals:
            if at <= now:
                if up:
                    self._transmit(index, data, address)
                else:
                    self._deliver(index, data, address, now)
            else:
                self._seq += 1
                heapq.heappush(self._deliveries, (at, self._seq, index, up, data, address))

    def _transmit(self, index: int, data: bytes, address: Address) -> None:
        size = len(data)
        self.tx_bytes[index] += size
        self.messages[index] += 1
        if size > self.max_message[index]:
            self.max_message[index] = size
        counters = self.counters
        counters.datagrams_sent += 1
        counters.bytes_sent += size
        self.wire.send(index, data, address)

    def _deliver(self, index: int, data: bytes, address: Address, now: float) -> None:
        if self.flags[index] & OFFLINE:
            self.counters.dropped_offline += 1
            return
        if self.clients[index].asleep:
            self.counters.dropped_asleep += 1
            return
        self.coap.receive_datagram(data, (index, address), now)

    def _rebooted(self, index: int, now: float) -> None:
        self.counters.reboots += 1
        self._cancel_download(index, now)
        client = self.clients[index]
        firmware.after_reboot(client.store, now)
        self.wire.rebind(index)  # a restarted modem gets a new source port
        if self.flags[index] & REBOOT_PRONE:
            self._schedule_unexpected_reboot(index, now)
        left = self.reboot_loops.get(index, 0)
        if left > 0:  # a reboot-looping image: up again, and down again shortly after
            self.reboot_loops[index] = left - 1
            client.schedule(now + REBOOT_LOOP_EVERY, lambda at: client.reboot(at))
        if self.flags[index] & NO_APN:
            self._attach(index, cellular.active_apn(client.store), now, fallback=None)

    def _schedule_unexpected_reboot(self, index: int, now: float) -> None:
        client = self.clients[index]
        mean = self.groups[self.group_of[index]].profile.behaviour.reboot_mean
        client.schedule(now + self.rng.expovariate(1.0 / mean), lambda at: client.reboot(at))

    # -- DeviceServices -----------------------------------------------------------------------
    def _index_of(self, device: DeviceActions) -> int:
        assert isinstance(device, LwM2MClient)
        server = device.server
        assert isinstance(server, tuple)
        index = server[0]
        assert isinstance(index, int)
        return index

    def fetch(self, device: DeviceActions, uri: str, now: float, done: FetchDone) -> int | None:
        """Block-wise GET of ``uri`` through the shared endpoint: ``coap://`` anywhere, and
        ``coaps://`` from the server the device is registered with (over its DTLS session:
        the runner sends a device's datagrams for its server's address through it)."""
        index = self._index_of(device)
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            return 7
        if parts.scheme not in ("coap", "coaps"):
            return 9 if parts.scheme else 7
        if not parts.hostname:
            return 7
        secure = parts.scheme == "coaps"
        address = self.resolver(parts.hostname, port or (5684 if secure else 5683))
        if address is None:
            return 7
        if secure:
            server = getattr(device, "server", None)
            if not isinstance(server, tuple) or server[1] != address:
                return 9  # no DTLS session with that server: this device cannot fetch there
        message = Message(
            code=Code.GET,
            uri_path=tuple(unquote(s) for s in parts.path.split("/") if s),
            uri_query=tuple(unquote(q) for q in parts.query.split("&") if q),
        )
        self._cancel_download(index, now)
        handle = self.coap.send_request((index, address), message, now)
        self._downloads[handle] = (index, done)
        self._download_of[index] = handle
        return None

    def cancel_fetch(self, device: DeviceActions, now: float) -> None:
        self._cancel_download(self._index_of(device), now)

    def _cancel_download(self, index: int, now: float) -> None:
        handle = self._download_of.pop(index, None)
        if handle is not None:
            self._downloads.pop(handle, None)
            self.coap.cancel_request(handle, now)

    def _download_done(self, index: int, done: FetchDone, event: Event, now: float) -> None:
        self._download_of.pop(index, None)
        if isinstance(event, ResponseReceived):
            message = event.message
            if message.code == Code.CONTENT:
                done(message.payload, None, now)
            else:
                done(None, f"{message.code >> 5}.{message.code & 31:02d}", now)
        elif isinstance(event, RequestFailed):
            done(None, event.reason.value, now)
        else:
            done(None, "cancelled", now)

    def network_changed(self, device: DeviceActions, now: float) -> None:
        index = self._index_of(device)
        current = self._current_apn(index)
        wanted = cellular.active_apn(device.store)
        if wanted != current:
            self._attach(index, wanted, now, fallback=current)

    def _current_apn(self, index: int) -> str | None:
        if index in self._apn:
            return self._apn[index]
        return self.groups[self.group_of[index]].apn

    def _attach(self, index: int, apn: str | None, now: float, *, fallback: str | None) -> None:
        """Detach, then attach with ``apn`` after the link's attach time. ``fallback`` is the
        APN that worked before (None: this is already a fallback or a boot)."""
        group = self.groups[self.group_of[index]]
        profile = group.profile
        self.counters.apn_changes += 1
        reachable = apn is None or (
            apn != "" and (profile.reachable_apns is None or apn in profile.reachable_apns)
        )
        ok = reachable and (fallback is None or not self.chance(profile.behaviour.apn_loss))
        client = self.clients[index]

        def attached(at: float) -> None:
            if ok:
                self.flags[index] &= ~NO_APN
                if apn == group.apn:
                    self._apn.pop(index, None)
                else:
                    self._apn[index] = apn
                cellular.attached(client.store, apn, at)
                self.report(client, "apn_changed", at)
                if profile.link.static_address:
                    return  # same address: the client has nothing to tell the server
                self.wire.rebind(index)  # a new PDN context: new IP, new source port
                client.trigger_update(at)
                return
            self.report(client, "apn_lost", at)
            delay = profile.behaviour.apn_fallback
            if fallback is not None and delay > 0:

                def fall_back(later: float) -> None:
                    cellular.fall_back(client.store, fallback, later)
                    self.report(client, "apn_fallback", later)
                    self._attach(index, fallback, later, fallback=None)

                client.schedule(at + delay, fall_back)

        def detach(at: float) -> None:
            self.flags[index] |= NO_APN

        # Detach once the answer to the write that caused this is out (a timer at ``now``
        # fires after the current batch has been sent).
        client.schedule(now, detach)
        client.schedule(now + profile.link.attach_time, attached)
        self._touched.add(index)

    def traffic(self, store: ObjectStore) -> tuple[int, int, int, int]:
        index = self.index(store.endpoint)
        frozen = self._traffic_frozen.get(index)
        if frozen is not None:
            return frozen
        base = self._traffic_base.get(index)
        if base is None:
            return 0, 0, 0, 0
        return (
            self.tx_bytes[index] - base[0],
            self.rx_bytes[index] - base[1],
            self.max_message[index],
            self.messages[index] - base[2],
        )

    def traffic_control(self, device: DeviceActions, start: bool, now: float) -> None:
        index = self._index_of(device)
        if start:
            self._traffic_frozen.pop(index, None)
            self._traffic_base[index] = (
                self.tx_bytes[index],
                self.rx_bytes[index],
                self.messages[index],
            )
            self.max_message[index] = 0
            self.flags[index] |= COUNTING
        elif self.flags[index] & COUNTING:
            self._traffic_frozen[index] = self.traffic(device.store)
            self.flags[index] &= ~COUNTING

    def chance(self, probability: float) -> bool:
        return probability > 0.0 and self.rng.random() < probability

    def report(self, device: DeviceActions, outcome: str, now: float) -> None:
        outcomes = self.counters.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        index = self._index_of(device)
        if outcome == "firmware_reboot_loop":
            self.reboot_loops[index] = REBOOT_LOOP
        if self.events is not None or self.on_event is not None:
            self._record(index, Outcome(outcome))


__all__ = [
    "FAILED",
    "NEW",
    "REGISTERED",
    "REGISTERING",
    "STATUS_NAMES",
    "Address",
    "Counters",
    "FleetEngine",
    "Group",
    "Outcome",
    "Wire",
    "numeric_resolver",
]
