"""FastAPI dependencies shared by the routers: the context and the bearer-token check."""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="the token `fleetloop serve` wrote")


def context_of(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


async def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> None:
    """401 unless the request carries the server's bearer token."""
    expected = context_of(request).token
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        what = "wrong" if credentials is not None else "missing"
        raise ApiError(
            401,
            "unauthorized",
            f"{what} bearer token; send 'Authorization: Bearer <token>' with the token from "
            "the server's data directory (api-token, or api.json)",
        )
