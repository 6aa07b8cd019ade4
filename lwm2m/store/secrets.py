"""Secrets at rest: the key that seals PSKs (and unlocks the CA key) lives outside the database.

Why: a database dump, a backup or a replica must not hand out every device's key. PSKs of the
DM store (``endpoint_security.psk_key``) and of the bootstrap identities (``bs_identity.psk_key``)
are sealed with AES-256-GCM before they are written; the row's identity (table, endpoint) is the
associated data, so a sealed key copied onto another row does not open. The CA key file is
encrypted with a passphrase derived from the same key (:meth:`SecretBox.derive`).

Where the key comes from (:func:`load_box`), first match wins:

1. a *key provider* passed in code -- the KMS-style hook: any callable returning the 32-byte
   master key (fetched from a KMS, unwrapped by an HSM ...);
2. ``FLEETLOOP_SECRETS_KEY_HOOK=module:function`` -- the same hook named in the environment;
3. ``FLEETLOOP_SECRETS_KEY`` -- the master key itself, 32 bytes as base64 or hex;
4. ``DATA_DIR/secrets.key`` -- created 0600 on first start (base64 of 32 random bytes).

A sealed value is ``MAGIC | key id (4) | nonce (12) | ciphertext+tag``. The key id (a hash of
the derived key) lets a wrong key be named as such at start-up instead of failing as a bad
tag per row. Values without the magic are plaintext from before encryption existed: they are
read as is and sealed in place by :func:`seal_plaintext` (idempotent, run by ``serve`` at
start-up).

The box is bound to a store's engine (:func:`bind`), so repositories find it from the
transaction they are given; a store without a box (tools, tests) reads and writes plaintext
and refuses -- :class:`SecretsUnavailable` -- to hand out a sealed value it cannot open.
Decryption happens when a row is read (the PSK cache holds opened keys): no AES per handshake.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import importlib
import os
import secrets
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine, Table, inspect, select

from lwm2m.store.engine import Tx
from lwm2m.store.errors import StoreError

KEY_FILE = "secrets.key"
KEY_ENV = "FLEETLOOP_SECRETS_KEY"
HOOK_ENV = "FLEETLOOP_SECRETS_KEY_HOOK"
MAGIC = b"\x00FLS1"
_KEY_ID_LEN = 4
_NONCE_LEN = 12
_HEADER = len(MAGIC) + _KEY_ID_LEN + _NONCE_LEN

MIN_PSK_BYTES = 16
"""The shortest PSK accepted from an operator: 128 bits, as RFC 7925 recommends."""

KeyProvider = Callable[[], bytes]
"""The KMS-style hook: returns the 32-byte master key (called once, at start-up)."""


class SecretsError(StoreError):
    """The secrets key cannot be loaded, or does not open what the database holds."""


class SecretsUnavailable(SecretsError):
    """A sealed value was read by a store that has no secrets key bound."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class SecretBox:
    """AES-256-GCM sealing and keyed fingerprints from one 32-byte master key."""

    def __init__(self, master: bytes, *, source: str = "code") -> None:
        if len(master) != 32:
            raise SecretsError(
                f"the secrets key from {source} is {len(master)} bytes; it must be 32 "
                "(generate one with `python -c 'import os,base64; "
                "print(base64.b64encode(os.urandom(32)).decode())'`)"
            )
        self.source = source
        self._aead = AESGCM(_derive(master, b"fleetloop secrets v1 aes-256-gcm"))
        self._fingerprint_key = _derive(master, b"fleetloop fingerprint v1 hmac-sha256")
        self._master = master
        self.key_id = hashlib.sha256(_derive(master, b"fleetloop key id v1")).digest()[:4]

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """``plaintext`` sealed for the row named by ``context`` (the associated data)."""
        nonce = os.urandom(_NONCE_LEN)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode("utf-8"))
        return MAGIC + self.key_id + nonce + sealed

    def open(self, value: bytes, context: str) -> bytes:
        """The plaintext of a sealed ``value``; a plaintext (legacy) value is returned as is."""
        if not is_sealed(value):
            return value
        key_id = value[len(MAGIC) : len(MAGIC) + _KEY_ID_LEN]
        if key_id != self.key_id:
            raise SecretsError(
                f"{context} was sealed with another secrets key (key id {key_id.hex()}, this "
                f"one is {self.key_id.hex()} from {self.source}); start with the key the "
                "database was written with"
            )
        nonce = value[len(MAGIC) + _KEY_ID_LEN : _HEADER]
        try:
            return self._aead.decrypt(nonce, value[_HEADER:], context.encode("utf-8"))
        except InvalidTag:
            raise SecretsError(
                f"{context}: the sealed value does not open (tampered with, or copied from "
                "another row)"
            ) from None

    def fingerprint(self, data: bytes, length: int = 16) -> str:
        """A keyed fingerprint of ``data`` (HMAC-SHA256, hex): stable for the same key, useless
        for guessing a short secret without the server's key."""
        return hmac.new(self._fingerprint_key, data, hashlib.sha256).hexdigest()[:length]

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for another use (e.g. the CA key file's passphrase)."""
        return _derive(self._master, b"fleetloop derived v1 " + purpose.encode("utf-8"))

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id.hex()}, source={self.source!r})"


def is_sealed(value: bytes) -> bool:
    return value.startswith(MAGIC) and len(value) > _HEADER


def _parse_key_text(text: str, where: str) -> bytes:
    text = text.strip()
    candidates: list[bytes] = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text))
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(text, validate=True))
    for key in candidates:
        if len(key) == 32:
            return key
    raise SecretsError(f"{where} does not hold a 32-byte key as base64 or hex")


