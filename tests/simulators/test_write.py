"""Write (replace and partial update), Create, Delete and Execute, in every format, with
every refusal code."""

from __future__ import annotations

import pytest
from aiocoap.numbers.codes import Code

from lwm2m.codec import encode
from lwm2m.codec.tlv import NewInstance, TlvCodec
from lwm2m.model import (
    DataType,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    ResourceInstance,
    SingleResource,
    Value,
)
from objects import BUILTIN_MODEL, builtin_definition
from simulators.device.defaults import default_template
from simulators.device.events import Created, Deleted, Executed, Written
from simulators.device.execute import format_arguments
from simulators.device.formats import CF
from simulators.device.template import InstanceTemplate, ObjectTemplate
from tests.simulators.pair import Pair, code, p, request

MULTI_FORMATS = [CF.TLV, CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_JSON, CF.LWM2M_CBOR]
ALL_FORMATS = [CF.TEXT, CF.CBOR, *MULTI_FORMATS]

APN = ObjectTemplate(
    builtin_definition(11),
    {0: InstanceTemplate({0: "default", 1: "iot.fleetloop", 3: True, 4: 0})},
    new_instance=InstanceTemplate({1: "", 3: False}),
    deletable=True,
)


@pytest.fixture
def pair() -> Pair:
    pair = Pair(template=default_template().replace(APN))
    pair.start()
    return pair


def put(pair: Pair, path: str, node: Node, cf: int, *, post: bool = False) -> str:
    payload = encode(cf, node, p(path), BUILTIN_MODEL)
    method = Code.POST if post else Code.PUT
    return code(pair.ask(request(method, path, content_format=cf, payload=payload)))


def string(rid: int, text: str) -> SingleResource:
    return SingleResource(rid, Value.string(text))


def flags(rid: int, values: dict[int, str]) -> MultipleResource:
    return MultipleResource(rid, DataType.STRING, {k: Value.string(v) for k, v in values.items()})


@pytest.mark.parametrize("cf", ALL_FORMATS)
def test_write_replaces_a_resource_in_every_format(pair: Pair, cf: int) -> None:
    assert put(pair, "/1/0/1", SingleResource(1, Value.integer(120)), cf) == "2.04"
    assert pair.store.get("/1/0/1") == 120
    assert pair.of_type(Written)[-1].paths == (p("/1/0/1"),)


def test_opaque_writes_opaque_resources_only(pair: Pair) -> None:
    digest = SingleResource(2, Value.opaque(b"\x01" * 32))
    assert put(pair, "/32001/0/2", digest, CF.OPAQUE) == "2.04"
    assert pair.store.get("/32001/0/2") == b"\x01" * 32
    response = pair.ask(request(Code.PUT, "/3/0/14", content_format=CF.OPAQUE, payload=b"x"))
    assert code(response) == "4.15"


@pytest.mark.parametrize("cf", MULTI_FORMATS)
def test_partial_update_sets_the_given_resources_and_keeps_the_rest(pair: Pair, cf: int) -> None:
    instance = ObjectInstance.of(0, [string(14, "+02:00"), string(15, "Europe/Berlin")])
    assert put(pair, "/3/0", instance, cf, post=True) == "2.04"
    assert pair.store.get("/3/0/14") == "+02:00"
    assert pair.store.get("/3/0/15") == "Europe/Berlin"
    assert pair.store.get("/3/0/0") == "fleetloop-sim"
    assert pair.of_type(Written)[-1].paths == (p("/3/0/14"), p("/3/0/15"))


@pytest.mark.parametrize("cf", MULTI_FORMATS)
def test_replace_of_an_instance_resets_what_it_does_not_name(pair: Pair, cf: int) -> None:
    pair.store.set("/3/0/15", "Europe/Warsaw", pair.now)
    assert put(pair, "/3/0", ObjectInstance.of(0, [string(14, "+01:00")]), cf) == "2.04"
    assert pair.store.get("/3/0/14") == "+01:00"
    assert pair.store.get("/3/0/15") == "Etc/UTC"  # back to the default


def test_a_refused_partial_update_changes_nothing(pair: Pair) -> None:
    instance = ObjectInstance.of(0, [string(14, "+05:00"), SingleResource(9, Value.integer(1))])
    assert put(pair, "/3/0", instance, CF.TLV, post=True) == "4.05"  # 9 is read-only
    assert pair.store.get("/3/0/14") == "+00:00"  # unlike wakaama, nothing was written


