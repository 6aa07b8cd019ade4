"""The simulated device's bootstrap client (TS Core 1.1 §6.1; 1.2 Bootstrap-Pack), sans-IO.

A device built from :func:`bootstrap_template` leaves the factory with one Security instance
(``/0/0``, the bootstrap account) and no Server instance. :class:`BootstrapClient` talks to
the bootstrap server on a peer of its own:

* LwM2M 1.2 with ``ClientConfig.bootstrap_pack``: ``GET /bspack?ep=`` (Accept SenML-CBOR)
  first, as Anjay does; a 2.05 pack is applied in one go and bootstrapping is over. Any other
  answer falls back to ``POST /bs``.
* ``POST /bs?ep=<name>[&pct=<format>]``; after 2.04 the server's requests are answered by
  :func:`handle_bootstrap` until Bootstrap-Finish (``POST /bs``), which checks that the
  configuration is usable (every Server instance has a Security instance with its Short Server
  ID and complete credentials; 4.06 otherwise) before answering 2.04.
* No Finish within ``bootstrap_timeout``, or a refused request: :class:`BootstrapFailed`, and
  a new attempt after ``bootstrap_retry_delay``.

Bootstrap operations bypass the DM access rules (a bootstrap server may write Security, the
bootstrap account cannot be deleted). Deviations from the letter of the specification:
Bootstrap-Delete ``/`` removes the instances of the account objects (0 except the bootstrap
account, 1, 2, 11, 21) and keeps those the device model defines itself (Device, Firmware,
Connectivity, eSIM, Config) -- as Anjay keeps instances it cannot remove; a Bootstrap-Write to an
existing instance replaces it; Bootstrap-Read is answered for the Server object (and ACL) only,
4.05 otherwise, and in 1.0 mode as well (Anjay's answers).

The DM client (:class:`~simulators.device.client.LwM2MClient`) asks for a bootstrap with a
:class:`~simulators.device.events.BootstrapRequested` event -- Execute ``/1/x/9``, or a
registration sequence that failed for good while a bootstrap account exists and ``/1/x/16``
(Bootstrap on Registration Failure) is not false. The driver (the asyncio runner) then opens the
bootstrap server's transport and calls :meth:`DeviceCore.start_bootstrap`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import (
    CoapEndpoint,
    Event,
    IncomingRequest,
    RequestFailed,
    RequestHandle,
    RequestReceived,
    ResponseReceived,
)
from lwm2m.codec import CodecError, ContentFormat, canonical, decode, decode_nodes, encode
from lwm2m.codec.link import Link, format_links
from lwm2m.model import (
    ROOT,
    InvalidPath,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    Path,
    ResourceInstance,
    SingleResource,
)
from objects import builtin_definition
from objects.enums import SecurityMode
from simulators.device import behaviours as b
from simulators.device.config import ClientConfig
from simulators.device.defaults import default_template
from simulators.device.errors import (
    BadRequest,
    DeviceError,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    UnsupportedContentFormat,
)
from simulators.device.events import (
    BootstrapFailed,
    BootstrapFinished,
    BootstrapStarted,
    ClientEvent,
)
from simulators.device.execute import Arguments
from simulators.device.objects import ObjectStore
from simulators.device.template import (
    DeviceActions,
    DeviceTemplate,
    InstanceTemplate,
    ObjectTemplate,
)

SECURITY, SERVER, ACL, APN, OSCORE = 0, 1, 2, 11, 21
#: Objects whose instances are server accounts and their companions: what Bootstrap-Delete
#: ``/`` removes and a Bootstrap-Pack replaces.
ACCOUNT_OBJECTS = (SECURITY, SERVER, ACL, APN, OSCORE)
BOOTSTRAP_TRIGGER, BOOTSTRAP_ON_FAILURE = 9, 16

#: Defaults of a Server instance a bootstrap server creates (executables 8 and 9 exist).
SERVER_INSTANCE = InstanceTemplate(
    {
        0: 1,
        1: 86_400,
        6: True,
        7: "U",
        8: None,
        9: None,
        16: True,
        17: 5,
        18: 60,
        19: 86_400,
        20: 1,
        23: False,
    }
)
EMPTY_INSTANCE = InstanceTemplate({})


def bootstrap_request_trigger(
    device: DeviceActions, path: Path, args: Arguments, now: float
) -> None:
    """/1/x/9: answer 2.04, then bootstrap again (the driver reconnects)."""
    if not has_bootstrap_account(device.store):
        raise MethodNotAllowed("the device has no bootstrap account")
    device.request_bootstrap(now, "server-initiated")


@functools.lru_cache(maxsize=64)
def bootstrap_template(
    *,
    bootstrap_uri: str = "coap://127.0.0.1:5783",
    security_mode: SecurityMode = SecurityMode.NO_SEC,
    lifetime: int = 300,
    firmware: b.FirmwareTiming = b.FirmwareTiming(),  # noqa: B008 - frozen, hashable
) -> DeviceTemplate:
    """A factory-fresh device: the bootstrap account in ``/0/0``, no DM account yet, and the
    APN (11) and OSCORE (21) objects without instances, for the bootstrap server to fill."""
    base = default_template(lifetime=lifetime, firmware=firmware)
    account = InstanceTemplate(
        {0: bootstrap_uri, 1: True, 2: int(security_mode), 3: b"", 4: b"", 5: b"", 11: 0}
    )
    security = ObjectTemplate(builtin_definition(SECURITY), {0: account})
    server = ObjectTemplate(
        builtin_definition(SERVER),
        {},
        handlers={8: b.registration_update_trigger, BOOTSTRAP_TRIGGER: bootstrap_request_trigger},
    )
    return base.replace(
        security,
        server,
        ObjectTemplate(builtin_definition(APN), {}),
        ObjectTemplate(builtin_definition(OSCORE), {}),
    )


# -- reading the store ----------------------------------------------------------------------------


def _value(store: ObjectStore, key: tuple[int, int, int]) -> object:
    if not store.has_resource(*key):
        return None
    return store.stored(key, 0.0)


def bootstrap_iids(store: ObjectStore) -> tuple[int, ...]:
    """Security instances that are bootstrap accounts (/0/x/1 true)."""
    if SECURITY not in store.template.objects:
        return ()
    return tuple(i for i in store.instance_ids(SECURITY) if _value(store, (0, i, 1)) is True)


def has_bootstrap_account(store: ObjectStore) -> bool:
    return bool(bootstrap_iids(store))


def bootstrap_on_failure(store: ObjectStore) -> bool:
    """Fall back to bootstrap after a failed registration sequence (/1/x/16, default true)."""
    if not has_bootstrap_account(store) or SERVER not in store.template.objects:
        return False
    iids = store.instance_ids(SERVER)
    return not iids or _value(store, (SERVER, iids[0], BOOTSTRAP_ON_FAILURE)) is not False


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """Where and how the device reaches a server, as its Security instance says."""

    uri: str
    mode: SecurityMode
    identity: bytes
    server_key: bytes
    secret: bytes
    short_server_id: int | None


def security_account(store: ObjectStore, iid: int) -> ServerCredentials:
    def raw(rid: int) -> bytes:
        value = _value(store, (SECURITY, iid, rid))
        return value if isinstance(value, bytes) else b""

    uri = _value(store, (SECURITY, iid, 0))
    mode = _value(store, (SECURITY, iid, 2))
    ssid = _value(store, (SECURITY, iid, 10))
    return ServerCredentials(
        uri=uri if isinstance(uri, str) else "",
        mode=SecurityMode(mode) if isinstance(mode, int) else SecurityMode.NO_SEC,
        identity=raw(3),
        server_key=raw(4),
        secret=raw(5),
        short_server_id=ssid if isinstance(ssid, int) else None,
    )


def bootstrap_account(store: ObjectStore) -> ServerCredentials | None:
    iids = bootstrap_iids(store)
    return security_account(store, iids[0]) if iids else None


def dm_account(store: ObjectStore) -> ServerCredentials | None:
    """The Security account of the first Server instance (matched by Short Server ID)."""
    if SERVER not in store.template.objects:
        return None
    servers = store.instance_ids(SERVER)
    if not servers:
        return None
    ssid = _value(store, (SERVER, servers[0], 0))
    for iid in store.instance_ids(SECURITY):
        if _value(store, (SECURITY, iid, 1)) is True:
            continue
        if _value(store, (SECURITY, iid, 10)) == ssid:
            return security_account(store, iid)
    return None


def check_configuration(store: ObjectStore) -> str | None:
    """Why the bootstrapped configuration is unusable (Bootstrap-Finish then gets 4.06)."""
    servers = store.instance_ids(SERVER) if SERVER in store.template.objects else ()
    if not servers:
        return "no LwM2M Server instance"
    accounts = {
        security_account(store, i).short_server_id: security_account(store, i)
        for i in store.instance_ids(SECURITY)
        if _value(store, (SECURITY, i, 1)) is not True
    }
    for iid in servers:
        ssid = _value(store, (SERVER, iid, 0))
        account = accounts.get(ssid if isinstance(ssid, int) else None)
        if account is None:
            return f"Server /1/{iid} (ssid {ssid}) has no Security instance"
        if not account.uri:
            return f"the Security instance of ssid {ssid} has no server URI"
        if account.mode is SecurityMode.PSK and not (account.identity and account.secret):
            return f"the PSK account of ssid {ssid} lacks its identity or key"
        if account.mode.uses_certificates and not (account.identity and account.secret):
            return f"the certificate account of ssid {ssid} lacks its certificate or key"
        if account.mode is SecurityMode.RPK:
            return "raw public keys are not supported"
    return None


# -- answering the bootstrap server ---------------------------------------------------------------


def _path(message: Message) -> Path:
    segments = message.opt.uri_path
    if not segments:
        return ROOT
    if len(segments) > 4:
        raise NotFound("no LwM2M path has more than four segments")
    try:
        return Path.parse("/" + "/".join(segments))
    except InvalidPath:
        raise NotFound(f"/{'/'.join(segments)} is not an LwM2M path") from None


def _discover(store: ObjectStore, path: Path, version: str) -> Message:
    """Bootstrap-Discover: ``</>;lwm2m=V``, objects (``ver`` when not 1.0) and instances;
    Security instances carry ``ssid`` and ``uri`` (the bootstrap account ``uri`` only),
    Server instances ``ssid``."""
    if path.level > 1:
        raise BadRequest("Bootstrap-Discover addresses / or an object")
    oids = store.object_ids() if path.is_root else (path.ids[0],)
    if not path.is_root:
        store.object_template(path.ids[0])  # 4.04 when absent
    links = [Link("/", (("lwm2m", version),))]
    for oid in oids:
        obj = store.object_template(oid)
        iids = store.instance_ids(oid)
        if obj.version != "1.0":
            links.append(Link(f"/{oid}", (("ver", obj.version),)))
        elif not iids:
            links.append(Link(f"/{oid}"))
        for iid in iids:
            params: list[tuple[str, str | None]] = []
            if oid == SECURITY:
                account = security_account(store, iid)
                if _value(store, (SECURITY, iid, 1)) is not True and account.short_server_id:
                    params.append(("ssid", str(account.short_server_id)))
                if account.uri:
                    params.append(("uri", account.uri))
            elif oid == SERVER:
                ssid = _value(store, (SERVER, iid, 0))
                if isinstance(ssid, int):
                    params.append(("ssid", str(ssid)))
            links.append(Link(f"/{oid}/{iid}", tuple(params)))
    payload = format_links(links).encode()
    return Message(code=Code.CONTENT, content_format=ContentFormat.LINK, payload=payload)


def _read(store: ObjectStore, message: Message, path: Path, version: str, now: float) -> Message:
    """Bootstrap-Read (LwM2M 1.1), answered in 1.0 mode too, as Anjay does."""
    if path.is_root or path.ids[0] not in (SERVER, ACL):
        raise MethodNotAllowed("Bootstrap-Read reads the Server and ACL objects only")
    node = store.read(path, now)
    accept = message.opt.accept
    cf = int(ContentFormat.TLV) if accept is None else canonical(int(accept))
    try:
        payload = encode(cf, node, path, store.model)
    except CodecError as exc:
        raise NotAcceptable(str(exc)) from None
    reply = int(accept) if accept is not None else cf
    return Message(code=Code.CONTENT, content_format=reply, payload=payload)


def _delete_instances(store: ObjectStore, oid: int, now: float) -> None:
    keep = set(bootstrap_iids(store)) if oid == SECURITY else set()
    for iid in store.instance_ids(oid):
        if iid not in keep:
            store.delete_instance(oid, iid, now)


def _delete(store: ObjectStore, path: Path, now: float) -> Message:
    if path.level > 2:
        raise BadRequest("Bootstrap-Delete addresses /, an object or an instance")
    if path.is_root:
        for oid in ACCOUNT_OBJECTS:
            if oid in store.template.objects:
                _delete_instances(store, oid, now)
        return Message(code=Code.DELETED)
    oid = path.ids[0]
    store.object_template(oid)
    if oid not in ACCOUNT_OBJECTS:
        raise BadRequest(f"instances of object {oid} are the device's own")
    if path.is_object:
        _delete_instances(store, oid, now)
        return Message(code=Code.DELETED)
    iid = path.ids[1]
    if oid == SECURITY and iid in bootstrap_iids(store):
        raise BadRequest("the bootstrap account cannot be deleted")
    if not store.has_instance(oid, iid):
        raise NotFound(f"{path} does not exist")
    store.delete_instance(oid, iid, now)
    return Message(code=Code.DELETED)


def _instance_template(store: ObjectStore, oid: int, iid: int) -> InstanceTemplate:
    if oid == SERVER:
        return SERVER_INSTANCE
    obj = store.object_template(oid)
    return obj.instances.get(iid) or obj.new_instance or EMPTY_INSTANCE


def _values(resources: Mapping[int, SingleResource | MultipleResource]) -> dict[int, object]:
    values: dict[int, object] = {}
    for rid, resource in resources.items():
        if isinstance(resource, MultipleResource):
            values[rid] = {riid: v.value for riid, v in resource.instances.items()}
        else:
            values[rid] = resource.value.value
    return values


def put_instance(
    store: ObjectStore, oid: int, iid: int, values: Mapping[int, object], now: float
) -> None:
    """Create ``/oid/iid`` with ``values``, replacing an existing instance."""
    store.object_template(oid)
    if store.has_instance(oid, iid):
        store.delete_instance(oid, iid, now)
    store.create_instance(oid, iid, values, template=_instance_template(store, oid, iid), now=now)


def _write(
    store: ObjectStore, message: Message, path: Path, writable: frozenset[int], now: float
) -> Message:
    if path.is_root:
        raise MethodNotAllowed("Bootstrap-Write on /")
    cf_option = message.opt.content_format
    if cf_option is None:
        raise BadRequest("the Bootstrap-Write has no Content-Format")
    if int(cf_option) not in writable:
        raise UnsupportedContentFormat(f"content format {int(cf_option)} is not supported")
    try:
        node = decode(canonical(int(cf_option)), message.payload, path, store.model)
    except CodecError as exc:
        raise BadRequest(str(exc)) from None
    oid = path.ids[0]
    store.object_template(oid)
    if isinstance(node, LwM2MObject):
        for instance in node.instances.values():
            put_instance(store, oid, instance.id, _values(instance.resources), now)
    elif isinstance(node, ObjectInstance):
        put_instance(store, oid, node.id, _values(node.resources), now)
    elif isinstance(node, SingleResource | MultipleResource | ResourceInstance):
        if not store.has_instance(oid, path.ids[1]):
            raise NotFound(f"/{oid}/{path.ids[1]} does not exist")
        value: object = (
            node.value.value
            if not isinstance(node, MultipleResource)
            else {riid: v.value for riid, v in node.instances.items()}
        )
        try:
            store.set(path, value, now)
        except NotFound:
            current: dict[int, object] = {
                rid: store.stored((oid, path.ids[1], rid), now)
                for rid in store.resource_ids(oid, path.ids[1])
            }
            current[path.ids[2]] = value
            put_instance(store, oid, path.ids[1], current, now)
    else:
        raise BadRequest(f"the payload does not fit {path}")
    return Message(code=Code.CHANGED)


def handle_bootstrap(
    store: ObjectStore, message: Message, version: str, writable: frozenset[int], now: float
) -> Message:
    """Answer one request of the bootstrap server other than Bootstrap-Finish."""
    try:
        path = _path(message)
        code = message.code
        if code == Code.GET:
            accept = message.opt.accept
            if accept is not None and int(accept) == ContentFormat.LINK:
                return _discover(store, path, version)
            return _read(store, message, path, version, now)
        if code == Code.DELETE:
            return _delete(store, path, now)
        if code == Code.PUT:
            return _write(store, message, path, writable, now)
        raise MethodNotAllowed(f"{message.code} is not a bootstrap operation")
    except DeviceError as exc:
        return Message(code=exc.code, payload=str(exc).encode())


def apply_pack(store: ObjectStore, payload: bytes, now: float) -> None:
    """Apply a Bootstrap-Pack: the account objects are replaced by the pack's instances."""
    try:
        nodes: dict[Path, Node] = decode_nodes(ContentFormat.SENML_CBOR, payload, store.model)
    except CodecError as exc:
        raise BadRequest(f"the Bootstrap-Pack is not SenML-CBOR: {exc}") from None
    instances: dict[tuple[int, int], dict[int, object]] = {}
    for path, node in nodes.items():
        if path.level < 3 or not isinstance(node, SingleResource | MultipleResource):
            raise BadRequest(f"unexpected entry {path} in the Bootstrap-Pack")
        oid, iid, rid = path.ids[:3]
        store.object_template(oid)
        values = instances.setdefault((oid, iid), {})
        values[rid] = (
            {riid: v.value for riid, v in node.instances.items()}
            if isinstance(node, MultipleResource)
            else node.value.value
        )
    for oid in ACCOUNT_OBJECTS:
        if oid in store.template.objects and any(k[0] == oid for k in instances):
            _delete_instances(store, oid, now)
    for (oid, iid), values in sorted(instances.items()):
        put_instance(store, oid, iid, values, now)


