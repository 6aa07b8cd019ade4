"""The fast path for empty Updates and De-registers (``parse_bare_update``) must give exactly
what the general parser gives, and only for the messages it is meant for: random requests,
encoded and decoded as the server receives them (``lwm2m.coap.messages.decode``)."""

from __future__ import annotations

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from hypothesis import given, settings
from hypothesis import strategies as st

from lwm2m.coap.messages import decode
from lwm2m.server.registration import (
    DeregisterRequest,
    LifetimeRules,
    UpdateRequest,
    parse_bare_update,
    parse_request,
)

RULES = LifetimeRules(minimum=10, maximum=100_000, default=86_400)
SEGMENTS = st.sampled_from(["rd", "dp", "", "x1", "abc-123", "ü", "rd2"])


def received(
    code: Code, path: list[str], query: list[str], payload: bytes, cf: int | None
) -> Message:
    message = Message(code=code, payload=payload)
    message.mtype, message.mid, message.token = Type.CON, 7, b"\x01"
    message.opt.uri_path = path
    message.opt.uri_query = query
    if cf is not None:
        message.opt.content_format = cf
    return decode(bytes(message.encode()))


def general(message: Message) -> object:
    return parse_request(message, allowed_versions=("1.0", "1.1", "1.2"), lifetimes=RULES)


@settings(max_examples=400, deadline=None)
@given(
    code=st.sampled_from([Code.GET, Code.POST, Code.PUT, Code.DELETE, Code.FETCH]),
    path=st.lists(SEGMENTS, max_size=3),
    query=st.lists(st.sampled_from(["lt=60", "b=U", "Q", "ep=x", ""]), max_size=2),
    payload=st.sampled_from([b"", b"</1/0>", b"\x00"]),
    cf=st.sampled_from([None, 0, 40]),
)
def test_the_fast_path_agrees_with_the_parser(
    code: Code, path: list[str], query: list[str], payload: bytes, cf: int | None
) -> None:
    message = received(code, path, query, payload, cf)
    bare = parse_bare_update(message)
    bare_shaped = (
        code in (Code.POST, Code.DELETE)
        and len(path) == 2
        and path[0] == "rd"
        and path[1] != ""
        and not query
        and not payload
        and cf is None
    )
    if bare_shaped:
        assert bare is not None
    else:
        assert bare is None
    if bare is not None:
        assert bare == general(message)


def test_an_empty_update_and_a_deregister_are_recognised() -> None:
    update = parse_bare_update(received(Code.POST, ["rd", "r1"], [], b"", None))
    assert update == UpdateRequest("r1", None, None, None, False, None, None, None)
    assert isinstance(update, UpdateRequest) and update.is_empty
    assert parse_bare_update(received(Code.DELETE, ["rd", "r1"], [], b"", None)) == (
        DeregisterRequest("r1")
    )
    # an Update with a lifetime, or a De-register with a body, is the general parser's
    assert parse_bare_update(received(Code.POST, ["rd", "r1"], ["lt=60"], b"", None)) is None
    assert parse_bare_update(received(Code.DELETE, ["rd", "r1"], [], b"x", None)) is None
