"""Who is calling: the operator behind a bearer token, its role and its tenant scope.

Every route except ``/health`` depends on :func:`current_principal`, which authenticates the
token and enforces the route's role in one place, so a route added later cannot forget it:

* ``GET``/``HEAD`` need ``viewer``, every other method needs ``operator``;
* a route that needs more declares it: ``@router.post(..., openapi_extra=needs(Role.ADMIN))``
  (the role then also shows in the OpenAPI document as ``x-fleetloop-role``). A declaration
  can only raise the default, never lower it.

A route about devices, groups or records goes through :mod:`lifecycle.api.scope` for the
tenant check. The audit log records :attr:`Principal.actor` and :attr:`Principal.token_id`.

Tokens: the one ``fleetloop serve`` writes to its data directory is the all-tenant admin
``admin``; named tokens (``flt_<id>_<secret>``) come from :class:`lifecycle.operators.
OperatorRegistry` (``fleetloop tokens create``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError
from lifecycle.operators import SERVE_TOKEN_ID, Role

ROLE_KEY = "x-fleetloop-role"
"""The OpenAPI extension that declares a route's role (see :func:`needs`)."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = HTTPBearer(auto_error=False, description="an operator token (`fleetloop tokens`)")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated operator. ``tenants`` None means every tenant (and devices without
    one); otherwise only devices, groups and records of those tenants exist for it."""

    operator: str
    token_id: str
    role: Role
    tenants: frozenset[str] | None = None

    @property
    def all_tenants(self) -> bool:
        return self.tenants is None

    def sees(self, tenant: str | None) -> bool:
        """Whether something of ``tenant`` (None: no tenant) is visible to this operator."""
        return self.tenants is None or (tenant is not None and tenant in self.tenants)

    def require(self, role: Role) -> None:
        """403 unless this operator has at least ``role``."""
        if self.role < role:
            raise ApiError(
                403,
                "forbidden",
                f"operator {self.operator!r} has role {self.role.label}; this needs "
                f"{role.label} (an admin can issue a token with `fleetloop tokens create`)",
            )

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"operator:{self.operator}"


def context_of(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _unauthorized(what: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        f"{what} bearer token; send 'Authorization: Bearer <token>' with an operator token "
        "(the server's api-token file, or one from `fleetloop tokens create`)",
    )


def needs(role: Role) -> dict[str, Any]:
    """``openapi_extra`` for a route that needs more than its method's default role."""
    return {ROLE_KEY: role.label}


def required_role(method: str, route: object) -> Role:
    """The role a request needs: the method's default, raised by the route's declaration."""
    default = Role.VIEWER if method.upper() in SAFE_METHODS else Role.OPERATOR
    extra = getattr(route, "openapi_extra", None) or {}
    declared = extra.get(ROLE_KEY)
    return max(default, Role.parse(declared)) if isinstance(declared, str) else default


async def authenticate(context: ApiContext, token: str) -> Principal | None:
    """The principal of ``token``, or None. The serve token is the all-tenant admin; any other
    token is looked up in the operator registry (when the server has one)."""
    if secrets.compare_digest(token.encode(), context.token.encode()):
        return Principal("admin", SERVE_TOKEN_ID, Role.ADMIN, None)
    if context.operators is None:
        return None
    found = await context.operators.authenticate(token)
    if found is None:
        return None
    return Principal(found.name, found.id, found.role, found.tenants)


async def current_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> Principal:
    """401 unless the request carries a valid token, 403 unless its role suffices for the
    route (:func:`required_role`); the principal otherwise (cached on the request, so several
    dependencies share one lookup)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        if credentials is None:
            raise _unauthorized("missing")
        principal = await authenticate(context_of(request), credentials.credentials)
        if principal is None:
            raise _unauthorized("wrong")
        request.state.principal = principal
    principal.require(required_role(request.method, request.scope.get("route")))
    return principal


__all__ = [
    "ROLE_KEY",
    "Principal",
    "Role",
    "authenticate",
    "context_of",
    "current_principal",
    "needs",
    "required_role",
]
