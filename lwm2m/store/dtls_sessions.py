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
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Insert, Table, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lwm2m.store.engine import Tx
from lwm2m.store.errors import CorruptRecord
from lwm2m.store.secrets import seal, unseal
from lwm2m.store.tables import DTLS_SESSION

if TYPE_CHECKING:
    from lwm2m.store.store import Store

_C = DTLS_SESSION.c
_COLUMNS = ("peer_key", "session", "updated_at")


def _upsert(insert: Callable[[Table], Any]) -> Insert:
    """``INSERT .. ON CONFLICT (peer_key) DO UPDATE`` (same text on SQLite and PostgreSQL)."""
    ins = insert(DTLS_SESSION).values({name: bindparam(name) for name in _COLUMNS})
    upsert: Insert = ins.on_conflict_do_update(
        index_elements=[_C.peer_key],
        set_={"session": ins.excluded.session, "updated_at": ins.excluded.updated_at},
    )
    return upsert


# Run on the driver's executemany (Tx.executemany_direct): the values are str, bytes and
# float, which sqlite3 and psycopg take as they are. SQLAlchemy's per-row processing cost
# ~30 us per row, most of a session write (measured: 5 000 rows 120-230 ms -> see BENCHMARKS).
_UPSERT = {"sqlite": _upsert(sqlite_insert), "postgresql": _upsert(pg_insert)}
_DELETE = delete(DTLS_SESSION).where(_C.peer_key == bindparam("peer_key"))


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
        tx.executemany_direct(
            _UPSERT[tx.dialect],
            [
                {"peer_key": k, "session": seal(tx, blob, session_context(k)), "updated_at": stamp}
                for k, blob in blobs.items()
            ],
        )

    def delete(self, tx: Tx, keys: Collection[str]) -> None:
        if keys:
            tx.executemany_direct(_DELETE, [{"peer_key": k} for k in keys])

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
    """The transport's ``SessionStore`` over a :class:`~lwm2m.store.store.Store`.

    Writes are queued on the store's group commit *when called* (not when awaited): the
    transport relies on that order. A session's incoming high-water mark queued by
    :meth:`save_now` before the record is handed to the server commits in the same or an
    earlier transaction than anything the server writes because of that record, so no
    effect of a record can survive a crash without the mark that refuses its replay.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.repository = DtlsSessionRepository()

    async def load_all(self) -> Sequence[tuple[str, bytes]]:
        return await self._store.read(self.repository.load_all)

    async def load(self, key: str) -> bytes | None:
        return await self._store.read(lambda tx: self.repository.load(tx, key))

    def save(self, blobs: Mapping[str, bytes]) -> Awaitable[None]:
        """Queue these blobs now, in one write; the result resolves once committed."""
        items = dict(blobs)
        return self._store.batcher.submit(lambda tx: self.repository.save(tx, items))

    def delete(self, keys: Collection[str]) -> Awaitable[None]:
        items = list(keys)
        return self._store.batcher.submit(lambda tx: self.repository.delete(tx, items))

    def save_now(self, key: str, blob: bytes) -> None:
        """Queue one blob now, nobody waiting (consecutive ones share a statement); a failure
        is logged and counted by the store."""
        self._store.batcher.submit_row_nowait(self._save_rows, (key, blob))

    def _save_rows(self, tx: Tx, rows: list[tuple[str, bytes]]) -> list[Any]:
        self.repository.save(tx, dict(rows))  # the last blob of a key wins
        return [None] * len(rows)


__all__ = ["DtlsSessionRepository", "StoreDtlsSessions", "session_context"]