# -- the client state machine ---------------------------------------------------------------------


class Phase(IntEnum):
    IDLE = 0
    REQUESTING_PACK = 1
    REQUESTING = 2
    WAITING_FINISH = 3
    FINISHED = 4
    FAILED = 5


_INF = float("inf")
_PCT: dict[str, int] = {"wakaama": ContentFormat.SENML_JSON}


def _code(message: Message) -> str:
    return f"{message.code >> 5}.{message.code & 31:02d}"


class BootstrapClient:
    """Client-initiated bootstrap on ``coap``, towards the bootstrap server ``server``."""

    def __init__(
        self,
        store: ObjectStore,
        coap: CoapEndpoint,
        server: Hashable,
        *,
        config: ClientConfig,
        emit: Callable[[ClientEvent], None],
    ) -> None:
        self.store = store
        self.coap = coap
        self.server = server
        self.config = config
        self._emit = emit
        self.phase = Phase.IDLE
        self.version = config.lwm2m_version
        self.attempts = 0
        self._request: RequestHandle | None = None
        self._deadline = _INF
        self._retry_at = _INF

    @property
    def active(self) -> bool:
        return self.phase in (Phase.REQUESTING_PACK, Phase.REQUESTING, Phase.WAITING_FINISH)

    def owns(self, event: Event) -> bool:
        """Whether ``event`` is this client's: the bootstrap server's requests while a
        bootstrap runs (afterwards the same peer may be the DM server), and the answers to
        its own request."""
        if isinstance(event, RequestReceived):
            return self.active and event.peer == self.server
        if isinstance(event, ResponseReceived | RequestFailed):
            return event.request is self._request
        return False

    def start(self, now: float) -> None:
        """Start (or restart) client-initiated bootstrap."""
        self.attempts += 1
        self._retry_at = _INF
        self._cancel(now)
        pack = self.config.bootstrap_pack and self.version == "1.2"
        self._emit(BootstrapStarted(pack))
        if pack:
            self.phase = Phase.REQUESTING_PACK
            message = Message(
                code=Code.GET, uri_path=("bspack",), uri_query=(f"ep={self.store.endpoint}",)
            )
            message.opt.accept = ContentFormat.SENML_CBOR
        else:
            self._request_bs(now)
            return
        self._request = self.coap.send_request(self.server, message, now)
        self._deadline = now + self.config.bootstrap_timeout

    def _request_bs(self, now: float) -> None:
        self.phase = Phase.REQUESTING
        query = [f"ep={self.store.endpoint}"]
        if self.version != "1.0":
            pct = self.config.bootstrap_pct or _PCT.get(
                self.config.formats.name, ContentFormat.SENML_CBOR
            )
            query.append(f"pct={pct}")
        message = Message(code=Code.POST, uri_path=("bs",), uri_query=tuple(query))
        self._request = self.coap.send_request(self.server, message, now)
        self._deadline = now + self.config.bootstrap_timeout

    def _cancel(self, now: float) -> None:
        if self._request is not None:
            self.coap.cancel_request(self._request, now)
            self._request = None

    def get_timer(self) -> float | None:
        due = min(self._retry_at, self._deadline if self.active else _INF)
        return None if due == _INF else due

    def handle_timer(self, now: float) -> None:
        if self.active and self._deadline <= now:
            self._failed(None, "no Bootstrap-Finish in time", now)
        elif self.phase is Phase.FAILED and self._retry_at <= now:
            self.start(now)

    def handle_coap_event(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event.request, event.message, now)
        elif isinstance(event, ResponseReceived) and event.request is self._request:
            self._request = None
            self._on_response(event.message, now)
        elif isinstance(event, RequestFailed) and event.request is self._request:
            self._request = None
            self._failed(None, f"{event.reason.value}: {event.detail}", now)

    def _on_response(self, message: Message, now: float) -> None:
        if self.phase is Phase.REQUESTING_PACK:
            if message.code == Code.CONTENT:
                try:
                    apply_pack(self.store, message.payload, now)
                except DeviceError as exc:
                    self._failed(_code(message), str(exc), now)
                    return
                self._finished(now, pack=True)
            else:
                self._request_bs(now)
        elif self.phase is Phase.REQUESTING:
            if message.code == Code.CHANGED:
                self.phase = Phase.WAITING_FINISH
            else:
                self._failed(_code(message), "Bootstrap-Request refused", now)

    def _on_request(self, incoming: IncomingRequest, message: Message, now: float) -> None:
        if not self.active:
            self.coap.respond(incoming, Message(code=Code.UNAUTHORIZED), now)
            return
        self._deadline = now + self.config.bootstrap_timeout
        if message.code == Code.POST and tuple(message.opt.uri_path) == ("bs",):
            problem = check_configuration(self.store)
            if problem is not None:
                self.coap.respond(
                    incoming, Message(code=Code.NOT_ACCEPTABLE, payload=problem.encode()), now
                )
                self._failed("4.06", f"inconsistent configuration: {problem}", now)
                return
            self.coap.respond(incoming, Message(code=Code.CHANGED), now)
            self._finished(now, pack=False)
            return
        if self.phase is Phase.REQUESTING:
            self.phase = Phase.WAITING_FINISH  # the server's first request overtook the 2.04
        response = handle_bootstrap(
            self.store, message, self.version, self.config.formats.writable, now
        )
        self.coap.respond(incoming, response, now)

    def _finished(self, now: float, *, pack: bool) -> None:
        self.phase = Phase.FINISHED
        self._deadline = _INF
        account = dm_account(self.store)
        self._emit(BootstrapFinished(() if account is None else (account.uri,), pack))

    def _failed(self, code: str | None, reason: str, now: float) -> None:
        self._cancel(now)
        self.phase = Phase.FAILED
        self._deadline = _INF
        limit = self.config.bootstrap_attempts
        if limit and self.attempts >= limit:
            self._retry_at = _INF
            self._emit(BootstrapFailed(code, reason, None))
            return
        self._retry_at = now + self.config.bootstrap_retry_delay
        self._emit(BootstrapFailed(code, reason, self._retry_at))


__all__ = [
    "ACCOUNT_OBJECTS",
    "BootstrapClient",
    "Phase",
    "ServerCredentials",
    "apply_pack",
    "bootstrap_account",
    "bootstrap_iids",
    "bootstrap_on_failure",
    "bootstrap_request_trigger",
    "bootstrap_template",
    "check_configuration",
    "dm_account",
    "handle_bootstrap",
    "has_bootstrap_account",
    "put_instance",
    "security_account",
]
