"""The DM and information-reporting operations, pure: build the CoAP request, read the answer.

One small frozen class per operation (Leshan's shape): constructed from what the caller
asked, it gives :meth:`Operation.request` (a :class:`RequestSpec`, turned into a CoAP message
under the client's alternate root path) and :meth:`Operation.interpret` (the device's
:class:`Response` → a typed result). :meth:`Operation.failed` builds the same result type for
outcomes without an answer (timeout, queue expiry, ...), so ``read`` always returns a
:class:`ReadResult`. No I/O, no clock: the runtime (:mod:`lwm2m.server.server`) only moves
these across the network, and the tests drive them with bytes.

Operations also serialise to and from the store's queued-request rows
(:meth:`Operation.to_queued` / :func:`from_queued`), so a request for a sleeping device
survives a server restart and is still sent when the device wakes up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap.messages import CONTENT_FORMAT as CONTENT_FORMAT_OPTION
from lwm2m.coap.messages import LOCATION_PATH, option_int, option_strings
from lwm2m.codec import (
    CodecError,
    TimestampedNodes,
    canonical,
    decode,
    decode_nodes,
    encode,
    encode_nodes,
    encode_paths,
    multi_codec_for,
)
from lwm2m.codec.formats import ContentFormat
from lwm2m.codec.link import CONTENT_FORMAT as LINK_FORMAT
from lwm2m.codec.link import Link, parse_links
from lwm2m.codec.multi_codec import LeafCodec
from lwm2m.codec.registry import MULTI_NODE_FORMATS
from lwm2m.codec.tlv import NewInstance, TlvCodec
from lwm2m.model import (
    LwM2MObject,
    ModelError,
    Node,
    ObjectInstance,
    ObjectModel,
    Path,
    Resource,
)
from lwm2m.server.registration import code_text
from lwm2m.server.results import (
    CompositeReadResult,
    CreateResult,
    DiscoverResult,
    ObserveResult,
    OperationResult,
    OperationStatus,
    ReadResult,
)
from lwm2m.store import NewQueuedRequest, QueuedRequest

_TLV = TlvCodec()
_MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """Everything needed to build the CoAP request, independent of token, MID and peer."""

    method: int
    path: Path
    query: tuple[str, ...] = ()
    content_format: int | None = None
    accept: int | None = None
    payload: bytes = b""
    observe: int | None = None

    def to_message(self, root: tuple[str, ...] = ()) -> Message:
        """The request, addressed under the client's alternate root path (``/lwm2m``...)."""
        message = Message(code=Code(self.method), payload=self.payload)
        segments = root + tuple(str(i) for i in self.path.ids)
        if segments:
            message.opt.uri_path = segments
        if self.query:
            message.opt.uri_query = self.query
        if self.content_format is not None:
            message.opt.content_format = self.content_format
        if self.accept is not None:
            message.opt.accept = self.accept
        if self.observe is not None:
            message.opt.observe = self.observe
        return message


@dataclass(frozen=True, slots=True)
class Response:
    """What the device answered, reduced to what operations need."""

    code: int
    content_format: int | None = None
    payload: bytes = b""
    location_path: tuple[str, ...] = ()

    @classmethod
    def from_message(cls, message: Message) -> Response:
        # Options read from aiocoap's map directly and the fields passed by position: this
        # runs for every notification and every response (issue 13).
        return cls(
            int(message.code),
            option_int(message, CONTENT_FORMAT_OPTION),
            bytes(message.payload),
            option_strings(message, LOCATION_PATH),
        )

    @property
    def success(self) -> bool:
        return 64 <= self.code < 96

    @property
    def code_text(self) -> str:
        return code_text(self.code)

    def reason(self) -> str:
        """The diagnostic payload of an error response, else the code's name."""
        if not self.success and self.payload:
            text = self.payload[:_MAX_REASON].decode("utf-8", "replace")
            if text.isprintable():
                return text
        try:
            return str(Code(self.code).name_printable)
        except ValueError:  # pragma: no cover - aiocoap knows every 8-bit code
            return self.code_text


