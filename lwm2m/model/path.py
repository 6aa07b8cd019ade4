"""LwM2M paths: ``/``, ``/O``, ``/O/I``, ``/O/I/R`` and ``/O/I/R/RI``.

Ids are 16-bit unsigned integers; 65535 is reserved by the specification (it means "no
instance" in Object Links and on the wire) and is therefore rejected in a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from lwm2m.model.errors import InvalidPath

MAX_ID = 65534
"""Largest id usable in a path; 65535 is reserved."""


class PathLevel(IntEnum):
    """How deep a path reaches; the value is the number of ids."""

    ROOT = 0
    OBJECT = 1
    OBJECT_INSTANCE = 2
    RESOURCE = 3
    RESOURCE_INSTANCE = 4


_LEVELS = tuple(PathLevel)
"""``PathLevel`` by id count: indexing is ~10x cheaper than calling the enum (a hot path)."""


def _check_id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPath(f"path id must be an integer, got {value!r}")
    if not 0 <= value <= MAX_ID:
        raise InvalidPath(f"path id {value} out of range 0..{MAX_ID} (65535 is reserved)")
    return value


@dataclass(frozen=True, slots=True, order=True)
class Path:
    """An immutable LwM2M path. Ordering is by id tuple, so ``/3 < /3/0 < /3/0/0 < /4``."""

    ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.ids, tuple):
            object.__setattr__(self, "ids", tuple(self.ids))
        if len(self.ids) > 4:
            raise InvalidPath(f"a path has at most 4 ids, got {len(self.ids)}: {self.ids}")
        for i in self.ids:
            _check_id(i)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def of(cls, *ids: int) -> Path:
        """``Path.of(3, 0, 1)`` is ``/3/0/1``."""
        return cls(tuple(ids))

    @classmethod
    def parse(cls, text: str) -> Path:
        """Parse ``"/3/0/1"`` (a leading slash is optional, a trailing one allowed)."""
        if not isinstance(text, str):
            raise InvalidPath(f"path must be a string, got {type(text).__name__}")
        body = text.strip()
        if body in ("", "/"):
            return ROOT
        if body.startswith("/"):
            body = body[1:]
        if body.endswith("/"):
            body = body[:-1]
        parts = body.split("/")
        ids: list[int] = []
        for part in parts:
            if not part.isascii() or not part.isdigit():
                raise InvalidPath(f"invalid path {text!r}: segment {part!r} is not a decimal id")
            if len(part) > 1 and part[0] == "0":
                raise InvalidPath(f"invalid path {text!r}: segment {part!r} has a leading zero")
            ids.append(int(part))
        return cls(tuple(ids))

    # -- inspection -------------------------------------------------------------------------
    @property
    def level(self) -> PathLevel:
        return _LEVELS[len(self.ids)]

    @property
    def is_root(self) -> bool:
        return not self.ids

    @property
    def is_object(self) -> bool:
        return len(self.ids) == 1

    @property
    def is_object_instance(self) -> bool:
        return len(self.ids) == 2

    @property
    def is_resource(self) -> bool:
        return len(self.ids) == 3

    @property
    def is_resource_instance(self) -> bool:
        return len(self.ids) == 4

    def _get(self, index: int) -> int | None:
        return self.ids[index] if len(self.ids) > index else None

    @property
    def object_id(self) -> int | None:
        return self._get(0)

    @property
    def instance_id(self) -> int | None:
        return self._get(1)

    @property
    def resource_id(self) -> int | None:
        return self._get(2)

    @property
    def resource_instance_id(self) -> int | None:
        return self._get(3)

    # -- relations --------------------------------------------------------------------------
    def child(self, child_id: int) -> Path:
        """The path one level deeper; raises :class:`InvalidPath` below a resource instance."""
        return Path((*self.ids, _check_id(child_id)))

    @property
    def parent(self) -> Path:
        if not self.ids:
            raise InvalidPath("the root path has no parent")
        return Path(self.ids[:-1])

    def startswith(self, prefix: Path) -> bool:
        """True when ``prefix`` is this path or one of its ancestors (``/`` prefixes all)."""
        return self.ids[: len(prefix.ids)] == prefix.ids

    def is_prefix_of(self, other: Path) -> bool:
        return other.startswith(self)

    def relative_to(self, prefix: Path) -> tuple[int, ...]:
        """The ids below ``prefix``; raises when ``prefix`` is not a prefix of this path."""
        if not self.startswith(prefix):
            raise InvalidPath(f"{prefix} is not a prefix of {self}")
        return self.ids[len(prefix.ids) :]

    def __str__(self) -> str:
        return "/" + "/".join(str(i) for i in self.ids)

    def __repr__(self) -> str:
        return f"Path({str(self)!r})"


ROOT = Path(())
"""The root path ``/``."""
