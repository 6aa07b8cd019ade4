"""The LwM2M device-management server: registration, DM operations, observe, Send, queue mode.

Start one per process on a store; everything above (fleet logic, the HTTP API, the CLI)
talks to devices only through this API, never through CoAP::

    server = await LwM2MServer.start(ServerConfig(), store)           # model: BUILTIN_MODEL
    server.coap_address, server.coaps_address                        # bound (host, port) | None
    server.registrations() -> list[Registration]                     # in memory, no I/O
    server.registration("dev-1") -> Registration | None
    server.is_awake("dev-1") -> bool                                 # queue mode: sent now?
    server.stats, server.handler_errors                              # counters for operators

    result = await server.read("dev-1", "/3/0")                      # ReadResult
    if result.ok: print(result.content, result.content_format)
    else:         print(result.status, result.code, result.reason)   # never raises for device
                                                                     # errors or timeouts
    await server.write(ep, "/1/0/1", SingleResource(1, Value.integer(120)))   # replace (PUT)
    await server.write(ep, "/3/0", instance, replace=False)          # partial update (POST)
    await server.write_value(ep, "/1/0/1", "120")                    # text parsed by the model
    await server.write_attributes(ep, "/3/0/9", AttributeUpdate(Attributes(pmin=5, pmax=10)))
    await server.discover(ep, "/3")                                  # DiscoverResult.links
    await server.execute(ep, "/3/0/4", arguments=None)
    await server.create(ep, "/1", ObjectInstance(...) | [resources]) # CreateResult.location
    await server.delete(ep, "/1/5")
    await server.read_composite(ep, ["/3/0/0", "/1/0/1"])            # CompositeReadResult.content
    await server.write_composite(ep, {Path.parse("/1/0/1"): node})
    obs = await server.observe(ep, "/3/0/9")                         # ObserveResult.observation_id
    obs = await server.observe_composite(ep, ["/3/0/9", "/3/0/13"])
    await server.cancel_observation(obs.observation_id, active=True) # active: GET Observe=1;
                                                                     # passive: forget, RST later
    server.observations(ep) -> list[ObservationInfo]
    await server.queued_requests(ep, include_finished=False)         # queue-mode backlog (store)
    await server.cancel_queued(request_id) -> bool
    await server.last_values(ep) -> dict[Path, ReportedValue]        # latest telemetry (store)
    async for event in server.subscribe(): ...                       # Registered, Updated,
                                                                     # Deregistered, Expired,
                                                                     # RegistrationRefused,
                                                                     # Notification, SendReceived,
                                                                     # QueueStateChanged,
                                                                     # ObservationEnded
    response = await server.coap_request(ep, "POST", ("gsma", "rsp2", "asn1"), body,
                                         content_format=42, timeout=10.0)
                                                                     # Response: a non-LwM2M
                                                                     # request over the device's
                                                                     # own channel (CoAP/DTLS);
                                                                     # raises RequestTimeout,
                                                                     # NoResponse
    server.serve_resource("fw", provider)                            # GET /fw/... from devices:
                                                                     # provider(ResourceRequest)
                                                                     # -> ServedResource | None,
                                                                     # Block2 cut per request
    await server.stop()

Every operation takes ``format`` (a content format number overriding
:func:`~lwm2m.server.formats.choose_format`), ``timeout`` (seconds to wait for the answer once
sent; default ``ServerConfig.request_timeout``; ``CLIENT_CHOICE`` on Read/Observe sends no
Accept) and ``queue_deadline`` (seconds a request may
wait for a sleeping queue-mode device; default ``ServerConfig.queue_deadline``). Paths are
:class:`~lwm2m.model.Path` or text (``"/3/0/1"``).

Results (:mod:`lwm2m.server.results`) carry ``status`` (:class:`OperationStatus`), ``code``
(the device's CoAP code as text), ``reason`` and ``ok``. Errors raised *before* anything is
sent (:mod:`lwm2m.server.errors`): :class:`UnknownEndpoint`, :class:`InvalidRequest`,
:class:`UnknownObservation`, :class:`ServerNotRunning`, all :class:`ServerError`; and, for
``coap_request`` only (it returns the raw :class:`Response`), :class:`NoResponse` and
:class:`RequestTimeout` when no answer came.

Rules (registration, format choice, queue mode, security check, durability): ``docs/SERVER.md``.
"""

from lwm2m.server.config import SUPPORTED_VERSIONS, ServerConfig
from lwm2m.server.errors import (
    InvalidRequest,
    NoResponse,
    RequestTimeout,
    ServerError,
    ServerNotRunning,
    UnknownEndpoint,
    UnknownObservation,
)
from lwm2m.server.events import (
    Deregistered,
    Expired,
    Notification,
    ObservationEnded,
    QueueStateChanged,
    Registered,
    RegistrationRefused,
    Removed,
    SendReceived,
    ServerEvent,
    Updated,
)
from lwm2m.server.formats import CLIENT_CHOICE, choose_format
from lwm2m.server.operations import Response
from lwm2m.server.resources import (
    ResourceProvider,
    ResourceRequest,
    ServedResource,
)
from lwm2m.server.results import (
    CompositeReadResult,
    CreateResult,
    DiscoverResult,
    ObservationInfo,
    ObserveResult,
    OperationResult,
    OperationStatus,
    ReadResult,
)
from lwm2m.server.server import LwM2MServer
from lwm2m.server.subscription import EventSubscription
from lwm2m.store import QueuedRequest, QueueState, Registration, ReportedValue

__all__ = [
    "CLIENT_CHOICE",
    "SUPPORTED_VERSIONS",
    "CompositeReadResult",
    "CreateResult",
    "Deregistered",
    "DiscoverResult",
    "EventSubscription",
    "Expired",
    "InvalidRequest",
    "LwM2MServer",
    "NoResponse",
    "Notification",
    "ObservationEnded",
    "ObservationInfo",
    "ObserveResult",
    "OperationResult",
    "OperationStatus",
    "QueueState",
    "QueueStateChanged",
    "QueuedRequest",
    "ReadResult",
    "Registered",
    "Registration",
    "RegistrationRefused",
    "Removed",
    "ReportedValue",
    "RequestTimeout",
    "ResourceProvider",
    "ResourceRequest",
    "Response",
    "SendReceived",
    "ServedResource",
    "ServerConfig",
    "ServerError",
    "ServerEvent",
    "ServerNotRunning",
    "UnknownEndpoint",
    "UnknownObservation",
    "Updated",
    "choose_format",
]
