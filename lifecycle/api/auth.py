"""Who is calling: the operator behind a bearer token, its role and its tenant scope.

Every route except ``/health`` depends on :func:`current_principal`. A route that changes
anything calls :meth:`Principal.require` with the role it needs; a route about devices,
groups or records checks :meth:`Principal.sees` for their tenant (or filters lists by
:attr:`Principal.tenants`). The audit log records :attr:`Principal.operator` and
:attr:`Principal.token_id` for every change.

Until named operator tokens exist, the token ``fleetloop serve`` writes to its data directory
is the only one, and it is an all-tenant admin.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import IntEnum

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="an operator token (`fleetloop tokens`)")


class Role(IntEnum):
    """What an operator may do; a higher role may do everything a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; use viewer, operator or admin") from None


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


async def authenticate(context: ApiContext, token: str) -> Principal | None:
    """The principal of ``token``, or None. The serve token is the all-tenant admin."""
    if secrets.compare_digest(token.encode(), context.token.encode()):
        return Principal("admin", "serve", Role.ADMIN, None)
    return None


async def current_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> Principal:
    """401 unless the request carries a valid token; the principal otherwise (cached on the
    request, so several dependencies share one lookup)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if credentials is None:
        raise _unauthorized("missing")
    principal = await authenticate(context_of(request), credentials.credentials)
    if principal is None:
        raise _unauthorized("wrong")
    request.state.principal = principal
    return principal
