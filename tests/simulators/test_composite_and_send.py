"""Read-Composite, Write-Composite (every composite format) and Send."""

from __future__ import annotations

import pytest
from aiocoap.numbers.codes import Code

from lwm2m.codec import decode_nodes, decode_timestamped, encode_nodes, encode_paths
from lwm2m.model import DataType, MultipleResource, Node, ResourceInstance, SingleResource, Value
from objects import BUILTIN_MODEL
from simulators.device.client import ClientError
from simulators.device.config import ClientConfig
from simulators.device.events import SendCompleted, SendFailed, Written
from simulators.device.formats import CF
from tests.simulators.pair import CLOCK, Pair, code, p, request

COMPOSITE = [CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_JSON, CF.LWM2M_CBOR]


@pytest.fixture
def pair() -> Pair:
    pair = Pair()
    pair.start()
    return pair


def fetch(pair: Pair, cf: int, *paths: str, accept: int | None = None) -> tuple[str, bytes]:
    body = encode_paths(cf, [p(x) for x in paths])
    reply = pair.ask(request(Code.FETCH, "/", content_format=cf, payload=body, accept=accept))
    return code(reply), reply.payload


@pytest.mark.parametrize("cf", COMPOSITE)
def test_read_composite_returns_each_requested_path(pair: Pair, cf: int) -> None:
    paths = ("/3/0/0", "/3/0/9", "/1/0", "/3/0/7/1")
    status, payload = fetch(pair, CF.SENML_JSON, *paths, accept=cf)
    assert status == "2.05"
    wanted = [p("/3/0/0"), p("/3/0/9"), p("/1/0"), p("/3/0/7/1")]
    nodes = decode_nodes(cf, payload, BUILTIN_MODEL, wanted)
    assert nodes == {w: pair.store.read(w, pair.now) for w in wanted}


def test_read_composite_leaves_out_absent_paths(pair: Pair) -> None:
    status, payload = fetch(pair, CF.SENML_JSON, "/3/0/9", "/3/0/22", "/9/0")
    assert status == "2.05"
    nodes = decode_nodes(CF.SENML_JSON, payload, BUILTIN_MODEL)
    assert list(nodes) == [p("/3/0/9")]


def test_read_composite_of_the_root_covers_everything_but_security(pair: Pair) -> None:
    status, payload = fetch(pair, CF.SENML_CBOR, "/")
    assert status == "2.05"
    objects = {path.ids[0] for path in decode_nodes(CF.SENML_CBOR, payload, BUILTIN_MODEL)}
    assert objects == {1, 3, 4, 5, 3443, 32001}


def test_read_composite_answers_in_the_accepted_format(pair: Pair) -> None:
    status, payload = fetch(pair, CF.SENML_JSON, "/3/0/9", accept=CF.SENML_CBOR)
    assert status == "2.05"
    assert decode_nodes(CF.SENML_CBOR, payload, BUILTIN_MODEL) == {
        p("/3/0/9"): SingleResource(9, Value.integer(95))
    }


@pytest.mark.parametrize(
    ("cf", "paths", "accept", "expected"),
    [
        (CF.SENML_JSON, ("/9/0", "/3/0/22"), None, "4.04"),  # nothing at all
        (CF.SENML_JSON, ("/0/0",), None, "4.01"),
        (CF.SENML_JSON, ("/3/0/9",), CF.TLV, "4.06"),
        (CF.SENML_JSON, ("/3/0/9",), CF.TEXT, "4.06"),
    ],
)
def test_read_composite_refusals(
    pair: Pair, cf: int, paths: tuple[str, ...], accept: int | None, expected: str
) -> None:
    assert fetch(pair, cf, *paths, accept=accept)[0] == expected


def test_read_composite_needs_a_composite_format(pair: Pair) -> None:
    reply = pair.ask(request(Code.FETCH, "/", content_format=CF.TLV, payload=b"\x00"))
    assert code(reply) == "4.15"
    body = encode_paths(CF.SENML_JSON, [p("/3/0/9")])
    reply = pair.ask(request(Code.FETCH, "/", content_format=CF.LWM2M_CBOR, payload=body))
    assert code(reply) == "4.15"  # LwM2M CBOR names no paths without values
    reply = pair.ask(request(Code.FETCH, "/", content_format=CF.SENML_JSON, payload=b"[{"))
    assert code(reply) == "4.00"
    reply = pair.ask(request(Code.FETCH, "/", payload=b"[]"))
    assert code(reply) == "4.00"