def _as_path(path: Path | str) -> Path:
    return path if isinstance(path, Path) else Path.parse(path)


class Operation:
    """Base of every operation. Subclasses set ``name`` and ``result_type``."""

    name: ClassVar[str]
    result_type: ClassVar[type[OperationResult]] = OperationResult

    def request(self) -> RequestSpec:
        raise NotImplementedError

    @property
    def paths(self) -> tuple[Path, ...]:
        raise NotImplementedError

    def interpret(self, response: Response, model: ObjectModel) -> OperationResult:
        """Default: any 2.xx is success, anything else a device error."""
        if not response.success:
            return self.device_error(response)
        return self.result_type(OperationStatus.SUCCESS, response.code_text, "")

    def device_error(self, response: Response) -> OperationResult:
        return self.result_type(OperationStatus.DEVICE_ERROR, response.code_text, response.reason())

    def bad_response(self, response: Response, why: str) -> OperationResult:
        return self.result_type(OperationStatus.BAD_RESPONSE, response.code_text, why)

    def failed(self, status: OperationStatus, reason: str, **extra: Any) -> OperationResult:
        """A result of this operation's type for an outcome without a (usable) answer."""
        return self.result_type(status, None, reason, **extra)

    def to_queued(self, endpoint: str, deadline: float | None) -> NewQueuedRequest:
        """The store row that lets the request wait for a sleeping device."""
        spec = self.request()
        # what the answer is asked in; for requests without one, the body's format
        fmt = spec.accept if spec.accept is not None else spec.content_format
        return NewQueuedRequest(
            endpoint=endpoint,
            operation=self.name,
            paths=self.paths,
            content_format=fmt,
            payload=self._queued_payload(spec),
            deadline=deadline,
        )

    def _queued_payload(self, spec: RequestSpec) -> bytes | None:
        return spec.payload or None


def _decode_error(exc: Exception) -> str:
    return f"undecodable answer: {exc}"


def _response_format(response: Response, fallback: int | None, path: Path) -> int:
    """The Content-Format to decode with: the response's, else what we asked, else the
    LwM2M default (text for one value, TLV for several)."""
    if response.content_format is not None:
        return response.content_format
    if fallback is not None:
        return fallback
    if path.is_resource or path.is_resource_instance:
        return int(ContentFormat.TEXT)
    return int(ContentFormat.TLV)


def paths_format(content_format: int) -> int:
    """The format of a Read-/Observe-Composite request body (a list of paths) for answers in
    ``content_format``: the SenML flavour of the same encoding. Clients parse path lists in
    SenML (TS 1.1 §5.4.4), also when asked to answer in LwM2M CBOR or JSON."""
    fmt = canonical(content_format)
    if fmt in (ContentFormat.SENML_JSON, ContentFormat.LWM2M_JSON):
        return int(ContentFormat.SENML_JSON)
    return int(ContentFormat.SENML_CBOR)


def decode_content(
    response: Response,
    paths: Sequence[Path],
    model: ObjectModel,
    *,
    composite: bool,
    accept: int | None,
) -> tuple[dict[Path, Node], int]:
    """Decode a Read/Observe answer or a notification into ``{requested path: node}``.

    Raises :class:`CodecError` / :class:`ModelError` for a payload that does not decode.
    """
    if composite:
        fmt = response.content_format if response.content_format is not None else accept
        if fmt is None:
            fmt = int(ContentFormat.SENML_CBOR)
        return decode_nodes(fmt, response.payload, model, list(paths)), fmt
    path = paths[0]
    fmt = _response_format(response, accept, path)
    return {path: decode(fmt, response.payload, path, model)}, fmt


def decode_report(
    content_format: int, payload: bytes, model: ObjectModel, now: float
) -> list[TimestampedNodes]:
    """Timestamped groups of a Send or a multi-format notification (relative SenML times
    resolved against ``now``, a Unix time)."""
    codec = multi_codec_for(content_format)
    if isinstance(codec, LeafCodec):
        return codec.decode_timestamped(payload, model, now=now)
    return codec.decode_timestamped(payload, model)  # pragma: no cover - all are LeafCodecs


