"""Register / Update / De-register / Send parsing, pure: CoAP message in, typed request or
refusal out -- including random queries and payloads, which must only ever produce a CoAP
error code, never an exception."""

from __future__ import annotations

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.server.registration import (
    DeregisterRequest,
    DeviceRequest,
    LifetimeRules,
    Refusal,
    RegisterRequest,
    SendRequest,
    UpdateRequest,
    parse_request,
    registration_root,
)

VERSIONS = ("1.0", "1.1", "1.2")
RULES = LifetimeRules(minimum=10, maximum=100_000, default=86_400)


def request(
    code: Code,
    path: tuple[str, ...],
    query: tuple[str, ...] = (),
    payload: bytes = b"",
    cf: int | None = None,
) -> Message:
    message = Message(code=code, payload=payload)
    message.opt.uri_path = path
    if query:
        message.opt.uri_query = query
    if cf is not None:
        message.opt.content_format = cf
    return message


def parse(message: Message, versions: tuple[str, ...] = VERSIONS) -> DeviceRequest:
    return parse_request(message, allowed_versions=versions, lifetimes=RULES)


def register(*query: str, payload: bytes = b"</1/0>,</3/0>", cf: int | None = 40) -> DeviceRequest:
    return parse(request(Code.POST, ("rd",), query, payload, cf))


def test_a_full_register_is_typed() -> None:
    parsed = register(
        "ep=dev-1",
        "lt=300",
        "lwm2m=1.1",
        "b=U",
        "Q",
        "sms=+4912345",
        payload=b'</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</3/0>,</5>',
    )
    assert isinstance(parsed, RegisterRequest)
    assert (parsed.endpoint, parsed.lifetime, parsed.lwm2m_version) == ("dev-1", 300, "1.1")
    assert (parsed.binding, parsed.queue_mode, parsed.sms_number) == ("U", True, "+4912345")
    assert parsed.objects.content_formats == (110,)
    assert parsed.objects.objects == (1, 3, 5)
    assert parsed.objects.version_of(1) == "1.1"


def test_register_defaults() -> None:
    parsed = register("ep=minimal", cf=None, payload=b"")
    assert isinstance(parsed, RegisterRequest)
    assert (parsed.lifetime, parsed.lwm2m_version, parsed.binding) == (86_400, "1.0", "U")
    assert not parsed.queue_mode and parsed.objects.objects == ()


def test_queue_mode_in_the_1_0_binding() -> None:
    parsed = register("ep=old", "lwm2m=1.0", "b=UQ")
    assert isinstance(parsed, RegisterRequest)
    assert (parsed.binding, parsed.queue_mode) == ("U", True)


def test_alternate_root_path() -> None:
    parsed = register("ep=alt", payload=b'</lwm2m>;rt="oma.lwm2m",</lwm2m/3/0>')
    assert isinstance(parsed, RegisterRequest)
    assert parsed.objects.root == "/lwm2m"
    assert registration_root(parsed.objects.root) == ("lwm2m",)
    assert registration_root("/") == ()


@pytest.mark.parametrize(
    ("query", "payload", "cf", "code", "words"),
    [
        ((), b"", 40, Code.BAD_REQUEST, "endpoint"),
        (("ep=",), b"", 40, Code.BAD_REQUEST, "endpoint"),
        (("ep=" + "x" * 256,), b"", 40, Code.BAD_REQUEST, "not a valid endpoint name"),
        (("ep=a\tb",), b"", 40, Code.BAD_REQUEST, "not a valid endpoint name"),
        (("ep=a", "lt=5"), b"", 40, Code.BAD_REQUEST, "outside"),
        (("ep=a", "lt=100001"), b"", 40, Code.BAD_REQUEST, "outside"),
        (("ep=a", "lt=-1"), b"", 40, Code.BAD_REQUEST, "lifetime"),
        (("ep=a", "lt"), b"", 40, Code.BAD_REQUEST, "lifetime"),
        (("ep=a", "lwm2m=1.3"), b"", 40, Code.PRECONDITION_FAILED, "1.3"),
        (("ep=a", "lwm2m=2"), b"", 40, Code.BAD_REQUEST, "version"),
        (("ep=a", "b=UU"), b"", 40, Code.BAD_REQUEST, "binding"),
        (("ep=a", "b=Q"), b"", 40, Code.BAD_REQUEST, "transport"),
        (("ep=a", "Q=1"), b"", 40, Code.BAD_REQUEST, "no value"),
        (("ep=a", "sms="), b"", 40, Code.BAD_REQUEST, "MSISDN"),
        (("ep=a", "=x"), b"", 40, Code.BAD_REQUEST, "name"),
        (("ep=a", "lt=60", "lt=70"), b"", 40, Code.BAD_REQUEST, "twice"),
        (("ep=a",), b"</3/0>", 0, Code.BAD_REQUEST, "link format"),
        (("ep=a",), b"</3/0>;", 40, Code.BAD_REQUEST, "object list"),
    ],
)
def test_bad_registers_are_refused_with_a_reason(
    query: tuple[str, ...], payload: bytes, cf: int, code: Code, words: str
) -> None:
    parsed = register(*query, payload=payload, cf=cf)
    assert isinstance(parsed, Refusal), parsed
    assert parsed.code == code
    assert words in parsed.reason


