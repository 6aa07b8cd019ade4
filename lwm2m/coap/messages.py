"""Small helpers around aiocoap's :class:`~aiocoap.Message` codec.

The core compares message types, codes and option numbers as plain ints (aiocoap's enums are
``IntEnum`` subclasses, so the comparisons hold, and int constants keep the hot path free of
enum attribute lookups). This module builds the few messages the core originates itself
(empty ACK/RST, 2.31 Continue, 4.xx for broken block-wise transfers), and holds
:func:`decode` / :func:`encode` / :func:`new_message`: aiocoap's codec with the per-message
enum look-ups and generic dispatch taken out of the hot path (issue 13), producing the very
same :class:`~aiocoap.Message` objects and bytes.
"""

from __future__ import annotations

from typing import Any

from aiocoap import Message
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code
from aiocoap.numbers.constants import TransportTuning
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type
from aiocoap.options import Options

from lwm2m.coap.errors import BadOption, ProxyingNotSupported

CON = int(Type.CON)
NON = int(Type.NON)
ACK = int(Type.ACK)
RST = int(Type.RST)

EMPTY = int(Code.EMPTY)
GET = int(Code.GET)
FETCH = int(Code.FETCH)
CONTINUE = int(Code.CONTINUE)
REQUEST_ENTITY_TOO_LARGE = int(Code.REQUEST_ENTITY_TOO_LARGE)

OBSERVE = int(OptionNumber.OBSERVE)
BLOCK1 = int(OptionNumber.BLOCK1)
BLOCK2 = int(OptionNumber.BLOCK2)
SIZE1 = int(OptionNumber.SIZE1)
SIZE2 = int(OptionNumber.SIZE2)
ETAG = int(OptionNumber.ETAG)

#: Critical options the exchange layer or LwM2M understands; any other critical option in a
#: request is answered 4.02 (RFC 7252 §5.4.1). OSCORE, Q-Block, EDHOC, Uri-Path-Abbrev are not.
KNOWN_CRITICAL = frozenset(
    int(n)
    for n in (
        OptionNumber.IF_MATCH,
        OptionNumber.URI_HOST,
        OptionNumber.IF_NONE_MATCH,
        OptionNumber.URI_PORT,
        OptionNumber.URI_PATH,
        OptionNumber.URI_QUERY,
        OptionNumber.ACCEPT,
        OptionNumber.BLOCK2,
        OptionNumber.BLOCK1,
    )
)
_PROXY = frozenset({int(OptionNumber.PROXY_URI), int(OptionNumber.PROXY_SCHEME)})
_SPECIAL = frozenset({OBSERVE, BLOCK1, BLOCK2})

#: Observe option numbers wrap at 2**24 (RFC 7641 §4.4).
OBSERVE_MODULO = 1 << 24

_TYPE_BY_INT = {int(t): t for t in Type}


def scan_request_options(message: Message) -> bool:
    """One pass over a request's option numbers: True if it carries Block1, Block2 or Observe
    (the endpoint's slow path); raises :class:`BadOption` for an unrecognised critical option
    and :class:`ProxyingNotSupported` for the proxy options.

    Reads aiocoap's option map directly (``Options._options``, stable across 0.4.x) because
    the public accessors sort or build tuples, and this runs for every request.
    """
    special = False
    for number in message.opt._options:
        if number in _SPECIAL:
            special = True
        elif number & 1 and number not in KNOWN_CRITICAL:
            if number in _PROXY:
                raise ProxyingNotSupported("this endpoint is not a proxy")
            raise BadOption(f"critical option {int(number)} not recognised")
    return special


def is_request(code: int) -> bool:
    return 1 <= code < 32


def is_response(code: int) -> bool:
    """Response classes 2, 4 and 5 (RFC 7252 §12.1.2); 1.xx, 3.xx, 6.xx, 7.xx are not
    responses over UDP (7.xx is signalling, RFC 8323: reliable transports only)."""
    return 64 <= code < 192 and code >> 5 != 3


def is_success(code: int) -> bool:
    return 64 <= code < 96


def empty(mtype: int, mid: int) -> bytes:
    """An Empty message (code 0.00, no token): ACK, RST or a CoAP ping."""
    message = Message(code=Code.EMPTY)
    message.mtype = _TYPE_BY_INT[mtype]
    message.mid = mid
    return bytes(message.encode())


def peek_header(data: bytes) -> tuple[int, int] | None:
    """``(mtype, mid)`` of a datagram whose full decode failed, if its fixed header parses.

    Used to reject a malformed CON with an RST (RFC 7252 §4.2), which needs the Message ID.
    """
    if len(data) < 4:
        return None
    try:
        head = Message.decode(data[:4])
    except Exception:  # aiocoap raises several types for garbage; any means "no header"
        return None
    return int(head.mtype), int(head.mid)


def set_block(message: Message, number: int, num: int, more: bool, szx: int) -> None:
    """Set a Block1/Block2 option (replaces one already present)."""
    if number == BLOCK1:
        message.opt.block1 = (num, more, szx)
    else:
        message.opt.block2 = (num, more, szx)


