"""The exchange layer's one error hierarchy.

Two branches, as in h11: :class:`RemoteProtocolError` is what a peer did wrong and carries the
CoAP response code that tells the peer so (the core renders it itself; the application never
sees these for requests, it only sees the counters). :class:`LocalProtocolError` is what the
application did wrong through the API (answering a request twice, notifying a removed
observation); it is raised to the caller and never reaches the network.
"""

from __future__ import annotations

from aiocoap.numbers.codes import Code


class CoapError(Exception):
    """Base of every error raised by :mod:`lwm2m.coap`."""


class LocalProtocolError(CoapError):
    """The application used the API in a way the protocol state does not allow."""


class RemoteProtocolError(CoapError):
    """A peer sent something we reject; ``code`` is the response that tells it so."""

    code: Code = Code.BAD_REQUEST

    def __init__(self, message: str, *, code: Code | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class BadRequest(RemoteProtocolError):
    """4.00: a malformed option value (e.g. a Block option with szx 7 over UDP)."""

    code = Code.BAD_REQUEST


class BadOption(RemoteProtocolError):
    """4.02: a critical option we do not recognise (RFC 7252 §5.4.1)."""

    code = Code.BAD_OPTION


class ProxyingNotSupported(RemoteProtocolError):
    """5.05: Proxy-Uri or Proxy-Scheme; we are no forward-proxy (RFC 7252 §5.7.2)."""

    code = Code.PROXYING_NOT_SUPPORTED


class RequestEntityIncomplete(RemoteProtocolError):
    """4.08: a Block1 block arrived that does not continue a transfer we hold."""

    code = Code.REQUEST_ENTITY_INCOMPLETE


class RequestEntityTooLarge(RemoteProtocolError):
    """4.13: a body larger than ``EndpointConfig.max_body_size``; ``size1`` is that limit."""

    code = Code.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, message: str, *, size1: int) -> None:
        super().__init__(message)
        self.size1 = size1
