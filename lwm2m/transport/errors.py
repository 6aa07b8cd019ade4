"""Errors of the transport layer.

Every error the transports raise derives from :class:`TransportError`, so the CoAP shell and
the server can catch the layer as a whole. The receive path never raises: a bad datagram, a
failed handshake or a peer's fatal alert is counted in :class:`~lwm2m.transport.TransportStats`
and logged, because an exception escaping ``datagram_received`` would only reach asyncio's
default handler and tell nobody which device misbehaved. Errors are raised where a caller asked
for something: sending, connecting, configuring.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every transport error."""


class ConfigurationError(TransportError, ValueError):
    """A transport was configured with values it cannot use (no credentials, bad key, ...)."""


class TransportClosed(TransportError):
    """The transport was closed (by ``close()`` or by the peer); nothing more can be sent."""


class NoSession(TransportError):
    """No established DTLS session matches this peer.

    Raised by ``send`` when the session was evicted, expired, closed by the device, or replaced
    by a new handshake from the same address (possibly with another identity): sending to a
    stale :class:`~lwm2m.transport.Peer` must not reach whoever holds the address now. The
    caller should drop the message; the device will handshake again when it next talks.
    """

    def __init__(self, peer: object, reason: str = "no established session") -> None:
        super().__init__(f"{reason} for {peer!r}")
        self.peer = peer


class WrongTransport(TransportError):
    """A secure peer was handed to a plain transport (or the reverse): refused, never sent."""


class MessageTooLarge(TransportError):
    """A message does not fit in one DTLS record within the configured MTU.

    DTLS never fragments application data; the CoAP layer must use block-wise transfer.
    """


class SendFailed(TransportError):
    """The DTLS engine could not encrypt the message; the session is closed as a result."""


class HandshakeFailed(TransportError):
    """A DTLS client could not establish a session (refused, bad credentials, timeout)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        #: The Mbed TLS error code (positive), when the failure came from Mbed TLS.
        self.code = code


class HandshakeTimeout(HandshakeFailed):
    """The server never completed the handshake within the configured retransmission budget."""