def _from_hook(spec: str) -> KeyProvider:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SecretsError(f"{HOOK_ENV}={spec!r} is not module:function")
    try:
        provider = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise SecretsError(f"{HOOK_ENV}={spec!r} cannot be imported: {err}") from None
    if not callable(provider):
        raise SecretsError(f"{HOOK_ENV}={spec!r} is not callable")
    return provider  # type: ignore[no-any-return]


def load_box(
    data_dir: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    provider: KeyProvider | None = None,
) -> SecretBox:
    """The secrets box from the hook, the environment or the key file (created if missing)."""
    env = os.environ if env is None else env
    if provider is None and env.get(HOOK_ENV):
        provider = _from_hook(env[HOOK_ENV])
        source = f"{HOOK_ENV}={env[HOOK_ENV]}"
    else:
        source = "the key provider"
    if provider is not None:
        try:
            master = provider()
        except Exception as err:
            raise SecretsError(f"{source} failed: {type(err).__name__}: {err}") from None
        return SecretBox(bytes(master), source=source)
    if env.get(KEY_ENV):
        return SecretBox(_parse_key_text(env[KEY_ENV], KEY_ENV), source=KEY_ENV)
    if data_dir is None:
        raise SecretsError(f"no secrets key: set {KEY_ENV} or give a data directory")
    return SecretBox(_key_file(data_dir / KEY_FILE), source=str(data_dir / KEY_FILE))


def _key_file(path: Path) -> bytes:
    try:
        return _parse_key_text(path.read_text(encoding="ascii"), str(path))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as err:
        raise SecretsError(f"cannot read the secrets key {path}: {err}") from None
    master = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile: use theirs
        return _parse_key_text(path.read_text(encoding="ascii"), str(path))
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(master).decode("ascii") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return master


# -- binding to a store and sealing columns -----------------------------------------------------

_BOXES: weakref.WeakKeyDictionary[Engine, SecretBox] = weakref.WeakKeyDictionary()


def bind(store: Any, box: SecretBox | None) -> None:
    """Make ``box`` the secrets box of ``store`` (a :class:`~lwm2m.store.Store`); ``None``
    unbinds. The security cache is dropped: it may hold records read before the binding."""
    engine: Engine = store._engine
    if box is None:
        _BOXES.pop(engine, None)
    else:
        _BOXES[engine] = box
    store.security_cache.invalidate()


def box_of(store: Any) -> SecretBox | None:
    """The box bound to ``store``, if any (for keyed fingerprints in the API)."""
    return _BOXES.get(store._engine)


_EPHEMERAL_BOX = SecretBox(os.urandom(32), source="a per-process random key")


def key_fingerprint(store: Any, key: bytes) -> str:
    """The fingerprint of a secret to show an operator or write into the audit log.

    Keyed (HMAC-SHA256 with a key derived from the secrets key): a plain SHA-256 prefix of a
    short or low-entropy PSK is reversed by trying keys offline. Stable across restarts with
    the same secrets key; a store without one uses a per-process key (comparable within the
    process only).
    """
    box = box_of(store) or _EPHEMERAL_BOX
    return box.fingerprint(key)


def box_for(tx: Tx) -> SecretBox | None:
    """The box bound to the store ``tx`` belongs to, if any."""
    return _BOXES.get(tx._conn.engine)


def seal(tx: Tx, plaintext: bytes | None, context: str) -> bytes | None:
    """``plaintext`` sealed when the store has a box (plaintext otherwise)."""
    if plaintext is None:
        return None
    box = box_for(tx)
    return plaintext if box is None else box.seal(plaintext, context)


def unseal(tx: Tx, value: bytes | None, context: str) -> bytes | None:
    """The plaintext of a stored value; raises :class:`SecretsUnavailable` for a sealed value
    when the store has no box."""
    if value is None:
        return None
    value = bytes(value)
    box = box_for(tx)
    if box is not None:
        return box.open(value, context)
    if is_sealed(value):
        raise SecretsUnavailable(
            f"{context} is encrypted and this store has no secrets key; open it the way "
            f"`fleetloop serve` does (the data directory's {KEY_FILE}, or {KEY_ENV})"
        )
    return value


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A column holding a secret: its table, the column, the key columns naming the row, and
    how the row's context (associated data) is built from those keys."""

    table: Table
    column: str
    keys: tuple[str, ...]
    context: Callable[..., str]


SEALED_COLUMNS: list[SealedColumn] = []
"""Every secret column of every layer (layers above the store register theirs on import)."""


def register(column: SealedColumn) -> SealedColumn:
    if all(c.table.name != column.table.name or c.column != column.column for c in SEALED_COLUMNS):
        SEALED_COLUMNS.append(column)
    return column


def seal_plaintext(tx: Tx) -> dict[str, int]:
    """Seal every plaintext value of the registered columns in place (idempotent); also
    checks that sealed values were written with this key. Returns sealed counts per table."""
    box = box_for(tx)
    if box is None:
        raise SecretsUnavailable("no secrets key is bound to this store")
    existing = set(inspect(tx._conn).get_table_names())
    counts: dict[str, int] = {}
    for spec in SEALED_COLUMNS:
        if spec.table.name not in existing:
            continue
        table = spec.table
        target = table.c[spec.column]
        keys = [table.c[k] for k in spec.keys]
        rows = tx.execute(select(*keys, target).where(target.is_not(None))).all()
        sealed = 0
        checked = False
        for row in rows:
            *key_values, value = tuple(row)
            value = bytes(value)
            context = spec.context(*key_values)
            if is_sealed(value):
                if not checked:
                    box.open(value, context)  # a wrong key fails here, at start-up
                    checked = True
                continue
            where = [k == v for k, v in zip(keys, key_values, strict=True)]
            tx.execute(table.update().where(*where).values({spec.column: box.seal(value, context)}))
            sealed += 1
        counts[table.name] = sealed
    return counts
