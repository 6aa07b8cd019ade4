"""Operator tokens: ``POST|GET /v1/tokens``, ``DELETE /v1/tokens/{token}`` (admin only).

The token text is in the answer to ``POST /v1/tokens`` and nowhere else, ever: the server keeps
only its SHA-256. A tenant-scoped admin issues, lists and revokes only tokens inside its own
tenants (never an all-tenant one); tokens beyond its scope do not exist for it (404). Every
change is in the audit log, with the operator and token that made it, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.auth import Role, context_of, needs
from lifecycle.api.errors import ApiError
from lifecycle.api.models import CreatedToken, RevokedToken, TokenList
from lifecycle.api.render import JsonObject, timestamp_fields
from lifecycle.api.scope import Scoped
from lifecycle.operators import (
    InvalidTokenRequest,
    OperatorRegistry,
    OperatorToken,
    ScopeExceeded,
    TokenNameTaken,
    UnknownToken,
)

router = APIRouter()
ADMIN = needs(Role.ADMIN)
TAGS = [{"name": "tokens", "description": "Operator tokens: roles and tenant scopes (admin)."}]


def registry_of(request: Request) -> OperatorRegistry:
    found = context_of(request).operators
    if found is None:
        raise ApiError(
            503,
            "tokens_unavailable",
            "named operator tokens are not enabled in this server (fleetloop serve enables "
            "them); use the serve token",
        )
    return found


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except InvalidTokenRequest as err:
        field = f"body.{err.field}"
        raise ApiError(422, "invalid_input", f"{field}: {err.message}", field=field) from None
    except TokenNameTaken as err:
        raise ApiError(409, "conflict", str(err)) from None
    except UnknownToken as err:
        raise ApiError(404, "not_found", str(err), token=err.ref) from None
    except ScopeExceeded as err:
        raise ApiError(403, "forbidden", str(err), field="body.tenants") from None


def token_json(token: OperatorToken) -> JsonObject:
    doc = token.as_dict()
    for name in ("created_at", "revoked_at", "last_used_at"):
        doc.update(timestamp_fields(name, doc.pop(name)))
    return doc


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="unique among live tokens", examples=["ci-deploy"])
    role: str = Field(description="viewer, operator or admin", examples=["operator"])
    tenants: list[str] | None = Field(
        default=None,
        description="the tenants this token sees; null (default) for every tenant",
        examples=[["acme"]],
    )


@router.post(
    "/tokens",
    response_model=CreatedToken,
    response_model_exclude_unset=True,
    tags=["tokens"],
    summary="Create an operator token",
    status_code=201,
    openapi_extra=ADMIN,
)
async def create_token(request: Request, scope: Scoped, body: TokenBody) -> JsonObject:
    """The new token, with its text in ``token`` -- shown this once; store it now."""
    registry = registry_of(request)
    principal = scope.principal
    with _errors():
        issued = await registry.create(
            body.name,
            body.role,
            body.tenants,
            actor=principal.actor,
            actor_token_id=principal.token_id,
            issuer_tenants=principal.tenants,
        )
    return {
        **token_json(issued.token),
        "token": issued.text,
        "usage": f"export FLEETLOOP_TOKEN={issued.text}",
    }


@router.get(
    "/tokens",
    response_model=TokenList,
    response_model_exclude_unset=True,
    tags=["tokens"],
    summary="List operator tokens",
    openapi_extra=ADMIN,
)
async def list_tokens(
    request: Request,
    scope: Scoped,
    revoked: Annotated[bool, Query(description="include revoked tokens")] = False,
) -> JsonObject:
    """Tokens (never their text or hash), oldest first."""
    tokens = await registry_of(request).list(
        include_revoked=revoked, issuer_tenants=scope.principal.tenants
    )
    return {"items": [token_json(t) for t in tokens]}


@router.delete(
    "/tokens/{token}",
    response_model=RevokedToken,
    response_model_exclude_unset=True,
    tags=["tokens"],
    summary="Revoke an operator token",
    openapi_extra=ADMIN,
)
async def revoke_token(request: Request, scope: Scoped, token: str) -> JsonObject:
    """Revoke the live token with this id (or name); requests with it are refused at once."""
    principal = scope.principal
    with _errors():
        revoked = await registry_of(request).revoke(
            token,
            actor=principal.actor,
            actor_token_id=principal.token_id,
            issuer_tenants=principal.tenants,
        )
    return {**token_json(revoked), "revoked": True}


__all__ = ["TAGS", "registry_of", "router", "token_json"]
