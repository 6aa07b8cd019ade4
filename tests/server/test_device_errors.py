"""What devices get wrong reaches the caller as typed results, never as exceptions, and the
server keeps serving: error codes with diagnostics, undecodable payloads, silence, RST,
garbage notifications. Driven by a raw client whose answers the test chooses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.codec.link import Attributes, AttributeUpdate
from lwm2m.model import Path, SingleResource, Value
from lwm2m.server import LwM2MServer, Notification, OperationStatus
from lwm2m.store import Store
from tests.server.conftest import (
    RawClient,
    collecting,
    eventually,
    resetting_peer,
    run,
    running_server,
)

EP = "raw-dev"


def reply(code: Code, payload: bytes = b"", cf: int | None = None, **options: object) -> Message:
    message = Message(code=code, payload=payload)
    if cf is not None:
        message.opt.content_format = cf
    for name, value in options.items():
        setattr(message.opt, name, value)
    return message


Handler = Callable[[Message], Message | None]


def by_path(table: dict[str, Handler]) -> Handler:
    def handler(message: Message) -> Message | None:
        path = "/" + "/".join(message.opt.uri_path)
        answer = table.get(path)
        return answer(message) if answer else reply(Code.NOT_FOUND)

    return handler


async def _client(server: LwM2MServer, handler: Handler) -> RawClient:
    client = await RawClient(handler).connect(server.coap_address)
    response = await client.register(EP, version="1.1")
    assert response.code == Code.CREATED
    return client


def test_device_error_codes_carry_the_diagnostic_payload(store: Store) -> None:
    handler = by_path(
        {
            "/3/0/0": lambda _m: reply(Code.NOT_FOUND, b"no such resource here"),
            "/3/0/1": lambda _m: reply(Code.INTERNAL_SERVER_ERROR),
            "/3/0/4": lambda _m: reply(Code.METHOD_NOT_ALLOWED, b"\x00\xff binary"),
        }
    )

    async def scenario() -> None:
        async with running_server(store) as server:
            client = await _client(server, handler)
            missing = await server.read(EP, "/3/0/0")
            assert (missing.status, missing.code) == (OperationStatus.DEVICE_ERROR, "4.04")
            assert missing.reason == "no such resource here"
            broken = await server.read(EP, "/3/0/1")
            assert (broken.code, broken.reason) == ("5.00", "Internal Server Error")
            refused = await server.execute(EP, "/3/0/4")
            assert refused.code == "4.05" and refused.reason == "Method Not Allowed"
            assert server.handler_errors == 0
            client.close()

    run(scenario())


def test_undecodable_answers_are_bad_responses_and_the_server_carries_on(store: Store) -> None:
    handler = by_path(
        {
            "/3/0": lambda _m: reply(Code.CONTENT, b"\xc8\x00\x50garbage", cf=11542),
            "/3/0/0": lambda _m: reply(Code.CONTENT, b"x", cf=9999),
            "/3/0/9": lambda _m: reply(Code.CONTENT, b"not a number", cf=0),
            "/3": lambda _m: reply(Code.CONTENT, b"hello", cf=0),
            "/3/0/13": lambda _m: reply(Code.CONTENT, b"1700000000", cf=0),
        }
    )

    async def scenario() -> None:
        async with running_server(store) as server:
            client = await _client(server, handler)
            tlv = await server.read(EP, "/3/0")
            assert tlv.status is OperationStatus.BAD_RESPONSE and "undecodable" in tlv.reason
            unknown = await server.read(EP, "/3/0/0")
            assert unknown.status is OperationStatus.BAD_RESPONSE
            text = await server.read(EP, "/3/0/9")
            assert text.status is OperationStatus.BAD_RESPONSE
            discover = await server.discover(EP, "/3")
            assert discover.status is OperationStatus.BAD_RESPONSE
            fine = await server.read(EP, "/3/0/13")
            assert fine.ok and fine.content == SingleResource(13, Value.time(1700000000))
            assert server.handler_errors == 0
            client.close()

    run(scenario())


def test_silence_is_a_timeout_and_rst_is_unreachable(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            client = await _client(server, lambda _m: None)
            silent = await server.read(EP, "/3/0/0", timeout=0.3)
            assert silent.status is OperationStatus.TIMEOUT
            assert "0.3" in silent.reason
            port = client.local_port
            client.close()
            await asyncio.sleep(0.05)
            async with resetting_peer(port):
                reset = await server.read(EP, "/3/0/0")
                assert reset.status is OperationStatus.UNREACHABLE

    run(scenario())


def test_requests_carry_what_the_operation_needs(store: Store) -> None:
    handler = by_path(
        {
            "/3/0/9": lambda _m: reply(Code.CHANGED),
            "/3/0/4": lambda _m: reply(Code.CHANGED),
            "/11": lambda _m: reply(Code.CREATED, location_path=("11", "3")),
            "/12": lambda _m: reply(Code.CREATED),
            "/3/0/14": lambda _m: reply(Code.CONTENT, b"\xc6\x0e+02:00", cf=1542),
        }
    )

    async def scenario() -> None:
        async with running_server(store) as server:
            client = await _client(server, handler)
            update = AttributeUpdate(Attributes(pmin=5, pmax=10), frozenset({"gt"}))
            assert (await server.write_attributes(EP, "/3/0/9", update)).ok
            assert client.requests[-1].opt.uri_query == ("pmin=5", "pmax=10", "gt")
            assert not client.requests[-1].payload
            assert (await server.execute(EP, "/3/0/4", "0='now',1")).ok
            assert client.requests[-1].payload == b"0='now',1"
            created = await server.create(EP, "/11", [SingleResource(0, Value.string("a"))])
            assert created.ok and created.location == Path.parse("/11/3")
            unplaced = await server.create(EP, "/12", [SingleResource(0, Value.integer(1))])
            assert unplaced.ok and unplaced.location is None
            legacy = await server.read(EP, "/3/0/14", format=11542)
            assert legacy.ok and legacy.content_format == 1542, legacy
            client.close()

    run(scenario())


def test_undecodable_notifications_are_counted_and_the_observation_lives_on(
    store: Store,
) -> None:
    def observe(message: Message) -> Message:
        return reply(Code.CONTENT, b"1", cf=0)

    async def scenario() -> None:
        async with running_server(store) as server, collecting(server) as log:
            client = await _client(server, by_path({"/3/0/9": observe}))
            observed = await server.observe(EP, "/3/0/9")
            assert observed.ok and observed.observation_id is not None, observed
            [observation] = client.observations
            client.notify(observation, reply(Code.CONTENT, b"garbage", cf=0))
            await eventually(lambda: server.stats["undecodable_notifications"] == 1)
            client.notify(observation, reply(Code.CONTENT, b"77", cf=0))
            await eventually(lambda: bool(log.of(Notification)))
            [note] = log.of(Notification)
            assert note.content[Path.parse("/3/0/9")] == SingleResource(9, Value.integer(77))
            assert server.handler_errors == 0
            client.close()

    run(scenario())
