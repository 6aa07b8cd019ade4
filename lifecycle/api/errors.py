"""How failures reach an API client: one JSON error shape, one HTTP status per kind of failure.

Every error body is::

    {"status": "<kind>", "message": "<one line: what failed, for which device, what to do>",
     ...kind-specific fields (endpoint, path, operation, coap_code, reason, field)}

Every kind-specific field is declared, typed, in :class:`lifecycle.api.naming.ErrorOut`
(``extra="forbid"``: the OpenAPI document names them all); a new keyword of ``ApiError``
must be declared there first (tests/lifecycle/api/test_error_fields.py finds them).

=====================  ======  =======================================================
status                 HTTP    when
=====================  ======  =======================================================
unauthorized           401     missing or wrong bearer token
invalid_input          422     a body/query field is malformed (``field`` names it)
invalid_request        400     the server cannot build the request (format, path level)
unknown_endpoint       404     no registration for the endpoint
not_found              404     no such observation, queued request or security record
conflict               409     a credential already belongs to another endpoint
device_error           502     the device answered 4.xx/5.xx (``coap_code``, ``reason``)
bad_response           502     the device's answer could not be interpreted
unreachable            502     the device reset the exchange or its DTLS session is gone
deregistered           409     the registration ended while the request waited
cancelled              409     the request was cancelled before the device answered
timeout                504     no answer in time (CoAP retransmission gave up)
queued_expired         504     a sleeping device did not wake before the queue deadline
server_stopped         503     the server is shutting down
store_unavailable      503     the database cannot be reached
=====================  ======  =======================================================

The mapping from a :class:`~lwm2m.server.results.OperationStatus` is :data:`RESULT_HTTP`.
"""

from __future__ import annotations

from typing import Any

from lwm2m.server import OperationResult, OperationStatus


class ApiError(Exception):
    """An error response: HTTP status, machine-readable ``status`` and an operator message."""

    def __init__(self, http_status: int, status: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, **self.fields}


RESULT_HTTP: dict[OperationStatus, tuple[int, str]] = {
    OperationStatus.DEVICE_ERROR: (502, "device_error"),
    OperationStatus.BAD_RESPONSE: (502, "bad_response"),
    OperationStatus.UNREACHABLE: (502, "unreachable"),
    OperationStatus.DEREGISTERED: (409, "deregistered"),
    OperationStatus.CANCELLED: (409, "cancelled"),
    OperationStatus.TIMEOUT: (504, "timeout"),
    OperationStatus.QUEUED_EXPIRED: (504, "queued_expired"),
    OperationStatus.SERVER_STOPPED: (503, "server_stopped"),
}

_ADVICE: dict[OperationStatus, str] = {
    OperationStatus.BAD_RESPONSE: "the device's answer could not be decoded; try another "
    "--format or check the device's object definitions (--objects)",
    OperationStatus.UNREACHABLE: "the device refused the message or its DTLS session is gone; "
    "it will be reachable again after its next registration update",
    OperationStatus.DEREGISTERED: "the device de-registered or registered again meanwhile; "
    "see `fleetloop devices show`",
    OperationStatus.CANCELLED: "the request was cancelled before the device answered",
    OperationStatus.TIMEOUT: "the device did not answer in time; it may be offline or asleep "
    "(check `fleetloop devices show`), retry or raise --timeout",
    OperationStatus.QUEUED_EXPIRED: "the device is in queue mode and did not wake up before "
    "the request's deadline; retry with a longer --queue-deadline",
    OperationStatus.SERVER_STOPPED: "the server is shutting down; retry once it is back",
}


def unknown_endpoint(endpoint: str) -> ApiError:
    return ApiError(
        404,
        "unknown_endpoint",
        f"device {endpoint!r} is not registered; list registered devices with GET /v1/devices "
        "(`fleetloop devices list`)",
        endpoint=endpoint,
    )


def result_error(
    result: OperationResult, *, endpoint: str, operation: str, path: str | None
) -> ApiError:
    """The error response for an operation that did not succeed."""
    http_status, status = RESULT_HTTP.get(result.status, (502, result.status.value))
    where = f" {path}" if path else ""
    if result.status is OperationStatus.DEVICE_ERROR:
        reason = f" {result.reason}" if result.reason else ""
        message = (
            f"device {endpoint!r} answered {result.code}{reason} to {operation}{where}"
            f"{_code_advice(result.code)}"
        )
    else:
        detail = f" ({result.reason})" if result.reason else ""
        advice = _ADVICE.get(result.status, "")
        message = f"{operation}{where} on device {endpoint!r} failed: {status}{detail}; {advice}"
    return ApiError(
        http_status,
        status,
        message,
        endpoint=endpoint,
        operation=operation,
        path=path,
        coap_code=result.code,
        reason=result.reason or None,
        queued=result.queued,
        queued_request_id=result.queued_request_id,
    )


_CODE_ADVICE = {
    "4.00": "; the device refused the content: check the value's type and format",
    "4.01": "; the server has no access right on this object instance (object 2 ACLs)",
    "4.04": "; the device has no such object, instance or resource (see `fleetloop discover`)",
    "4.05": "; the operation is not allowed on this resource (check R/W/E in the object model)",
    "4.06": "; the device cannot answer in that content format: try another --format",
    "4.15": "; the device does not accept that content format: try another --format",
}


def _code_advice(code: str | None) -> str:
    return _CODE_ADVICE.get(code or "", "")
