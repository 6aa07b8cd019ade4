"""The asyncio bootstrap server: sockets, sessions, and the DM store's credentials.

``BootstrapServer.start(config, store)`` opens a plain CoAP socket (default port 5783) and a
DTLS socket (5784) serving PSK and, with a CA, certificate devices. Each socket runs one
sans-IO :class:`~lwm2m.coap.CoapEndpoint` behind a :class:`~lwm2m.transport.coap_shell.CoapShell`.
Per device:

1. ``POST /bs?ep=`` (or ``GET /bspack?ep=``) arrives. The endpoint must be a known, active
   factory identity and the channel must be the identity's own (:func:`authorize`): a NoSec
   request only for ``nosec`` identities, the PSK identity or certificate the factory
   recorded for exactly this endpoint. Anything else: 4.03, audited (rate-limited per
   endpoint and reason, so a flood cannot fill the audit table).
2. The policy is selected; a plan that cannot work (no policy, secrets over NoSec) is refused
   with 4.03 before anything is written to the device.
3. 2.04, then the :class:`~bootstrap.session.BootstrapSession` runs: this module only sends
   its requests and reports the answers. Step progress goes to ``bs_state`` as it happens.
4. At the session's Commit, one transaction writes the DM credentials into the DM store
   (``SecurityRepository.set``, which also refreshes the DM server's PSK cache after the
   commit), records issued certificates, revokes superseded DM certificates and appends the
   audit record. Then Bootstrap-Finish goes out.

A Bootstrap-Pack (LwM2M 1.2) commits first and answers 2.05 with the pack.

Server-initiated re-bootstrap (:meth:`BootstrapServer.rebootstrap`) executes ``/1/x/9``
through the DM server's Python API; the device comes back with ``POST /bs`` and gets what the
policy says *now* (a new region's server, a rotated PSK).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from aiocoap import Message
from aiocoap.numbers.codes import Code

from bootstrap.audit import AuditRepository
from bootstrap.ca import CertificateAuthority
from bootstrap.credentials import CredentialIssuer, Issued
from bootstrap.errors import (
    BadBootstrapRequest,
    NotProvisionable,
    RebootstrapFailed,
)
from bootstrap.identities import FactoryIdentity, SecurityMode
from bootstrap.importer import ImportReport
from bootstrap.manager import DEFAULT_ACTOR, BootstrapManager, Explanation, RebootstrapResult
from bootstrap.plan import ProvisioningPlan, build_plan, check_provisionable
from bootstrap.policy import Policy, select_policy
from bootstrap.protocol import (
    BootstrapRequest,
    DeviceInfo,
    PackRequest,
    choose_format,
    parse_bootstrap_request,
)
from bootstrap.repository import (
    CertificateRepository,
    IdentityRepository,
    StateRepository,
    create_schema,
)
from bootstrap.session import BootstrapSession, Commit, Request, SessionState
from bootstrap.state import BootstrapState, Phase
from lwm2m.coap import (
    CoapEndpoint,
    EndpointConfig,
    Event,
    IncomingRequest,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.coap.blockwise import Block1Assembly
from lwm2m.coap.errors import RemoteProtocolError, RequestEntityTooLarge
from lwm2m.coap.peer import PeerState
from lwm2m.codec import ContentFormat
from lwm2m.store import Page, Store, Tx
from lwm2m.store.secrets import key_fingerprint
from lwm2m.transport import (
    Address,
    CertificateIdentity,
    DtlsServer,
    DtlsServerConfig,
    MappingPskStore,
    Peer,
    PskIdentity,
    Transport,
    UdpTransport,
    X509Credentials,
)
from lwm2m.transport.coap_shell import CoapShell

if TYPE_CHECKING:
    from lwm2m.server import LwM2MServer

log = logging.getLogger("fleetloop.bootstrap")


def refuse_block1(
    ps: PeerState, message: Message, assembly: Block1Assembly | None, adding: int
) -> RemoteProtocolError:
    """The Block1 guard of the bootstrap sockets: every block-wise request body is refused
    before a byte is buffered (issue 14 item 1). No bootstrap request from a device carries a
    body that needs Block1 (Bootstrap-Request is a POST with its parameters in the query), and
    the peers are not authenticated yet, so buffering would only serve a flood."""
    return RequestEntityTooLarge(
        "the bootstrap server takes no block-wise request bodies", size1=MAX_BOOTSTRAP_BODY
    )


MAX_BOOTSTRAP_BODY = 1024
"""Size1 in the 4.13 answer: a request to the bootstrap server fits one datagram."""


class _RateLimitedWarning:
    """At most one refusal line per second, with how many were suppressed: a flood of
    made-up endpoints must not become a flood of log lines (the counters keep the total)."""

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        if self._suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        log.warning(msg, *args)


@dataclass(frozen=True, slots=True)
class BootstrapConfig:
    """Every knob of :class:`BootstrapServer`; ``BootstrapConfig()`` is the embedded default.

    ``dm_coap_uri``/``dm_coaps_uri`` are where the built-in default policy sends devices (the
    DM server of the same ``fleetloop serve``); without them only stored policies apply.
    ``x509`` is the server's own DTLS certificate; with a CA and no ``x509`` one is issued at
    start for ``server_names``. Port ``None`` disables a socket; 0 binds an ephemeral one.
    """

    coap_host: str | None = None
    coap_port: int | None = 5783
    coaps_host: str | None = None
    coaps_port: int | None = 5784
    dm_coap_uri: str | None = None
    dm_coaps_uri: str | None = None
    x509: X509Credentials | None = None
    server_names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    #: Seconds to wait for the device's answer to one bootstrap request.
    request_timeout: float = 30.0
    #: Extra attempts for a request that timed out or got 5.xx.
    retries: int = 2
    #: Bootstrap sessions running at once; more Bootstrap-Requests get 5.03.
    max_sessions: int = 1000
    #: Bytes of a generated DM PSK.
    psk_bytes: int = 16
    #: Reload the bootstrap PSKs from the database this often (other processes' imports).
    psk_refresh_interval: float = 60.0
    #: Audit at most one refusal per endpoint and reason in this many seconds.
    refusal_audit_interval: float = 60.0
    coap: EndpointConfig = field(default_factory=EndpointConfig)
    dtls_idle_timeout: float = 600.0
    actor: str = "bootstrap-server"

    def __post_init__(self) -> None:
        if self.coap_port is None and self.coaps_port is None:
            raise ValueError("enable at least one of coap_port and coaps_port")
        if self.request_timeout <= 0 or self.retries < 0 or self.max_sessions < 1:
            raise ValueError("request_timeout > 0, retries >= 0 and max_sessions >= 1 needed")


# -- authorisation (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Channel:
    """How a request reached us: NoSec, or the DTLS identity it authenticated."""

    mode: SecurityMode
    psk_identity: bytes | None = None
    fingerprint: str | None = None
    common_name: str | None = None

    @classmethod
    def of(cls, peer: Peer) -> Channel:
        identity = peer.identity
        if isinstance(identity, PskIdentity):
            return cls(SecurityMode.PSK, psk_identity=identity.identity)
        if isinstance(identity, CertificateIdentity):
            return cls(
                SecurityMode.X509,
                fingerprint=identity.fingerprint.hex(),
                common_name=identity.common_name,
            )
        return cls(SecurityMode.NOSEC)

    @property
    def secure(self) -> bool:
        return self.mode is not SecurityMode.NOSEC

    def describe(self) -> str:
        if self.mode is SecurityMode.PSK and self.psk_identity is not None:
            return "coaps-psk:" + self.psk_identity.decode("utf-8", "backslashreplace")
        if self.mode is SecurityMode.X509:
            return f"coaps-x509:{self.common_name or '?'}"
        return "coap"


def authorize(
    endpoint: str,
    identity: FactoryIdentity | None,
    channel: Channel,
    *,
    certificate_revoked: bool = False,
) -> str | None:
    """Why ``endpoint`` may not bootstrap over ``channel`` (None: it may)."""
    if identity is None:
        return "unknown endpoint"
    if not identity.active:
        return "identity revoked"
    cred = identity.credential
    if channel.mode is SecurityMode.NOSEC:
        if cred.mode is not SecurityMode.NOSEC:
            return f"NoSec bootstrap refused: the identity was imported as {cred.mode}"
        return None
    if channel.mode is not cred.mode:
        return f"connected with {channel.mode} but the identity was imported as {cred.mode}"
    if channel.mode is SecurityMode.PSK:
        if cred.psk_identity is None or channel.psk_identity != cred.psk_identity.encode("utf-8"):
            return "the PSK identity used belongs to another endpoint"
        return None
    if channel.fingerprint != cred.certificate_fingerprint:
        return "the certificate used is not this endpoint's"
    if certificate_revoked:
        return "the certificate used is revoked"
    return None


# -- the runtime --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Listener:
    kind: Literal["coap", "coaps"]
    core: CoapEndpoint
    shell: CoapShell[Event]
    transport: Transport | None = None


@dataclass(slots=True)
class _Context:
    """One accepted bootstrap: who, over which socket, under which policy."""

    listener: _Listener
    peer: Peer
    identity: FactoryIdentity
    policy: Policy
    channel: Channel
    state: BootstrapState
    issued: list[Issued] = field(default_factory=list)


class BootstrapServer:
    """The LwM2M bootstrap server (see the module docstring)."""

    def __init__(
        self,
        config: BootstrapConfig,
        store: Store,
        manager: BootstrapManager,
        *,
        ca: CertificateAuthority | None,
        dm_server: LwM2MServer | None,
        rng: random.Random,
        token_bytes: Callable[[int], bytes],
        clock: Callable[[], float],
    ) -> None:
        """Use :meth:`start`."""
        self.config = config
        self.store = store
        self.manager = manager
        self.ca = ca
        self.dm_server = dm_server
        self._rng = rng
        self._clock = clock
        self._issuer = CredentialIssuer(ca, psk_bytes=config.psk_bytes, token_bytes=token_bytes)
        self._identities = IdentityRepository()
        self._certificates = CertificateRepository()
        self._states = StateRepository()
        self._audit = AuditRepository()
        self._psk_keys: dict[bytes, bytes] = {}
        self._listeners: list[_Listener] = []
        self._waiting: dict[RequestHandle, asyncio.Future[Message | str]] = {}
        self._sessions: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refusals: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._refresh_task: asyncio.Task[None] | None = None
        self._log_refusal = _RateLimitedWarning()
        self._stopped = False
        #: Counters for operators and tests.
        self.stats: dict[str, int] = {
            "requests": 0,
            "refused": 0,
            "finished": 0,
            "failed": 0,
            "packs": 0,
        }

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    async def start(
        cls,
        config: BootstrapConfig,
        store: Store,
        *,
        ca: CertificateAuthority | None = None,
        dm_server: LwM2MServer | None = None,
        rng: random.Random | None = None,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
        clock: Callable[[], float] = time.time,
    ) -> BootstrapServer:
        """Create the tables if needed, load the PSKs, bind the sockets."""
        await asyncio.to_thread(create_schema, store)
        manager = BootstrapManager(
            store,
            ca=ca,
            dm_coap_uri=config.dm_coap_uri,
            dm_coaps_uri=config.dm_coaps_uri,
            clock=clock,
        )
        self = cls(
            config,
            store,
            manager,
            ca=ca,
            dm_server=dm_server,
            rng=rng or random.SystemRandom(),
            token_bytes=token_bytes,
            clock=clock,
        )
        manager.on_identities_changed = self.refresh_psk
        await self.refresh_psk()
        try:
            await self._open()
        except BaseException:
            await self.stop()
            raise
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())
        return self

    async def _open(self) -> None:
        config = self.config
        if config.coap_port is not None:
            listener = self._listener("coap")
            listener.transport = await UdpTransport.create(
                listener.shell, host=config.coap_host, port=config.coap_port
            )
            listener.shell.attach(listener.transport)
        if config.coaps_port is not None:
            listener = self._listener("coaps")
            dtls = DtlsServerConfig(
                psk_store=MappingPskStore(self._psk_keys),
                x509=self._server_credentials(),
                idle_timeout=config.dtls_idle_timeout,
            )
            listener.transport = await DtlsServer.create(
                listener.shell,
                dtls,
                host=config.coaps_host,
                port=config.coaps_port,
                on_session_closed=listener.shell.session_closed,
            )
            listener.shell.attach(listener.transport)

    def _listener(self, kind: Literal["coap", "coaps"]) -> _Listener:
        core = CoapEndpoint(rng=self._rng, config=self.config.coap)
        core.block1_guard = refuse_block1
        holder: list[_Listener] = []
        shell: CoapShell[Event] = CoapShell(core, lambda event: self._on_event(holder[0], event))
        listener = _Listener(kind, core, shell)
        holder.append(listener)
        self._listeners.append(listener)
        return listener

    def _server_credentials(self) -> X509Credentials | None:
        if self.config.x509 is not None:
            return self.config.x509
        if self.ca is None:
            return None
        dns, ips = [], []
        for name in self.config.server_names:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                dns.append(name)
            else:
                ips.append(name)
        issued = self.ca.issue_server("fleetloop-bootstrap", dns_names=dns, ip_addresses=ips)
        return self.ca.credentials(issued)

    async def stop(self) -> None:
        """Close the sockets and end running sessions (their devices will ask again)."""
        self._stopped = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        tasks = [*self._sessions.values(), *self._tasks]
        if self._refresh_task is not None:
            tasks.append(self._refresh_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in self._waiting.values():
            if not future.done():
                future.set_result("server stopped")
        self._waiting.clear()
        for listener in self._listeners:
            listener.shell.close()
        self._listeners.clear()

    async def __aenter__(self) -> BootstrapServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _address(self, kind: str) -> Address | None:
        for listener in self._listeners:
            if listener.kind == kind and listener.transport is not None:
                return listener.transport.local_address
        return None

    @property
    def coap_address(self) -> Address | None:
        return self._address("coap")

    @property
    def coaps_address(self) -> Address | None:
        return self._address("coaps")

    # -- PSK cache --------------------------------------------------------------------------------
    async def refresh_psk(self) -> None:
        """Reload the bootstrap PSKs (active PSK identities) into the handshake's map."""
        pairs = await self.store.read(self._identities.all_psk)
        fresh = {identity.encode("utf-8"): key for identity, key in pairs}
        self._psk_keys.clear()
        self._psk_keys.update(fresh)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.psk_refresh_interval)
            try:
                await self.refresh_psk()
            except Exception:
                log.warning("bootstrap PSK refresh failed", exc_info=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A request handler or session ended: a failure is a bug or an outage; log it (the
        device retries), never leave it to asyncio's "exception was never retrieved"."""
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("bootstrap task failed: %s", error, exc_info=error)

    # -- CoAP events ------------------------------------------------------------------------------
    def _on_event(self, listener: _Listener, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(listener, event)
        elif isinstance(event, ResponseReceived):
            future = self._waiting.pop(event.request, None)
            if future is not None and not future.done():
                future.set_result(event.message)
        elif isinstance(event, RequestFailed):
            future = self._waiting.pop(event.request, None)
            if future is not None and not future.done():
                detail = f": {event.detail}" if event.detail else ""
                future.set_result(f"{event.reason.value}{detail}")

    def _respond(self, listener: _Listener, incoming: IncomingRequest, message: Message) -> None:
        listener.core.respond(incoming, message, listener.shell.now())
        listener.shell.flush()

    def _on_request(self, listener: _Listener, event: RequestReceived) -> None:
        message = event.message
        method = {Code.POST: "POST", Code.GET: "GET"}.get(message.code, str(message.code))
        accept = None if message.opt.accept is None else int(message.opt.accept)
        try:
            request = parse_bootstrap_request(
                method, tuple(message.opt.uri_path), tuple(message.opt.uri_query), accept
            )
        except BadBootstrapRequest as exc:
            self._respond(
                listener, event.request, Message(code=Code.BAD_REQUEST, payload=str(exc).encode())
            )
            return
        if request is None:
            self._respond(listener, event.request, Message(code=Code.NOT_FOUND))
            return
        self.stats["requests"] += 1
        peer = event.peer
        assert isinstance(peer, Peer)
        if (
            len(self._sessions) >= self.config.max_sessions
            and request.endpoint not in self._sessions
        ):
            self._respond(listener, event.request, Message(code=Code.SERVICE_UNAVAILABLE))
            return
        self._spawn(self._accept(listener, event.request, peer, request))

    # -- accepting a request ----------------------------------------------------------------------
    async def _accept(
        self,
        listener: _Listener,
        incoming: IncomingRequest,
        peer: Peer,
        request: BootstrapRequest | PackRequest,
    ) -> None:
        endpoint = request.endpoint
        channel = Channel.of(peer)
        try:
            identity, revoked, state, selection = await self.store.read(
                lambda tx: self._lookup(tx, endpoint, channel)
            )
        except Exception as exc:
            log.error("bootstrap of %s: lookup failed: %s", endpoint, exc)
            self._respond(listener, incoming, Message(code=Code.SERVICE_UNAVAILABLE))
            return
        reason = authorize(endpoint, identity, channel, certificate_revoked=revoked)
        policy = None if reason is not None else selection
        if reason is None and policy is None:
            reason = "no policy applies and no default DM server is configured"
        if reason is None:
            assert identity is not None and policy is not None
            try:
                check_provisionable(identity, policy, secure_channel=channel.secure)
            except NotProvisionable as exc:
                reason = str(exc)
        if reason is not None:
            self._refuse(listener, incoming, endpoint, channel, peer, reason, identity, state)
            return
        assert identity is not None and policy is not None
        base = state or BootstrapState(endpoint)
        context = _Context(listener, peer, identity, policy, channel, base)
        if isinstance(request, PackRequest):
            await self._serve_pack(context, incoming, request)
            return
        self._respond(listener, incoming, Message(code=Code.CHANGED))
        previous = self._sessions.pop(endpoint, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(self._run(context, request))
        self._sessions[endpoint] = task
        task.add_done_callback(lambda t: self._session_done(endpoint, t))
        task.add_done_callback(self._task_done)

    def _session_done(self, endpoint: str, task: asyncio.Task[None]) -> None:
        if self._sessions.get(endpoint) is task:
            del self._sessions[endpoint]

    def _lookup(
        self, tx: Tx, endpoint: str, channel: Channel
    ) -> tuple[FactoryIdentity | None, bool, BootstrapState | None, Policy | None]:
        identity = self._identities.get(tx, endpoint)
        revoked = False
        if channel.fingerprint is not None:
            revoked = self._certificates.is_revoked(tx, channel.fingerprint)
        state = self._states.get(tx, endpoint) if identity is not None else None
        policy = None
        if identity is not None:
            policies = self.manager.policies.active(tx)
            policy = select_policy(identity, policies, self.manager.default_policy).policy
        return identity, revoked, state, policy

    def _refuse(
        self,
        listener: _Listener,
        incoming: IncomingRequest,
        endpoint: str,
        channel: Channel,
        peer: Peer,
        reason: str,
        identity: FactoryIdentity | None,
        state: BootstrapState | None,
    ) -> None:
        self.stats["refused"] += 1
        self._respond(listener, incoming, Message(code=Code.FORBIDDEN))
        self._log_refusal(
            "bootstrap refused: endpoint=%s channel=%s reason=%s",
            endpoint,
            channel.describe(),
            reason,
        )
        now = self._clock()
        key = (endpoint, reason)
        last = self._refusals.get(key)
        if last is not None and now - last < self.config.refusal_audit_interval:
            return
        self._refusals[key] = now
        self._refusals.move_to_end(key)
        while len(self._refusals) > 10_000:
            self._refusals.popitem(last=False)
        refused_state = None
        if identity is not None:  # unknown endpoints get no state row: no table growth by spam
            refused_state = replace(
                state or BootstrapState(endpoint),
                phase=Phase.REFUSED,
                detail=reason,
                transport=channel.describe(),
                peer=str(peer),
                updated_at=now,
            )

        def op(tx: Tx) -> None:
            if refused_state is not None:
                self._states.put(tx, refused_state)
            self._audit.append(
                tx,
                actor=self.config.actor,
                action="bootstrap.refused",
                subject=endpoint,
                detail={"reason": reason, "channel": channel.describe(), "peer": str(peer)},
                now=now,
            )

        self.store.write_nowait(op)

    # -- the sequence -----------------------------------------------------------------------------
    def _planner(self, context: _Context) -> Callable[[DeviceInfo | None, str], ProvisioningPlan]:
        def plan(info: DeviceInfo | None, version: str) -> ProvisioningPlan:
            issued = self._issuer.issue(context.identity, context.policy)
            context.issued.append(issued)
            return build_plan(
                context.identity,
                context.policy,
                info,
                issued.credentials,
                lwm2m_version=version,
                secure_channel=context.channel.secure,
            )

        return plan

    def _put_state(self, state: BootstrapState, *, wait: bool = False) -> Any:
        def op(tx: Tx) -> None:
            self._states.put(tx, state)

        if wait:
            return self.store.write(op)
        self.store.write_nowait(op)
        return None

    async def _run(self, context: _Context, request: BootstrapRequest) -> None:
        now = self._clock()
        policy = context.policy
        session = BootstrapSession(
            context.identity.endpoint,
            preferred_format=request.preferred_format,
            content_format=lambda version: choose_format(
                policy.content_format, request.preferred_format, version
            ),
            planner=self._planner(context),
            retries=self.config.retries,
        )
        state = replace(
            context.state,
            phase=Phase.IN_PROGRESS,
            step="starting",
            detail="",
            attempts=context.state.attempts + 1,
            policy_name=policy.name,
            policy_version=policy.version,
            transport=context.channel.describe(),
            peer=str(context.peer),
            started_at=now,
            updated_at=now,
            finished_at=None,
        )
        self._put_state(state)
        try:
            while (action := session.next_action()) is not None:
                if isinstance(action, Commit):
                    try:
                        await self._commit(context, action.plan, session, state)
                    except Exception as exc:
                        log.error("bootstrap of %s: commit failed: %s", state.endpoint, exc)
                        session.on_commit_failed(str(exc))
                    else:
                        session.on_committed()
                    continue
                state = replace(
                    state,
                    step=action.describe(),
                    lwm2m_version=session.lwm2m_version,
                    content_format=session.content_format,
                    updated_at=self._clock(),
                )
                self._put_state(state)
                answer = await self._exchange(context, action)
                if isinstance(answer, str):
                    session.on_failure(answer)
                else:
                    cf = answer.opt.content_format
                    session.on_response(
                        int(answer.code), None if cf is None else int(cf), bytes(answer.payload)
                    )
        except asyncio.CancelledError:
            state = replace(
                state, phase=Phase.FAILED, detail="interrupted (a new request or a server stop)"
            )
            with contextlib.suppress(Exception):
                self._put_state(replace(state, updated_at=self._clock()))
            raise
        await self._finish(context, session, state)

    async def _exchange(self, context: _Context, request: Request) -> Message | str:
        listener = context.listener
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message | str] = loop.create_future()
        handle = listener.core.send_request(context.peer, request.message(), listener.shell.now())
        self._waiting[handle] = future
        listener.shell.flush()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.config.request_timeout)
        except TimeoutError:
            self._waiting.pop(handle, None)
            listener.core.cancel_request(handle, listener.shell.now())
            listener.shell.flush()
            return f"no answer within {self.config.request_timeout:g} s"
        finally:
            if not future.done():
                self._waiting.pop(handle, None)

    def _commit_op(
        self, context: _Context, plan: ProvisioningPlan, state: BootstrapState, now: float
    ) -> Callable[[Tx], None]:
        issued = [c for i in context.issued for c in i.certificates]
        new_serials = {c.serial for c in issued}
        security = plan.endpoint_security(now)
        detail = plan.audit_detail(partial(key_fingerprint, self.store))
        detail["channel"] = context.channel.describe()

        def op(tx: Tx) -> None:
            self.store.security.set(tx, security, now)
            for row in self._certificates.for_endpoint(tx, plan.endpoint):
                if (
                    row["kind"] == "device-dm"
                    and row["revoked_at"] is None
                    and row["serial"] not in new_serials
                ):
                    self._certificates.revoke(tx, row["serial"], "superseded by bootstrap", now)
            for cert in issued:
                if self._certificates.get(tx, cert.serial) is None:
                    self._certificates.record(tx, cert, now)
            self._states.put(tx, state)
            self._audit.append(
                tx,
                actor=self.config.actor,
                action="bootstrap.provisioned",
                subject=plan.endpoint,
                detail=detail,
                now=now,
            )

        return op

    async def _commit(
        self,
        context: _Context,
        plan: ProvisioningPlan,
        session: BootstrapSession,
        state: BootstrapState,
    ) -> None:
        now = self._clock()
        committed = replace(
            state,
            step="finish",
            dm_uris=plan.dm_uris,
            server_iids=plan.server_iids,
            lwm2m_version=session.lwm2m_version,
            content_format=session.content_format,
            device_report="\n".join(session.device_report),
            updated_at=now,
        )
        await self.store.write(self._commit_op(context, plan, committed, now))

    async def _finish(
        self, context: _Context, session: BootstrapSession, state: BootstrapState
    ) -> None:
        now = self._clock()
        log_text = "\n".join(str(r) for r in session.log)
        endpoint = state.endpoint
        if session.state is SessionState.FINISHED:
            self.stats["finished"] += 1
            final = replace(
                state,
                phase=Phase.FINISHED,
                step="",
                detail=log_text,
                completed=state.completed + 1,
                dm_uris=session.plan.dm_uris if session.plan else state.dm_uris,
                server_iids=session.plan.server_iids if session.plan else state.server_iids,
                lwm2m_version=session.lwm2m_version,
                content_format=session.content_format,
                device_report="\n".join(session.device_report),
                finished_at=now,
                updated_at=now,
                rebootstrap_requested_at=None,
            )
            action = "bootstrap.finished"
            detail: dict[str, Any] = {"policy": state.policy_name}
            log.info("bootstrap of %s finished (%s)", endpoint, context.policy.label)
        else:
            self.stats["failed"] += 1
            final = replace(
                state,
                phase=Phase.FAILED,
                step=session.step,
                detail=f"{session.error}\n{log_text}",
                lwm2m_version=session.lwm2m_version,
                content_format=session.content_format,
                device_report="\n".join(session.device_report),
                updated_at=now,
            )
            action = "bootstrap.failed"
            detail = {"error": session.error, "committed": session.committed}
            log.warning("bootstrap of %s failed: %s", endpoint, session.error)

        def op(tx: Tx) -> None:
            self._states.put(tx, final)
            self._audit.append(
                tx, actor=self.config.actor, action=action, subject=endpoint, detail=detail, now=now
            )

        await self.store.write(op)

    async def _serve_pack(
        self, context: _Context, incoming: IncomingRequest, request: PackRequest
    ) -> None:
        listener = context.listener
        if request.accept is not None and request.accept != ContentFormat.SENML_CBOR:
            self._respond(listener, incoming, Message(code=Code.NOT_ACCEPTABLE))
            return
        now = self._clock()
        try:
            issued = self._issuer.issue(context.identity, context.policy)
            context.issued.append(issued)
            plan = build_plan(
                context.identity,
                context.policy,
                None,
                issued.credentials,
                lwm2m_version="1.2",
                secure_channel=context.channel.secure,
            )
            payload = plan.pack()
        except NotProvisionable as exc:
            self._refuse(
                listener,
                incoming,
                context.identity.endpoint,
                context.channel,
                context.peer,
                str(exc),
                context.identity,
                context.state,
            )
            return
        final = replace(
            context.state,
            phase=Phase.FINISHED,
            step="",
            detail="Bootstrap-Pack served",
            attempts=context.state.attempts + 1,
            completed=context.state.completed + 1,
            policy_name=context.policy.name,
            policy_version=context.policy.version,
            lwm2m_version="1.2",
            content_format=int(ContentFormat.SENML_CBOR),
            transport=context.channel.describe(),
            peer=str(context.peer),
            dm_uris=plan.dm_uris,
            server_iids=plan.server_iids,
            started_at=now,
            finished_at=now,
            updated_at=now,
            rebootstrap_requested_at=None,
        )
        try:
            await self.store.write(self._commit_op(context, plan, final, now))
        except Exception as exc:
            log.error("Bootstrap-Pack for %s: commit failed: %s", final.endpoint, exc)
            self._respond(listener, incoming, Message(code=Code.SERVICE_UNAVAILABLE))
            return
        self.stats["packs"] += 1
        self._respond(
            listener,
            incoming,
            Message(code=Code.CONTENT, content_format=ContentFormat.SENML_CBOR, payload=payload),
        )

    # -- operator API -----------------------------------------------------------------------------
    async def status(self, endpoint: str) -> BootstrapState:
        """The device's bootstrap state (``fleetloop bootstrap status``)."""
        return await self.manager.status(endpoint)

    async def explain(self, endpoint: str) -> Explanation:
        """Which policy applies to the device and why (``fleetloop bootstrap explain``)."""
        return await self.manager.explain(endpoint)

    async def import_identities(self, data: bytes | str, **kwargs: Any) -> ImportReport:
        return await self.manager.import_identities(data, **kwargs)

    async def list_identities(self, **kwargs: Any) -> Page[FactoryIdentity]:
        return await self.manager.list_identities(**kwargs)

    async def identity(self, endpoint: str) -> FactoryIdentity:
        return await self.manager.identity(endpoint)

    async def revoke_identity(
        self, endpoint: str, *, reason: str, actor: str = DEFAULT_ACTOR
    ) -> FactoryIdentity:
        return await self.manager.revoke_identity(endpoint, reason=reason, actor=actor)

    async def add_policy(
        self, policy: Policy, *, actor: str = DEFAULT_ACTOR, comment: str = ""
    ) -> tuple[Policy, bool]:
        return await self.manager.add_policy(policy, actor=actor, comment=comment)

    async def list_policies(self) -> list[Policy]:
        return await self.manager.list_policies()

    async def policy(self, name: str, version: int | None = None) -> Policy:
        return await self.manager.policy(name, version)

    async def diff_policy(self, name: str, old: int | None = None, new: int | None = None) -> str:
        return await self.manager.diff_policy(name, old, new)

    async def rebootstrap(
        self,
        endpoint: str,
        *,
        actor: str = DEFAULT_ACTOR,
        move: dict[str, str | None] | None = None,
        dm_server: LwM2MServer | None = None,
    ) -> RebootstrapResult:
        """Make the device bootstrap again (see :meth:`BootstrapManager.rebootstrap`)."""
        dm = dm_server or self.dm_server
        if dm is None:
            raise RebootstrapFailed(
                f"re-bootstrap of {endpoint} needs the DM server (start the bootstrap server "
                "with dm_server=...)"
            )
        return await self.manager.rebootstrap(endpoint, dm_server=dm, actor=actor, move=move)


__all__ = [
    "BootstrapConfig",
    "BootstrapServer",
    "Channel",
    "RebootstrapResult",
    "authorize",
]
