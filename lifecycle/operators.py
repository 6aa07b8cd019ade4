"""Operators and their tokens: a role (viewer / operator / admin) and a tenant scope.

A token is ``flt_<id>_<secret>``: ``id`` names the row (so a lookup is one primary-key read,
and the audit log can name the token without holding the secret), ``secret`` is 32 random
bytes (URL-safe base64). Only the SHA-256 of the secret is stored: a database dump does not
let anyone in, and the token text is shown once, at creation.

Authentication runs on every API request, so the registry keeps what it read in a small
in-memory cache for :attr:`OperatorRegistry.cache_ttl` seconds. A revocation made through this
registry drops the cached entry at once (the next request is refused); a revocation made by
another process sharing the database takes effect within the TTL. ``last_used_at`` is written
lazily -- at most once per :attr:`OperatorRegistry.touch_interval` per token, off the request
path -- because a write per request would turn every read into a database write.

Every change (create, revoke) is audited in the same transaction as the change itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy import Double, Index, Row, select, text, update
from sqlmodel import Field

from lifecycle.tables import LifecycleModel, table_of
from lwm2m.store import Store, Tx

TOKEN_PREFIX = "flt_"
SERVE_TOKEN_ID = "serve"
"""The token id the audit log records for the serve token (the data directory's api-token)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ID = re.compile(r"[0-9a-f]{12}")


class Role(IntEnum):
    """What an operator may do; a higher role may do everything a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; use viewer, operator or admin") from None


# -- errors ---------------------------------------------------------------------------------------


class OperatorError(Exception):
    """Base of this module's errors; the message says what to do."""


class InvalidTokenRequest(OperatorError):
    """A field of a create request is wrong; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TokenNameTaken(OperatorError):
    """Another live token has this name."""


class UnknownToken(OperatorError):
    """No such token (or not one the caller may see)."""

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"no token {ref!r} (by id or name); list them with GET /tokens (`fleetloop tokens "
            "list`)"
        )
        self.ref = ref


class ScopeExceeded(OperatorError):
    """A tenant-scoped admin asked for a token beyond its own tenants."""


# -- the table ------------------------------------------------------------------------------------


class OperatorTokenRow(LifecycleModel, table=True):
    """One operator token. ``tenants`` is a JSON list, or NULL for every tenant."""

    __tablename__ = "lc_operator_token"
    __table_args__ = (
        # a name is unique among live tokens; a revoked token's name may be reused
        Index(
            "ux_lc_operator_token_live_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True)
    name: str
    role: str
    tenants: str | None = None
    secret_hash: str
    created_at: float = Field(sa_type=Double)
    created_by: str
    revoked_at: float | None = Field(default=None, sa_type=Double)
    last_used_at: float | None = Field(default=None, sa_type=Double)


OPERATOR_TOKEN = table_of(OperatorTokenRow)
_T = OPERATOR_TOKEN.c


# -- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperatorToken:
    """A token as the API shows it (never the secret, never its hash)."""

    id: str
    name: str
    role: Role
    tenants: frozenset[str] | None
    created_at: float
    created_by: str
    revoked_at: float | None = None
    last_used_at: float | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.label,
            "tenants": None if self.tenants is None else sorted(self.tenants),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token and its text -- the only time the text exists outside the client."""

    token: OperatorToken
    text: str


@dataclass(slots=True)
class _Cached:
    token: OperatorToken | None
    secret_hash: str
    fetched_at: float


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def split_token(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a ``flt_<id>_<secret>`` token, or None for any other text."""
    if not text.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = text[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not _ID.fullmatch(token_id) or not secret:
        return None
    return token_id, secret


def check_name(name: str) -> str:
    value = name.strip()
    if not _NAME.fullmatch(value):
        raise InvalidTokenRequest(
            "name",
            f"{name!r} is not a token name: 1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter "
            "or digit (e.g. ci-deploy or alice@ops)",
        )
    return value


def check_tenants(tenants: Iterable[str] | None) -> frozenset[str] | None:
    """None (every tenant) or a non-empty set of tenant labels."""
    if tenants is None:
        return None
    found: set[str] = set()
    for n, tenant in enumerate(tenants):
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            raise InvalidTokenRequest(
                f"tenants[{n}]",
                f"{tenant!r} is not a tenant label (1-64 of A-Z a-z 0-9 . _ -, as in the "
                "identity CSV's tenant column)",
            )
        found.add(tenant)
    if not found:
        raise InvalidTokenRequest(
            "tenants",
            "an empty list would make a token that sees nothing; name at least one tenant, or "
            "leave tenants out (null) for an all-tenant token",
        )
    return frozenset(found)


def _token_of(row: Row[Any]) -> OperatorToken:
    tenants = None if row.tenants is None else frozenset(json.loads(row.tenants))
    return OperatorToken(
        id=row.id,
        name=row.name,
        role=Role.parse(row.role),
        tenants=tenants,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def within(inner: frozenset[str] | None, outer: frozenset[str] | None) -> bool:
    """Whether a scope ``inner`` lies inside ``outer`` (None: every tenant)."""
    if outer is None:
        return True
    return inner is not None and inner <= outer


# -- the registry ---------------------------------------------------------------------------------


class OperatorRegistry:
    """Create, list, revoke and authenticate operator tokens on the store (module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        cache_ttl: float = 5.0,
        touch_interval: float = 60.0,
        cache_size: int = 4096,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.touch_interval = touch_interval
        self.cache_size = cache_size
        self._cache: dict[str, _Cached] = {}

    # -- changes ----------------------------------------------------------------------------------
    async def create(
        self,
        name: str,
        role: Role | str,
        tenants: Iterable[str] | None = None,
        *,
        actor: str,
        actor_token_id: str | None = None,
        issuer_tenants: frozenset[str] | None = None,
    ) -> IssuedToken:
        """A new token. ``issuer_tenants`` is the scope of whoever asks: a scoped admin can
        only issue tokens inside its own tenants (never an all-tenant one)."""
        clean_name = check_name(name)
        try:
            clean_role = role if isinstance(role, Role) else Role.parse(role)
        except ValueError as err:
            raise InvalidTokenRequest("role", str(err)) from None
        scope = check_tenants(tenants)
        if not within(scope, issuer_tenants):
            assert issuer_tenants is not None
            mine = ", ".join(sorted(issuer_tenants))
            wanted = "every tenant" if scope is None else ", ".join(sorted(scope))
            raise ScopeExceeded(
                f"this token is limited to tenants {mine}; it cannot issue a token for "
                f"{wanted} -- name tenants among {mine} (an all-tenant admin can issue any)"
            )
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        token = OperatorToken(token_id, clean_name, clean_role, scope, now, actor)

        def op(tx: Tx) -> None:
            taken = tx.execute(
                select(_T.id).where(_T.name == clean_name, _T.revoked_at.is_(None))
            ).first()
            if taken is not None:
                raise TokenNameTaken(
                    f"a live token is already named {clean_name!r} (id {taken.id}); choose "
                    f"another name or revoke it first (`fleetloop tokens revoke {clean_name}`)"
                )
            tx.execute(
                OPERATOR_TOKEN.insert(),
                {
                    "id": token_id,
                    "name": clean_name,
                    "role": clean_role.label,
                    "tenants": None if scope is None else json.dumps(sorted(scope)),
                    "secret_hash": hash_secret(secret),
                    "created_at": now,
                    "created_by": actor,
                },
            )
            self.store.audit.append(
                tx,
                actor=actor,
                action="token.create",
                subject=f"token:{token_id}",
                now=now,
                token_id=actor_token_id,
                tenant=_single(scope),
                detail={"name": clean_name, "role": clean_role.label, "tenants": _list(scope)},
            )

        await self.store.write(op)
        return IssuedToken(token, f"{TOKEN_PREFIX}{token_id}_{secret}")

    async def revoke(
        self,
        ref: str,
        *,
        actor: str,
        actor_token_id: str | None = None,
        issuer_tenants: frozenset[str] | None = None,
    ) -> OperatorToken:
        """Revoke the live token with id or name ``ref``; it is refused at once."""
        now = self.clock()

        def op(tx: Tx) -> OperatorToken:
            found = self._find(tx, ref, issuer_tenants)
            if found is None:
                raise UnknownToken(ref)
            tx.execute(update(OPERATOR_TOKEN).where(_T.id == found.id).values(revoked_at=now))
            self.store.audit.append(
                tx,
                actor=actor,
                action="token.revoke",
                subject=f"token:{found.id}",
                now=now,
                token_id=actor_token_id,
                tenant=_single(found.tenants),
                detail={"name": found.name, "role": found.role.label},
            )
            return OperatorToken(
                found.id,
                found.name,
                found.role,
                found.tenants,
                found.created_at,
                found.created_by,
                now,
                found.last_used_at,
            )

        revoked = await self.store.write(op)
        self._cache.pop(revoked.id, None)
        return revoked

    # -- reads ------------------------------------------------------------------------------------
    async def list(
        self, *, include_revoked: bool = False, issuer_tenants: frozenset[str] | None = None
    ) -> list[OperatorToken]:
        """Tokens by creation time; a scoped caller sees only tokens inside its tenants."""

        def op(tx: Tx) -> list[OperatorToken]:
            query = select(OPERATOR_TOKEN).order_by(_T.created_at, _T.id)
            if not include_revoked:
                query = query.where(_T.revoked_at.is_(None))
            return [_token_of(r) for r in tx.execute(query)]

        tokens = await self.store.read(op)
        return [t for t in tokens if within(t.tenants, issuer_tenants)]

    async def get(self, ref: str, *, issuer_tenants: frozenset[str] | None = None) -> OperatorToken:
        found = await self.store.read(lambda tx: self._find(tx, ref, issuer_tenants))
        if found is None:
            raise UnknownToken(ref)
        return found

    def _find(
        self, tx: Tx, ref: str, issuer_tenants: frozenset[str] | None
    ) -> OperatorToken | None:
        """The live token with id ``ref``, else the live one named ``ref``; None when it is
        outside the caller's scope (it does not exist for that caller)."""
        row = tx.execute(
            select(OPERATOR_TOKEN).where(_T.id == ref, _T.revoked_at.is_(None))
        ).first()
        if row is None:
            row = tx.execute(
                select(OPERATOR_TOKEN).where(_T.name == ref, _T.revoked_at.is_(None))
            ).first()
        if row is None:
            return None
        token = _token_of(row)
        return token if within(token.tenants, issuer_tenants) else None

    # -- authentication ---------------------------------------------------------------------------
    async def authenticate(self, text: str) -> OperatorToken | None:
        """The live token whose text is ``text``, or None (unknown, wrong secret, revoked)."""
        parts = split_token(text)
        if parts is None:
            return None
        token_id, secret = parts
        presented = hash_secret(secret)
        now = self.clock()
        entry = self._cache.get(token_id)
        if entry is None or now - entry.fetched_at > self.cache_ttl:
            entry = await self._load(token_id, now)
        if not hmac.compare_digest(presented, entry.secret_hash):
            return None
        token = entry.token
        if token is None or not token.live:
            return None
        if token.last_used_at is None or now - token.last_used_at >= self.touch_interval:
            self._touch(entry, token, now)
        return entry.token

    async def _load(self, token_id: str, now: float) -> _Cached:
        row = await self.store.read(
            lambda tx: tx.execute(select(OPERATOR_TOKEN).where(_T.id == token_id)).first()
        )
        if row is None:
            # unknown ids are cached too (a hash nobody can match), so guessing costs no query
            entry = _Cached(None, "!" * 64, now)
        else:
            entry = _Cached(_token_of(row), row.secret_hash, now)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[token_id] = entry
        return entry

    def _touch(self, entry: _Cached, token: OperatorToken, now: float) -> None:
        """Record the use, fire-and-forget; the cached copy carries the new time so the next
        requests within ``touch_interval`` do not write again."""
        entry.token = OperatorToken(
            token.id,
            token.name,
            token.role,
            token.tenants,
            token.created_at,
            token.created_by,
            token.revoked_at,
            now,
        )
        self.store.write_nowait(
            lambda tx: tx.execute(
                update(OPERATOR_TOKEN).where(_T.id == token.id).values(last_used_at=now)
            )
        )

    def forget(self, token_id: str | None = None) -> None:
        """Drop one cached token (or all): the next request reads it again."""
        if token_id is None:
            self._cache.clear()
        else:
            self._cache.pop(token_id, None)


def _single(scope: frozenset[str] | None) -> str | None:
    return next(iter(scope)) if scope is not None and len(scope) == 1 else None


def _list(scope: frozenset[str] | None) -> list[str] | None:
    return None if scope is None else sorted(scope)


__all__ = [
    "OPERATOR_TOKEN",
    "SERVE_TOKEN_ID",
    "TOKEN_PREFIX",
    "InvalidTokenRequest",
    "IssuedToken",
    "OperatorError",
    "OperatorRegistry",
    "OperatorToken",
    "OperatorTokenRow",
    "Role",
    "ScopeExceeded",
    "TokenNameTaken",
    "UnknownToken",
    "check_name",
    "check_tenants",
    "hash_secret",
    "split_token",
    "within",
]
