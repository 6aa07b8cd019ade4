"""Transports: the thin asyncio shells between sockets and the sans-IO CoAP core.

Upward interface (small and stable; everything above depends only on this)
-------------------------------------------------------------------------

A transport is created with a **sink** and delivers every plaintext datagram (one CoAP message)
to it::

    sink.datagram_received(data: bytes, peer: Peer) -> None

and offers, per :class:`Transport`::

    transport.send(data: bytes, peer: Peer) -> None   # raises TransportError subclasses
    transport.close() -> None
    transport.local_address -> Address                # the real port after binding port 0
    transport.stats -> TransportStats                 # counters, never reset

:class:`Peer` is frozen and hashable: ``address`` (as the socket reports it), ``identity``
(:class:`PskIdentity`, :class:`CertificateIdentity`, or ``None`` on plain UDP) and ``secure``.
A DTLS transport hands the *same* ``Peer`` object with every message of a session; ``send``
only accepts that exact peer (equal address *and* identity), so a reply computed for one device
cannot reach another device that has since handshaken from the same address.

The receive path never raises: malformed datagrams, failed handshakes, alerts and sink errors
are counted in :class:`TransportStats` and logged (rate-limited).

Transports
----------

* :class:`UdpTransport` — ``await UdpTransport.create(sink, host=None, port=0)``.
* :class:`DtlsServer` — ``await DtlsServer.create(sink, DtlsServerConfig(...), host, port)``;
  PSK (through a :class:`PskStore`) and/or X.509 (:class:`X509Credentials`) on one socket.
* :class:`DtlsClient` — ``await DtlsClient.connect(sink, host, port, DtlsClientConfig(...))``;
  returns once the handshake completed; its ``peer`` is the server.
* :mod:`lwm2m.transport.coap_shell` runs a sans-IO CoAP core on any of them.

``host=None`` binds one IPv6 dual-stack socket (IPv4 peers appear as ``::ffff:a.b.c.d``); a
literal address binds that family only. Design, limits, counters and debugging: see
``docs/TRANSPORT.md``.
"""

from lwm2m.transport.credentials import (
    CERTIFICATE_CIPHERS,
    PSK_CIPHERS,
    MappingPskStore,
    PskStore,
    X509Credentials,
)
from lwm2m.transport.dtls import DtlsServer, DtlsServerConfig
from lwm2m.transport.dtls_client import DtlsClient, DtlsClientConfig
from lwm2m.transport.errors import (
    ConfigurationError,
    HandshakeFailed,
    HandshakeTimeout,
    MessageTooLarge,
    NoSession,
    SendFailed,
    TransportClosed,
    TransportError,
    WrongTransport,
)
from lwm2m.transport.interface import DatagramSink, SessionClosed, Transport
from lwm2m.transport.peer import Address, CertificateIdentity, Identity, Peer, PskIdentity
from lwm2m.transport.stats import TransportStats
from lwm2m.transport.udp import UdpTransport

__all__ = [
    "CERTIFICATE_CIPHERS",
    "PSK_CIPHERS",
    "Address",
    "CertificateIdentity",
    "ConfigurationError",
    "DatagramSink",
    "DtlsClient",
    "DtlsClientConfig",
    "DtlsServer",
    "DtlsServerConfig",
    "HandshakeFailed",
    "HandshakeTimeout",
    "Identity",
    "MappingPskStore",
    "MessageTooLarge",
    "NoSession",
    "Peer",
    "PskIdentity",
    "PskStore",
    "SendFailed",
    "SessionClosed",
    "Transport",
    "TransportClosed",
    "TransportError",
    "TransportStats",
    "UdpTransport",
    "WrongTransport",
    "X509Credentials",
]
