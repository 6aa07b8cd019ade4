"""Pure parsing and validation of the requests devices send the server.

A CoAP request in, a typed request or a :class:`Refusal` (CoAP code + reason text for the
diagnostic payload) out: Register (``POST /rd?ep=&lt=&lwm2m=&b=&Q&sms=``), Update
(``POST /rd/{id}``), De-register (``DELETE /rd/{id}``) and Send (``POST /dp``). Nothing here
raises on what a device sends -- a hostile or broken client gets a 4.xx and the server carries
on (the hypothesis tests feed random queries and payloads to check exactly that).

Leniency, where real clients need it: wakaama's Update payload has no Content-Format; Anjay
sends no ``b=`` and no root link; 1.0 clients put queue mode in the binding (``b=UQ``), 1.1+
clients in a valueless ``Q`` parameter -- either is accepted from any version. Unknown query
parameters are ignored (later versions add some); a repeated one is refused, since which of
the two values was meant is unknowable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap.messages import CONTENT_FORMAT, URI_PATH, URI_QUERY, option_int, option_strings
from lwm2m.codec.errors import CodecError
from lwm2m.codec.link import RegistrationObjects, parse_registration
from lwm2m.naming import MAX_ENDPOINT_NAME_LENGTH, endpoint_name_problem
from lwm2m.server.config import is_version

LINK_FORMAT = 40
#: Object lists up to this many characters are parsed once and remembered (see
#: :func:`_object_list`); longer ones (rare: block-wise Registers) are parsed every time.
CACHED_OBJECT_LIST_CHARS = 2048
MAX_ENDPOINT_LENGTH = MAX_ENDPOINT_NAME_LENGTH
_BINDING_LETTERS = frozenset("UQSNT")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Answer the request with ``code``; ``reason`` goes into the diagnostic payload."""

    code: Code
    reason: str

    @property
    def code_text(self) -> str:
        return code_text(self.code)


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A valid Register. ``binding`` has no ``Q``; ``queue_mode`` says whether either form of
    queue mode was requested."""

    endpoint: str
    lifetime: int
    lwm2m_version: str
    binding: str
    queue_mode: bool
    sms_number: str | None
    objects: RegistrationObjects
    object_links: str


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """A valid Update; ``None`` fields were absent. ``binding_queue`` is whether a ``b=`` had
    ``Q`` (None without ``b=``), ``queue_param`` whether a ``Q`` parameter came."""

    registration_id: str
    lifetime: int | None
    binding: str | None
    binding_queue: bool | None
    queue_param: bool
    sms_number: str | None
    objects: RegistrationObjects | None
    object_links: str | None

    def queue_mode(self, lwm2m_version: str) -> bool | None:
        """The queue mode this Update sets, or None to keep the registration's.

        A ``Q`` (in ``b=`` or as parameter) turns it on. A 1.0 client's binding without ``Q``
        turns it off (in 1.0 the binding *is* the queue-mode switch); from 1.1 on, a binding
        says nothing about queue mode.
        """
        if self.queue_param or self.binding_queue:
            return True
        if self.binding_queue is False and lwm2m_version == "1.0":
            return False
        return None

    @property
    def is_empty(self) -> bool:
        """No parameter and no payload: only the lifetime is refreshed."""
        return (
            self.lifetime is None
            and self.binding is None
            and not self.queue_param
            and self.sms_number is None
            and self.objects is None
        )


@dataclass(frozen=True, slots=True)
class DeregisterRequest:
    registration_id: str


@dataclass(frozen=True, slots=True)
class SendRequest:
    """``POST /dp``: the payload is decoded by the server, which knows the sender's version."""

    content_format: int | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class LifetimeRules:
    """The server's bounds for ``lt``, and the lifetime assumed without one."""

    minimum: int = 1
    maximum: int = 2**31 - 1
    default: int = 86_400


DeviceRequest = RegisterRequest | UpdateRequest | DeregisterRequest | SendRequest | Refusal


def code_text(code: int) -> str:
    """``Code.CREATED`` -> ``"2.01"``."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def parse_request(
    message: Message, *, allowed_versions: tuple[str, ...], lifetimes: LifetimeRules
) -> DeviceRequest:
    """Route and validate a request a device sent; never raises on the request's content."""
    try:
        return _parse(message, allowed_versions, lifetimes)
    except Exception as exc:  # defensive: a parsing bug must still answer the device
        return Refusal(Code.BAD_REQUEST, f"malformed request: {type(exc).__name__}")


