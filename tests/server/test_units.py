"""Small pure parts: the event subscription's bounded buffer, operations round-tripping
through the store's queued-request rows, request building under an alternate root, result
helpers, queue outcome mapping and config validation."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from lwm2m.codec import ContentFormat
from lwm2m.model import ObjectInstance, Path, SingleResource, Value
from lwm2m.server import (
    Deregistered,
    EventSubscription,
    OperationResult,
    OperationStatus,
    ServerConfig,
)
from lwm2m.server.operations import (
    Create,
    Delete,
    Discover,
    Execute,
    Observe,
    ObserveComposite,
    QueuedRequestUnreadable,
    Read,
    ReadComposite,
    Response,
    Write,
    WriteAttributes,
    WriteComposite,
    from_queued,
    paths_format,
)
from lwm2m.server.queue import is_awake, outcome_state
from lwm2m.store import Address, Identity, QueuedRequest, QueueState, Registration
from objects import BUILTIN_MODEL

CF = ContentFormat


def _registration(endpoint: str) -> Registration:
    return Registration(
        id="r1",
        endpoint=endpoint,
        lwm2m_version="1.1",
        lifetime=60,
        binding="U",
        queue_mode=False,
        sms_number=None,
        address=Address("127.0.0.1", 5683),
        root_path="/",
        object_links="",
        supported_formats=(),
        registered_at=0.0,
        updated_at=0.0,
        expires_at=60.0,
        identity=Identity.nosec(),
    )


def test_subscription_drops_the_oldest_events_and_counts_them() -> None:
    closed: list[EventSubscription] = []
    subscription = EventSubscription(2, closed.append)
    for name in ("a", "b", "c"):
        subscription.publish(Deregistered(name, _registration(name)))
    assert subscription.dropped == 1 and subscription.pending() == 2
    first = subscription.get_nowait()
    assert isinstance(first, Deregistered) and first.endpoint == "b"

    async def drain() -> list[str]:
        subscription.end()
        return [e.endpoint async for e in subscription if isinstance(e, Deregistered)]

    assert asyncio.run(drain()) == ["c"]
    assert not closed  # ended by the server, not closed by the consumer


def test_subscription_close_unsubscribes_and_wakes_the_reader() -> None:
    closed: list[EventSubscription] = []

    async def scenario() -> None:
        subscription = EventSubscription(8, closed.append)
        reader = asyncio.ensure_future(anext(aiter(subscription), None))
        await asyncio.sleep(0)
        await subscription.aclose()
        assert await asyncio.wait_for(reader, 1) is None
        subscription.publish(Deregistered("x", _registration("x")))
        assert subscription.pending() == 0 and subscription.closed
        assert closed == [subscription]

    asyncio.run(scenario())


def _row(op: Any) -> QueuedRequest:
    new = op.to_queued("ep", 100.0)
    return QueuedRequest(
        id=7,
        endpoint=new.endpoint,
        operation=new.operation,
        paths=new.paths,
        content_format=new.content_format,
        payload=new.payload,
        deadline=new.deadline,
        correlation=None,
        state=QueueState.PENDING,
        created_at=0.0,
        sent_at=None,
        finished_at=None,
        response_code=None,
        response_payload=None,
    )


P = Path.parse
OPERATIONS = [
    Read(P("/3/0"), CF.TLV),
    Read(P("/3/0/0"), None),
    Observe(P("/3/0/9"), CF.TEXT),
    ObserveComposite((P("/3/0/9"), P("/1/0/1")), CF.SENML_CBOR),
    Discover(P("/3")),
    Write.of(
        P("/1/0/1"), SingleResource(1, Value.integer(60)), CF.TEXT, BUILTIN_MODEL, replace=True
    ),
    Write(P("/3/0"), CF.TLV, b"\xc6\x0e+02:00", replace=False),
    WriteAttributes(P("/3/0/9"), ("pmin=5", "pmax=10", "gt")),
    Execute(P("/3/0/4"), "0='x'"),
    Execute(P("/3/0/4"), None),
    Create.of(P("/11"), [SingleResource(0, Value.string("a"))], CF.TLV, BUILTIN_MODEL),
    Create.of(
        P("/11"),
        ObjectInstance.of(4, [SingleResource(0, Value.string("a"))]),
        CF.SENML_CBOR,
        BUILTIN_MODEL,
    ),
    Delete(P("/11/4")),
    ReadComposite((P("/3/0/0"), P("/1/0")), CF.LWM2M_CBOR),
    WriteComposite.of(
        {P("/1/0/1"): SingleResource(1, Value.integer(9))}, CF.SENML_JSON, BUILTIN_MODEL
    ),
]


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda o: f"{o.name}")
def test_every_operation_survives_the_queue_table(op: Any) -> None:
    back = from_queued(_row(op))
    assert back == op
    assert back.request() == op.request()


def test_unreadable_queue_rows_are_reported() -> None:
    row = _row(Read(P("/3/0"), None))
    with pytest.raises(QueuedRequestUnreadable):
        from_queued(replace(row, operation="teleport"))
    with pytest.raises(QueuedRequestUnreadable):
        from_queued(replace(row, operation="write", content_format=None))


def test_requests_go_under_the_alternate_root() -> None:
    message = Read(P("/3/0/1"), CF.TEXT).request().to_message(("lwm2m",))
    assert tuple(message.opt.uri_path) == ("lwm2m", "3", "0", "1")
    assert message.opt.accept == CF.TEXT
    composite = ReadComposite((P("/3/0/0"),), CF.LWM2M_CBOR).request()
    assert composite.content_format == CF.SENML_CBOR and composite.accept == CF.LWM2M_CBOR
    assert paths_format(CF.LWM2M_JSON) == CF.SENML_JSON


def test_create_location_comes_from_location_path_even_under_a_root() -> None:
    op = Create.of(P("/11"), [SingleResource(0, Value.string("a"))], CF.TLV, BUILTIN_MODEL)
    answer = Response(65, None, b"", ("lwm2m", "11", "5"))
    result = op.interpret(answer, BUILTIN_MODEL)
    assert result.ok and getattr(result, "location", None) == P("/11/5")
    other = op.interpret(Response(65, None, b"", ("3", "0")), BUILTIN_MODEL)
    assert getattr(other, "location", "x") is None


def test_response_reason_prefers_printable_diagnostics() -> None:
    assert Response(132, None, b"gone").reason() == "gone"
    assert Response(132, None, b"\x00\x01").reason() == "Not Found"
    assert Response(69, None, b"ok").reason() == "Content"
    assert Response(69).code_text == "2.05"


def test_queue_outcomes_and_awake_window() -> None:
    answered = OperationResult(OperationStatus.DEVICE_ERROR, "4.04")
    assert outcome_state(answered) is QueueState.ANSWERED
    assert outcome_state(OperationResult(OperationStatus.TIMEOUT)) is QueueState.TIMEOUT
    assert is_awake(False, 0.0, 1000.0, 93.0)
    assert is_awake(True, 950.0, 1000.0, 93.0)
    assert not is_awake(True, 900.0, 1000.0, 93.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"coap_port": None, "coaps_port": None},
        {"allowed_versions": ()},
        {"allowed_versions": ("1.3",)},
        {"min_lifetime": 0},
        {"min_lifetime": 100, "default_lifetime": 50},
        {"request_timeout": 0},
        {"coap_port": 70000},
        {"subscriber_buffer": 0},
    ],
)
def test_config_refuses_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServerConfig(**changes)


def test_config_nosec_default() -> None:
    assert ServerConfig().nosec_by_default
    assert not ServerConfig(secure_only=True).nosec_by_default
    assert not ServerConfig(allow_nosec_globally=False).nosec_by_default