# -- Read / Observe / Discover --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Read(Operation):
    path: Path
    accept: int | None = None

    name: ClassVar[str] = "read"
    result_type: ClassVar[type[OperationResult]] = ReadResult

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def request(self) -> RequestSpec:
        return RequestSpec(int(Code.GET), self.path, accept=self.accept)

    def interpret(self, response: Response, model: ObjectModel) -> OperationResult:
        if not response.success:
            return self.device_error(response)
        try:
            content, fmt = decode_content(
                response, (self.path,), model, composite=False, accept=self.accept
            )
        except (CodecError, ModelError) as exc:
            return self.bad_response(response, _decode_error(exc))
        return ReadResult(
            OperationStatus.SUCCESS,
            response.code_text,
            content=content[self.path],
            content_format=fmt,
        )


@dataclass(frozen=True, slots=True)
class Observe(Operation):
    """Observe (GET Observe=0); the runtime fills in ``observation_id`` when accepted."""

    path: Path
    accept: int | None = None

    name: ClassVar[str] = "observe"
    result_type: ClassVar[type[OperationResult]] = ObserveResult

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    @property
    def composite(self) -> bool:
        return False

    def request(self) -> RequestSpec:
        return RequestSpec(int(Code.GET), self.path, accept=self.accept, observe=0)

    def interpret(self, response: Response, model: ObjectModel) -> OperationResult:
        return _observe_result(self, response, model, self.accept)


@dataclass(frozen=True, slots=True)
class ObserveComposite(Operation):
    """Observe-Composite (FETCH Observe=0 with the paths in a SenML body)."""

    targets: tuple[Path, ...]
    content_format: int

    name: ClassVar[str] = "observe-composite"
    result_type: ClassVar[type[OperationResult]] = ObserveResult

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.targets

    @property
    def composite(self) -> bool:
        return True

    def request(self) -> RequestSpec:
        return RequestSpec(
            int(Code.FETCH),
            Path(()),
            content_format=paths_format(self.content_format),
            accept=self.content_format,
            payload=encode_paths(paths_format(self.content_format), list(self.targets)),
            observe=0,
        )

    def interpret(self, response: Response, model: ObjectModel) -> OperationResult:
        return _observe_result(self, response, model, self.content_format)


def _observe_result(
    op: Observe | ObserveComposite, response: Response, model: ObjectModel, accept: int | None
) -> OperationResult:
    if not response.success:
        return op.device_error(response)
    try:
        content, fmt = decode_content(
            response, op.paths, model, composite=op.composite, accept=accept
        )
    except (CodecError, ModelError) as exc:
        return op.bad_response(response, _decode_error(exc))
    return ObserveResult(
        OperationStatus.SUCCESS,
        response.code_text,
        paths=op.paths,
        content=content,
        content_format=fmt,
    )


@dataclass(frozen=True, slots=True)
class Discover(Operation):
    path: Path

    name: ClassVar[str] = "discover"
    result_type: ClassVar[type[OperationResult]] = DiscoverResult

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def request(self) -> RequestSpec:
        return RequestSpec(int(Code.GET), self.path, accept=LINK_FORMAT)

    def interpret(self, response: Response, model: ObjectModel) -> OperationResult:
        if not response.success:
            return self.device_error(response)
        if response.content_format not in (None, LINK_FORMAT):
            return self.bad_response(
                response, f"Discover answered in content format {response.content_format}"
            )
        try:
            links = tuple(parse_links(response.payload))
        except CodecError as exc:
            return self.bad_response(response, _decode_error(exc))
        return DiscoverResult(OperationStatus.SUCCESS, response.code_text, links=links)