def _parse(message: Message, allowed: tuple[str, ...], lifetimes: LifetimeRules) -> DeviceRequest:
    path = option_strings(message, URI_PATH)
    method = int(message.code)
    if path == ("rd",):
        if method != Code.POST:
            return Refusal(Code.METHOD_NOT_ALLOWED, "Register is POST /rd")
        return parse_register(message, allowed, lifetimes)
    if len(path) == 2 and path[0] == "rd":
        if not path[1]:
            return Refusal(Code.NOT_FOUND, "empty registration id")
        if method == Code.POST:
            return parse_update(message, path[1], lifetimes)
        if method == Code.DELETE:
            if message.payload:
                return Refusal(Code.BAD_REQUEST, "De-register carries no payload")
            return DeregisterRequest(path[1])
        return Refusal(Code.METHOD_NOT_ALLOWED, "Update is POST /rd/{id}, De-register DELETE")
    if path == ("dp",):
        if method != Code.POST:
            return Refusal(Code.METHOD_NOT_ALLOWED, "Send is POST /dp")
        return SendRequest(option_int(message, CONTENT_FORMAT), bytes(message.payload))
    return Refusal(Code.NOT_FOUND, f"no resource /{'/'.join(path)} on this LwM2M server")


_POST = int(Code.POST)
_DELETE = int(Code.DELETE)


def parse_bare_update(message: Message) -> UpdateRequest | DeregisterRequest | None:
    """The two requests a fleet sends most, recognised without the general parser: an empty
    Update (``POST /rd/{id}``, no query, no payload: a lifetime refresh) and a De-register
    (``DELETE /rd/{id}``, no payload), when the message carries nothing but its Uri-Path.
    Returns exactly what :func:`parse_request` returns for them, or None for anything else
    (which then goes through :func:`parse_request`).

    Why: the general path (routing, the query map, ``parse_update``'s checks) was about a
    tenth of an Update's server CPU, spent to find that there is nothing to parse (issue 13).
    """
    options = message.opt._options
    if len(options) != 1 or message.payload:
        return None
    segments = options.get(URI_PATH)
    if segments is None or len(segments) != 2 or segments[0].value != "rd":
        return None
    registration_id = segments[1].value
    if not registration_id:
        return None  # parse_request refuses it, with its reason
    code = message.code
    if code == _POST:
        return UpdateRequest(registration_id, None, None, None, False, None, None, None)
    if code == _DELETE:
        return DeregisterRequest(registration_id)
    return None


def _query(message: Message) -> dict[str, str | None] | Refusal:
    params: dict[str, str | None] = {}
    for item in option_strings(message, URI_QUERY):
        name, sep, value = item.partition("=")
        if not name:
            return Refusal(Code.BAD_REQUEST, f"query parameter without a name: {item!r}")
        if name in params:
            return Refusal(Code.BAD_REQUEST, f"query parameter {name!r} given twice")
        if "\x00" in item:  # PostgreSQL text cannot hold it; refused on every store alike
            return Refusal(Code.BAD_REQUEST, f"query parameter {name[:40]!r} holds a NUL character")
        params[name] = value if sep else None
    return params


def _lifetime(text: str | None, rules: LifetimeRules) -> int | Refusal:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 10:
        return Refusal(Code.BAD_REQUEST, f"lt={text!r} is not a lifetime in seconds")
    value = int(text)
    if not rules.minimum <= value <= rules.maximum:
        return Refusal(
            Code.BAD_REQUEST,
            f"lifetime {value} s is outside this server's range {rules.minimum}..{rules.maximum} s",
        )
    return value


def _binding(text: str | None) -> tuple[str, bool] | Refusal:
    """``b=`` value -> (binding without Q, whether Q was in it)."""
    if not text or not set(text) <= _BINDING_LETTERS or len(set(text)) != len(text):
        return Refusal(
            Code.BAD_REQUEST,
            f"b={text!r} is not a binding (letters U, S, N, T, and Q in 1.0, each at most once)",
        )
    queue = "Q" in text
    letters = text.replace("Q", "")
    if not letters:
        return Refusal(Code.BAD_REQUEST, "b=Q names no transport")
    return letters, queue


def _objects(message: Message) -> tuple[RegistrationObjects, str] | Refusal:
    cf = option_int(message, CONTENT_FORMAT)
    if cf is not None and cf != LINK_FORMAT:
        return Refusal(
            Code.BAD_REQUEST,
            f"the object list must be link format (Content-Format 40), got {cf}",
        )
    try:
        text = bytes(message.payload).decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(Code.BAD_REQUEST, "the object list is not valid UTF-8")
    if "\x00" in text:  # as for query values (issue 14 item 6)
        return Refusal(Code.BAD_REQUEST, "the object list holds a NUL character")
    parsed = _object_list(text) if len(text) <= CACHED_OBJECT_LIST_CHARS else _parse_list(text)
    return parsed if isinstance(parsed, Refusal) else (parsed, text)


def _parse_list(text: str) -> RegistrationObjects | Refusal:
    try:
        return parse_registration(text)
    except CodecError as exc:
        return Refusal(Code.BAD_REQUEST, f"invalid object list: {exc}")


