"""Observations the server placed on registered devices.

Persisted so that a notification arriving after a server restart still maps from its CoAP
token to the endpoint and paths it reports on. An observation belongs to a registration: it is
deleted with it (De-register, replacement by a new Register, expiry).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Row, bindparam, delete, select

from lwm2m.model import ModelError, Path
from lwm2m.store.domain import Observation
from lwm2m.store.engine import Tx
from lwm2m.store.errors import Conflict, CorruptRecord, NotFound
from lwm2m.store.tables import OBSERVATION, REGISTRATION

_O = OBSERVATION.c
_BY_TOKEN = select(OBSERVATION).where(_O.token == bindparam("token"))
_REGISTRATION_EXISTS = select(REGISTRATION.c.endpoint).where(REGISTRATION.c.id == bindparam("id"))
_ENDPOINTS_OF = select(REGISTRATION.c.id, REGISTRATION.c.endpoint).where(
    REGISTRATION.c.id.in_(bindparam("ids", expanding=True))
)
_TOKENS_IN = select(_O.token).where(_O.token.in_(bindparam("tokens", expanding=True)))
_COLUMNS = (
    "token",
    "registration_id",
    "endpoint",
    "paths",
    "composite",
    "content_format",
    "attributes",
    "created_at",
)
_INSERT = OBSERVATION.insert().values({name: bindparam(name) for name in _COLUMNS})
_IN_CHUNK = 500


def paths_to_json(paths: tuple[Path, ...]) -> str:
    return json.dumps([str(p) for p in paths], separators=(",", ":"))


def paths_from_json(text: str, what: str) -> tuple[Path, ...]:
    try:
        raw = json.loads(text)
        if not isinstance(raw, list):
            raise ValueError("not a list")
        return tuple(Path.parse(p) for p in raw)
    except (ValueError, TypeError, ModelError) as err:
        raise CorruptRecord(f"{what}: stored paths {text!r} are invalid: {err}") from err


def _from_row(row: Row[Any]) -> Observation:
    m = row._mapping
    what = f"observation {m['token']}"
    try:
        attributes = tuple((str(k), str(v)) for k, v in json.loads(m["attributes"]))
    except (ValueError, TypeError) as err:
        raise CorruptRecord(f"{what}: stored attributes are invalid: {err}") from err
    return Observation(
        token=bytes.fromhex(m["token"]),
        registration_id=m["registration_id"],
        endpoint=m["endpoint"],
        paths=paths_from_json(m["paths"], what),
        composite=bool(m["composite"]),
        content_format=m["content_format"],
        attributes=attributes,
        created_at=float(m["created_at"]),
    )


def _row(observation: Observation) -> dict[str, Any]:
    return {
        "token": observation.token.hex(),
        "registration_id": observation.registration_id,
        "endpoint": observation.endpoint,
        "paths": paths_to_json(observation.paths),
        "composite": observation.composite,
        "content_format": observation.content_format,
        "attributes": json.dumps([list(a) for a in observation.attributes]),
        "created_at": observation.created_at,
    }


class ObservationRepository:
    """Active observations by token, registration and endpoint."""

    def add(self, tx: Tx, observation: Observation) -> Observation:
        """Record an observation the device accepted.

        :class:`NotFound` if its registration is gone (the device re-registered meanwhile),
        :class:`Conflict` if the token is already in use.
        """
        if not observation.paths:
            raise ValueError("an observation needs at least one path")
        endpoint = tx.execute(_REGISTRATION_EXISTS, {"id": observation.registration_id}).scalar()
        if endpoint is None:
            raise NotFound(f"registration {observation.registration_id!r} is unknown")
        if endpoint != observation.endpoint:
            raise Conflict(
                f"registration {observation.registration_id!r} belongs to {endpoint!r}, "
                f"not {observation.endpoint!r}"
            )
        if tx.execute(_BY_TOKEN, {"token": observation.token.hex()}).first() is not None:
            raise Conflict(f"observation token {observation.token.hex()} is already in use")
        tx.execute(_INSERT, _row(observation))
        return observation

    def add_many(
        self, tx: Tx, observations: list[Observation]
    ) -> list[Observation | NotFound | Conflict | ValueError]:
        """:meth:`add` for many at once, in order: one result per observation (the
        observation, or the error :meth:`add` would have raised; nothing is written for it).

        Why: observing a fleet wrote each observation with two SELECTs and an INSERT of its
        own, and those statements were most of the store writer's CPU while a server set up
        observations on 10 000 devices (issue 13). Here one SELECT per 500 registrations and
        tokens, and one executemany."""
        results: list[Observation | NotFound | Conflict | ValueError] = []
        ids = list(dict.fromkeys(o.registration_id for o in observations))
        tokens = list(dict.fromkeys(o.token.hex() for o in observations))
        owners: dict[str, str] = {}
        taken: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            for row in tx.execute(_ENDPOINTS_OF, {"ids": ids[start : start + _IN_CHUNK]}):
                owners[row.id] = row.endpoint
        for start in range(0, len(tokens), _IN_CHUNK):
            for row in tx.execute(_TOKENS_IN, {"tokens": tokens[start : start + _IN_CHUNK]}):
                taken.add(row.token)
        rows: list[dict[str, Any]] = []
        for observation in observations:
            token = observation.token.hex()
            owner = owners.get(observation.registration_id)
            if not observation.paths:
                results.append(ValueError("an observation needs at least one path"))
            elif owner is None:
                results.append(NotFound(f"registration {observation.registration_id!r} is unknown"))
            elif owner != observation.endpoint:
                results.append(
                    Conflict(
                        f"registration {observation.registration_id!r} belongs to {owner!r}, "
                        f"not {observation.endpoint!r}"
                    )
                )
            elif token in taken:
                results.append(Conflict(f"observation token {token} is already in use"))
            else:
                taken.add(token)
                rows.append(_row(observation))
                results.append(observation)
        tx.executemany_direct(_INSERT, rows)
        return results

    def get(self, tx: Tx, token: bytes) -> Observation | None:
        row = tx.execute(_BY_TOKEN, {"token": token.hex()}).first()
        return _from_row(row) if row is not None else None

    def remove(self, tx: Tx, token: bytes) -> Observation:
        """Forget an observation (cancelled, or the device answered a notification with RST)."""
        found = self.get(tx, token)
        if found is None:
            raise NotFound(f"observation token {token.hex()} is unknown")
        tx.execute(delete(OBSERVATION).where(_O.token == token.hex()))
        return found

    def for_registration(self, tx: Tx, registration_id: str) -> list[Observation]:
        rows = tx.execute(
            select(OBSERVATION)
            .where(_O.registration_id == registration_id)
            .order_by(_O.created_at, _O.token)
        )
        return [_from_row(r) for r in rows]

    def for_endpoint(self, tx: Tx, endpoint: str) -> list[Observation]:
        rows = tx.execute(
            select(OBSERVATION).where(_O.endpoint == endpoint).order_by(_O.created_at, _O.token)
        )
        return [_from_row(r) for r in rows]

    def remove_for_registration(self, tx: Tx, registration_id: str) -> list[Observation]:
        """Forget all observations of a registration; returns them."""
        found = self.for_registration(tx, registration_id)
        if found:
            tx.execute(delete(OBSERVATION).where(_O.registration_id == registration_id))
        return found
