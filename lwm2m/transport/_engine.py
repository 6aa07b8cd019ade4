"""python-mbedtls specifics: stepping a handshake, per-record overhead, and the key export.

Everything here works on one ``TLSWrappedBuffer`` and knows nothing about sockets or asyncio.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import IO, Any, Final

from mbedtls.tls import HandshakeStep, TLSWrappedBuffer, WantReadError, WantWriteError

from lwm2m.transport._common import scrub
from lwm2m.transport.errors import ConfigurationError

logger = logging.getLogger("lwm2m.transport.dtls")

#: Largest plaintext one record can carry (Mbed TLS's default content length).
MAX_PLAINTEXT: Final = 16384
#: Slack added to Mbed TLS's retransmission timeout before we step it, so its timer has expired.
TIMER_SLACK: Final = 0.01


def check_handshake_settings(timeout_min: float, timeout_max: float, mtu: int) -> None:
    """The settings the server and the client hand to Mbed TLS alike; raises
    :class:`ConfigurationError` for values Mbed TLS would reject or misbehave with."""
    if not 0 < timeout_min <= timeout_max:
        raise ConfigurationError("need 0 < handshake_timeout_min <= handshake_timeout_max")
    if not 256 <= mtu <= 65507:
        raise ConfigurationError("mtu must be between 256 and 65507")


OVER: Final = HandshakeStep.HANDSHAKE_OVER
#: Server states before the cookie verdict is visible: ServerHello is only written once the
#: ClientHello's cookie checked out (otherwise HelloVerifyRequest is written instead).
PRE_ADMISSION: Final = frozenset(
    {
        HandshakeStep.HELLO_REQUEST,
        HandshakeStep.CLIENT_HELLO,
        HandshakeStep.SERVER_HELLO,
        HandshakeStep.SERVER_HELLO_VERIFY_REQUEST_SENT,
    }
)


def step_handshake(buf: Any) -> bool:
    """Advance a handshake as far as the input received so far allows.

    ``do_handshake`` performs one Mbed TLS state step per call and reports pending output as
    ``WantWriteError``; output simply accumulates in the buffer (the caller flushes it once),
    so we keep stepping until Mbed TLS needs input (``False``) or the handshake is over
    (``True``). Mbed TLS errors (``TLSError``, ``HelloVerifyRequest``) propagate.

    Retransmission rides on the same call: python-mbedtls installs Mbed TLS's own wall-clock
    timer, so stepping after the current retransmission timeout resends the last flight, and
    stepping after the maximum raises the timeout error.
    """
    # Reading ``_handshake_state`` builds a ``HandshakeStep`` enum member (~0.6 us) and a
    # handshake takes ~20 steps; python-mbedtls raises ValueError("handshake already over")
    # when stepped past the end, so the loop stops on that instead of asking every step.
    step = buf.do_handshake
    try:
        while True:
            try:
                step()
            except WantWriteError:
                continue
            except WantReadError:
                return False
    except ValueError:
        if buf._handshake_state is not OVER:
            raise
        return True


def record_overhead(cipher: str | None) -> int:
    """Bytes a DTLS record adds to a payload with this suite: header plus worst-case expansion.

    Mbed TLS refuses (and resets the session on) application data that does not fit one record
    within the MTU; the transports check against this first so an oversized message is an error
    for the caller, not a dead session.
    """
    name = cipher or ""
    if "CCM-8" in name or "CHACHA20" in name:
        expansion = 16  # 8-byte explicit nonce + 8-byte tag (ChaCha: 16-byte tag, no nonce)
    elif "GCM" in name or "CCM" in name:
        expansion = 24  # 8-byte explicit nonce + 16-byte tag
    else:
        expansion = 64  # CBC: IV + up to SHA-384's 48-byte MAC + a block of padding
    return 13 + expansion


# --- key log ---------------------------------------------------------------------------------


class KeyLog:
    """Appends ``CLIENT_RANDOM <client_random> <master_secret>`` lines (NSS key-log format).

    Wireshark reads such a file (Preferences > Protocols > TLS > (Pre)-Master-Secret log
    filename) and decrypts DTLS 1.2 captures with it. Off unless configured: the file holds the
    secrets of every session it lists.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: IO[str] = os.fdopen(fd, "a", encoding="ascii")
        self._lock = threading.Lock()

    def write(self, client_random: bytes, master_secret: bytes) -> None:
        line = f"CLIENT_RANDOM {client_random.hex()} {master_secret.hex()}\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def export_secrets(buf: Any) -> tuple[Any | None, bytes, bytes] | None:
    """``(replacement_buffer, client_random, master_secret)`` for an established session.

    python-mbedtls exposes no key-export callback (``mbedtls_ssl_conf_export_keys_cb`` is not
    wrapped), but its pickling support calls ``mbedtls_ssl_context_save``, whose output holds
    the session's master secret and the handshake randoms. Saving *resets* the context, so the
    saved state is loaded into a fresh buffer that replaces the old one and the connection
    carries on. Mbed TLS only serialises DTLS 1.2 sessions with AEAD suites (CCM_8, GCM), once
    the handshake is fully wrapped up (on a server: after the first application record from the
    client), so callers retry later and give up for CBC suites.

    Returns ``None`` when Mbed TLS refuses (the old buffer is untouched and still usable). A
    ``None`` replacement means the reload failed and the session is lost; empty secrets mean the
    layout was not recognised (the replacement is still good).

    Layout (Mbed TLS 2.28 ``ssl_tls.c``): 5-byte version/session-config header, 3-byte context
    config, 4-byte session length, the session (8-byte start time if ``MBEDTLS_HAVE_TIME``,
    2-byte suite, compression, id length, 32-byte id, 48-byte master secret, ...), then the
    transform's 64 random bytes: server random then client random.
    """
    try:
        state = buf.__getstate__()
    except TypeError:
        return None
    replacement = _reload(state)
    conn: bytes = state["connection"]
    if len(conn) < 12 or conn[0] != 2:
        return replacement, b"", b""
    have_time = conn[4] & 0x01
    session_len = int.from_bytes(conn[8:12], "big")
    session = conn[12 : 12 + session_len]
    offset = (8 if have_time else 0) + 2 + 1 + 1 + 32
    master = session[offset : offset + 48]
    randoms = conn[12 + session_len : 12 + session_len + 64]
    if len(master) != 48 or len(randoms) != 64:
        return replacement, b"", b""
    return replacement, randoms[32:], master


def _reload(state: dict[str, Any]) -> Any:
    new = TLSWrappedBuffer.__new__(TLSWrappedBuffer)
    try:
        new.__setstate__(state)  # type: ignore[attr-defined]  # Cython class, not in .pyi
    except TypeError:
        logger.error("could not reload a DTLS session after key export; session lost")
        return None
    return new


__all__ = [
    "OVER",
    "PRE_ADMISSION",
    "KeyLog",
    "export_secrets",
    "record_overhead",
    "scrub",
    "step_handshake",
]
