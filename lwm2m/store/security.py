"""Endpoint security: PSK and certificate credentials, and the per-endpoint NoSec grant.

The DTLS handshake asks "which key belongs to PSK identity X?" synchronously, on the event
loop, from inside Mbed TLS. A database round trip there would stall every other device, so
:class:`SecurityCache` answers from memory: after :meth:`Store.refresh_security_cache` it holds
every PSK record (local writes patch it after they commit; a periodic refresh picks up other
processes' writes), and for fleets too large to hold it falls back to an LRU with TTLs that
reads single identities from the database on a miss.

PSK keys are sealed at rest (:mod:`lwm2m.store.secrets`, AES-256-GCM with the endpoint as
associated data) when the store has a secrets box bound -- ``serve`` always binds one; they are
opened when a row is read, so the cache (and the handshake) holds plaintext keys in memory only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, delete, select

from lwm2m.store.domain import EndpointSecurity, Page, PskCredential, X509Credential
from lwm2m.store.engine import Tx
from lwm2m.store.errors import Conflict, NotFound
from lwm2m.store.secrets import SealedColumn, register, seal, unseal
from lwm2m.store.tables import ENDPOINT_SECURITY

_S = ENDPOINT_SECURITY.c
_BY_ENDPOINT = select(ENDPOINT_SECURITY).where(_S.endpoint == bindparam("endpoint"))
_BY_PSK = select(ENDPOINT_SECURITY).where(_S.psk_identity == bindparam("identity"))
_BY_ENDPOINTS = select(ENDPOINT_SECURITY).where(
    _S.endpoint.in_(bindparam("endpoints", expanding=True))
)
_IN_CHUNK = 500  # bound parameters per IN list (SQLite's limit is 32 766; PostgreSQL's 65 535)


def psk_context(endpoint: str) -> str:
    """The associated data sealing an endpoint's PSK: the key opens for this row only."""
    return f"endpoint_security/{endpoint}/psk_key"


register(SealedColumn(ENDPOINT_SECURITY, "psk_key", ("endpoint",), psk_context))


def _from_row(tx: Tx, row: Row[Any]) -> EndpointSecurity:
    m = row._mapping
    psk = None
    key = unseal(tx, m["psk_key"], psk_context(m["endpoint"]))
    if m["psk_identity"] is not None and key is not None:
        psk = PskCredential(m["psk_identity"], key)
    x509 = None
    if m["x509_subject"] is not None:
        x509 = X509Credential(m["x509_subject"], m["x509_fingerprint"])
    return EndpointSecurity(
        endpoint=m["endpoint"],
        psk=psk,
        x509=x509,
        allow_nosec=bool(m["allow_nosec"]),
        updated_at=float(m["updated_at"]),
    )


def _normalise_fingerprint(fingerprint: str | None) -> str | None:
    if fingerprint is None:
        return None
    text = fingerprint.replace(":", "").strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"SHA-256 fingerprint must be 64 hex digits, got {fingerprint!r}")
    return text