# -- Write / Write-Attributes / Execute / Create / Delete ----------------------------------
@dataclass(frozen=True, slots=True)
class Write(Operation):
    """Write: replace (PUT) or partial update (POST) of an encoded node."""

    path: Path
    content_format: int
    payload: bytes
    replace: bool = True

    result_type: ClassVar[type[OperationResult]] = OperationResult

    @property
    def name(self) -> str:  # type: ignore[override]
        return "write" if self.replace else "write-update"

    @classmethod
    def of(
        cls, path: Path, node: Node, content_format: int, model: ObjectModel, *, replace: bool
    ) -> Write:
        """Encode ``node`` (raises :class:`CodecError` when the format cannot carry it)."""
        return cls(path, content_format, encode(content_format, node, path, model), replace)

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def request(self) -> RequestSpec:
        method = Code.PUT if self.replace else Code.POST
        return RequestSpec(
            int(method), self.path, content_format=self.content_format, payload=self.payload
        )


@dataclass(frozen=True, slots=True)
class WriteAttributes(Operation):
    path: Path
    query: tuple[str, ...]

    name: ClassVar[str] = "write-attributes"

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def request(self) -> RequestSpec:
        return RequestSpec(int(Code.PUT), self.path, query=self.query)

    def _queued_payload(self, spec: RequestSpec) -> bytes | None:
        return "&".join(self.query).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Execute(Operation):
    path: Path
    arguments: str | None = None

    name: ClassVar[str] = "execute"

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def request(self) -> RequestSpec:
        payload = self.arguments.encode("utf-8") if self.arguments else b""
        return RequestSpec(int(Code.POST), self.path, payload=payload)


@dataclass(frozen=True, slots=True)
class Create(Operation):
    """Create (POST /O). ``instance_id`` None lets the client pick the id."""

    object_path: Path
    content_format: int
    payload: bytes
    instance_id: int | None = None

    name: ClassVar[str] = "create"
    result_type: ClassVar[type[OperationResult]] = CreateResult

    @classmethod
    def of(
        cls,
        object_path: Path,
        instance: ObjectInstance | Sequence[Resource],
        content_format: int,
        model: ObjectModel,
    ) -> Create:
        """Encode the new instance. Without an instance id only TLV can say "you pick", so
        that case is always TLV (LwM2M 1.0 style, which every client accepts)."""
        if isinstance(instance, ObjectInstance):
            if canonical(content_format) == ContentFormat.TLV:
                payload = _TLV.encode_create(
                    [NewInstance(instance.id, tuple(instance.resources.values()))],
                    object_path,
                    model,
                )
            else:
                node = LwM2MObject.of(object_path.ids[0], [instance])
                payload = encode(content_format, node, object_path, model)
            return cls(object_path, content_format, payload, instance.id)
        payload = _TLV.encode_create([NewInstance(None, tuple(instance))], object_path, model)
        return cls(object_path, int(ContentFormat.TLV), payload, None)

    @property
    def paths(self) -> tuple[Path, ...]:
        if self.instance_id is None:
            return (self.object_path,)
        return (self.object_path, self.object_path.child(self.instance_id))

    def request(self) -> RequestSpec:
        return RequestSpec(
            int(Code.POST),
            self.object_path,
            content_format=self.content_format,
            payload=self.payload,
        )

    def interpret(self, response: Response, model: ObjectModel) -> OperationResult:
        if not response.success:
            return self.device_error(response)
        location = _location(response.location_path, self.object_path)
        if location is None and self.instance_id is not None:
            location = self.object_path.child(self.instance_id)
        return CreateResult(OperationStatus.SUCCESS, response.code_text, location=location)


def _location(segments: tuple[str, ...], object_path: Path) -> Path | None:
    """The new instance's path from Location-Path (which may carry the alternate root)."""
    ids = [s for s in segments if s]
    if len(ids) < 2:
        return None
    try:
        path = Path.parse("/" + "/".join(ids[-2:]))
    except ModelError:
        return None
    return path if path.ids[0] == object_path.ids[0] else None


@dataclass(frozen=True, slots=True)
class Delete(Operation):
    path: Path

    name: ClassVar[str] = "delete"

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def request(self) -> RequestSpec:
        return RequestSpec(int(Code.DELETE), self.path)


