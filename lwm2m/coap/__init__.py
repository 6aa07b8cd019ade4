"""Sans-IO CoAP exchange layer (RFC 7252 messaging, RFC 7959 block-wise, RFC 7641 observe).

Built on aiocoap's :class:`aiocoap.Message` codec only — never its server stack. One
:class:`CoapEndpoint` per local endpoint: the server has one per socket serving every device,
a simulated device has one. The core does no I/O and reads no clock: the transport feeds it
datagrams and the current time, sends what it returns, and arms one timer.

Transport contract (aioquic style)::

    endpoint = CoapEndpoint(rng=random.SystemRandom(), config=EndpointConfig())

    endpoint.receive_datagram(data: bytes, peer: Hashable, now: float) -> None
    endpoint.datagrams_to_send(now: float) -> list[tuple[bytes, Hashable]]  # (datagram, peer)
    endpoint.get_timer() -> float | None      # absolute deadline on the ``now`` clock
    endpoint.handle_timer(now: float) -> None # call when that deadline has passed
    endpoint.next_event() -> Event | None     # drain until None after every call above

``peer`` is opaque to the core: any hashable the transport chooses (an address tuple, or a
frozen dataclass with the address and the DTLS-authenticated identity). It is only used as a
dict key and handed back with datagrams and events. ``now`` is any monotonic clock in seconds.
After every ``receive_datagram``/``handle_timer``/application action the transport should
drain ``next_event()``, flush ``datagrams_to_send()`` and re-arm its timer from ``get_timer()``.

Application API (the server's DM logic, a simulated device)::

    endpoint.send_request(peer, message, now, *, confirmable=True) -> RequestHandle
    endpoint.respond(request: IncomingRequest, message, now) -> Observation | None
    endpoint.send_notification(observation, message, now, *, confirmable=None) -> None
    endpoint.cancel_request(request: RequestHandle, now) -> None
    endpoint.cancel_observation(request, now, *, deregister=True) -> RequestHandle | None
    endpoint.remove_observer(observation, now) -> None
    endpoint.forget_peer(peer, now) -> None

``endpoint.stats`` counts what was dropped, replayed and retried (nothing is logged above
DEBUG). The core is not thread-safe: one endpoint belongs to one event loop.

Messages passed in are owned by the core from then on (it sets type, Message ID, token and
block options on them). Events (frozen dataclasses, see :mod:`lwm2m.coap.events`):
:class:`RequestReceived`, :class:`ResponseReceived`, :class:`NotificationReceived`,
:class:`RequestFailed`, :class:`ObservationCancelled`, :class:`ObserverRemoved`.
Design notes: ``docs/COAP.md``.
"""

from lwm2m.coap.endpoint import CoapEndpoint, Stats
from lwm2m.coap.errors import (
    BadOption,
    BadRequest,
    CoapError,
    LocalProtocolError,
    ProxyingNotSupported,
    RemoteProtocolError,
    RequestEntityIncomplete,
    RequestEntityTooLarge,
)
from lwm2m.coap.events import (
    CloseReason,
    Event,
    NotificationReceived,
    ObservationCancelled,
    ObserverRemoved,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.coap.exchange import IncomingRequest, Observation, RequestHandle, RequestState
from lwm2m.coap.params import EndpointConfig, TransmissionParameters
from lwm2m.coap.rng import RandomSource

__all__ = [
    "BadOption",
    "BadRequest",
    "CloseReason",
    "CoapEndpoint",
    "CoapError",
    "EndpointConfig",
    "Event",
    "IncomingRequest",
    "LocalProtocolError",
    "NotificationReceived",
    "Observation",
    "ObservationCancelled",
    "ObserverRemoved",
    "ProxyingNotSupported",
    "RandomSource",
    "RemoteProtocolError",
    "RequestEntityIncomplete",
    "RequestEntityTooLarge",
    "RequestFailed",
    "RequestHandle",
    "RequestReceived",
    "RequestState",
    "ResponseReceived",
    "Stats",
    "TransmissionParameters",
]