class SecurityCache:
    """Endpoint security by PSK identity, in memory.

    Two modes:

    * **Snapshot** (after :meth:`refresh`, when the fleet's PSK records fit in ``max_entries``):
      every record is in memory and a lookup never touches the database -- an unknown
      identity is answered ``None`` at once, so a flood of handshakes with made-up identities
      costs no queries. Local writes update the snapshot after they commit; writes by other
      processes appear at the next :meth:`refresh` (the server runs it every ``ttl``).
    * **Lazy** (before a refresh, or for fleets too big to hold): an LRU of ``max_entries``;
      a miss reads the one identity from the database (``loader``, a short read transaction
      on the calling thread), entries expire after ``ttl`` (``negative_ttl`` for unknown
      identities) so other processes' writes are picked up.

    Thread-safe. A load that started before an invalidation of the same identity never
    overwrites what the invalidation put there (version counters).
    """

    def __init__(
        self,
        loader: Callable[[str], EndpointSecurity | None],
        *,
        load_all: Callable[[], list[EndpointSecurity]] | None = None,
        max_entries: int = 100_000,
        ttl: float = 300.0,
        negative_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._load_all = load_all
        self._max = max_entries
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, EndpointSecurity | None]] = OrderedDict()
        self._snapshot: dict[str, EndpointSecurity] | None = None
        self._versions: dict[str, int] = {}
        self._generation = 0
        self.hits = 0
        self.misses = 0

    @property
    def complete(self) -> bool:
        """True in snapshot mode: lookups are answered from memory alone."""
        return self._snapshot is not None

    def lookup(self, identity: str) -> EndpointSecurity | None:
        """The security record holding PSK ``identity``, or ``None``."""
        now = self._clock()
        with self._lock:
            if self._snapshot is not None:
                self.hits += 1
                return self._snapshot.get(identity)
            entry = self._entries.get(identity)
            if entry is not None and entry[0] > now:
                self._entries.move_to_end(identity)
                self.hits += 1
                return entry[1]
            self.misses += 1
            version = self._version(identity)
        found = self._loader(identity)
        with self._lock:
            if version == self._version(identity) and self._snapshot is None:
                expiry = now + (self._ttl if found is not None else self._negative_ttl)
                self._entries[identity] = (expiry, found)
                self._entries.move_to_end(identity)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return found

    def refresh(self) -> bool:
        """Reload every PSK record; returns whether the cache is now in snapshot mode.

        Blocking (one query over the table): run it off the event loop, e.g. through
        :meth:`lwm2m.store.Store.refresh_security_cache`.
        """
        if self._load_all is None:
            raise ValueError("this cache has no load_all function; it can only run lazily")
        with self._lock:
            before = dict(self._versions)
        everything = self._load_all()
        with self._lock:
            if len(everything) > self._max:
                self._snapshot = None
                return False
            self._snapshot = {s.psk.identity: s for s in everything if s.psk is not None}
            self._entries.clear()
            changed = [i for i, v in self._versions.items() if before.get(i) != v]
        if changed:  # written while we were loading: our copy may predate the commit
            self.invalidate(*changed)
        return True

    def invalidate(self, *identities: str | None) -> None:
        """Local writes changed these identities (``None`` entries are ignored).

        Lazy mode forgets them; snapshot mode reloads them from the database (this runs
        after the commit, on the writer's thread, never on the event loop). Without
        arguments: drop everything and go back to lazy mode until the next refresh.
        """
        with self._lock:
            self._generation += 1
            if not identities:
                self._entries.clear()
                self._snapshot = None
                self._versions.clear()
                return
            wanted = [i for i in identities if i is not None]
            versions = {}
            for identity in wanted:
                self._entries.pop(identity, None)
                versions[identity] = self._versions[identity] = self._version(identity) + 1
            if self._snapshot is None:
                return
        for identity in wanted:
            found = self._loader(identity)
            with self._lock:
                if self._snapshot is None or self._version(identity) != versions[identity]:
                    continue  # a later invalidation owns this identity now
                if found is not None and found.psk is not None:
                    self._snapshot[identity] = found
                else:
                    self._snapshot.pop(identity, None)

    def _version(self, identity: str) -> int:
        return self._versions.get(identity, 0)

    def __len__(self) -> int:
        snapshot = self._snapshot
        return len(snapshot) if snapshot is not None else len(self._entries)

    def psk_store(self) -> PskKeyStore:
        """The key store for the DTLS transport (and, as a Mapping, for python-mbedtls)."""
        return PskKeyStore(self)


class PskKeyStore(Mapping[str, bytes]):
    """PSK identity to key, backed by :class:`SecurityCache` (lookups only).

    Satisfies the DTLS transport's ``PskStore`` protocol (``lookup(identity: bytes)``) and is
    a ``Mapping[str, bytes]`` for python-mbedtls' ``pre_shared_key_store``. Identities are
    stored as text: an identity that is not UTF-8 is unknown. Iteration is empty on purpose:
    the handshake only looks identities up.
    """

    def __init__(self, cache: SecurityCache) -> None:
        self._cache = cache

    def lookup(self, identity: bytes) -> bytes | None:
        """The key for the identity a device presented in its handshake, or ``None``."""
        try:
            text = identity.decode("utf-8")
        except UnicodeDecodeError:
            return None
        found = self._cache.lookup(text)
        return found.psk.key if found is not None and found.psk is not None else None

    def __getitem__(self, identity: str) -> bytes:
        found = self._cache.lookup(identity)
        if found is None or found.psk is None:
            raise KeyError(identity)
        return found.psk.key

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, str) and self._cache.lookup(identity) is not None

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


@dataclass(frozen=True, slots=True)
class _Keys:
    psk_identity: str | None
    x509_subject: str | None
    x509_fingerprint: str | None