# -- Composite ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReadComposite(Operation):
    targets: tuple[Path, ...]
    content_format: int

    name: ClassVar[str] = "read-composite"
    result_type: ClassVar[type[OperationResult]] = CompositeReadResult

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.targets

    def request(self) -> RequestSpec:
        return RequestSpec(
            int(Code.FETCH),
            Path(()),
            content_format=paths_format(self.content_format),
            accept=self.content_format,
            payload=encode_paths(paths_format(self.content_format), list(self.targets)),
        )

    def interpret(self, response: Response, model: ObjectModel) -> OperationResult:
        if not response.success:
            return self.device_error(response)
        try:
            content, fmt = decode_content(
                response, self.targets, model, composite=True, accept=self.content_format
            )
        except (CodecError, ModelError) as exc:
            return self.bad_response(response, _decode_error(exc))
        return CompositeReadResult(
            OperationStatus.SUCCESS, response.code_text, content=content, content_format=fmt
        )


@dataclass(frozen=True, slots=True)
class WriteComposite(Operation):
    targets: tuple[Path, ...]
    content_format: int
    payload: bytes

    name: ClassVar[str] = "write-composite"

    @classmethod
    def of(
        cls, content: Mapping[Path, Node], content_format: int, model: ObjectModel
    ) -> WriteComposite:
        payload = encode_nodes(content_format, content, model)
        return cls(tuple(content), content_format, payload)

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.targets

    def request(self) -> RequestSpec:
        return RequestSpec(
            int(Code.iPATCH),
            Path(()),
            content_format=self.content_format,
            payload=self.payload,
        )


AnyOperation = (
    Read
    | Observe
    | ObserveComposite
    | Discover
    | Write
    | WriteAttributes
    | Execute
    | Create
    | Delete
    | ReadComposite
    | WriteComposite
)


class QueuedRequestUnreadable(ValueError):
    """A stored queued request names an unknown operation or lacks what it needs."""


def from_queued(row: QueuedRequest) -> AnyOperation:
    """Rebuild the operation a queued request row describes (see :meth:`Operation.to_queued`)."""
    paths, fmt, payload = row.paths, row.content_format, row.payload or b""

    def first() -> Path:
        if not paths:
            raise QueuedRequestUnreadable(f"queued request {row.id} has no path")
        return paths[0]

    def need_format() -> int:
        if fmt is None:
            raise QueuedRequestUnreadable(f"queued request {row.id} has no content format")
        return fmt

    op = row.operation
    if op == "read":
        return Read(first(), fmt)
    if op == "observe":
        return Observe(first(), fmt)
    if op == "discover":
        return Discover(first())
    if op in ("write", "write-update"):
        return Write(first(), need_format(), payload, replace=op == "write")
    if op == "write-attributes":
        query = tuple(part for part in payload.decode("utf-8").split("&") if part)
        return WriteAttributes(first(), query)
    if op == "execute":
        return Execute(first(), payload.decode("utf-8") or None)
    if op == "create":
        instance = paths[1].ids[1] if len(paths) > 1 else None
        return Create(first(), need_format(), payload, instance)
    if op == "delete":
        return Delete(first())
    if op == "read-composite":
        return ReadComposite(tuple(paths), need_format())
    if op == "observe-composite":
        return ObserveComposite(tuple(paths), need_format())
    if op == "write-composite":
        return WriteComposite(tuple(paths), need_format(), payload)
    raise QueuedRequestUnreadable(f"queued request {row.id} has unknown operation {op!r}")


def is_multi_format(content_format: int) -> bool:
    return canonical(content_format) in MULTI_NODE_FORMATS


__all__ = [
    "AnyOperation",
    "Create",
    "Delete",
    "Discover",
    "Execute",
    "Link",
    "Observe",
    "ObserveComposite",
    "Operation",
    "QueuedRequestUnreadable",
    "Read",
    "ReadComposite",
    "RequestSpec",
    "Response",
    "Write",
    "WriteAttributes",
    "WriteComposite",
    "decode_content",
    "decode_report",
    "from_queued",
    "is_multi_format",
    "paths_format",
]
