"""Parked DTLS sessions: an idle session's connection state as ~300 bytes instead of a live
Mbed TLS context (~45 KiB), and the store interface that makes sessions survive a restart.

Sans-IO: this module turns a ``TLSWrappedBuffer`` into bytes and back, patches sequence
numbers in the saved state, and encodes the blob the store keeps. The server decides when.

**Mbed TLS's saved state.** python-mbedtls pickles an established buffer through
``mbedtls_ssl_context_save``; the ``connection`` part of that pickle (217 bytes with
``TLS-PSK-WITH-AES-128-CCM-8``) restores against the server's live ``ServerContext``. Saving
is destructive (Mbed TLS resets the context), so parking is "save, then drop the buffer".
The layout (Mbed TLS 2.28 ``ssl_tls.c``, ``mbedtls_ssl_context_save``) is::

    3-byte version | 2-byte session config | 3-byte context config (bit 0 connection id,
    bit 1 bad-MAC limit, bit 2 anti-replay, bit 3 ALPN) | 4-byte session length | session |
    64 random bytes | [CID: in len + in cid, out len + out cid] | [bad-MAC count, 4] |
    [in_window_top, 8 | in_window, 8] | datagram packing, 1 | cur_out_ctr, 8 (2-byte epoch +
    6-byte sequence number) | mtu, 2 | [ALPN length + name]

Nothing in it is authenticated, so the server can set the outgoing counter and the replay
window before loading it: that is how a restore after a crash jumps past every sequence
number the dead process may have used (:func:`patch_counters`).

**Why the blob carries counters of its own.** The connection bytes of a *live* session are
only as fresh as the last save (taken once, when the session settles); the server persists, in
the blob header, a *reservation* for the outgoing sequence numbers (no record is ever sent at
or above a reservation that may have reached the store) and the highest authenticated incoming
sequence number. Restoring a stored blob moves the outgoing counter up to the reservation and
marks every incoming record at or below the high-water mark as already seen.

Blob layout (all big-endian)::

    version (1) = 1 | last activity, Unix seconds (4) | out reservation (6) | in high-water
    mark (6) | identity kind (1: PSK, 2: certificate) | identity length (2) | identity |
    Mbed TLS connection state
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from mbedtls.exceptions import TLSError
from mbedtls.tls import TLSWrappedBuffer

from lwm2m.transport.errors import TransportError
from lwm2m.transport.peer import Address, CertificateIdentity, Identity, PskIdentity

#: Outgoing sequence numbers reserved ahead in the store; a new reservation is written once
#: half of it is used. 2**48 sequence numbers last 2**28 restarts at this size.
OUT_RESERVATION: Final = 1 << 20

BLOB_VERSION: Final = 1
_HEADER_LEN: Final = 1 + 4 + 6 + 6 + 1 + 2
_KIND_PSK: Final = 1
_KIND_CERT: Final = 2
_SEQ_MASK: Final = (1 << 48) - 1


class ParkingError(TransportError):
    """A session could not be saved or restored, or a stored blob is malformed."""


@runtime_checkable
class SessionStore(Protocol):
    """Where parked DTLS sessions are kept across restarts, by peer key (:func:`peer_key`).

    Provided by the server wiring (``lwm2m.store.dtls_sessions`` has SQLite and PostgreSQL);
    the transport only calls these. ``save`` and ``delete`` queue their write when called
    (in call order) and the awaitable they return resolves once it is committed; the
    transport never waits on them in its receive path.
    """

    async def load_all(self) -> Sequence[tuple[str, bytes]]:
        """Every stored session (at start-up)."""
        ...

    async def load(self, key: str) -> bytes | None: ...

    def save(self, blobs: Mapping[str, bytes]) -> Awaitable[None]:
        """Insert or replace these blobs, in one transaction."""
        ...

    def delete(self, keys: Collection[str]) -> Awaitable[None]: ...


@runtime_checkable
class OrderedSessionStore(SessionStore, Protocol):
    """A :class:`SessionStore` that shares one ordered write queue with the server's other
    writes, so a blob queued before a record is handed on commits no later than what the
    record causes (see ``DtlsServer`` "replay after a crash")."""

    def save_now(self, key: str, blob: bytes) -> None:
        """Queue one blob now; nobody waits for it."""
        ...


def peer_key(address: Address) -> str:
    """The store key of an address: ``host port`` (IPv6: ``host port flowinfo scope_id``)."""
    return " ".join(str(part) for part in address)


def key_address(key: str) -> Address:
    """The inverse of :func:`peer_key`; raises :class:`ParkingError` for a malformed key."""
    parts = key.split(" ")
    try:
        if len(parts) == 2:
            return (parts[0], int(parts[1]))
        if len(parts) == 4:
            return (parts[0], int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        pass
    raise ParkingError(f"not a peer key: {key!r}")


# -- Mbed TLS connection state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    window: int  # offset of in_window_top, or -1 without anti-replay
    out_ctr: int  # offset of cur_out_ctr


def _layout(conn: bytes) -> _Layout:
    if len(conn) < 12 or conn[0] != 2:
        raise ParkingError("unknown Mbed TLS session state (not Mbed TLS 2.x)")
    flags = conn[7]
    off = 12 + int.from_bytes(conn[8:12], "big") + 64
    try:
        if flags & 0x01:  # connection ID: in, then out
            off += 1 + conn[off]
            off += 1 + conn[off]
    except IndexError:
        raise ParkingError("truncated Mbed TLS session state") from None
    if flags & 0x02:
        off += 4
    window = -1
    if flags & 0x04:
        window = off
        off += 16
    off += 1  # disable_datagram_packing
    if off + 8 + 2 > len(conn):
        raise ParkingError("truncated Mbed TLS session state")
    return _Layout(window, off)


def counters(conn: bytes) -> tuple[int, int]:
    """``(next outgoing sequence number, highest incoming one seen)`` of a saved state."""
    lay = _layout(conn)
    out = int.from_bytes(conn[lay.out_ctr + 2 : lay.out_ctr + 8], "big")
    top = int.from_bytes(conn[lay.window : lay.window + 8], "big") if lay.window >= 0 else 0
    return out, top


def patch_counters(conn: bytes, out_next: int, in_top: int) -> bytes:
    """``conn`` with the outgoing sequence number raised to ``out_next`` and every incoming
    record up to ``in_top`` marked as seen (the 64-record window all set), where they are
    ahead of what the state holds; otherwise unchanged."""
    lay = _layout(conn)
    b = bytearray(conn)
    cur_out = int.from_bytes(b[lay.out_ctr + 2 : lay.out_ctr + 8], "big")
    if out_next > cur_out:
        if out_next > _SEQ_MASK:
            raise ParkingError("outgoing sequence numbers exhausted")
        b[lay.out_ctr + 2 : lay.out_ctr + 8] = out_next.to_bytes(6, "big")
    if lay.window >= 0:
        top = int.from_bytes(b[lay.window : lay.window + 8], "big")
        if in_top > top:
            b[lay.window : lay.window + 8] = in_top.to_bytes(8, "big")
            b[lay.window + 8 : lay.window + 16] = b"\xff" * 8
    return bytes(b)


def save_connection(buf: Any) -> bytes:
    """The connection state of an established buffer; the buffer is reset and unusable after.

    Raises :class:`ParkingError` when Mbed TLS refuses (handshake not wrapped up yet -- on a
    server, before the client's first application record -- or a CBC suite)."""
    try:
        state = buf.__getstate__()
    except (TypeError, TLSError) as exc:
        raise ParkingError(f"Mbed TLS cannot save this session: {exc}") from None
    conn: bytes = state["connection"]
    _layout(conn)
    return conn


def restore_connection(context: Any, conn: bytes) -> Any:
    """A live buffer from a saved state, bound to the server's ``context``."""
    buf = TLSWrappedBuffer.__new__(TLSWrappedBuffer)
    try:
        buf.__setstate__(  # type: ignore[attr-defined]  # Cython class, not in .pyi
            {"connection": conn, "context": context, "server_hostname": None}
        )
    except (TypeError, ValueError, TLSError) as exc:
        raise ParkingError(f"Mbed TLS refused a parked session: {exc}") from None
    return buf


# -- blobs --------------------------------------------------------------------------------------


def _encode_identity(identity: Identity | None) -> tuple[int, bytes]:
    if identity is None:
        return 0, b""
    if isinstance(identity, PskIdentity):
        return _KIND_PSK, identity.identity
    text = json.dumps(
        [identity.subject, identity.common_name, identity.dns_names, identity.uris],
        separators=(",", ":"),
    ).encode("utf-8")
    return _KIND_CERT, identity.fingerprint + text


def _decode_identity(kind: int, raw: bytes) -> Identity | None:
    if kind == 0:
        return None
    if kind == _KIND_PSK:
        return PskIdentity(raw)
    if kind == _KIND_CERT and len(raw) > 32:
        try:
            subject, cn, dns, uris = json.loads(raw[32:])
            return CertificateIdentity(
                str(subject), None if cn is None else str(cn), tuple(dns), tuple(uris), raw[:32]
            )
        except (ValueError, TypeError) as exc:
            raise ParkingError(f"malformed certificate identity: {exc}") from None
    raise ParkingError(f"unknown identity kind {kind} in a parked session")


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A decoded blob."""

    last_seen: float  # Unix seconds
    out_reservation: int
    in_top: int
    identity: Identity | None
    connection: bytes


def encode_blob(
    last_seen: float, out_reservation: int, in_top: int, identity: Identity | None, conn: bytes
) -> bytes:
    return blob_header(last_seen, out_reservation, in_top) + blob_tail(identity, conn)


def blob_header(last_seen: float, out_reservation: int, in_top: int) -> bytes:
    """The part of a blob that changes while a session lives (17 bytes)."""
    return b"".join(
        (
            bytes((BLOB_VERSION,)),
            max(0, min(int(last_seen), 0xFFFFFFFF)).to_bytes(4, "big"),
            min(out_reservation, _SEQ_MASK).to_bytes(6, "big"),
            min(in_top, _SEQ_MASK).to_bytes(6, "big"),
        )
    )


def blob_tail(identity: Identity | None, conn: bytes) -> bytes:
    """The part that does not (identity and saved state): a live session keeps it, so that
    writing its incoming mark per record costs a header and one concatenation."""
    kind, raw = _encode_identity(identity)
    if len(raw) > 0xFFFF:
        raise ParkingError("identity too long to park")
    return bytes((kind,)) + len(raw).to_bytes(2, "big") + raw + conn


def blob_reservation(blob: bytes) -> int:
    """The outgoing reservation in a blob's header (no decoding of the rest)."""
    return int.from_bytes(blob[5:11], "big")


def decode_blob(blob: bytes) -> StoredSession:
    """Raises :class:`ParkingError` for anything but a well-formed version-1 blob."""
    if len(blob) < _HEADER_LEN or blob[0] != BLOB_VERSION:
        raise ParkingError("not a parked-session blob (or a newer version)")
    id_len = int.from_bytes(blob[18:20], "big")
    end = _HEADER_LEN + id_len
    if end >= len(blob):
        raise ParkingError("truncated parked-session blob")
    conn = blob[end:]
    _layout(conn)
    return StoredSession(
        last_seen=float(int.from_bytes(blob[1:5], "big")),
        out_reservation=int.from_bytes(blob[5:11], "big"),
        in_top=int.from_bytes(blob[11:17], "big"),
        identity=_decode_identity(blob[17], blob[_HEADER_LEN:end]),
        connection=conn,
    )


# -- parked entries in memory ---------------------------------------------------------------------
#
# A parked session is one ``bytes`` in the server's table: its outgoing-sequence ``limit`` (6
# bytes, all ones for "none") followed by the blob exactly as the store gets it, so parking
# costs one object of ~300 bytes and writing it costs a slice.

_NO_LIMIT: Final = _SEQ_MASK


def pack_parked(limit: int, blob: bytes) -> bytes:
    return (limit if 0 <= limit < _NO_LIMIT else _NO_LIMIT).to_bytes(6, "big") + blob


def parked_limit(entry: bytes) -> int:
    """-1 when no blob of the session may be in the store yet."""
    n = int.from_bytes(entry[:6], "big")
    return -1 if n == _NO_LIMIT else n


def parked_blob(entry: bytes) -> bytes:
    return entry[6:]


def parked_last_seen(entry: bytes) -> int:
    """Unix seconds of the session's last record."""
    return int.from_bytes(entry[7:11], "big")


__all__ = [
    "OUT_RESERVATION",
    "OrderedSessionStore",
    "ParkingError",
    "SessionStore",
    "StoredSession",
    "blob_header",
    "blob_reservation",
    "blob_tail",
    "counters",
    "decode_blob",
    "encode_blob",
    "key_address",
    "pack_parked",
    "parked_blob",
    "parked_last_seen",
    "parked_limit",
    "patch_counters",
    "peer_key",
    "restore_connection",
    "save_connection",
]
