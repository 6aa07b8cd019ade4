"""Notification attributes and the observations a device serves (LwM2M TS Core 1.1 §5.1.2,
§6.4).

Attributes (pmin, pmax, gt, lt, st) are written per path with Write-Attributes and inherited
downwards: a resource without its own pmin uses its instance's, then its object's, then the
server account's Default Minimum/Maximum Period (/1/x/2, /1/x/3). gt, lt and st only exist on
resources and resource instances, and only numeric ones.

Scheduling is a pure function of times handed in: each :class:`Watch` remembers when it last
notified (``last_time``), what it reported (``last_content``), and since when a change that
qualifies is pending (``changed_at``). Its next deadline is the earlier of ``last_time + pmax``
and ``max(last_time + pmin, changed_at)``. A change qualifies when the content differs from
what was last reported and — for a numeric resource with change conditions — the value crossed
gt or lt, or moved by at least st, relative to the last *reported* value. A qualifying change
stays pending until notified even if the value moves back within pmin: the server hears that a
threshold was crossed, with the value current at sending time.

Composite observations use the smallest pmin and pmax among their paths and notify on any
change (change conditions are per resource, and a composite spans several).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from lwm2m.codec.link import Attributes, AttributeUpdate
from lwm2m.model import DataType, Node, Path, ResourceDefinition, SingleResource
from lwm2m.model.nodes import ResourceInstance
from simulators.device.errors import BadRequest

NUMERIC = frozenset({DataType.INTEGER, DataType.UNSIGNED_INTEGER, DataType.FLOAT, DataType.TIME})
_NOTIFY_NAMES = ("pmin", "pmax", "gt", "lt", "st", "epmin", "epmax")


@dataclass(frozen=True, slots=True)
class Effective:
    """The attributes that govern one observation, after inheritance and defaults."""

    pmin: float = 0.0
    pmax: float | None = None
    gt: float | None = None
    lt: float | None = None
    st: float | None = None

    @property
    def has_conditions(self) -> bool:
        return self.gt is not None or self.lt is not None or self.st is not None


def _merge(current: Attributes | None, update: AttributeUpdate) -> Attributes:
    base = current or Attributes()
    values = {name: getattr(base, name) for name in _NOTIFY_NAMES}
    for name in _NOTIFY_NAMES:
        value = getattr(update.set, name)
        if value is not None:
            values[name] = value
    for name in update.unset:
        if name in values:
            values[name] = None
    other = {name: value for name, value in base.other}
    other.update(dict(update.set.other))
    for name in update.unset:
        other.pop(name, None)
    return dataclasses.replace(base, **values, other=tuple(other.items()))


class AttributeStore:
    """Write-Attributes state of one server account, sparse by path ids."""

    __slots__ = ("_by_path", "version")

    def __init__(self) -> None:
        self._by_path: dict[tuple[int, ...], Attributes] = {}
        #: Bumped on every change, so watches know when to recompute their attributes.
        self.version = 0

    def get(self, ids: tuple[int, ...]) -> Attributes | None:
        return self._by_path.get(ids)

    def write(
        self, path: Path, update: AttributeUpdate, definition: ResourceDefinition | None
    ) -> None:
        """Apply a Write-Attributes request; 4.00 when the result breaks the rules."""
        merged = _merge(self._by_path.get(path.ids), update)
        conditions = [n for n in ("gt", "lt", "st") if getattr(merged, n) is not None]
        if conditions:
            if path.level < 3:
                raise BadRequest(f"{', '.join(conditions)} apply to resources only, not {path}")
            if definition is None or definition.type not in NUMERIC:
                raise BadRequest(f"{', '.join(conditions)} need a numeric resource at {path}")
            if definition.multiple and path.is_resource:
                raise BadRequest(f"{', '.join(conditions)} need a single value at {path}")
        gt, lt, st = merged.gt, merged.lt, merged.st
        if gt is not None and lt is not None:
            if lt >= gt:
                raise BadRequest(f"lt ({lt}) must be below gt ({gt})")
            if st is not None and lt + 2 * st >= gt:
                raise BadRequest(f"lt + 2*st ({lt} + 2*{st}) must be below gt ({gt})")
        if st is not None and st < 0:
            raise BadRequest("st must not be negative")
        if merged.is_empty:
            self._by_path.pop(path.ids, None)
        else:
            self._by_path[path.ids] = merged
        self.version += 1

    def effective(
        self,
        ids: tuple[int, ...],
        default_pmin: float,
        default_pmax: float | None,
        extra: Attributes | None = None,
    ) -> Effective:
        """Attributes for ``ids``: ``extra`` (the Observe request's own query) first, then the
        deepest level that sets each one, then the server defaults."""
        chain: list[Attributes | None] = [extra] if extra is not None else []
        chain += [self._by_path.get(ids[:n]) for n in range(len(ids), 0, -1)]
        own: list[Attributes | None] = [extra] if extra is not None else []
        if len(ids) >= 3:
            own += [self._by_path.get(ids[:n]) for n in range(len(ids), 2, -1)]

        def first(name: str, levels: list[Attributes | None]) -> float | None:
            for attrs in levels:
                if attrs is not None and getattr(attrs, name) is not None:
                    return float(getattr(attrs, name))
            return None

        pmin = first("pmin", chain)
        pmax = first("pmax", chain)
        pmin = default_pmin if pmin is None else pmin
        pmax = default_pmax if pmax is None else pmax
        if pmax is not None and (pmax <= 0 or pmax < pmin):
            pmax = None  # TS 1.1: a pmax below pmin is ignored
        return Effective(pmin, pmax, first("gt", own), first("lt", own), first("st", own))

    def items(self) -> Iterator[tuple[tuple[int, ...], Attributes]]:
        return iter(self._by_path.items())

    def clear(self) -> None:
        self._by_path.clear()
        self.version += 1

    def __bool__(self) -> bool:
        return bool(self._by_path)


Content = Node | Mapping[Path, Node]
"""What an observation reported: one node, or path → node for a composite one."""


def _number(content: Content) -> float | None:
    if isinstance(content, SingleResource | ResourceInstance):
        value = content.value.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def qualifies(effective: Effective, last: Content, current: Content) -> bool:
    """Whether a change from ``last`` (reported) to ``current`` must be notified."""
    if current == last:
        return False
    if not effective.has_conditions:
        return True
    old, new = _number(last), _number(current)
    if old is None or new is None:
        return True
    gt, lt, st = effective.gt, effective.lt, effective.st
    return (
        (gt is not None and (old > gt) != (new > gt))
        or (lt is not None and (old < lt) != (new < lt))
        or (st is not None and abs(new - old) >= st)
    )


class Watch:
    """One observation a server holds on this device."""

    __slots__ = (
        "attributes_version",
        "changed_at",
        "composite",
        "content_format",
        "effective",
        "extra",
        "last_content",
        "last_time",
        "paths",
        "reply_format",
    )

    def __init__(
        self,
        paths: tuple[Path, ...],
        content_format: int,
        reply_format: int,
        composite: bool,
        content: Content,
        now: float,
        extra: Attributes | None,
    ) -> None:
        self.paths = paths
        #: Canonical format used to encode; ``reply_format`` is the number put on the wire
        #: (a legacy 1542 Accept is answered as 1542).
        self.content_format = content_format
        self.reply_format = reply_format
        self.composite = composite
        self.last_content = content
        self.last_time = now
        self.changed_at: float | None = None
        self.extra = extra
        self.effective = Effective()
        self.attributes_version = -1

    def refresh(
        self, attributes: AttributeStore, default_pmin: float, default_pmax: float | None
    ) -> None:
        """Recompute the effective attributes if Write-Attributes changed anything."""
        if self.attributes_version == attributes.version:
            return
        self.attributes_version = attributes.version
        if len(self.paths) == 1 and not self.composite:
            self.effective = attributes.effective(
                self.paths[0].ids, default_pmin, default_pmax, self.extra
            )
            return
        each = [
            attributes.effective(p.ids, default_pmin, default_pmax, self.extra) for p in self.paths
        ]
        pmaxes = [e.pmax for e in each if e.pmax is not None]
        self.effective = Effective(
            min((e.pmin for e in each), default=default_pmin), min(pmaxes) if pmaxes else None
        )

    def touches(self, ids: tuple[int, ...]) -> bool:
        """True when a change at ``ids`` may change what this watch reports."""
        for path in self.paths:
            own = path.ids
            n = min(len(own), len(ids))
            if own[:n] == ids[:n]:
                return True
        return False

    def deadline(self) -> float | None:
        eff = self.effective
        due = None if eff.pmax is None else self.last_time + eff.pmax
        if self.changed_at is not None:
            on_change = max(self.last_time + eff.pmin, self.changed_at)
            due = on_change if due is None else min(due, on_change)
        return due

    def reported(self, content: Content, now: float) -> None:
        self.last_content = content
        self.last_time = now
        self.changed_at = None


__all__ = ["NUMERIC", "AttributeStore", "Content", "Effective", "Watch", "qualifies"]
