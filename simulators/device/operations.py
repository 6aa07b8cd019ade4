"""Answering the DM server: one CoAP request in, one response (plus what happened) out.

The method, the path depth and a few options select the LwM2M operation (TS Core 1.1 §6.3,
§6.4, and the 1.1 CoAP mapping):

=========================  ==========================================================
GET, Accept 40             Discover
GET (Observe 0 / 1)        Read (Observe registers / the core already deregistered)
FETCH (Observe 0)          Read-Composite (Observe-Composite)
PUT, Uri-Query, no body    Write-Attributes
PUT                        Write (replace) on an instance, resource, resource instance
POST /O                    Create
POST /O/I                  Write (partial update)
POST /O/I/R                Execute; on a writable multiple resource, partial update
DELETE /O/I                Delete
iPATCH                     Write-Composite
=========================  ==========================================================

Every refusal is a :class:`~simulators.device.errors.DeviceError` raised where it is found
and turned into its response code in :func:`handle` — the one place codes are rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.codec import (
    CodecError,
    ContentFormat,
    DecodeError,
    canonical,
    decode,
    decode_nodes,
    decode_paths,
)
from lwm2m.codec import UnsupportedContentFormat as CodecUnsupported
from lwm2m.codec.link import (
    Attributes,
    Link,
    LinkFormatError,
    format_links,
    parse_write_attributes,
)
from lwm2m.codec.tlv import TlvCodec
from lwm2m.model import (
    ROOT,
    InvalidPath,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    Path,
    Resource,
    ResourceInstance,
    SingleResource,
)
from simulators.device.content import (
    check_dm_access,
    composite_nodes,
    encode_composite,
    encode_node,
    read_format,
)
from simulators.device.errors import (
    BadRequest,
    DeviceError,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    UnsupportedContentFormat,
)
from simulators.device.events import (
    AttributesWritten,
    ClientEvent,
    Created,
    Deleted,
    Executed,
    Written,
)
from simulators.device.execute import parse_arguments
from simulators.device.formats import FormatProfile
from simulators.device.observe import AttributeStore, Content
from simulators.device.template import DeviceActions

_TLV = TlvCodec()


class DmContext(DeviceActions, Protocol):
    """What the operations need from the client besides the store."""

    @property
    def profile(self) -> FormatProfile: ...

    @property
    def lwm2m_version(self) -> str: ...

    @property
    def attributes(self) -> AttributeStore: ...


@dataclass(frozen=True, slots=True)
class ObserveSpec:
    """What the client records when the response registers an observation."""

    paths: tuple[Path, ...]
    content_format: int
    reply_format: int
    composite: bool
    content: Content
    extra: Attributes | None


@dataclass(slots=True)
class Outcome:
    """The response to send, the events to report once it is sent, and an observation to
    record if the CoAP core accepts one."""

    response: Message
    events: list[ClientEvent] = field(default_factory=list)
    observe: ObserveSpec | None = None


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


def _content(code: Code, content_format: int, payload: bytes) -> Message:
    return Message(code=code, content_format=content_format, payload=payload)


def handle(ctx: DmContext, message: Message, now: float) -> Outcome:
    """Answer one DM request (never raises for anything the request contains)."""
    try:
        return _dispatch(ctx, message, now)
    except DeviceError as exc:
        return Outcome(Message(code=exc.code))


def _dispatch(ctx: DmContext, message: Message, now: float) -> Outcome:
    path = _path(message)
    check_dm_access(path)
    code = message.code
    if code == Code.GET:
        accept = message.opt.accept
        if accept is not None and int(accept) == ContentFormat.LINK:
            return _discover(ctx, path)
        return _read(ctx, message, path, now)
    if code == Code.FETCH:
        return _read_composite(ctx, message, now)
    if code == Code.PUT:
        if not message.payload and message.opt.content_format is None and message.opt.uri_query:
            return _write_attributes(ctx, message, path)
        return _write(ctx, message, path, now, replace=True)
    if code == Code.POST:
        if path.is_object:
            return _create(ctx, message, path, now)
        if path.is_resource:
            oid, iid, rid = path.ids
            definition = ctx.store.resource_definition(oid, rid)
            if definition.operations.executable:
                return _execute(ctx, message, path, now)
            if not definition.multiple or not definition.operations.writable:
                ctx.store.executable(oid, iid, rid)  # 4.04 if absent, else 4.05
        if path.is_object_instance or path.is_resource:
            return _write(ctx, message, path, now, replace=False)
        raise MethodNotAllowed(f"POST {path}")
    if code == Code.DELETE:
        if not path.is_object_instance:
            raise MethodNotAllowed(f"Delete on {path}")
        ctx.store.delete(path.ids[0], path.ids[1], now)
        return Outcome(Message(code=Code.DELETED), [Deleted(path)])
    if code == Code.iPATCH:
        return _write_composite(ctx, message, now)
    raise MethodNotAllowed(f"method {message.code} is not an LwM2M DM operation")


# -- Read, Observe, Discover ------------------------------------------------------------------
def _query_attributes(message: Message) -> Attributes | None:
    """LwM2M 1.2 lets an Observe carry notification attributes in its query."""
    query = message.opt.uri_query
    if not query:
        return None
    try:
        return parse_write_attributes(list(query)).set
    except LinkFormatError as exc:
        raise BadRequest(str(exc)) from None


def _read(ctx: DmContext, message: Message, path: Path, now: float) -> Outcome:
    if path.is_root:
        raise MethodNotAllowed("Read on / is a Bootstrap operation")
    node = ctx.store.read(path, now)
    accept = None if message.opt.accept is None else int(message.opt.accept)
    observe = message.opt.observe is not None
    cf, reply = read_format(ctx.profile, node, accept, ctx.lwm2m_version, observe=observe)
    payload = encode_node(ctx.store, node, path, cf)
    outcome = Outcome(_content(Code.CONTENT, reply, payload))
    if message.opt.observe == 0:
        extra = _query_attributes(message)
        outcome.observe = ObserveSpec((path,), cf, reply, False, node, extra)
    return outcome


def _attribute_params(ctx: DmContext, ids: tuple[int, ...]) -> tuple[tuple[str, str | None], ...]:
    attrs = ctx.attributes.get(ids)
    return () if attrs is None else attrs.to_params()


def _resource_links(ctx: DmContext, oid: int, iid: int, rid: int, deep: bool) -> list[Link]:
    store = ctx.store
    definition = store.resource_definition(oid, rid)
    params: list[tuple[str, str | None]] = []
    instances: tuple[int, ...] = ()
    if definition.multiple:
        node = store.resource_node(oid, iid, rid, 0.0)
        assert isinstance(node, MultipleResource)
        instances = tuple(node.instances)
        params.append(("dim", str(len(instances))))
    params.extend(_attribute_params(ctx, (oid, iid, rid)))
    links = [Link(f"/{oid}/{iid}/{rid}", tuple(params))]
    if deep and ctx.lwm2m_version != "1.0":
        for riid in instances:
            links.append(
                Link(f"/{oid}/{iid}/{rid}/{riid}", _attribute_params(ctx, (oid, iid, rid, riid)))
            )
    return links


def _instance_links(ctx: DmContext, oid: int, iid: int) -> list[Link]:
    links = [Link(f"/{oid}/{iid}", _attribute_params(ctx, (oid, iid)))]
    for rid in ctx.store.resource_ids(oid, iid):
        links.extend(_resource_links(ctx, oid, iid, rid, deep=False))
    return links


def _discover(ctx: DmContext, path: Path) -> Outcome:
    store = ctx.store
    if path.is_root or path.is_resource_instance:
        raise MethodNotAllowed(f"Discover on {path}")
    store.node(path, 0.0, readable_only=False)  # 4.04 when absent
    oid = path.ids[0]
    if path.is_object:
        version = store.object_template(oid).version
        params = (("ver", version),) if version != "1.0" else ()
        links = [Link(f"/{oid}", params + _attribute_params(ctx, (oid,)))]
        for iid in store.instance_ids(oid):
            links.extend(_instance_links(ctx, oid, iid))
    elif path.is_object_instance:
        links = _instance_links(ctx, oid, path.ids[1])
    else:
        links = _resource_links(ctx, oid, path.ids[1], path.ids[2], deep=True)
    payload = format_links(links).encode()
    return Outcome(_content(Code.CONTENT, ContentFormat.LINK, payload))


# -- Write, Write-Attributes, Create, Delete, Execute -----------------------------------------
def _request_format(ctx: DmContext, message: Message, allowed: frozenset[int]) -> int:
    cf = message.opt.content_format
    if cf is None:
        raise BadRequest("the request payload has no Content-Format")
    if int(cf) not in allowed:
        raise UnsupportedContentFormat(f"content format {int(cf)} is not supported")
    return canonical(int(cf))


def _decode(ctx: DmContext, cf: int, payload: bytes, path: Path) -> Node:
    try:
        return decode(cf, payload, path, ctx.store.model)
    except CodecUnsupported as exc:
        raise UnsupportedContentFormat(str(exc)) from None
    except CodecError as exc:
        raise BadRequest(str(exc)) from None


def _write(ctx: DmContext, message: Message, path: Path, now: float, *, replace: bool) -> Outcome:
    store = ctx.store
    if path.level < 2:
        raise MethodNotAllowed(f"Write on {path}")
    oid, iid = path.ids[0], path.ids[1]
    if not store.has_instance(oid, iid):
        raise NotFound(f"/{oid}/{iid} does not exist")
    if path.level >= 3:
        store.check_writable(oid, iid, path.ids[2])
    cf = _request_format(ctx, message, ctx.profile.writable)
    node = _decode(ctx, cf, message.payload, path)
    if isinstance(node, ObjectInstance):
        _guard(ctx, [path.child(rid) for rid in node.resources], now)
    else:
        _guard(ctx, [path], now)
    if isinstance(node, ObjectInstance):
        written = store.write_instance(oid, iid, node.resources.values(), now, replace=replace)
        paths = tuple(path.child(rid) for rid in written)
    elif isinstance(node, SingleResource | MultipleResource) and path.is_resource:
        if replace:
            store.write_resource(oid, iid, node, now)
        else:
            store.write_instance(oid, iid, [node], now, replace=False)
        paths = (path,)
    elif isinstance(node, ResourceInstance) and path.is_resource_instance:
        store.write_resource_instance(oid, iid, path.ids[2], node, now)
        paths = (path,)
    else:
        raise BadRequest(f"the payload does not fit {path}")
    _after_write(ctx, paths, now)
    return Outcome(Message(code=Code.CHANGED), [Written(paths)])


def _guard(ctx: DmContext, paths: list[Path], now: float) -> None:
    for path in paths:
        guard = ctx.store.object_template(path.ids[0]).write_guard
        if guard is not None:
            guard(ctx, Path(path.ids[:3]), now)


def _after_write(ctx: DmContext, paths: tuple[Path, ...], now: float) -> None:
    for path in paths:
        hook = ctx.store.object_template(path.ids[0]).on_write.get(path.ids[2])
        if hook is not None:
            hook(ctx, Path(path.ids[:3]), now)


def _write_attributes(ctx: DmContext, message: Message, path: Path) -> Outcome:
    query = tuple(message.opt.uri_query)
    try:
        update = parse_write_attributes(list(query))
    except LinkFormatError as exc:
        raise BadRequest(str(exc)) from None
    if path.is_root:
        raise MethodNotAllowed("Write-Attributes on /")
    ctx.store.node(path, 0.0, readable_only=False)  # 4.04 when absent
    definition = (
        ctx.store.resource_definition(path.ids[0], path.ids[2]) if path.level >= 3 else None
    )
    ctx.attributes.write(path, update, definition)
    return Outcome(Message(code=Code.CHANGED), [AttributesWritten(path, query)])


def _create(ctx: DmContext, message: Message, path: Path, now: float) -> Outcome:
    store = ctx.store
    oid = path.ids[0]
    obj = store.object_template(oid)
    if obj.new_instance is None:
        raise MethodNotAllowed(f"object {oid} does not allow Create")
    requested: list[tuple[int | None, tuple[Resource, ...]]]
    if not message.payload:
        requested = [(None, ())]
    else:
        cf = _request_format(ctx, message, ctx.profile.writable)
        if cf == ContentFormat.TLV:
            try:
                news = _TLV.decode_create(message.payload, path, store.model)
            except CodecError as exc:
                raise BadRequest(str(exc)) from None
            requested = [(n.id, n.resources) for n in news]
        else:
            node = _decode(ctx, cf, message.payload, path)
            assert isinstance(node, LwM2MObject)
            requested = [(i.id, tuple(i.resources.values())) for i in node.instances.values()]
    if not requested:
        raise BadRequest("the Create payload holds no instance")
    created = [store.create(oid, iid, resources, now) for iid, resources in requested]
    response = Message(code=Code.CREATED)
    response.opt.location_path = (str(oid), str(created[0]))
    return Outcome(response, [Created(path.child(iid)) for iid in created])


def _execute(ctx: DmContext, message: Message, path: Path, now: float) -> Outcome:
    oid, iid, rid = path.ids
    ctx.store.executable(oid, iid, rid)
    cf = message.opt.content_format
    if cf is not None and int(cf) != ContentFormat.TEXT:
        raise UnsupportedContentFormat("execute arguments are text/plain")
    args = parse_arguments(message.payload)
    handler = ctx.store.object_template(oid).handlers.get(rid)
    if handler is not None:
        handler(ctx, path, args, now)
    return Outcome(Message(code=Code.CHANGED), [Executed(path, args)])


# -- composite ---------------------------------------------------------------------------------
def _read_composite(ctx: DmContext, message: Message, now: float) -> Outcome:
    profile = ctx.profile
    cf = _request_format(ctx, message, profile.composite)
    try:
        paths = decode_paths(cf, message.payload)
    except CodecUnsupported as exc:
        raise UnsupportedContentFormat(str(exc)) from None
    except (DecodeError, CodecError) as exc:
        raise BadRequest(str(exc)) from None
    if not paths:
        raise BadRequest("Read-Composite names no path")
    accept = message.opt.accept
    reply = int(cf) if accept is None else int(accept)
    if reply not in profile.composite or reply not in profile.readable:
        raise NotAcceptable(f"content format {reply} cannot carry a composite read")
    nodes = composite_nodes(ctx.store, paths, now)
    payload = encode_composite(ctx.store, nodes, canonical(reply))
    outcome = Outcome(_content(Code.CONTENT, reply, payload))
    if message.opt.observe == 0:
        extra = _query_attributes(message)
        outcome.observe = ObserveSpec(tuple(paths), canonical(reply), reply, True, nodes, extra)
    return outcome


def _write_composite(ctx: DmContext, message: Message, now: float) -> Outcome:
    cf = _request_format(ctx, message, ctx.profile.composite)
    try:
        nodes: Mapping[Path, Node] = decode_nodes(cf, message.payload, ctx.store.model)
    except CodecUnsupported as exc:
        raise UnsupportedContentFormat(str(exc)) from None
    except CodecError as exc:
        raise BadRequest(str(exc)) from None
    if not nodes:
        raise BadRequest("Write-Composite carries no value")
    for path in nodes:
        check_dm_access(path)
    _guard(ctx, list(nodes), now)
    written = ctx.store.write_composite(nodes, now)
    _after_write(ctx, tuple(written), now)
    return Outcome(Message(code=Code.CHANGED), [Written(tuple(written))])


__all__ = ["DmContext", "ObserveSpec", "Outcome", "handle"]
