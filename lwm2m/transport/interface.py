"""The two protocols that connect a transport to the layer above (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeAlias, runtime_checkable

from lwm2m.transport.peer import Address, Peer
from lwm2m.transport.stats import TransportStats


@runtime_checkable
class DatagramSink(Protocol):
    """What a transport delivers plaintext datagrams to (the CoAP shell, a test responder).

    Called on the event loop, once per CoAP message, with the same ``Peer`` object for every
    message of a DTLS session. It must not block; an exception is counted
    (``stats.sink_errors``) and logged, and the transport carries on.
    """

    def datagram_received(self, data: bytes, peer: Peer) -> None: ...


#: ``on_session_closed(peer, reason)``: a DTLS session ended and ``peer`` will never be
#: delivered again (its device must handshake anew, arriving as a new ``Peer``).
SessionClosed: TypeAlias = Callable[[Peer, str], None]


@runtime_checkable
class Transport(Protocol):
    """What every transport (UDP, DTLS server, DTLS client) offers the layer above."""

    stats: TransportStats

    @property
    def local_address(self) -> Address:
        """The bound socket address (the real port when bound to port 0)."""
        ...

    def send(self, data: bytes, peer: Peer) -> None:
        """Send one datagram (one CoAP message) to ``peer``; raises a ``TransportError``."""
        ...

    def close(self) -> None:
        """Stop receiving, say goodbye to DTLS peers (close_notify), release the socket."""
        ...
