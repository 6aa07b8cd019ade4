"""Tenant scoping for routes: "resolve this endpoint for this principal", written once.

A device outside the caller's tenants does not exist for it: a route answers exactly what it
answers for an unknown device (same status, same body), so a tenant-scoped token cannot even
learn that an endpoint name is taken. Lists are filtered; the event stream drops the events
of invisible devices. All-tenant principals skip the lookups entirely.

Use in a route::

    async def show(scope: Scoped, endpoint: str) -> ...:
        await scope.endpoint(endpoint)                 # 404 unknown_endpoint if hidden
        await scope.endpoint(endpoint, missing=_no_record)   # the route's own "unknown" error

The check belongs in the route body, not in a dependency: FastAPI validates the request
before the body runs but after dependencies, so a dependency would answer 404 for a hidden
device where an unknown one answers 422 -- a difference that tells the two apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from lifecycle.api.auth import Principal, context_of, current_principal
from lifecycle.api.errors import ApiError, unknown_endpoint
from lifecycle.tenancy import TenantDirectory

T = TypeVar("T")


def directory_of(request: Request) -> TenantDirectory:
    context = context_of(request)
    if context.tenants is None:
        context.tenants = TenantDirectory(context.store)
    return context.tenants


@dataclass(frozen=True, slots=True)
class Scope:
    """A principal and the tenant directory: every tenant check of the API goes through here."""

    principal: Principal
    directory: TenantDirectory

    @property
    def actor(self) -> str:
        return self.principal.actor

    async def sees(self, endpoint: str) -> bool:
        """Whether ``endpoint`` exists for this principal (its tenant is in scope)."""
        if self.principal.all_tenants:
            return True
        return self.principal.sees(await self.directory.tenant(endpoint))

    async def endpoint(
        self, endpoint: str, missing: Callable[[str], Exception] = unknown_endpoint
    ) -> str:
        """``endpoint`` when visible; otherwise raise ``missing(endpoint)`` -- the error the
        route gives for an endpoint it does not know."""
        if not await self.sees(endpoint):
            raise missing(endpoint)
        return endpoint

    async def visible(self, endpoints: Iterable[str]) -> set[str]:
        """The visible subset of ``endpoints`` (one batched lookup)."""
        names = list(endpoints)
        if self.principal.all_tenants:
            return set(names)
        tenants = await self.directory.tenants(names)
        return {e for e, t in tenants.items() if self.principal.sees(t)}

    async def filter(self, items: Iterable[T], endpoint_of: Callable[[T], str]) -> list[T]:
        """``items`` whose endpoint is visible, in their order."""
        listed = list(items)
        if self.principal.all_tenants:
            return listed
        shown = await self.visible(endpoint_of(i) for i in listed)
        return [i for i in listed if endpoint_of(i) in shown]

    def assign(self, tenant: str | None, field: str) -> None:
        """Refuse to put something into ``tenant`` (a new identity, a move, a policy) unless it
        is one of the caller's tenants -- a scoped caller cannot create for, or move into,
        another tenant, nor create tenant-less things every tenant would share."""
        if self.principal.sees(tenant):
            return
        assert self.principal.tenants is not None
        mine = ", ".join(sorted(self.principal.tenants))
        raise ApiError(
            403,
            "forbidden",
            f"{field}: this token is limited to tenant(s) {mine}; "
            f"{'a tenant' if tenant is None else f'tenant {tenant!r}'} is outside it -- "
            f"use one of {mine}, or an all-tenant token",
            field=field,
        )

    def require_all_tenants(self, what: str) -> None:
        """403 for a scoped principal: ``what`` spans every tenant's records."""
        if not self.principal.all_tenants:
            raise ApiError(
                403,
                "forbidden",
                f"{what} covers every tenant's records; it needs an all-tenant token",
            )


def scope_of(
    request: Request,
    principal: Principal = Depends(current_principal),  # noqa: B008
) -> Scope:
    return Scope(principal, directory_of(request))


Scoped = Annotated[Scope, Depends(scope_of)]


__all__ = ["Scope", "Scoped", "directory_of", "scope_of"]
