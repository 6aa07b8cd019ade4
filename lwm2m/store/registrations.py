"""Registrations: the device's Register / Update / De-register state, durable across restarts.

After a restart the server answers a device's Update from this table (registration id to
registration), so a device does not have to register again just because the server did.
Replacing a registration by endpoint (a device registering again) returns the old one so the
server can cancel what it had in flight for it; its observations are deleted in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, select, update

from lwm2m.store.domain import (
    Address,
    Identity,
    IdentityKind,
    NewRegistration,
    Page,
    Registration,
    RegistrationUpdate,
    new_registration_id,
)
from lwm2m.store.engine import Tx
from lwm2m.store.errors import CorruptRecord, NotFound
from lwm2m.store.tables import OBSERVATION, REGISTRATION

_R = REGISTRATION.c
_BY_ID = select(REGISTRATION).where(_R.id == bindparam("id"))
_BY_ENDPOINT = select(REGISTRATION).where(_R.endpoint == bindparam("endpoint"))
_DELETE_BY_ID = delete(REGISTRATION).where(_R.id == bindparam("id"))
_DELETE_OBSERVATIONS = delete(OBSERVATION).where(OBSERVATION.c.registration_id == bindparam("id"))
_INSERT = REGISTRATION.insert()
_BY_ENDPOINTS = select(REGISTRATION).where(_R.endpoint.in_(bindparam("endpoints", expanding=True)))
_BY_IDS = select(REGISTRATION).where(_R.id.in_(bindparam("ids", expanding=True)))
_IN_CHUNK = 500  # bound parameters per IN list (SQLite's limit is 32 766; PostgreSQL's 65 535)
# Fixed UPDATE statements (compiled once, run as executemany): an Update that only refreshes
# the lifetime writes three columns; one that changes anything else writes every mutable one.
_EXPIRY_COLUMNS = ("lifetime", "updated_at", "expires_at")
_MUTABLE_COLUMNS = (
    *_EXPIRY_COLUMNS,
    "binding",
    "queue_mode",
    "sms_number",
    "object_links",
    "supported_formats",
    "host",
    "port",
)


def _update_statement(columns: tuple[str, ...]) -> Any:
    return (
        update(REGISTRATION)
        .where(_R.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in columns})
    )


_UPDATE_EXPIRY = _update_statement(_EXPIRY_COLUMNS)
_UPDATE_MUTABLE = _update_statement(_MUTABLE_COLUMNS)


def _keep(name: str) -> Any:
    """``COALESCE(:b_<name>, <name>)``: the Update's value, or the stored one when absent."""
    column = _R[name]
    return func.coalesce(bindparam(f"b_{name}", type_=column.type), column)


_NOW = bindparam("b_now", type_=_R.expires_at.type)
# One fixed statement for every Update, whatever it carries: the database applies it on top
# of the stored row (so Updates never build on a stale copy), and skips unknown or expired ids.
_APPLY_UPDATE = (
    update(REGISTRATION)
    .where(_R.id == bindparam("b_id"), _R.expires_at > _NOW)
    .values(
        {
            "lifetime": _keep("lifetime"),
            "updated_at": _NOW,
            "expires_at": _NOW + _keep("lifetime"),
            **{name: _keep(name) for name in _MUTABLE_COLUMNS[3:]},
        }
    )
)
# The common Updates write only the expiry columns, with two or three parameters: an empty
# one (a lifetime refresh) about half the store CPU of ``_APPLY_UPDATE`` per row (SQLite,
# 2 000 Updates in batches of 200, commits included: 12.6-16 -> 6.9-7.3 µs, issue 13).
_LIFETIME = bindparam("b_lifetime", type_=_R.lifetime.type)
_APPLY_EXTEND = (
    update(REGISTRATION)
    .where(_R.id == bindparam("b_id"), _R.expires_at > _NOW)
    .values({"updated_at": _NOW, "expires_at": _NOW + _R.lifetime})
)
_APPLY_LIFETIME = (
    update(REGISTRATION)
    .where(_R.id == bindparam("b_id"), _R.expires_at > _NOW)
    .values({"lifetime": _LIFETIME, "updated_at": _NOW, "expires_at": _NOW + _LIFETIME})
)
_UPDATED_AT_BY_IDS = select(_R.id, _R.updated_at).where(_R.id.in_(bindparam("ids", expanding=True)))


def _formats_text(formats: Iterable[int]) -> str:
    return ",".join(str(int(f)) for f in formats)


