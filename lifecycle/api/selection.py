"""``select=`` on every list: the endpoints an inventory selector names, and paging through
a store list while keeping only those.

A selector filters after the store's own paging, so a page of 100 records may hold none of
the selected endpoints; :func:`filtered_page` reads on until ``limit`` selected items are
found or the list ends, and answers the cursor of the last record it read -- the next call
goes on from there, so paging stays exact whatever share of the fleet is selected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from lifecycle.api.context import ApiContext
from lifecycle.api.scope import Scope

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Page(Protocol[T_co]):
    @property
    def items(self) -> Sequence[T_co]: ...

    @property
    def next_after(self) -> str | None: ...


async def selected(ctx: ApiContext, scope: Scope, select: str | None) -> set[str] | None:
    """The endpoints ``select`` names (of the caller's tenants); ``None``: no selector."""
    if not select:
        return None
    from lifecycle.api.audit_routes import selected_endpoints
    from lifecycle.api.inventory_routes import selector_of

    query = selected_endpoints(selector_of(select), scope.principal.tenants)
    return set(await ctx.store.read(lambda tx: list(tx.execute(query).scalars())))


class Filtered(Generic[T]):
    """Up to ``limit`` kept items and the cursor to go on from (None: the list ended)."""

    def __init__(self, items: list[T], next_after: str | None) -> None:
        self.items = items
        self.next_after = next_after


async def filtered_page(
    fetch: Callable[[str | None, int], Awaitable[Page[T]]],
    keep: Callable[[T], bool],
    endpoint_of: Callable[[T], str],
    *,
    after: str | None,
    limit: int,
) -> Filtered[T]:
    """Read pages from ``after`` on, keeping items ``keep`` accepts, until ``limit`` are kept
    or the list ends (module docstring)."""
    kept: list[T] = []
    cursor = after
    while True:
        page = await fetch(cursor, limit)
        for item in page.items:
            if keep(item):
                kept.append(item)
                if len(kept) == limit:
                    last = endpoint_of(item)
                    more = page.next_after is not None or item is not page.items[-1]
                    return Filtered(kept, last if more else None)
        if page.next_after is None:
            return Filtered(kept, None)
        cursor = page.next_after
