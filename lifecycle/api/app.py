"""The FastAPI application: authentication, error handling, and the routers put together.

``create_app(context)`` returns an ASGI app; ``fleetloop serve`` runs it with uvicorn in the
same event loop as the LwM2M server, so routes call the server's coroutines directly (no
thread hop, no second loop). Every route lives under ``/v1`` and requires
``Authorization: Bearer <token>`` (compared in constant time); only ``GET /health``,
``GET /openapi.json`` and ``GET /docs`` are unversioned and open.

Error responses all have the shape of :class:`lifecycle.api.errors.ApiError` -- including
FastAPI's own validation errors and unknown routes -- so a client needs one error parser.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from lifecycle.api.artifact_routes import TAGS as ARTIFACT_TAGS
from lifecycle.api.audit_routes import TAGS as AUDIT_TAGS
from lifecycle.api.auth import current_principal
from lifecycle.api.bootstrap_routes import TAGS as BOOTSTRAP_TAGS
from lifecycle.api.campaign_routes import TAGS as CAMPAIGN_TAGS
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError, unknown_endpoint
from lifecycle.api.esim_routes import TAGS as ESIM_TAGS
from lifecycle.api.firmware_routes import TAGS as FIRMWARE_TAGS
from lifecycle.api.fleet_routes import TAGS as FLEET_TAGS
from lifecycle.api.inventory_routes import TAGS as INVENTORY_TAGS
from lifecycle.api.naming import ERROR_RESPONSES, operation_id
from lifecycle.api.parse import InputError
from lifecycle.api.state_routes import TAGS as STATE_TAGS
from lifecycle.api.telemetry_routes import TAGS as TELEMETRY_TAGS
from lifecycle.api.token_routes import TAGS as TOKEN_TAGS
from lifecycle.console import mount_console
from lwm2m.server import InvalidRequest, ServerError, UnknownEndpoint, UnknownObservation
from lwm2m.store import Conflict, NotFound, StoreError, StoreOverloaded, StoreUnavailable

log = logging.getLogger("fleetloop.api")

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
"""The methods a 405 answer may name in ``Allow``."""

API_PREFIX = "/v1"
"""Every route but ``/health``, ``/openapi.json`` and ``/docs`` lives under this version."""

TAGS = [
    {
        "name": "health",
        "description": "Liveness; with /openapi.json and /docs the only routes without a token.",
    },
    {"name": "devices", "description": "Registered devices, their objects and last values."},
    {"name": "operations", "description": "LwM2M device-management operations on one device."},
    {"name": "composite", "description": "Read-, Write- and Observe-Composite (LwM2M 1.1)."},
    {"name": "observations", "description": "Active observations and their cancellation."},
    {"name": "queue", "description": "Requests queued for sleeping (queue-mode) devices."},
    {"name": "security", "description": "Per-endpoint DTLS credentials and NoSec grants."},
    {"name": "events", "description": "Server-sent events: registrations, notifications."},
    *BOOTSTRAP_TAGS,
    *INVENTORY_TAGS,
    *FLEET_TAGS,
    *TOKEN_TAGS,
    *STATE_TAGS,
    *ARTIFACT_TAGS,
    *FIRMWARE_TAGS,
    *ESIM_TAGS,
    *AUDIT_TAGS,
    *CAMPAIGN_TAGS,
    *TELEMETRY_TAGS,
]


def _error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    if error.http_status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(error.body(), status_code=error.http_status, headers=headers)


def _invalid_request(request: Request, exc: InvalidRequest) -> ApiError:
    """400 for a request the server could not build (a path of the wrong level, a format
    that cannot carry the content, a full queue): the device named (the route's
    ``{endpoint}``), that nothing reached it, and for a format problem how to pick another."""
    message = str(exc)
    fields: dict[str, Any] = {}
    endpoint = request.path_params.get("endpoint")
    if isinstance(endpoint, str):
        fields["endpoint"] = endpoint
        if endpoint not in message:
            message = f"device {endpoint!r}: {message}"
    if "format" in request.query_params and "format" in message:
        message += (
            "; ask for another ?format= or leave it out (the server then picks one the "
            "device supports)"
        )
    if isinstance(endpoint, str):
        message += "; nothing was sent to the device"
    return ApiError(400, "invalid_request", message, **fields)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the API serves on this request's path, asked of the router itself (every
    route whose path matches: Starlette's own ``Allow`` names only the first)."""
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _field_of(location: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(InputError)
    async def input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error_response(ApiError(422, "invalid_input", exc.message, field=exc.field))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        message = f"{field}: {first.get('msg', 'invalid')}"
        if first.get("type") == "extra_forbidden":
            message = f"{field}: unknown field; see GET /openapi.json for the accepted fields"
        elif first.get("type") == "missing":
            message = f"{field}: required field is missing"
        details = [
            {"field": _field_of(tuple(e.get("loc", ()))), "message": e["msg"]} for e in errors
        ]
        return _error_response(ApiError(422, "invalid_input", message, field=field, errors=details))

    @app.exception_handler(UnknownEndpoint)
    async def unknown(_: Request, exc: UnknownEndpoint) -> JSONResponse:
        return _error_response(unknown_endpoint(exc.endpoint))

    @app.exception_handler(UnknownObservation)
    async def unknown_observation(_: Request, exc: UnknownObservation) -> JSONResponse:
        return _error_response(
            ApiError(
                404,
                "not_found",
                f"no active observation {exc.observation_id!r}; list them with GET "
                "/observations (`fleetloop observations`)",
                observation_id=exc.observation_id,
            )
        )

    @app.exception_handler(InvalidRequest)
    async def invalid_request(request: Request, exc: InvalidRequest) -> JSONResponse:
        return _error_response(_invalid_request(request, exc))

    @app.exception_handler(ServerError)
    async def server_error(_: Request, exc: ServerError) -> JSONResponse:
        return _error_response(ApiError(503, "server_stopped", str(exc)))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error_response(ApiError(409, "conflict", str(exc)))

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error_response(ApiError(404, "not_found", str(exc)))

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, StoreUnavailable | StoreOverloaded):
            return _error_response(ApiError(503, "store_unavailable", f"{exc}; retry in a moment"))
        log.error("store error: %s", exc)
        return _error_response(
            ApiError(
                500,
                "store_error",
                f"{exc}; nothing of this request was written; the server log has the details: "
                "retry, and report it if it persists",
            )
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _error_response(
            ApiError(
                500,
                "internal_error",
                f"internal error ({type(exc).__name__}) in {request.method} "
                f"{request.url.path}; the server log has the details; please report it",
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (
                f"no route {request.method} {request.url.path}; the routes are listed at "
                "GET /openapi.json"
            )
            return _error_response(ApiError(404, "no_route", message))
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            use = f"; use {', '.join(allowed)}" if allowed else ""
            message = (
                f"{request.method} is not allowed on {request.url.path}{use} (the routes and "
                "their methods are listed at GET /openapi.json)"
            )
            headers = {"Allow": ", ".join(allowed)} if allowed else None
            return _error_response(ApiError(405, "method_not_allowed", message), headers)
        return _error_response(
            ApiError(
                exc.status_code,
                "http_error",
                f"{exc.detail} ({request.method} {request.url.path})",
            )
        )


def create_app(context: ApiContext) -> FastAPI:
    """The management API over ``context`` (its server, store, model and token)."""
    from lifecycle.api import (
        artifact_routes,
        audit_routes,
        bootstrap_routes,
        campaign_routes,
        esim_routes,
        firmware_routes,
        fleet_routes,
        routes,
        security_routes,
        state_routes,
        stream,
        telemetry_routes,
        token_routes,
    )

    app = FastAPI(
        title="fleetloop management API",
        version=context.version,
        description=(
            "Northbound HTTP/JSON API of the fleetloop LwM2M device-management server. "
            "Authenticate with `Authorization: Bearer <token>` (the token `fleetloop serve` "
            "writes to its data directory). Node JSON, error shapes and the event stream are "
            "described in docs/API.md."
        ),
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        # The OpenAPI document and the interactive page hold no secrets: readable without a
        # token, so tools (schemathesis, client generators, the web console) can start from them.
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.context = context
    _install_handlers(app)
    from lifecycle.api import inventory_routes

    app.include_router(routes.health)
    from lifecycle.api import readiness

    readiness.install(app)  # GET /ready; 503 while the store lacks its tables (issue 14)
    from lifecycle.api.text_guard import refuse_nul  # NUL refused on every store alike

    protected = [Depends(current_principal), Depends(refuse_nul)]
    for router in (
        routes.router,
        security_routes.router,
        stream.router,
        bootstrap_routes.router,
        inventory_routes.router,
        fleet_routes.router,
        token_routes.router,
        state_routes.router,
        artifact_routes.router,
        firmware_routes.router,
        esim_routes.router,
        audit_routes.router,
        campaign_routes.router,
        telemetry_routes.router,
    ):
        app.include_router(
            router, prefix=API_PREFIX, dependencies=protected, responses=ERROR_RESPONSES
        )
    mount_console(app)  # the web console at /console/ (static files; not in the OpenAPI)
    return app
