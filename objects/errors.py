"""Errors of the ``objects`` package.

One base, :class:`ObjectsError`, so callers can catch the package as a whole. The messages are
written for an operator: a broken DDF file is named with the line and element at fault, because
the person reading the error is the one who dropped the file into a folder.
"""

from __future__ import annotations


class ObjectsError(Exception):
    """Base of every error raised by the ``objects`` package."""


class DdfError(ObjectsError, ValueError):
    """A DDF XML document is unreadable, unsafe or not a valid object definition.

    ``source`` names the file (or ``<bytes>``), ``line`` and ``element`` locate the fault when
    known; ``str()`` gives ``source:line: element: reason``.
    """

    def __init__(
        self, reason: str, *, source: str, line: int | None = None, element: str | None = None
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.element = element
        where = source if line is None else f"{source}:{line}"
        what = f"{element}: " if element else ""
        super().__init__(f"{where}: {what}{reason}")


class NotAnObjectDefinition(DdfError):
    """Well-formed XML that is not an object definition (a registry index, the reusable
    resources list, a schema, a units list). Directory loading skips these files."""


class UnknownObject(ObjectsError, LookupError):
    """No built-in definition exists for the requested object id."""


class ModelConflict(ObjectsError):
    """Definitions from several sources cannot be combined (duplicate id in one folder, or an
    attempt to replace an object fleetloop itself defines and depends on)."""


class InvalidBinding(ObjectsError, ValueError):
    """A binding string (``b=`` parameter, /1/x/7, /3/0/16) is not valid LwM2M."""
