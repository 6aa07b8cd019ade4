"""Errors the server API raises *before* anything is sent to a device.

Everything that happens after a request left (device error codes, timeouts, malformed
answers, queue expiry) comes back as a typed result (:mod:`lwm2m.server.results`), never as
an exception: a fleet of devices misbehaving must not unwind the caller's loop. What remains
are caller mistakes and unknown devices, and each message says what to do.

One exception to that rule: :meth:`LwM2MServer.coap_request
<lwm2m.server.LwM2MServer.coap_request>` (a raw, non-LwM2M CoAP request) returns the device's
response as it came, whatever its code, and raises :class:`NoResponse` (or its
:class:`RequestTimeout`) when there is none -- it has no result type to carry a failure.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error of :mod:`lwm2m.server`."""


class UnknownEndpoint(ServerError):
    """No registration for the endpoint (never registered, deregistered or expired)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(f"no registration for {endpoint!r}; check `fleetloop devices list`")
        self.endpoint = endpoint


class UnknownObservation(ServerError):
    """No active observation with this id (cancelled, ended by the device, or never made)."""

    def __init__(self, observation_id: str) -> None:
        super().__init__(
            f"no active observation {observation_id!r}; list them with "
            "`fleetloop observations` (LwM2MServer.observations())"
        )
        self.observation_id = observation_id


class InvalidRequest(ServerError):
    """The request cannot be built: bad path for the operation, a content format that cannot
    carry the content, a value that does not parse, a full queue."""


class ServerNotRunning(ServerError):
    """The server was stopped (or never started); start it with ``LwM2MServer.start``."""


class NoResponse(ServerError):
    """A raw CoAP request (``LwM2MServer.coap_request``) got no response: no session with the
    device (a DTLS device since a server restart, before it reconnects), the device answered
    RST, the registration ended meanwhile, the exchange broke (Block-wise), or the server
    stopped. ``status`` is the :class:`~lwm2m.server.OperationStatus` value the DM
    operations would report (``"unreachable"``, ``"bad-response"``, ...)."""

    def __init__(self, endpoint: str, status: str, reason: str) -> None:
        super().__init__(f"no response from {endpoint!r} ({status}): {reason}")
        self.endpoint = endpoint
        self.status = status
        self.reason = reason


class RequestTimeout(NoResponse):
    """A raw CoAP request got no response within its timeout (the CoAP core retransmitted
    meanwhile); the device may be asleep, gone, or behind a NAT binding that expired."""
