"""Errors of the store layer.

Every error the store raises derives from :class:`StoreError`, so the server can catch the layer
as a whole. The subclasses say what the caller should do about it:

* :class:`NotFound` -- the record is not there (the server answers 4.04; a device whose
  registration is gone must register again).
* :class:`Conflict` -- the write contradicts what is stored (a PSK identity already used by
  another endpoint, a queued request that is not in a state that allows the transition).
* :class:`StoreUnavailable` -- the database cannot be reached or refused the write for an
  operational reason; retrying later may work (the server answers 5.03).
* :class:`CorruptRecord` -- a stored row cannot be turned back into a domain object; someone
  wrote the database behind the store's back or a migration is missing.

Driver exceptions (SQLAlchemy, sqlite3, psycopg) never escape the store: they are translated by
:func:`translate` at the boundary so callers above depend on this module only.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url


class StoreError(Exception):
    """Base of every store error."""


class NotFound(StoreError):
    """The requested record does not exist (or, for registrations, has expired)."""


class Conflict(StoreError):
    """The write contradicts stored state: a uniqueness rule or a state-machine rule."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or cannot take writes right now; retry later."""


class StoreOverloaded(StoreUnavailable):
    """The write queue is full: the database is slower than the incoming writes."""


class CorruptRecord(StoreError):
    """A stored value cannot be decoded back into a domain object."""


class SchemaMismatch(StoreError):
    """The database's schema version is not the one this code understands."""


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<unparseable database URL>"


def unavailable(url: str, cause: BaseException) -> StoreUnavailable:
    """A :class:`StoreUnavailable` naming the (redacted) URL, the cause, and what to do."""
    shown = redact_url(url)
    if shown.startswith("sqlite"):
        advice = (
            "check that the data directory exists, is writable by this user, and that the disk "
            "is not full"
        )
    else:
        advice = (
            "check that PostgreSQL is running and reachable from this host, and that the URL's "
            "host, port, user, password and database name are right"
        )
    return StoreUnavailable(f"database {shown} is unavailable: {_one_line(cause)}; {advice}")


def _one_line(cause: BaseException) -> str:
    text = str(getattr(cause, "orig", None) or cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def translate(err: Exception, url: str) -> StoreError:
    """Map a driver/SQLAlchemy exception to the store's hierarchy (store errors pass through)."""
    if isinstance(err, StoreError):
        return err
    text = _one_line(err)
    missing_table = (isinstance(err, sa_exc.OperationalError) and "no such table" in text) or (
        isinstance(err, sa_exc.ProgrammingError)
        and text.startswith("relation")
        and "does not exist" in text
    )
    if missing_table:
        return SchemaMismatch(
            f"database {redact_url(url)} lacks the store's tables ({text}); "
            "call Store.create_schema() (fleetloop serve does this on start)"
        )
    if isinstance(err, sa_exc.IntegrityError):
        return Conflict(f"write rejected by a uniqueness or reference rule: {text}")
    if isinstance(err, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated
    ):
        return unavailable(url, err)
    return StoreError(f"database error on {redact_url(url)}: {text}")