def test_multiple_resource_writes_replace_merge_and_add(pair: Pair) -> None:
    assert put(pair, "/32001/0/7", flags(7, {0: "a=1", 1: "b=2"}), CF.TLV) == "2.04"
    assert pair.store.get("/32001/0/7") == {0: "a=1", 1: "b=2"}
    assert put(pair, "/32001/0/7", flags(7, {5: "c=3"}), CF.SENML_JSON) == "2.04"
    assert pair.store.get("/32001/0/7") == {5: "c=3"}  # replace: exactly what was given
    assert put(pair, "/32001/0/7", flags(7, {6: "d=4"}), CF.TLV, post=True) == "2.04"
    assert pair.store.get("/32001/0/7") == {5: "c=3", 6: "d=4"}  # partial: merged
    instance = ObjectInstance.of(0, [flags(7, {7: "e=5"})])
    assert put(pair, "/32001/0", instance, CF.SENML_CBOR, post=True) == "2.04"
    assert pair.store.get("/32001/0/7") == {5: "c=3", 6: "d=4", 7: "e=5"}
    riid = ResourceInstance(9, Value.string("z=9"))
    assert put(pair, "/32001/0/7/9", riid, CF.TEXT) == "2.04"
    assert pair.store.get("/32001/0/7/9") == "z=9"


@pytest.mark.parametrize(
    ("path", "cf", "payload", "expected"),
    [
        ("/3/0/9", CF.TEXT, b"5", "4.05"),  # read-only
        ("/3/0/4", CF.TEXT, b"", "4.05"),  # executable
        ("/3/0/22", CF.TEXT, b"x", "4.04"),  # not implemented here
        ("/3/9/14", CF.TEXT, b"x", "4.04"),
        ("/0/0/0", CF.TEXT, b"coap://evil", "4.01"),
        ("/3", CF.TLV, b"", "4.05"),
        ("/1/0/1", None, b"120", "4.00"),  # no Content-Format
        ("/1/0/1", 9999, b"120", "4.15"),
        ("/1/0/1", CF.TEXT, b"12x", "4.00"),
        ("/1/0/1", CF.TLV, b"\xff\xff", "4.00"),
        ("/3/0/14/0", CF.TEXT, b"x", "4.00"),  # a single resource has no instances
    ],
)
def test_write_refusals(
    pair: Pair, path: str, cf: int | None, payload: bytes, expected: str
) -> None:
    response = pair.ask(request(Code.PUT, path, content_format=cf, payload=payload))
    assert code(response) == expected


# -- Create / Delete -------------------------------------------------------------------------------


@pytest.mark.parametrize("cf", MULTI_FORMATS)
def test_create_makes_an_instance_and_answers_its_location(pair: Pair, cf: int) -> None:
    resources = [string(0, "backup"), string(1, "backup.apn"), SingleResource(4, Value.integer(1))]
    if cf == CF.TLV:
        payload = TlvCodec().encode_create(
            [NewInstance(None, tuple(resources))], p("/11"), BUILTIN_MODEL
        )
    else:
        payload = encode(
            cf, LwM2MObject.of(11, [ObjectInstance.of(1, resources)]), p("/11"), BUILTIN_MODEL
        )
    response = pair.ask(request(Code.POST, "/11", content_format=cf, payload=payload))
    assert code(response) == "2.01"
    assert tuple(response.opt.location_path) == ("11", "1")
    assert pair.store.get("/11/1/1") == "backup.apn"
    assert pair.store.get("/11/1/3") is False  # the new-instance default
    assert pair.of_type(Created) == [Created(p("/11/1"))]


def test_create_creates_the_instance_id_the_server_chose(pair: Pair) -> None:
    resources = (string(0, "x"), SingleResource(4, Value.integer(0)))
    payload = TlvCodec().encode_create([NewInstance(7, resources)], p("/11"), BUILTIN_MODEL)
    response = pair.ask(request(Code.POST, "/11", content_format=CF.TLV, payload=payload))
    assert tuple(response.opt.location_path) == ("11", "7")
    assert pair.store.instance_ids(11) == (0, 7)


