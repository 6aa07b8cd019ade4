"""Configuration of the LwM2M device-management server.

One frozen dataclass with a default for every field, so ``ServerConfig()`` is a working
embedded server (plain CoAP on 5683, DTLS on 5684) and tests override only what they need
(``ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=0)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lwm2m.coap import EndpointConfig
from lwm2m.server.ingress_limits import IngressLimits
from lwm2m.transport import X509Credentials

_VERSION = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}")

#: LwM2M versions this server implements; ``allowed_versions`` must be a subset.
SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every knob of :class:`lwm2m.server.LwM2MServer`; see ``docs/SERVER.md`` for the rules.

    Times are seconds. ``coap_host``/``coaps_host`` None binds one dual-stack socket on every
    address; port 0 binds an ephemeral port (tests). ``coaps_port`` None disables DTLS,
    ``coap_port`` None disables plain CoAP.
    """

    coap_host: str | None = None
    coap_port: int | None = 5683
    coaps_host: str | None = None
    coaps_port: int | None = 5684
    #: Refuse plain-CoAP registrations unless the endpoint has an explicit NoSec grant
    #: (``EndpointSecurity.allow_nosec``); overrides ``allow_nosec_globally``.
    secure_only: bool = False
    #: Let any endpoint *without* a security record register over plain CoAP (embedded
    #: default, logged as a warning at start). Endpoints with credentials must use them.
    allow_nosec_globally: bool = True
    #: ``lwm2m=`` values accepted at Register; any other well-formed version gets 4.12, so a
    #: client (Anjay) falls back to an older one.
    allowed_versions: tuple[str, ...] = SUPPORTED_VERSIONS
    #: How long an operation waits for the device's answer once the request is on the wire.
    #: Above MAX_TRANSMIT_WAIT (93 s) so CoAP retransmission ends first on a lossy link.
    request_timeout: float = 120.0
    #: Default deadline of a request queued for a sleeping queue-mode device.
    queue_deadline: float = 3600.0
    #: A queue-mode device counts as awake this long after its last message (MAX_TRANSMIT_WAIT).
    queue_awake_time: float = 93.0
    #: Most requests kept queued per device; beyond it an operation is refused (InvalidRequest).
    max_queued_per_device: int = 100
    #: Register/Update lifetimes outside [min_lifetime, max_lifetime] are refused with 4.00.
    min_lifetime: int = 1
    max_lifetime: int = 2**31 - 1
    #: Lifetime assumed when a Register carries no ``lt`` (the LwM2M default).
    default_lifetime: int = 86_400
    #: X.509 material of the DTLS listener (certificate-mode devices); PSK always comes from
    #: the store's security records.
    x509: X509Credentials | None = None
    #: ``SO_RCVBUF`` asked for each listening socket, bytes (None: the OS default, ~208 KiB,
    #: which holds only ~166 datagrams). The kernel caps it at ``net.core.rmem_max``; 4 MiB
    #: holds ~6 500 datagrams, the burst of a registration storm (docs/BENCHMARKS.md, issue 13).
    socket_receive_buffer: int | None = 4 * 1024 * 1024
    #: CoAP exchange-layer settings for both sockets (retransmission, caps).
    coap: EndpointConfig = field(default_factory=EndpointConfig)
    #: Events kept per subscriber before the oldest are dropped (and counted).
    subscriber_buffer: int = 1024
    #: Store telemetry for reads as well as for notifications and Send.
    record_reads: bool = True
    #: Block1 memory per peer and in total (issue 14 item 1, ``lwm2m.server.ingress_limits``).
    ingress: IngressLimits = field(default_factory=IngressLimits)
    #: While the server runs, what survives a young cyclic-GC collection is frozen (never
    #: walked again), so no collection walks the whole heap: with 100 000 devices observed one
    #: full collection stopped the server for 2 s of CPU (``lwm2m.server.gc_policy``). The
    #: cost: a reference cycle that becomes garbage after being frozen is only reclaimed when
    #: the server stops (the server's own paths make almost none: docs/BENCHMARKS.md).
    freeze_gc_survivors: bool = True

    def __post_init__(self) -> None:
        for name in ("coap_port", "coaps_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} must be 0..65535, got {port}")
        if self.coap_port is None and self.coaps_port is None:
            raise ValueError("enable at least one of coap_port and coaps_port")
        if not self.allowed_versions:
            raise ValueError("allowed_versions is empty: no client could register")
        for version in self.allowed_versions:
            if version not in SUPPORTED_VERSIONS:
                raise ValueError(
                    f"allowed_versions has {version!r}; this server implements "
                    f"{', '.join(SUPPORTED_VERSIONS)}"
                )
        if not 1 <= self.min_lifetime <= self.max_lifetime:
            raise ValueError("need 1 <= min_lifetime <= max_lifetime")
        if not self.min_lifetime <= self.default_lifetime <= self.max_lifetime:
            raise ValueError("default_lifetime must lie within [min_lifetime, max_lifetime]")
        for name in ("request_timeout", "queue_deadline", "queue_awake_time"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.socket_receive_buffer is not None and self.socket_receive_buffer < 1:
            raise ValueError("socket_receive_buffer must be positive (or None)")
        if self.max_queued_per_device < 1 or self.subscriber_buffer < 1:
            raise ValueError("max_queued_per_device and subscriber_buffer must be >= 1")

    @property
    def nosec_by_default(self) -> bool:
        """Whether an endpoint without a security record may register over plain CoAP."""
        return self.allow_nosec_globally and not self.secure_only


def is_version(text: str) -> bool:
    """``text`` looks like an LwM2M version (``1.1``)."""
    return _VERSION.fullmatch(text) is not None