def _formats(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part)
    except ValueError as err:
        raise CorruptRecord(f"stored supported formats {text!r} are not integers") from err


def _to_row(reg: Registration) -> dict[str, Any]:
    return {
        "id": reg.id,
        "endpoint": reg.endpoint,
        "lwm2m_version": reg.lwm2m_version,
        "lifetime": reg.lifetime,
        "binding": reg.binding,
        "queue_mode": reg.queue_mode,
        "sms_number": reg.sms_number,
        "host": reg.address.host,
        "port": reg.address.port,
        "root_path": reg.root_path,
        "object_links": reg.object_links,
        "supported_formats": _formats_text(reg.supported_formats),
        "registered_at": reg.registered_at,
        "updated_at": reg.updated_at,
        "expires_at": reg.expires_at,
        "identity_kind": reg.identity.kind.value,
        "identity_value": reg.identity.value,
    }


def registration_from_row(row: Row[Any]) -> Registration:
    """Turn a ``registration`` row into the domain object."""
    m = row._mapping
    try:
        kind = IdentityKind(m["identity_kind"])
    except ValueError as err:
        raise CorruptRecord(f"registration {m['id']}: unknown identity kind") from err
    return Registration(
        id=m["id"],
        endpoint=m["endpoint"],
        lwm2m_version=m["lwm2m_version"],
        lifetime=int(m["lifetime"]),
        binding=m["binding"],
        queue_mode=bool(m["queue_mode"]),
        sms_number=m["sms_number"],
        address=Address(m["host"], int(m["port"])),
        root_path=m["root_path"],
        object_links=m["object_links"],
        supported_formats=_formats(m["supported_formats"]),
        registered_at=float(m["registered_at"]),
        updated_at=float(m["updated_at"]),
        expires_at=float(m["expires_at"]),
        identity=Identity(kind, m["identity_value"]),
    )


def _changes_more_than_lifetime(changes: RegistrationUpdate) -> bool:
    return any(
        value is not None
        for value in (
            changes.binding,
            changes.queue_mode,
            changes.sms_number,
            changes.object_links,
            changes.supported_formats,
            changes.address,
        )
    )


def _apply(
    old: Registration, changes: RegistrationUpdate, lifetime: int, now: float
) -> Registration:
    """The registration after an Update: what the Update carries, the rest as it was."""
    return Registration(
        id=old.id,
        endpoint=old.endpoint,
        lwm2m_version=old.lwm2m_version,
        lifetime=lifetime,
        binding=changes.binding if changes.binding is not None else old.binding,
        queue_mode=changes.queue_mode if changes.queue_mode is not None else old.queue_mode,
        sms_number=changes.sms_number if changes.sms_number is not None else old.sms_number,
        address=changes.address if changes.address is not None else old.address,
        root_path=old.root_path,
        object_links=(
            changes.object_links if changes.object_links is not None else old.object_links
        ),
        supported_formats=(
            tuple(changes.supported_formats)
            if changes.supported_formats is not None
            else old.supported_formats
        ),
        registered_at=old.registered_at,
        updated_at=now,
        expires_at=now + lifetime,
        identity=old.identity,
    )


def _apply_params(rid: str, changes: RegistrationUpdate, now: float) -> dict[str, Any]:
    address = changes.address
    formats = changes.supported_formats
    return {
        "b_id": rid,
        "b_now": now,
        "b_lifetime": changes.lifetime,
        "b_binding": changes.binding,
        "b_queue_mode": changes.queue_mode,
        "b_sms_number": changes.sms_number,
        "b_object_links": changes.object_links,
        "b_supported_formats": _formats_text(formats) if formats is not None else None,
        "b_host": address.host if address is not None else None,
        "b_port": address.port if address is not None else None,
    }


def _refresh_only(changes: RegistrationUpdate) -> bool:
    """True when ``changes`` carries nothing but (perhaps) a lifetime."""
    return (
        changes.binding is None
        and changes.queue_mode is None
        and changes.sms_number is None
        and changes.object_links is None
        and changes.supported_formats is None
        and changes.address is None
    )


