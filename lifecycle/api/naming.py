"""Stable ``operationId``s that read as names (``listDevices``), and the documented errors.

FastAPI's default operationId is ``list_devices_v1_devices_get``: unique, but it changes when
a path changes and reads badly in generated clients. Here it is the route function's name in
camelCase, with the renames below where the function name alone would be vague or collide
(two ``show_device``: the registration and the inventory record).
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.models import ImportReport

RENAMES = {
    "get_health": "getHealth",
    "show_device": "showDevice",
    "read": "readData",
    "write": "writeData",
    "write_update": "updateData",
    "create": "createInstance",
    "delete": "deleteInstance",
    "execute": "executeResource",
    "discover": "discoverData",
    "observe": "observeData",
    "events": "streamEvents",
    "explain": "explainBootstrap",
    "status": "getBootstrapStatus",
    "rebootstrap": "rebootstrapDevice",
    "audit": "listBootstrapAudit",
    "crl": "getBootstrapCrl",
    "drift": "listDrift",
    "prove": "proveAuditRecord",
}
"""Function name → operationId, where plain camelCase would not read as a name."""

BY_PATH = {
    ("GET", "/v1/inventory/{endpoint}"): "showInventoryRecord",
    ("GET", "/v1/bootstrap/audit/verify"): "verifyBootstrapAudit",
}
"""Routes whose function names collide with another route's."""


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def operation_id(route: APIRoute) -> str:
    """The ``generate_unique_id_function`` of the app (module docstring)."""
    method = sorted(route.methods)[0] if route.methods else "GET"
    named = BY_PATH.get((method, route.path_format))
    return named or RENAMES.get(route.name) or camel(route.name)


class ErrorDetail(BaseModel):
    """One malformed input field of a request FastAPI refused (``ErrorOut.errors``)."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="where: `body.resources[1].value`, `query.format`, ...")
    message: str = Field(description="what is wrong with it")


class ErrorOut(BaseModel):
    """Every error answer (``lifecycle.api.errors.ApiError``): a kind, one line for people,
    and the context fields that depend on the kind -- all of them declared here (an error
    carries only those that apply; a field the server sets to null means "does not apply
    to this error", as its absence does)."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(description="machine-readable kind: unauthorized, invalid_input, ...")
    message: str = Field(description="what failed, for which device, and what to do")
    # -- invalid input (422) and conflicts naming a field
    field: str | None = Field(
        None,
        description="the input that is wrong or in conflict: `body.resources[1].value`, "
        "`query.format`, `select`, `cursor`, `euiccs[2]`, `values.config`",
    )
    errors: list[ErrorDetail] | None = Field(
        None, description="every malformed field of a refused request (FastAPI validation)"
    )
    position: int | None = Field(
        None, description="invalid selector: the 0-based character where it breaks"
    )
    problem: str | None = Field(None, description="invalid selector: what is wrong there")
    fix: str | None = Field(
        None, description="what to do about it (invalid selector, firmware errors)"
    )
    report: ImportReport | None = Field(
        None,
        description="import_rejected: the whole import report (every rejected row and why); "
        "nothing was written",
    )
    # -- device operations (errors.result_error)
    endpoint: str | None = Field(None, description="the device the error is about")
    operation: str | None = Field(
        None, description="the LwM2M operation that failed: read, write, execute, ..."
    )
    path: str | None = Field(None, description="the LwM2M path it addressed, e.g. /3/0/9")
    coap_code: str | None = Field(
        None, description="device_error: the CoAP response code the device answered, e.g. 4.04"
    )
    reason: str | None = Field(
        None, description="the device's or the transport's reason (e.g. Not Found, RST)"
    )
    queued: bool | None = Field(
        None, description="the request had waited in the queue of a queue-mode device"
    )
    queued_request_id: int | None = Field(
        None, description="that queued request's id (GET /v1/devices/{endpoint}/queue)"
    )
    request_id: int | None = Field(
        None, description="not_found: the queued request id that is not pending"
    )
    observation_id: str | None = Field(
        None, description="not_found: the observation id that is not active"
    )
    # -- records named by the error
    campaign: str | None = Field(
        None, description="the campaign: unknown, or holding the device's dimension"
    )
    holders: list[str] | None = Field(
        None, description="conflict: the campaigns already holding the devices"
    )
    eid: str | None = Field(None, description="the eUICC (EID) the error is about")
    euicc: str | None = Field(
        None, description="not_found: the eUICC reference (EID or endpoint) that names none"
    )
    image: str | None = Field(None, description="the firmware image (id or SHA-256)")
    group: str | None = Field(None, description="not_found: the group name")
    seq: int | None = Field(None, description="not_found: the audit record sequence number")
    token: str | None = Field(None, description="not_found: the token name or id")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the server cannot build the request: format, path level (`invalid_request`)"),
    401: _error("missing or wrong bearer token (`unauthorized`)"),
    403: _error("the token's role or tenants do not allow this (`forbidden`)"),
    404: _error("no such device, record or route (`unknown_endpoint`, `not_found`)"),
    409: _error("conflict: a credential in use, a device gone meanwhile (`conflict`, ...)"),
    422: _error("a body or query field is malformed; `field` names it (`invalid_input`)"),
    502: _error("the device answered with an error or could not be reached (`device_error`)"),
    503: _error("the server is stopping or its database is unreachable"),
    504: _error("the device did not answer in time (`timeout`, `queued_expired`)"),
}
"""Documented on every versioned route (``include_router(responses=...)``)."""


JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": entry["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }
    for code, entry in ERROR_RESPONSES.items()
}
"""The same, for routes that answer something other than JSON on success (the event stream,
the CRL): FastAPI would otherwise document their errors under that media type."""


def seq_cursor(cursor: str | None) -> int | None:
    """A ``cursor`` of a list paged by sequence number (the audit logs): the number."""
    if cursor is None:
        return None
    # ASCII digits only, at most 19 of them and within 64 bits: a longer number cannot be a
    # sequence number (and a 5 000-digit one would not even convert to an int).
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19) or int(cursor) >= 2**63:
        from lifecycle.api.parse import InputError

        shown = cursor if len(cursor) <= 40 else cursor[:40] + "..."
        raise InputError("cursor", f"{shown!r} is not a cursor of this list (a next_cursor)")
    return int(cursor)