class SecurityRepository:
    """Credentials per endpoint. Writes invalidate ``cache`` after they commit."""

    def __init__(self, cache: SecurityCache | None = None) -> None:
        self.cache = cache

    def set(self, tx: Tx, security: EndpointSecurity, now: float) -> EndpointSecurity | None:
        """Create or replace the endpoint's security; returns the previous record, if any.

        Raises :class:`Conflict` when the PSK identity, certificate subject or fingerprint
        already belongs to another endpoint (the handshake must map to exactly one endpoint).
        """
        keys = _Keys(
            security.psk.identity if security.psk else None,
            security.x509.subject if security.x509 else None,
            _normalise_fingerprint(security.x509.fingerprint_sha256 if security.x509 else None),
        )
        for column, value, what in (
            (_S.psk_identity, keys.psk_identity, "PSK identity"),
            (_S.x509_subject, keys.x509_subject, "certificate subject"),
            (_S.x509_fingerprint, keys.x509_fingerprint, "certificate fingerprint"),
        ):
            if value is None:
                continue
            other = tx.execute(
                select(_S.endpoint).where(column == value, _S.endpoint != security.endpoint)
            ).scalar()
            if other is not None:
                raise Conflict(
                    f"{what} {value!r} already belongs to endpoint {other!r}; remove or change "
                    f"that endpoint's security before giving it to {security.endpoint!r}"
                )
        previous = self.get(tx, security.endpoint)
        row = {
            "endpoint": security.endpoint,
            "psk_identity": keys.psk_identity,
            "psk_key": seal(
                tx, security.psk.key if security.psk else None, psk_context(security.endpoint)
            ),
            "x509_subject": keys.x509_subject,
            "x509_fingerprint": keys.x509_fingerprint,
            "allow_nosec": security.allow_nosec,
            "updated_at": now,
        }
        if previous is not None:
            tx.execute(ENDPOINT_SECURITY.update().where(_S.endpoint == security.endpoint), row)
        else:
            tx.execute(ENDPOINT_SECURITY.insert(), row)
        self._invalidate_after_commit(tx, previous, keys.psk_identity)
        return previous

    def get(self, tx: Tx, endpoint: str) -> EndpointSecurity | None:
        row = tx.execute(_BY_ENDPOINT, {"endpoint": endpoint}).first()
        return _from_row(tx, row) if row is not None else None

    def get_many(self, tx: Tx, endpoints: list[str]) -> dict[str, EndpointSecurity]:
        """The records of those ``endpoints`` that have one, by endpoint: one query per 500
        endpoints instead of one each (a group commit of Registers checks them together)."""
        found: dict[str, EndpointSecurity] = {}
        unique = list(dict.fromkeys(endpoints))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            for row in tx.execute(_BY_ENDPOINTS, {"endpoints": chunk}):
                record = _from_row(tx, row)
                found[record.endpoint] = record
        return found

    def remove(self, tx: Tx, endpoint: str) -> EndpointSecurity:
        """Delete the endpoint's security; returns what was deleted."""
        previous = self.get(tx, endpoint)
        if previous is None:
            raise NotFound(f"endpoint {endpoint!r} has no security record")
        tx.execute(delete(ENDPOINT_SECURITY).where(_S.endpoint == endpoint))
        self._invalidate_after_commit(tx, previous, None)
        return previous

    def list_page(
        self, tx: Tx, *, after: str | None = None, limit: int = 100
    ) -> Page[EndpointSecurity]:
        """Security records in endpoint order (keyset paging, like registrations)."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        query = select(ENDPOINT_SECURITY).order_by(_S.endpoint).limit(limit + 1)
        if after is not None:
            query = query.where(_S.endpoint > after)
        rows = [_from_row(tx, r) for r in tx.execute(query)]
        items = tuple(rows[:limit])
        return Page(items, items[-1].endpoint if len(rows) > limit else None)

    def find_by_psk_identity(self, tx: Tx, identity: str) -> EndpointSecurity | None:
        """Database lookup by PSK identity (the cache's loader; use the cache on hot paths)."""
        row = tx.execute(_BY_PSK, {"identity": identity}).first()
        return _from_row(tx, row) if row is not None else None

    def all_with_psk(self, tx: Tx) -> list[EndpointSecurity]:
        """Every record that has a PSK (what the cache's snapshot holds)."""
        rows = tx.execute(select(ENDPOINT_SECURITY).where(_S.psk_identity.is_not(None)))
        return [_from_row(tx, r) for r in rows]

    def find_by_certificate(
        self, tx: Tx, *, subject: str | None = None, fingerprint_sha256: str | None = None
    ) -> EndpointSecurity | None:
        """Lookup by certificate subject or by SHA-256 fingerprint (exactly one of the two)."""
        if (subject is None) == (fingerprint_sha256 is None):
            raise ValueError("give exactly one of subject and fingerprint_sha256")
        if subject is not None:
            query = select(ENDPOINT_SECURITY).where(_S.x509_subject == subject)
        else:
            fp = _normalise_fingerprint(fingerprint_sha256)
            query = select(ENDPOINT_SECURITY).where(_S.x509_fingerprint == fp)
        row = tx.execute(query).first()
        return _from_row(tx, row) if row is not None else None

    def _invalidate_after_commit(
        self, tx: Tx, previous: EndpointSecurity | None, new_identity: str | None
    ) -> None:
        cache = self.cache
        if cache is None:
            return
        old_identity = previous.psk.identity if previous and previous.psk else None
        tx.after_commit(lambda: cache.invalidate(old_identity, new_identity))