def ipatch(pair: Pair, cf: int, nodes: dict[str, Node]) -> str:
    body = encode_nodes(cf, {p(k): v for k, v in nodes.items()}, BUILTIN_MODEL)
    return code(pair.ask(request(Code.iPATCH, "/", content_format=cf, payload=body)))


@pytest.mark.parametrize("cf", COMPOSITE)
def test_write_composite_writes_across_objects(pair: Pair, cf: int) -> None:
    flags = MultipleResource(7, DataType.STRING, {0: Value.string("a=1")})
    status = ipatch(
        pair,
        cf,
        {
            "/1/0/1": SingleResource(1, Value.integer(600)),
            "/3/0/14": SingleResource(14, Value.string("+01:00")),
            "/32001/0/7": flags,
            "/32001/0/7/3": ResourceInstance(3, Value.string("b=2")),
        },
    )
    assert status == "2.04"
    assert pair.store.get("/1/0/1") == 600
    assert pair.store.get("/3/0/14") == "+01:00"
    assert pair.store.get("/32001/0/7") == {0: "a=1", 3: "b=2"}
    assert set(pair.of_type(Written)[-1].paths) >= {p("/1/0/1"), p("/3/0/14")}


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ({"/3/0/9": SingleResource(9, Value.integer(1))}, "4.05"),
        ({"/4/0/6": SingleResource(6, Value.integer(5))}, "4.04"),  # not implemented
        ({"/0/0/0": SingleResource(0, Value.string("coap://x"))}, "4.01"),
    ],
)
def test_write_composite_is_all_or_nothing(
    pair: Pair, nodes: dict[str, Node], expected: str
) -> None:
    nodes = {"/3/0/14": SingleResource(14, Value.string("+09:00")), **nodes}
    assert ipatch(pair, CF.SENML_JSON, nodes) == expected
    assert pair.store.get("/3/0/14") == "+00:00"


def test_write_composite_needs_a_composite_format(pair: Pair) -> None:
    reply = pair.ask(request(Code.iPATCH, "/", content_format=CF.TLV, payload=b"\x00"))
    assert code(reply) == "4.15"


# -- Send -------------------------------------------------------------------------------------


def test_send_posts_current_values_with_the_device_time(pair: Pair) -> None:
    pair.advance(12)
    pair.client.send(["/3/0/9", "/3/0/0"], pair.now)
    pair.flush()
    sent = pair.received[-1]
    assert sent.path == ("dp",) and int(sent.message.opt.content_format) == CF.SENML_CBOR
    [report] = decode_timestamped(CF.SENML_CBOR, sent.message.payload, BUILTIN_MODEL)
    assert report.timestamp == CLOCK + 12
    assert {str(k): n.value.value for k, n in report.nodes.items()} == {  # type: ignore[union-attr]
        "/3/0/9": 95,
        "/3/0/0": "fleetloop-sim",
    }
    assert pair.of_type(SendCompleted) == [SendCompleted((p("/3/0/9"), p("/3/0/0")), "2.04")]


def test_send_reports_an_unanswered_send(pair: Pair) -> None:
    pair.drop_to_server = True
    pair.client.send(["/3/0/9"], pair.now)
    pair.run_until(lambda: bool(pair.of_type(SendFailed)))
    assert pair.of_type(SendFailed)[0].paths == (p("/3/0/9"),)


def test_send_is_refused_when_muted_unregistered_or_on_1_0(pair: Pair) -> None:
    pair.store.set("/1/0/23", True, pair.now)
    with pytest.raises(ClientError, match="Mute Send"):
        pair.client.send(["/3/0/9"], pair.now)
    old = Pair(config=ClientConfig(lwm2m_version="1.0"))
    with pytest.raises(ClientError, match="registration"):
        old.client.send(["/3/0/9"], old.now)
    old.start()
    with pytest.raises(ClientError, match=r"1\.1"):
        old.client.send(["/3/0/9"], old.now)
