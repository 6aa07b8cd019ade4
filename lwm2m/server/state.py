"""The runtime's in-memory records: sockets (:class:`Channel`), registrations
(:class:`Device`) and requests on the wire (:class:`Pending`).

Plain ``__slots__`` classes: a server holds one :class:`Device` per registered device, so
their size is the server's memory per device (docs/SERVER.md). No logic beyond bookkeeping.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace

from lwm2m.coap import CoapEndpoint, Event, RequestHandle
from lwm2m.model import ModelError, Path
from lwm2m.server.config import ServerConfig
from lwm2m.server.errors import InvalidRequest
from lwm2m.server.observations import ObservationState
from lwm2m.server.operations import Response
from lwm2m.server.queue import QueuedEntry
from lwm2m.server.registration import registration_root
from lwm2m.server.results import OperationStatus
from lwm2m.store import Address as StoreAddress
from lwm2m.store import Registration
from lwm2m.transport import Peer, Transport
from lwm2m.transport.coap_shell import CoapShell


class Failure:
    """Why a request ended without a response."""

    __slots__ = ("reason", "status")

    def __init__(self, status: OperationStatus, reason: str) -> None:
        self.status = status
        self.reason = reason


Outcome = tuple[Response, bool] | Failure


class Channel:
    """One socket: its transport, its CoAP core and the shell running the core on it."""

    __slots__ = ("core", "dispatching", "handler", "secure", "shell", "transport")

    def __init__(
        self, handler: Callable[[Channel, Event], None], secure: bool, config: ServerConfig
    ) -> None:
        self.handler = handler
        self.secure = secure
        # A CON notification is acknowledged once its values are committed (server.py).
        coap = replace(config.coap, defer_notification_acks=True)
        self.core = CoapEndpoint(rng=random.SystemRandom(), config=coap)
        self.shell: CoapShell[Event] = CoapShell(self.core, self.on_event)
        self.transport: Transport | None = None
        self.dispatching = False

    def on_event(self, event: Event) -> None:
        self.dispatching = True
        try:
            self.handler(self, event)
        finally:
            self.dispatching = False

    def now(self) -> float:
        return self.shell.now()

    def flush(self) -> None:
        """Send what the core has queued -- unless we are inside the shell's event drain,
        which flushes by itself when the handler returns."""
        if not self.dispatching:
            self.shell.flush()


class Device:
    """Everything the server keeps in memory about one registration."""

    __slots__ = (
        "channel",
        "check_store_queue",
        "draining",
        "expiry_at",
        "expiry_seq",
        "inflight",
        "last_seen",
        "observations",
        "peer",
        "queue",
        "registration",
        "root",
    )

    def __init__(
        self,
        registration: Registration,
        channel: Channel | None,
        peer: Peer | None,
        last_seen: float,
    ) -> None:
        self.registration = registration
        self.channel = channel
        self.peer = peer
        self.root = registration_root(registration.root_path)
        self.last_seen = last_seen
        # Lists and dicts, not deque and set: an empty deque costs 600 bytes, an empty set 200,
        # and most devices never have anything queued (the queue is capped at 100 anyway).
        self.queue: list[QueuedEntry] = []
        self.inflight: dict[RequestHandle, None] = {}
        self.observations: dict[str, ObservationState] = {}
        #: The store may hold queued requests this process has not loaded (after a restart).
        self.check_store_queue = False
        self.draining = False
        #: The server's expiry timer entry for this registration (its heap sequence number
        #: and time; None: none armed). See ``LwM2MServer._arm_expiry``.
        self.expiry_seq: int | None = None
        self.expiry_at = 0.0

    @property
    def endpoint(self) -> str:
        return self.registration.endpoint


class Pending:
    """An operation on the wire, waiting for its response."""

    __slots__ = ("device", "future", "timer")

    def __init__(self, device: Device, future: asyncio.Future[Outcome]) -> None:
        self.device = device
        self.future = future
        self.timer: asyncio.TimerHandle | None = None


def store_address(peer: Peer) -> StoreAddress:
    return StoreAddress(str(peer.address[0]), int(peer.address[1]))


def udp_peer(address: StoreAddress) -> Peer:
    """The Peer a UDP transport would report for a stored address (IPv6 sockets report
    4-tuples, IPv4 ones 2-tuples)."""
    if ":" in address.host:
        return Peer((address.host, address.port, 0, 0))
    return Peer((address.host, address.port))


def as_path(path: Path | str) -> Path:
    try:
        return path if isinstance(path, Path) else Path.parse(path)
    except ModelError as exc:
        raise InvalidRequest(str(exc)) from None


__all__ = [
    "Channel",
    "Device",
    "Failure",
    "Outcome",
    "Pending",
    "as_path",
    "store_address",
    "udp_peer",
]
