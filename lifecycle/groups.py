"""Named device groups: dynamic (a selector; members come and go) or snapshot (fixed members).

A group belongs to a tenant (or to none: then only all-tenant operators see it) and only ever
holds devices of that tenant, whatever its selector says -- a tenant's group cannot reach
another tenant's devices. Names are unique within a tenant.

Membership is materialised in ``lc_group_member`` (so "members of pilot-eu" is an indexed
page, and desired state / campaigns can join on it). A *snapshot* group's members are fixed
when it is created. A *dynamic* group's selector is evaluated once over the inventory at
creation; after that its membership follows the devices by events: whenever the inventory
writes a record (registration, a reported fact, a stage move, a bulk change) it calls
:meth:`GroupRegistry.on_change` in the same transaction, which evaluates every dynamic
group's compiled selector *in memory on that one record* and adds or removes the membership.
There is no periodic full scan. The dynamic groups and their parsed selectors are cached
(re-read after a create or delete, and every :attr:`GroupRegistry.ttl` seconds).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Double, Index, and_, bindparam, delete, func, insert, select
from sqlmodel import Field

from lifecycle.inventory import Actor, AuditLog, DeviceRecord, InventoryRepository
from lifecycle.selector import Selector, parse_selector
from lifecycle.tables import LifecycleModel, table_of
from lwm2m.store import Page, Tx

DYNAMIC = "dynamic"
SNAPSHOT = "snapshot"
KINDS = (DYNAMIC, SNAPSHOT)
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")
NO_TENANT = ""
_CHUNK = 500


class GroupRow(LifecycleModel, table=True):
    """One group; ``scope`` is its tenant, or ``""`` for a group of all tenants."""

    __tablename__ = "lc_group"

    scope: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    tenant: str | None = None
    kind: str
    selector: str
    created_by: str
    created_at: float = Field(sa_type=Double)


class GroupMemberRow(LifecycleModel, table=True):
    """One device in one group, since when."""

    __tablename__ = "lc_group_member"
    __table_args__ = (Index("ix_lc_group_member_endpoint", "endpoint"),)

    scope: str = Field(primary_key=True)
    group: str = Field(primary_key=True)
    endpoint: str = Field(primary_key=True)
    since: float = Field(sa_type=Double)


GROUP = table_of(GroupRow)
MEMBER = table_of(GroupMemberRow)
_G = GROUP.c
_M = MEMBER.c
# Pre-built statements for the per-event membership upkeep (compiled once, not per event).
_MEMBERSHIPS_OF = select(_M.scope, _M.group, _M.endpoint).where(
    _M.endpoint.in_(bindparam("endpoints", expanding=True))
)
_INSERT_MEMBER = insert(MEMBER)
_DELETE_MEMBER = delete(MEMBER).where(
    _M.scope == bindparam("s"), _M.group == bindparam("g"), _M.endpoint == bindparam("e")
)


class GroupError(Exception):
    """Base of the group errors; the message says what to do."""


class UnknownGroup(GroupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no group {name!r}; list the groups with `fleetloop groups list`")
        self.name = name


class GroupExists(GroupError):
    pass


class InvalidGroup(GroupError):
    pass


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    tenant: str | None
    kind: str
    selector: str
    created_by: str
    created_at: float
    members: int = 0

    @property
    def scope(self) -> str:
        return self.tenant or NO_TENANT

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenant": self.tenant,
            "kind": self.kind,
            "selector": self.selector,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "members": self.members,
        }


@dataclass(frozen=True, slots=True)
class _Dynamic:
    scope: str
    name: str
    tenant: str | None
    selector: Selector

    def admits(self, record: DeviceRecord) -> bool:
        if self.tenant is not None and record.tenant != self.tenant:
            return False
        return self.selector.matches(record)


def _group(row: Any, members: int = 0) -> Group:
    m = row._mapping
    return Group(
        name=m["name"],
        tenant=m["tenant"],
        kind=m["kind"],
        selector=m["selector"],
        created_by=m["created_by"],
        created_at=float(m["created_at"]),
        members=members,
    )


def visible(tenants: frozenset[str] | None) -> Any:
    """The condition "group visible to an operator of ``tenants``" (None: all tenants)."""
    if tenants is None:
        return _G.name.is_not(None)
    return _G.tenant.in_(sorted(tenants))


class GroupRegistry:
    """Groups and their membership (module docstring). Register :meth:`on_change` with the
    inventory repository: ``inventory.on_change.append(groups.on_change)``."""

    def __init__(
        self,
        inventory: InventoryRepository,
        audit: AuditLog | None = None,
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inventory = inventory
        self.audit = audit
        self.ttl = ttl
        self.clock = clock
        self._dynamic: tuple[list[_Dynamic], float] | None = None
        self._lock = threading.Lock()
        #: Membership rows added / removed by events (for operators and the benchmark).
        self.joined = 0
        self.left = 0

    # -- reading ----------------------------------------------------------------------------------
    def groups(self, tx: Tx, tenants: frozenset[str] | None = None) -> list[Group]:
        counts = {
            (scope, group): int(n)
            for scope, group, n in map(
                tuple,
                tx.execute(select(_M.scope, _M.group, func.count()).group_by(_M.scope, _M.group)),
            )
        }
        rows = tx.execute(select(GROUP).where(visible(tenants)).order_by(_G.name, _G.scope))
        return [_group(r, counts.get((r._mapping["scope"], r._mapping["name"]), 0)) for r in rows]

    def get(
        self,
        tx: Tx,
        name: str,
        tenants: frozenset[str] | None = None,
        *,
        tenant: str | None = None,
    ) -> Group:
        """The group ``name`` visible to ``tenants``; ``tenant`` picks one when several
        tenants the operator sees have a group of that name."""
        query = select(GROUP).where(_G.name == name, visible(tenants))
        if tenant is not None:
            query = query.where(_G.scope == tenant)
        rows = list(tx.execute(query.order_by(_G.scope)))
        if not rows:
            raise UnknownGroup(name)
        if len(rows) > 1:
            owners = ", ".join(r._mapping["tenant"] or "(all tenants)" for r in rows)
            raise InvalidGroup(
                f"several tenants have a group {name!r} ({owners}); say which with tenant="
            )
        row = rows[0]
        members = tx.execute(
            select(func.count())
            .select_from(MEMBER)
            .where(_M.scope == row._mapping["scope"], _M.group == name)
        ).scalar_one()
        return _group(row, int(members))

    def members(
        self, tx: Tx, group: Group, *, after: str | None = None, limit: int = 100
    ) -> Page[tuple[str, float]]:
        """``(endpoint, since)`` of the group's members in endpoint order, one page."""
        limit = max(1, min(limit, 1000))
        query = select(_M.endpoint, _M.since).where(_M.scope == group.scope, _M.group == group.name)
        if after is not None:
            query = query.where(_M.endpoint > after)
        rows = [
            (str(e), float(s))
            for e, s in map(tuple, tx.execute(query.order_by(_M.endpoint).limit(limit + 1)))
        ]
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(tuple(rows), rows[-1][0] if more and rows else None)

    def groups_of(self, tx: Tx, endpoint: str, tenants: frozenset[str] | None = None) -> list[str]:
        """The names of the groups (visible to ``tenants``) ``endpoint`` is a member of."""
        query = (
            select(_M.group)
            .join(GROUP, and_(_G.scope == _M.scope, _G.name == _M.group))
            .where(_M.endpoint == endpoint, visible(tenants))
            .order_by(_M.group)
        )
        return [g for (g,) in tx.execute(query)]

    # -- changing ---------------------------------------------------------------------------------
    def create(
        self,
        tx: Tx,
        name: str,
        selector: Selector,
        *,
        kind: str,
        tenant: str | None,
        actor: Actor,
        now: float,
    ) -> Group:
        """Create a group and its membership now (audited)."""
        if not GROUP_NAME.fullmatch(name):
            raise InvalidGroup(
                f"group name {name!r} is not valid; use 1..63 letters, digits and _ . - "
                "(starting with a letter or digit)"
            )
        if kind not in KINDS:
            raise InvalidGroup(f"group kind {kind!r}; use dynamic or snapshot")
        scope = tenant or NO_TENANT
        taken = tx.execute(select(_G.name).where(_G.scope == scope, _G.name == name)).first()
        if taken is not None:
            raise GroupExists(
                f"group {name!r} already exists; delete it first or choose another name"
            )
        members = self.inventory.endpoints(
            tx, selector, None if tenant is None else frozenset({tenant})
        )
        tx.execute(
            insert(GROUP),
            {
                "scope": scope,
                "name": name,
                "tenant": tenant,
                "kind": kind,
                "selector": str(selector),
                "created_by": actor.name,
                "created_at": now,
            },
        )
        if members:
            tx.execute(
                insert(MEMBER),
                [{"scope": scope, "group": name, "endpoint": e, "since": now} for e in members],
            )
        self._audit(
            tx, actor, "group.create", name, now, tenant,
            {"kind": kind, "selector": str(selector), "members": len(members)},
        )  # fmt: skip
        self._invalidate(tx)
        return Group(name, tenant, kind, str(selector), actor.name, now, len(members))

    def delete(
        self,
        tx: Tx,
        name: str,
        *,
        actor: Actor,
        now: float,
        tenants: frozenset[str] | None = None,
        tenant: str | None = None,
    ) -> Group:
        """Delete a group (not its devices), audited."""
        group = self.get(tx, name, tenants, tenant=tenant)
        tx.execute(delete(MEMBER).where(_M.scope == group.scope, _M.group == name))
        tx.execute(delete(GROUP).where(_G.scope == group.scope, _G.name == name))
        self._audit(
            tx, actor, "group.delete", name, now, group.tenant,
            {"kind": group.kind, "selector": group.selector, "members": group.members},
        )  # fmt: skip
        self._invalidate(tx)
        return group

    def _audit(
        self,
        tx: Tx,
        actor: Actor,
        action: str,
        name: str,
        now: float,
        tenant: str | None,
        detail: dict[str, Any],
    ) -> None:
        if self.audit is not None:
            self.audit.append(
                tx,
                actor=actor.name,
                action=action,
                subject=f"group:{name}",
                now=now,
                token_id=actor.token_id,
                tenant=tenant,
                detail=detail,
            )

    # -- event-driven membership ------------------------------------------------------------------
    def _invalidate(self, tx: Tx) -> None:
        self._dynamic = None
        tx.after_commit(self._forget)

    def _forget(self) -> None:
        self._dynamic = None

    def dynamic_groups(self, tx: Tx) -> list[_Dynamic]:
        cached = self._dynamic
        if cached is not None and self.clock() - cached[1] <= self.ttl:
            return cached[0]
        rows = tx.execute(select(GROUP).where(_G.kind == DYNAMIC))
        loaded = [
            _Dynamic(
                r._mapping["scope"],
                r._mapping["name"],
                r._mapping["tenant"],
                parse_selector(r._mapping["selector"]),
            )
            for r in rows
        ]
        with self._lock:
            self._dynamic = (loaded, self.clock())
        return loaded

    def on_change(self, tx: Tx, records: Sequence[DeviceRecord]) -> None:
        """Bring the dynamic groups' membership of ``records`` up to date (in memory per record,
        one query for the current memberships per chunk)."""
        groups = self.dynamic_groups(tx)
        if not groups or not records:
            return
        keys = {(g.scope, g.name) for g in groups}
        for start in range(0, len(records), _CHUNK):
            chunk = records[start : start + _CHUNK]
            rows = tx.execute(_MEMBERSHIPS_OF, {"endpoints": [r.endpoint for r in chunk]})
            current = {(s, g, e) for s, g, e in map(tuple, rows) if (s, g) in keys}
            wanted = {(g.scope, g.name, r.endpoint) for r in chunk for g in groups if g.admits(r)}
            joins = wanted - current
            leaves = current - wanted
            now = max(r.updated_at for r in chunk)
            if joins:
                tx.execute(
                    _INSERT_MEMBER,
                    [
                        {"scope": s, "group": g, "endpoint": e, "since": now}
                        for s, g, e in sorted(joins)
                    ],
                )
            if leaves:
                tx.execute(
                    _DELETE_MEMBER,
                    [{"s": s, "g": g, "e": e} for s, g, e in sorted(leaves)],
                )
            self.joined += len(joins)
            self.left += len(leaves)


__all__ = [
    "DYNAMIC",
    "GROUP",
    "KINDS",
    "MEMBER",
    "SNAPSHOT",
    "Group",
    "GroupError",
    "GroupExists",
    "GroupRegistry",
    "InvalidGroup",
    "UnknownGroup",
]
