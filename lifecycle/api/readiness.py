"""``GET /ready``: is the store reachable and migrated? (issue 14 item 15), beside ``/health``.

``/health`` says the process runs; ``/ready`` says it can serve: the database answers and has
every layer's tables. A load balancer or an orchestrator routes on ``/ready``; ``/health``
stays 200 while the database is away, so the process is not restarted for a fault a restart
does not fix.

The check itself belongs to the composition root (it knows every layer's schema): the app
finds it as ``app.state.readiness`` (:class:`Readiness`). A request that meets a store without
its tables (:class:`~lwm2m.store.SchemaMismatch`) is answered 503 ``store_not_ready`` -- the
condition is transient, the server recreates the schema -- and wakes the check at once,
instead of the 500 "lacks the store's tables" that used to last until a restart.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from lwm2m.store import SchemaMismatch

router = APIRouter()


class Readiness(Protocol):
    """What ``/ready`` asks; implemented by ``cli.schema_guard.SchemaGuard``."""

    @property
    def ready(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    def check_soon(self) -> None:
        """Something just met a missing schema: check (and recreate) now, not at the next tick."""


@router.get(
    "/ready",
    tags=["health"],
    summary="Readiness: store reachable and migrated (no token)",
    responses={503: {"description": "the store is unreachable or lacks its tables"}},
)
async def get_ready(request: Request) -> JSONResponse:
    """200 ``{"status": "ready"}`` or 503 ``{"status": "not_ready", "reason": ...}``."""
    readiness: Readiness | None = getattr(request.app.state, "readiness", None)
    if readiness is None:
        return JSONResponse({"status": "ready", "checked": False})
    if readiness.ready:
        return JSONResponse({"status": "ready", "checked": True})
    return JSONResponse({"status": "not_ready", "reason": readiness.reason}, status_code=503)


async def _schema_missing(request: Request, exc: Exception) -> JSONResponse:
    readiness: Readiness | None = getattr(request.app.state, "readiness", None)
    if readiness is not None:
        readiness.check_soon()
    return JSONResponse(
        {
            "status": "store_not_ready",
            "message": f"{exc}; the server is recreating the schema: retry in a moment "
            "(GET /ready says when)",
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    """Add ``/ready`` and the 503 answer for a store without its tables."""
    app.include_router(router)
    app.add_exception_handler(SchemaMismatch, _schema_missing)