# -- the hot-path codec ---------------------------------------------------------------------
_CODES: tuple[Code, ...] = tuple(Code(i) for i in range(256))
_TYPES: tuple[Type, ...] = tuple(Type(i) for i in range(4))
#: Option number -> (the OptionNumber, its option class), for the options aiocoap names; any
#: other number goes through aiocoap's enum (it makes a pseudo-member per call).
_OPTION_KINDS: dict[int, tuple[OptionNumber, Any]] = {
    int(n): (n, n.format) for n in OptionNumber.__members__.values()
}
_new = Message.__new__
#: Raw Content-Format option value -> aiocoap's decoded ContentFormat (see ``decode``); at most
#: this many are kept, so odd values from a hostile peer cannot grow it without bound.
_CONTENT_FORMATS: dict[bytes, Any] = {}
_CONTENT_FORMATS_KEPT = 256
_INCOMING = Direction.INCOMING
_OUTGOING = Direction.OUTGOING


def decode(data: bytes) -> Message:
    """``aiocoap.Message.decode(data)``, about three times cheaper on the messages the server
    gets (a handful of short options): the same Message, the same option objects.

    Anything out of the ordinary (a header or option that does not parse, an extended option
    field, a payload marker with nothing after it) goes to aiocoap's decoder, so what is
    refused, and how, is aiocoap's."""
    n = len(data)
    if n < 4:
        return Message.decode(data)
    first = data[0]
    tkl = first & 0x0F
    if first >> 6 != 1 or tkl > 8:
        return Message.decode(data)
    pos = 4 + tkl
    options = Options()
    table = options._options
    number = 0
    while pos < n:
        byte = data[pos]
        if byte == 0xFF:
            if pos + 1 == n:
                return Message.decode(data)
            break
        delta = byte >> 4
        length = byte & 0x0F
        if delta > 12 or length > 12:  # extended fields and the reserved 15: aiocoap's
            return Message.decode(data)
        pos += 1
        end = pos + length
        if end > n:
            return Message.decode(data)
        number += delta
        kind = _OPTION_KINDS.get(number)
        if kind is None:
            return Message.decode(data)
        option = kind[1](kind[0])
        if number == CONTENT_FORMAT:
            # aiocoap's decode builds the ContentFormat through the enum's call (a pseudo-member
            # for a number it does not name): remembered per raw value instead, once each.
            raw = data[pos:end]
            known = _CONTENT_FORMATS.get(raw)
            if known is None:
                option.decode(raw)
                if len(_CONTENT_FORMATS) < _CONTENT_FORMATS_KEPT:
                    _CONTENT_FORMATS[raw] = option._value
            else:
                option._value = known
        else:
            option.decode(data[pos:end])
        existing = table.get(number)
        if existing is None:
            table[kind[0]] = [option]
        else:
            existing.append(option)
        pos = end
    message = _new(Message)
    message.version = 1
    message.mtype = _TYPES[(first >> 4) & 0x03]
    message.mid = (data[2] << 8) | data[3]
    message.code = _CODES[data[1]]
    message.token = data[4 : 4 + tkl]
    message.payload = data[pos + 1 :] if pos < n else b""
    message.opt = options
    message.remote = None
    message.direction = _INCOMING
    message.transport_tuning = TransportTuning()
    return message


def new_message(code: Code, payload: bytes = b"") -> Message:
    """``Message(code=code, payload=payload)`` without the keyword-argument machinery: an
    outgoing message with no type, Message ID or token yet."""
    message = _new(Message)
    message.version = 1
    message.mtype = None
    message.mid = None
    message.code = _CODES[code]
    message.token = b""
    message.payload = payload
    message.opt = Options()
    message.remote = None
    message.direction = _OUTGOING
    message.transport_tuning = TransportTuning()
    return message


def encode(message: Message) -> bytes:
    """``message.encode()``: the same bytes; a message without options (most answers) skips
    aiocoap's sorting and per-option dispatch."""
    if message.opt._options:
        return bytes(message.encode())
    code, mtype, mid = message.code, message.mtype, message.mid
    if code is None or mtype is None or mid is None or not 0 <= mid <= 0xFFFF:
        return bytes(message.encode())  # aiocoap's TypeError / struct.error
    token: bytes = message.token
    head = bytes(
        (0x40 | ((mtype & 0x03) << 4) | (len(token) & 0x0F), code, (mid >> 8) & 0xFF, mid & 0xFF)
    )
    payload = message.payload
    if payload:
        return b"".join((head, token, b"\xff", payload))
    return head + token


#: Option numbers the LwM2M layer reads on every request or response (RFC 7252 §12.2).
URI_PATH = int(OptionNumber.URI_PATH)
URI_QUERY = int(OptionNumber.URI_QUERY)
CONTENT_FORMAT = int(OptionNumber.CONTENT_FORMAT)
LOCATION_PATH = int(OptionNumber.LOCATION_PATH)
OBSERVE = int(OptionNumber.OBSERVE)


def option_strings(message: Message, number: int) -> tuple[str, ...]:
    """The values of a repeatable string option (``message.opt.uri_path`` and the like), read
    from aiocoap's option map directly: the public property goes through ``get_option`` and
    a generator per call, a measurable share of an Update's CPU (issue 13)."""
    found = message.opt._options.get(number)
    if not found:
        return ()
    if len(found) == 1:
        return (found[0].value,)
    return tuple([option.value for option in found])


def option_int(message: Message, number: int) -> int | None:
    """The value of a single-valued integer option (the first, as aiocoap's property gives
    it) as a plain int, or None when absent: ``message.opt.content_format`` without the
    property machinery."""
    found = message.opt._options.get(number)
    return int(found[0].value) if found else None


def response_with(code: Code, **options: object) -> Message:
    """A bare response the core sends on its own (2.31, 4.08, 4.13, 4.00)."""
    message = Message(code=code)
    for name, value in options.items():
        setattr(message.opt, name, value)
    return message