@lru_cache(maxsize=1024)
def _object_list(text: str) -> RegistrationObjects | Refusal:
    """The parsed object list, remembered by its text.

    Why: a fleet is a few device models, and every device of a model registers with the same
    object list, so in a registration storm nearly every payload is one already seen. Parsing
    it was ~40 % of the server's event-loop CPU per Register (py-spy, issue 13); a lookup
    hashes the string instead. Sharing the result is safe: ``RegistrationObjects`` and
    ``Refusal`` are frozen, and their containers are tuples and read-only mappings.
    """
    return _parse_list(text)


def _endpoint(value: str | None) -> str | Refusal:
    if value is None or value == "":
        return Refusal(Code.BAD_REQUEST, "missing endpoint name (ep=)")
    problem = endpoint_name_problem(value)  # the system's one rule (lwm2m.naming)
    return value if problem is None else Refusal(Code.BAD_REQUEST, problem)


def parse_register(
    message: Message, allowed_versions: tuple[str, ...], lifetimes: LifetimeRules
) -> RegisterRequest | Refusal:
    """Validate a Register (``POST /rd``)."""
    params = _query(message)
    if isinstance(params, Refusal):
        return params
    endpoint = _endpoint(params.get("ep"))
    if isinstance(endpoint, Refusal):
        return endpoint
    version = params.get("lwm2m", "1.0")
    if version is None or not is_version(version):
        return Refusal(Code.BAD_REQUEST, f"lwm2m={version!r} is not a version like 1.1")
    if version not in allowed_versions:
        return Refusal(
            Code.PRECONDITION_FAILED,
            f"LwM2M {version} is not accepted here; supported: {', '.join(allowed_versions)}",
        )
    lifetime = lifetimes.default
    if "lt" in params:
        parsed_lt = _lifetime(params["lt"], lifetimes)
        if isinstance(parsed_lt, Refusal):
            return parsed_lt
        lifetime = parsed_lt
    binding, queue = "U", False
    if "b" in params:
        parsed = _binding(params["b"])
        if isinstance(parsed, Refusal):
            return parsed
        binding, queue = parsed
    if "Q" in params:
        if params["Q"] is not None:
            return Refusal(Code.BAD_REQUEST, "Q takes no value")
        queue = True
    sms = params.get("sms")
    if "sms" in params and not sms:
        return Refusal(Code.BAD_REQUEST, "sms= needs an MSISDN")
    objects = _objects(message)
    if isinstance(objects, Refusal):
        return objects
    return RegisterRequest(
        endpoint=endpoint,
        lifetime=lifetime,
        lwm2m_version=version,
        binding=binding,
        queue_mode=queue,
        sms_number=sms,
        objects=objects[0],
        object_links=objects[1],
    )


def parse_update(
    message: Message, registration_id: str, lifetimes: LifetimeRules
) -> UpdateRequest | Refusal:
    """Validate an Update (``POST /rd/{id}``); an empty Update is valid."""
    params = _query(message)
    if isinstance(params, Refusal):
        return params
    lifetime: int | None = None
    if "lt" in params:
        parsed_lt = _lifetime(params["lt"], lifetimes)
        if isinstance(parsed_lt, Refusal):
            return parsed_lt
        lifetime = parsed_lt
    binding: str | None = None
    binding_queue: bool | None = None
    if "b" in params:
        parsed_b = _binding(params["b"])
        if isinstance(parsed_b, Refusal):
            return parsed_b
        binding, binding_queue = parsed_b
    if "Q" in params and params["Q"] is not None:
        return Refusal(Code.BAD_REQUEST, "Q takes no value")
    sms = params.get("sms")
    if "sms" in params and not sms:
        return Refusal(Code.BAD_REQUEST, "sms= needs an MSISDN")
    objects: RegistrationObjects | None = None
    links: str | None = None
    if message.payload:
        parsed = _objects(message)
        if isinstance(parsed, Refusal):
            return parsed
        objects, links = parsed
    return UpdateRequest(
        registration_id=registration_id,
        lifetime=lifetime,
        binding=binding,
        binding_queue=binding_queue,
        queue_param="Q" in params,
        sms_number=sms,
        objects=objects,
        object_links=links,
    )


def registration_root(root_path: str) -> tuple[str, ...]:
    """Uri-Path segments of a client's alternate root (``/lwm2m`` -> ``("lwm2m",)``)."""
    return tuple(part for part in root_path.split("/") if part)


__all__ = [
    "DeregisterRequest",
    "DeviceRequest",
    "LifetimeRules",
    "Refusal",
    "RegisterRequest",
    "SendRequest",
    "UpdateRequest",
    "code_text",
    "parse_bare_update",
    "parse_register",
    "parse_request",
    "parse_update",
    "registration_root",
]