def applied(old: Registration, changes: RegistrationUpdate, now: float) -> Registration:
    """The registration after :meth:`RegistrationRepository.apply_updates` applied
    ``changes`` at ``now`` to ``old`` (the same rule the database used)."""
    lifetime = changes.lifetime if changes.lifetime is not None else old.lifetime
    if _refresh_only(changes):  # the common Update: positional, no per-field choice
        return Registration(
            old.id,
            old.endpoint,
            old.lwm2m_version,
            lifetime,
            old.binding,
            old.queue_mode,
            old.sms_number,
            old.address,
            old.root_path,
            old.object_links,
            old.supported_formats,
            old.registered_at,
            now,
            now + lifetime,
            old.identity,
        )
    return _apply(old, changes, lifetime, now)


class RegistrationRepository:
    """Registrations by id and by endpoint; at most one registration per endpoint.

    ``id_factory`` makes registration ids (injected so tests are deterministic); the default
    draws 60 random bits. A collision with a live id fails the insert with
    :class:`~lwm2m.store.errors.Conflict` -- the device retries its Register and gets another.
    """

    def __init__(self, id_factory: Callable[[], str] = new_registration_id) -> None:
        self._new_id = id_factory

    def register(
        self, tx: Tx, new: NewRegistration, now: float
    ) -> tuple[Registration, Registration | None]:
        """Add a registration, replacing the endpoint's previous one.

        Returns ``(registration, replaced)``; ``replaced`` is the endpoint's previous
        registration (its observations are gone with it), for the server to clean up after.
        """
        if new.lifetime <= 0:
            raise ValueError(f"lifetime must be positive, got {new.lifetime}")
        old_row = tx.execute(_BY_ENDPOINT, {"endpoint": new.endpoint}).first()
        old = registration_from_row(old_row) if old_row is not None else None
        if old is not None:
            tx.execute(_DELETE_OBSERVATIONS, {"id": old.id})
            tx.execute(_DELETE_BY_ID, {"id": old.id})
        reg = self._new(new, now)
        tx.execute(_INSERT, _to_row(reg))
        return reg, old

    def register_many(
        self, tx: Tx, registrations: Sequence[tuple[NewRegistration, float]]
    ) -> list[tuple[Registration, Registration | None]]:
        """:meth:`register` for many ``(new, now)`` at once, in order, in a few statements.

        Why: a group commit of a registration storm holds hundreds of Registers; statement
        overhead (SQLAlchemy's, per execute) was most of the writer thread's CPU per Register.
        Here one SELECT per 500 endpoints finds the registrations being replaced, one
        executemany deletes them (and their observations) and one inserts the new rows. An
        endpoint listed twice is replaced within the call: the later Register returns the
        earlier one as ``replaced``, and only the later is stored.
        """
        for new, _ in registrations:
            if new.lifetime <= 0:
                raise ValueError(f"lifetime must be positive, got {new.lifetime}")
        endpoints = list(dict.fromkeys(new.endpoint for new, _ in registrations))
        current: dict[str, Registration] = {}
        for start in range(0, len(endpoints), _IN_CHUNK):
            chunk = endpoints[start : start + _IN_CHUNK]
            for row in tx.execute(_BY_ENDPOINTS, {"endpoints": chunk}):
                stored = registration_from_row(row)
                current[stored.endpoint] = stored
        stored_ids = [{"id": reg.id} for reg in current.values()]
        results: list[tuple[Registration, Registration | None]] = []
        latest: dict[str, Registration] = {}
        for new, now in registrations:
            reg = self._new(new, now)
            results.append((reg, current.get(new.endpoint)))
            current[new.endpoint] = latest[new.endpoint] = reg
        if stored_ids:
            tx.executemany_direct(_DELETE_OBSERVATIONS, stored_ids)
            tx.executemany_direct(_DELETE_BY_ID, stored_ids)
        if latest:
            tx.executemany_direct(_INSERT, [_to_row(reg) for reg in latest.values()])
        return results

    def _new(self, new: NewRegistration, now: float) -> Registration:
        return Registration(
            id=self._new_id(),
            endpoint=new.endpoint,
            lwm2m_version=new.lwm2m_version,
            lifetime=new.lifetime,
            binding=new.binding,
            queue_mode=new.queue_mode,
            sms_number=new.sms_number,
            address=new.address,
            root_path=new.root_path,
            object_links=new.object_links,
            supported_formats=tuple(new.supported_formats),
            registered_at=now,
            updated_at=now,
            expires_at=now + new.lifetime,
            identity=new.identity,
        )

    def update(
        self, tx: Tx, registration_id: str, changes: RegistrationUpdate, now: float
    ) -> Registration:
        """Apply an Update: refreshes ``updated_at`` and ``expires_at`` (``now + lifetime``).

        Raises :class:`NotFound` when the registration does not exist or has expired (the
        device must register again; the expiry sweep removes the row).
        """
        (result,) = self.update_many(tx, [(registration_id, changes, now)])
        if isinstance(result, Exception):
            raise result
        return result

    def update_many(
        self, tx: Tx, updates: Sequence[tuple[str, RegistrationUpdate, float]]
    ) -> list[Registration | NotFound | ValueError]:
        """:meth:`update` for many ``(registration_id, changes, now)`` at once, in order.

        Why: an Update was a SELECT plus a dynamically built UPDATE, ~1 ms of server CPU in
        SQLAlchemy's statement overhead. Here one SELECT per 500 ids reads the rows, and two
        fixed executemany statements write them: the lifetime columns for Updates that only
        refresh the lifetime (the usual, empty Update), every mutable column for the others.
        A failed row (unknown, expired, non-positive lifetime) gets its error as its result,
        and nothing is written for it. An id listed twice is applied twice, the later on top
        of the earlier.
        """
        ids = list(dict.fromkeys(rid for rid, _, _ in updates))
        current: dict[str, Registration] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            for row in tx.execute(_BY_IDS, {"ids": ids[start : start + _IN_CHUNK]}):
                stored = registration_from_row(row)
                current[stored.id] = stored
        results: list[Registration | NotFound | ValueError] = []
        written: dict[str, Registration] = {}
        full: set[str] = set()
        for rid, changes, now in updates:
            old = current.get(rid)
            if old is None or old.is_expired(now):
                state = "expired" if old is not None else "unknown"
                results.append(NotFound(f"registration {rid!r} is {state}; register again"))
                continue
            lifetime = changes.lifetime if changes.lifetime is not None else old.lifetime
            if lifetime <= 0:
                results.append(ValueError(f"lifetime must be positive, got {lifetime}"))
                continue
            reg = _apply(old, changes, lifetime, now)
            if _changes_more_than_lifetime(changes):
                full.add(rid)
            current[rid] = written[rid] = reg
            results.append(reg)
        expiry_rows: list[dict[str, Any]] = []
        full_rows: list[dict[str, Any]] = []
        for rid, reg in written.items():
            if rid in full:
                values = _to_row(reg)
                params = {f"b_{name}": values[name] for name in _MUTABLE_COLUMNS}
                params["b_id"] = rid
                full_rows.append(params)
            else:
                expiry_rows.append(
                    {
                        "b_id": rid,
                        "b_lifetime": reg.lifetime,
                        "b_updated_at": reg.updated_at,
                        "b_expires_at": reg.expires_at,
                    }
                )
        if expiry_rows:
            tx.execute(_UPDATE_EXPIRY, expiry_rows)
        if full_rows:
            tx.execute(_UPDATE_MUTABLE, full_rows)
        return results

    def remove(self, tx: Tx, registration_id: str) -> Registration:
        """De-register: delete the registration and its observations; return what was deleted."""
        current = self.get(tx, registration_id)
        if current is None:
            raise NotFound(f"registration {registration_id!r} is unknown")
        tx.execute(_DELETE_OBSERVATIONS, {"id": registration_id})
        tx.execute(_DELETE_BY_ID, {"id": registration_id})
        return current

    def apply_updates(
        self, tx: Tx, updates: Sequence[tuple[str, RegistrationUpdate, float]]
    ) -> list[NotFound | ValueError | None]:
        """:meth:`update_many` without reading: ``None`` for each applied Update, an error for
        the others (unknown or expired id, non-positive lifetime; nothing written for them).

        Why: the SELECT and decoding its rows were ~40 % of an Update's store work. The
        caller (the server, which holds every live registration in memory) applies the same
        changes to its copy once the commit returns, in submission order. One executemany of
        a fixed statement per round (an id appears at most once per round); only when its
        rowcount falls short does a read find out which rows matched nothing.
        """
        results: list[NotFound | ValueError | None] = [None] * len(updates)
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for position, (rid, changes, _) in enumerate(updates):
            if changes.lifetime is not None and changes.lifetime <= 0:
                results[position] = ValueError(f"lifetime must be positive, got {changes.lifetime}")
                continue
            occurrence = seen.get(rid, 0)
            seen[rid] = occurrence + 1
            if occurrence == len(rounds):
                rounds.append([])
            rounds[occurrence].append(position)
        for positions in rounds:
            extend: list[dict[str, Any]] = []
            lifetime: list[dict[str, Any]] = []
            full: list[dict[str, Any]] = []
            for position in positions:
                rid, changes, now = updates[position]
                if not _refresh_only(changes):
                    full.append(_apply_params(rid, changes, now))
                elif changes.lifetime is None:
                    extend.append({"b_id": rid, "b_now": now})
                else:
                    lifetime.append({"b_id": rid, "b_now": now, "b_lifetime": changes.lifetime})
            # The driver's executemany (no per-row SQLAlchemy processing); both drivers sum
            # the rowcount over the rows (sqlite3, psycopg 3). An id is at most once per round,
            # so the statements of a round touch different rows.
            changed = 0
            for statement, params in (
                (_APPLY_EXTEND, extend),
                (_APPLY_LIFETIME, lifetime),
                (_APPLY_UPDATE, full),
            ):
                if params:
                    changed += tx.executemany_direct(statement, params)
            if changed == len(positions):
                continue
            ids = [updates[position][0] for position in positions]
            stamped: dict[str, float] = {}
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = {"ids": ids[start : start + _IN_CHUNK]}
                for row in tx.execute(_UPDATED_AT_BY_IDS, chunk):
                    stamped[row.id] = float(row.updated_at)
            for position in positions:
                rid, _, now = updates[position]
                if stamped.get(rid) != now:
                    results[position] = NotFound(
                        f"registration {rid!r} is unknown or expired; register again"
                    )
        return results

    def remove_many(self, tx: Tx, registration_ids: Sequence[str]) -> None:
        """De-register many at once: delete the registrations and their observations in two
        executemany statements, with no read first (the server answers a De-register the
        same whether or not the row was still there). Unknown ids are no-ops."""
        params = [{"id": rid} for rid in dict.fromkeys(registration_ids)]
        if params:
            tx.executemany_direct(_DELETE_OBSERVATIONS, params)
            tx.executemany_direct(_DELETE_BY_ID, params)

    def get(self, tx: Tx, registration_id: str) -> Registration | None:
        """The registration with this id, expired or not (compare ``expires_at`` yourself)."""
        row = tx.execute(_BY_ID, {"id": registration_id}).first()
        return registration_from_row(row) if row is not None else None

    def get_by_endpoint(self, tx: Tx, endpoint: str) -> Registration | None:
        row = tx.execute(_BY_ENDPOINT, {"endpoint": endpoint}).first()
        return registration_from_row(row) if row is not None else None

    def list_page(
        self,
        tx: Tx,
        *,
        after: str | None = None,
        limit: int = 100,
        endpoint_prefix: str | None = None,
        queue_mode: bool | None = None,
        expires_before: float | None = None,
    ) -> Page[Registration]:
        """Registrations in endpoint order, ``limit`` at a time, after endpoint ``after``.

        Keyset paging (by endpoint name) rather than offsets, so pages stay consistent while
        devices register and leave, and the cost of page N does not grow with N.
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        query = select(REGISTRATION).order_by(_R.endpoint).limit(limit + 1)
        if after is not None:
            query = query.where(_R.endpoint > after)
        if endpoint_prefix:
            escaped = endpoint_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(_R.endpoint.like(escaped + "%", escape="\\"))
        if queue_mode is not None:
            query = query.where(_R.queue_mode == queue_mode)
        if expires_before is not None:
            query = query.where(_R.expires_at < expires_before)
        rows = [registration_from_row(r) for r in tx.execute(query)]
        more = len(rows) > limit
        items = tuple(rows[:limit])
        return Page(items, items[-1].endpoint if more else None)

    def count(self, tx: Tx) -> int:
        return int(tx.execute(select(func.count()).select_from(REGISTRATION)).scalar_one())

    def expire(self, tx: Tx, now: float, *, limit: int = 1000) -> list[Registration]:
        """Delete up to ``limit`` registrations whose lifetime ended at or before ``now``.

        Returns them (oldest expiry first) so the server can drop their in-memory state; call
        again while it returns a full page.
        """
        rows = tx.execute(
            select(REGISTRATION)
            .where(_R.expires_at <= now)
            .order_by(_R.expires_at, _R.id)
            .limit(limit)
        ).all()
        expired = [registration_from_row(r) for r in rows]
        if expired:
            params = [{"id": reg.id} for reg in expired]
            tx.execute(_DELETE_OBSERVATIONS, params)
            tx.execute(_DELETE_BY_ID, params)
        return expired
