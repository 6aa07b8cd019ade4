"""Parked DTLS sessions in the store, so DTLS sessions survive a server restart.

The transport (``lwm2m.transport.parking``) hands over opaque blobs keyed by peer address;
this module keeps them in the ``dtls_session`` table (SQLite or PostgreSQL, created with the
other store tables). A blob holds the session's master secret, so it is sealed like a PSK
(:mod:`lwm2m.store.secrets`; the row's key is the associated data, so a blob copied onto another
row does not open). The column is not in ``secrets.SEALED_COLUMNS``: a blob is sealed whenever
it is written by a store with a secrets key (``serve`` always has one), and a plaintext blob
left by a store without one is only a parked session -- it is read as is and replaced at the
next write, so there is nothing to seal in place.

Two layers, as elsewhere in the store: :class:`DtlsSessionRepository` is synchronous and takes a
:class:`~lwm2m.store.engine.Tx`; :class:`StoreDtlsSessions` is what the server wiring hands to
``DtlsServerConfig(session_store=...)``: writes go through the store's group commit and return
once committed, reads run on a reader thread.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, select

from lwm2m.store.engine import Tx
from lwm2m.store.errors import CorruptRecord
from lwm2m.store.secrets import seal, unseal
from lwm2m.store.tables import DTLS_SESSION

if TYPE_CHECKING:
    from lwm2m.store.store import Store

_C = DTLS_SESSION.c
_INSERT = DTLS_SESSION.insert()
_DELETE = delete(DTLS_SESSION).where(_C.peer_key.in_(bindparam("keys", expanding=True)))
#: Keys per ``IN (...)`` list (SQLite's default variable limit is 32 766).
_CHUNK = 500


def session_context(peer_key: str) -> str:
    """The associated data a session blob is sealed with."""
    return f"dtls_session/{peer_key}"


class DtlsSessionRepository:
    """Synchronous access to the ``dtls_session`` table."""

    def save(self, tx: Tx, blobs: Mapping[str, bytes], now: float | None = None) -> None:
        """Insert or replace ``blobs`` (peer key -> blob)."""
        if not blobs:
            return
        stamp = time.time() if now is None else now
        keys = list(blobs)
        self.delete(tx, keys)
        tx.execute(
            _INSERT,
            [
                {
                    "peer_key": k,
                    "session": seal(tx, blobs[k], session_context(k)),
                    "updated_at": stamp,
                }
                for k in keys
            ],
        )

    def delete(self, tx: Tx, keys: Collection[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), _CHUNK):
            tx.execute(_DELETE, {"keys": keys[i : i + _CHUNK]})

    def load(self, tx: Tx, key: str) -> bytes | None:
        value = tx.execute(select(_C.session).where(_C.peer_key == key)).scalar_one_or_none()
        return unseal(tx, value, session_context(key))

    def load_all(self, tx: Tx) -> list[tuple[str, bytes]]:
        rows = tx.execute(select(_C.peer_key, _C.session).order_by(_C.updated_at)).all()
        out: list[tuple[str, bytes]] = []
        for row in rows:
            key: str = row._mapping["peer_key"]
            value: bytes = row._mapping["session"]
            opened = unseal(tx, value, session_context(key))
            if opened is None:
                raise CorruptRecord(f"dtls_session {key!r} has no session blob")
            out.append((key, opened))
        return out


class StoreDtlsSessions:
    """The transport's ``SessionStore`` over a :class:`~lwm2m.store.store.Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.repository = DtlsSessionRepository()

    async def load_all(self) -> Sequence[tuple[str, bytes]]:
        return await self._store.read(self.repository.load_all)

    async def load(self, key: str) -> bytes | None:
        return await self._store.read(lambda tx: self.repository.load(tx, key))

    async def save(self, blobs: Mapping[str, bytes]) -> None:
        items = dict(blobs)
        await self._store.write(lambda tx: self.repository.save(tx, items))

    async def delete(self, keys: Collection[str]) -> None:
        items = list(keys)
        await self._store.write(lambda tx: self.repository.delete(tx, items))


__all__ = ["DtlsSessionRepository", "StoreDtlsSessions", "session_context"]