def test_a_version_can_be_switched_off() -> None:
    """Anjay registers 1.2 first and falls back on 4.12."""
    parsed = parse(request(Code.POST, ("rd",), ("ep=a", "lwm2m=1.2")), ("1.0", "1.1"))
    assert isinstance(parsed, Refusal) and parsed.code == Code.PRECONDITION_FAILED
    assert parsed.code_text == "4.12"


def test_updates() -> None:
    empty = parse(request(Code.POST, ("rd", "abc")))
    assert isinstance(empty, UpdateRequest) and empty.is_empty
    assert empty.queue_mode("1.1") is None
    full = parse(request(Code.POST, ("rd", "abc"), ("lt=120", "b=UQ", "sms=123"), b"</3/0>,</5/0>"))
    assert isinstance(full, UpdateRequest) and not full.is_empty
    assert (full.registration_id, full.lifetime, full.binding) == ("abc", 120, "U")
    assert full.queue_mode("1.0") is True
    assert full.objects is not None and full.objects.objects == (3, 5)
    assert full.object_links == "</3/0>,</5/0>"
    # in 1.0, a binding without Q turns queue mode off; from 1.1, it says nothing
    plain = parse(request(Code.POST, ("rd", "abc"), ("b=U",)))
    assert isinstance(plain, UpdateRequest)
    assert plain.queue_mode("1.0") is False and plain.queue_mode("1.1") is None
    q = parse(request(Code.POST, ("rd", "abc"), ("Q",)))
    assert isinstance(q, UpdateRequest) and q.queue_mode("1.2") is True
    bad = parse(request(Code.POST, ("rd", "abc"), ("lt=x",)))
    assert isinstance(bad, Refusal) and bad.code == Code.BAD_REQUEST


def test_wakaama_update_payload_without_content_format() -> None:
    parsed = parse(request(Code.POST, ("rd", "r1"), payload=b"</1/0>,</3/0>"))
    assert isinstance(parsed, UpdateRequest) and parsed.objects is not None


def test_deregister_send_and_routing() -> None:
    assert parse(request(Code.DELETE, ("rd", "abc"))) == DeregisterRequest("abc")
    with_body = parse(request(Code.DELETE, ("rd", "abc"), payload=b"x"))
    assert isinstance(with_body, Refusal) and with_body.code == Code.BAD_REQUEST
    send = parse(request(Code.POST, ("dp",), payload=b"\x80", cf=112))
    assert send == SendRequest(112, b"\x80")
    for code, path, expected in [
        (Code.GET, ("rd",), Code.METHOD_NOT_ALLOWED),
        (Code.PUT, ("rd", "abc"), Code.METHOD_NOT_ALLOWED),
        (Code.GET, ("dp",), Code.METHOD_NOT_ALLOWED),
        (Code.POST, ("bs",), Code.NOT_FOUND),
        (Code.POST, ("rd", ""), Code.NOT_FOUND),
        (Code.POST, ("rd", "a", "b"), Code.NOT_FOUND),
        (Code.GET, (), Code.NOT_FOUND),
    ]:
        parsed = parse(request(code, path))
        assert isinstance(parsed, Refusal) and parsed.code == expected, (code, path)


# -- fuzz ---------------------------------------------------------------------------------
_names = st.sampled_from(["ep", "lt", "lwm2m", "b", "Q", "sms", "x", "", "EP"])
_values = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["1.0", "1.1", "1.2", "1.3", "U", "UQ", "SQ", "60", "0", "-3", "1e3"]),
)
_query_items = st.builds(lambda n, v: n if v is None else f"{n}={v}", _names, _values) | st.text(
    max_size=20
)
_payloads = st.one_of(
    st.binary(max_size=64),
    st.lists(
        st.sampled_from(
            ["</1/0>", "</3>;ver=1.1", '</>;rt="oma.lwm2m";ct=110', "<", ";", ",", '"', "</a>"]
        ),
        max_size=6,
    ).map(lambda parts: ",".join(parts).encode()),
)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from([Code.POST, Code.DELETE, Code.GET, Code.PUT]),
    path=st.sampled_from([("rd",), ("rd", "abc"), ("dp",), ("rd", "x", "y")]),
    query=st.lists(_query_items, max_size=6),
    payload=_payloads,
    cf=st.sampled_from([None, 0, 40, 112, 11542]),
)
def test_random_requests_give_a_typed_answer_never_an_exception(
    method: Code,
    path: tuple[str, ...],
    query: list[str],
    payload: bytes,
    cf: int | None,
) -> None:
    message = request(method, path, tuple(query), payload, cf)
    parsed = parse(message)
    assert isinstance(
        parsed, RegisterRequest | UpdateRequest | DeregisterRequest | SendRequest | Refusal
    )
    if isinstance(parsed, Refusal):
        assert 128 <= parsed.code < 192 and parsed.reason
    if isinstance(parsed, RegisterRequest):
        assert parsed.endpoint and parsed.lwm2m_version in VERSIONS
        assert RULES.minimum <= parsed.lifetime <= RULES.maximum or parsed.lifetime == RULES.default


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=4, max_size=80))
def test_random_datagrams_that_decode_give_a_typed_answer(data: bytes) -> None:
    try:
        message = Message.decode(data)
    except Exception:
        return  # the CoAP core drops these before the server sees them
    if not message.code.is_request():
        return
    assert parse(message) is not None