@pytest.mark.parametrize(
    ("path", "instance", "expected"),
    [
        (
            "/11",
            ObjectInstance.of(0, [string(0, "dup"), SingleResource(4, Value.integer(0))]),
            "4.00",
        ),
        ("/11", ObjectInstance.of(3, [string(1, "no name")]), "4.00"),  # mandatory 0, 4 missing
        ("/1", ObjectInstance.of(1, [SingleResource(0, Value.integer(2))]), "4.05"),  # as Anjay
        ("/0", ObjectInstance.of(1, [string(0, "coap://x")]), "4.01"),
    ],
)
def test_create_refusals(pair: Pair, path: str, instance: ObjectInstance, expected: str) -> None:
    oid = p(path).ids[0]
    payload = encode(CF.SENML_JSON, LwM2MObject.of(oid, [instance]), p(path), BUILTIN_MODEL)
    response = pair.ask(request(Code.POST, path, content_format=CF.SENML_JSON, payload=payload))
    assert code(response) == expected


def test_delete_removes_an_instance_and_refuses_the_rest(pair: Pair) -> None:
    assert code(pair.ask(request(Code.DELETE, "/11/0"))) == "2.02"
    assert pair.store.instance_ids(11) == ()
    assert pair.of_type(Deleted) == [Deleted(p("/11/0"))]
    assert code(pair.ask(request(Code.DELETE, "/11/0"))) == "4.04"
    assert code(pair.ask(request(Code.DELETE, "/1/5"))) == "4.04"
    assert code(pair.ask(request(Code.DELETE, "/3/0"))) == "4.05"
    assert code(pair.ask(request(Code.DELETE, "/3"))) == "4.05"
    assert code(pair.ask(request(Code.DELETE, "/3/0/1"))) == "4.05"
    assert code(pair.ask(request(Code.DELETE, "/0/0"))) == "4.01"


def test_instance_changes_go_to_the_server_in_an_update(pair: Pair) -> None:
    pair.ask(request(Code.DELETE, "/11/0"))
    pair.advance(0.0)
    update = pair.updates()[-1]
    assert b"</11>" in update.message.payload
    assert b"</11/0>" not in update.message.payload
    assert int(update.message.opt.content_format) == CF.LINK


# -- Execute --------------------------------------------------------------------------------------


def test_execute_runs_with_its_arguments(pair: Pair) -> None:
    args = format_arguments(((0, "v1"), (1, None)))
    response = pair.ask(request(Code.POST, "/1/0/8", payload=args))
    assert code(response) == "2.04"
    executed = pair.of_type(Executed)[-1]
    assert executed.path == p("/1/0/8")
    assert executed.args.items == ((0, "v1"), (1, None))


@pytest.mark.parametrize(
    ("path", "payload", "cf", "expected"),
    [
        ("/3/0/0", b"", None, "4.05"),  # not executable
        ("/3/0/22", b"", None, "4.04"),
        ("/3/5/4", b"", None, "4.04"),
        ("/0/0/0", b"", None, "4.01"),
        ("/3/0/12", b"0='x", None, "4.00"),  # unterminated quote
        ("/3/0/12", b"a", None, "4.00"),
        ("/3/0/12", b"0=x", None, "4.00"),
        ("/3/0/12", b"0,0", None, "4.00"),
        ("/3/0/12", b"", CF.TLV, "4.15"),
        ("/5/0/2", b"", None, "4.05"),  # firmware Update with nothing downloaded
    ],
)
def test_execute_refusals(
    pair: Pair, path: str, payload: bytes, cf: int | None, expected: str
) -> None:
    response = pair.ask(request(Code.POST, path, payload=payload, content_format=cf))
    assert code(response) == expected
    assert pair.of_type(Executed) == []


def test_reset_error_code_clears_the_error_list(pair: Pair) -> None:
    pair.store.set("/3/0/11", {0: 1, 1: 4}, pair.now)
    assert code(pair.ask(request(Code.POST, "/3/0/12"))) == "2.04"
    assert pair.store.get("/3/0/11") == {0: 0}


def test_large_writes_and_reads_go_block_wise(pair: Pair) -> None:
    """A bundle bigger than one block arrives Block1; a large value leaves Block2 (the CoAP
    core reassembles and slices; the device sees whole payloads)."""
    bundle = bytes(range(256)) * 20  # 5120 bytes
    reply = pair.ask(request(Code.PUT, "/32001/0/1", content_format=CF.OPAQUE, payload=bundle))
    assert code(reply) == "2.04"
    assert pair.store.get("/32001/0/1") == bundle
    pair.store.set("/3443/0/3", bundle, pair.now)
    reply = pair.ask(request(Code.GET, "/3443/0/3", accept=CF.OPAQUE))
    assert (code(reply), reply.payload) == ("2.05", bundle)
