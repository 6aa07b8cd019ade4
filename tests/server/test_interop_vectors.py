"""The pure server logic against real clients' bytes (wakaama, Anjay; ../shared/interop).

Every Register / Update / De-register / Send a real client sent parses to the typed request
the capture server's answer implies; every DM exchange the capture server had with a client
is rebuilt as one of our operations, whose request must carry what the captured one carried,
and whose interpretation of the client's real answer must be a success exactly when the
client answered 2.xx (decoded with the built-in object model) and a device error with the
same code otherwise."""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import Any

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.codec import decode_paths
from lwm2m.model import Path
from lwm2m.server.operations import (
    AnyOperation,
    Create,
    Delete,
    Discover,
    Execute,
    Observe,
    ObserveComposite,
    Read,
    ReadComposite,
    Response,
    Write,
    WriteAttributes,
    WriteComposite,
    decode_report,
)
from lwm2m.server.registration import (
    DeregisterRequest,
    LifetimeRules,
    Refusal,
    RegisterRequest,
    SendRequest,
    UpdateRequest,
    parse_request,
)
from lwm2m.server.results import OperationStatus
from objects import BUILTIN_MODEL
from tests.conftest import REPO
from tests.fixtures.extract_interop_server import TARGET, extract, render

ENTRIES: list[dict[str, Any]] = json.loads(TARGET.read_text("utf-8"))
DEVICE = [e for e in ENTRIES if e["kind"] == "device"]
# an observation's cancellation (GET Observe=1) is built by the CoAP core, not an operation
DM = [
    e
    for e in ENTRIES
    if e["kind"] == "dm" and Message.decode(bytes.fromhex(e["request_hex"])).opt.observe != 1
]


def test_fixture_is_in_the_repository() -> None:
    assert TARGET.is_relative_to(REPO) and len(DEVICE) > 50 and len(DM) > 250


def test_the_fixture_is_what_the_extractor_makes_from_shared(shared_dir: FsPath) -> None:
    vectors = json.loads((shared_dir / "interop" / "interop-vectors.json").read_text("utf-8"))
    assert render(extract(vectors)) == TARGET.read_text("utf-8")


def _message(hex_text: str) -> Message:
    return Message.decode(bytes.fromhex(hex_text))


@pytest.mark.parametrize("entry", DEVICE, ids=lambda e: e["id"])
def test_device_requests_parse_as_the_capture_server_answered(entry: dict[str, Any]) -> None:
    message = _message(entry["request_hex"])
    code = entry["response_code"]
    # the run that refused 1.2 behaves like a server configured without 1.2
    allowed = (
        ("1.0", "1.1") if entry["id"].startswith("anjay-1.1-fallback") else ("1.0", "1.1", "1.2")
    )
    parsed = parse_request(message, allowed_versions=allowed, lifetimes=LifetimeRules())
    if code == "4.12":
        assert isinstance(parsed, Refusal) and parsed.code == Code.PRECONDITION_FAILED
        return
    if code == "2.01":
        assert isinstance(parsed, RegisterRequest), parsed
        assert parsed.endpoint.startswith("vec-")
        assert parsed.lwm2m_version == entry["lwm2m_version"]
        assert parsed.objects.objects, "a Register lists objects"
        if entry["id"].startswith("wakaama"):
            assert parsed.objects.content_formats in ((110,), (112,))
    elif code == "2.04" and tuple(message.opt.uri_path) == ("dp",):
        assert isinstance(parsed, SendRequest)
        assert parsed.content_format is not None
        groups = decode_report(parsed.content_format, parsed.payload, BUILTIN_MODEL, 1e9)
        assert groups and any(g.nodes for g in groups)
    elif code == "2.04":
        assert isinstance(parsed, UpdateRequest), parsed
        if message.payload:
            assert parsed.objects is not None and parsed.objects.objects
        else:
            assert parsed.objects is None
    else:
        assert code == "2.02"
        assert isinstance(parsed, DeregisterRequest)


def operation_for(message: Message) -> AnyOperation:
    """Our operation for a captured DM request."""
    path = Path(tuple(int(s) for s in message.opt.uri_path))
    accept = int(message.opt.accept) if message.opt.accept is not None else None
    cf = int(message.opt.content_format) if message.opt.content_format is not None else None
    code = message.code
    if code == Code.GET:
        if accept == 40:
            return Discover(path)
        if message.opt.observe == 0:
            return Observe(path, accept)
        return Read(path, accept)
    if code == Code.FETCH:
        assert cf is not None
        paths = tuple(decode_paths(cf, bytes(message.payload)))
        fmt = accept if accept is not None else cf
        if message.opt.observe == 0:
            return ObserveComposite(paths, fmt)
        return ReadComposite(paths, fmt)
    if code == Code.iPATCH:
        assert cf is not None
        return WriteComposite((), cf, bytes(message.payload))
    if code == Code.PUT and message.opt.uri_query and not message.payload:
        return WriteAttributes(path, tuple(message.opt.uri_query))
    if code == Code.PUT:
        assert cf is not None
        return Write(path, cf, bytes(message.payload), replace=True)
    if code == Code.POST and path.is_object:
        assert cf is not None
        return Create(path, cf, bytes(message.payload))
    if code == Code.POST and cf is not None:
        return Write(path, cf, bytes(message.payload), replace=False)
    if code == Code.POST:
        args = bytes(message.payload).decode() or None
        return Execute(path, args)
    assert code == Code.DELETE
    return Delete(path)


@pytest.mark.parametrize("entry", DM, ids=lambda e: e["id"])
def test_operations_build_the_captured_request_and_read_the_real_answer(
    entry: dict[str, Any],
) -> None:
    captured = _message(entry["request_hex"])
    op = operation_for(captured)
    built = op.request().to_message()
    assert built.code == captured.code
    assert tuple(built.opt.uri_path) == tuple(captured.opt.uri_path)
    assert built.opt.accept == captured.opt.accept
    assert built.opt.observe == captured.opt.observe
    assert tuple(built.opt.uri_query) == tuple(captured.opt.uri_query)
    if not isinstance(op, ReadComposite | ObserveComposite):
        assert built.opt.content_format == captured.opt.content_format
        assert bytes(built.payload) == bytes(captured.payload)
    response = Response.from_message(_message(entry["response_hex"]))
    result = op.interpret(response, BUILTIN_MODEL)
    assert result.code == entry["response_code"]
    if entry["response_code"].startswith("2."):
        assert result.status is OperationStatus.SUCCESS, (entry["description"], result)
    else:
        assert result.status is OperationStatus.DEVICE_ERROR, (entry["description"], result)
