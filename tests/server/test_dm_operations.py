"""Device management and information reporting against the simulated device, over real
sockets: the ETS 1.1 DM cases (int-201..281) on SQLite and PostgreSQL, and every operation in
every content format (the format matrix runs on SQLite: the backend plays no part in it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lwm2m.codec import ContentFormat
from lwm2m.codec.link import Attributes, AttributeUpdate
from lwm2m.model import (
    DataType,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    Path,
    ResourceInstance,
    SingleResource,
    Value,
)
from lwm2m.server import CLIENT_CHOICE, InvalidRequest, LwM2MServer, OperationStatus, Registered
from lwm2m.store import Source, Store
from objects import builtin_definition
from simulators.device.config import ClientConfig
from simulators.device.defaults import default_template
from simulators.device.template import InstanceTemplate, ObjectTemplate
from simulators.runner import SimulatedDevice
from tests.server.conftest import coap_uri, collecting, eventually, run, running_server

CF = ContentFormat
EP = "dm-dev"
MULTI_FORMATS = [CF.TLV, CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_JSON, CF.LWM2M_CBOR]
SINGLE_FORMATS = [CF.TEXT, CF.CBOR, *MULTI_FORMATS]
COMPOSITE_FORMATS = [CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_JSON, CF.LWM2M_CBOR]


def _template(uri: str) -> Any:
    """The default device plus a creatable, deletable APN profile object (11)."""
    apn = ObjectTemplate(
        builtin_definition(11),
        {0: InstanceTemplate({0: "internet", 1: "iot.example", 4: 0})},
        new_instance=InstanceTemplate({0: "", 4: 0}),
        deletable=True,
    )
    return default_template(server_uri=uri, lifetime=300).replace(apn)


@contextlib.asynccontextmanager
async def session(
    store: Store, *, version: str = "1.2", **server: Any
) -> AsyncIterator[tuple[LwM2MServer, SimulatedDevice]]:
    async with running_server(store, **server) as srv:
        uri = coap_uri(srv)
        config = ClientConfig(lwm2m_version=version)
        async with SimulatedDevice(EP, uri, config=config, template=_template(uri)) as device:
            await device.wait_registered()
            yield srv, device


def _value(node: Any) -> Any:
    assert isinstance(node, SingleResource | ResourceInstance), node
    return node.value.value


# -- ETS: querying and setting basic information -----------------------------------------
@pytest.mark.parametrize(
    ("case", "fmt"),
    [
        ("int_201_plain_text", CF.TEXT),
        ("int_211_cbor", CF.CBOR),
        ("int_231_senml_json", CF.SENML_JSON),
        ("int_232_senml_cbor", CF.SENML_CBOR),
    ],
)
def test_querying_basic_information_in_single_value_formats(
    store: Store, case: str, fmt: int
) -> None:
    """int-201 / int-211 / int-231 / int-232: manufacturer, model, serial."""

    async def scenario() -> None:
        async with session(store) as (server, device):
            for rid in (0, 1, 2):
                result = await server.read(EP, Path.of(3, 0, rid), format=fmt)
                assert result.ok, result
                assert result.content_format == fmt
                assert _value(result.content) == device.read(f"/3/0/{rid}")

    run(scenario())


@pytest.mark.parametrize(
    ("case", "fmt"),
    [("int_203_tlv", CF.TLV), ("int_204_json", CF.LWM2M_JSON)],
)
def test_querying_basic_information_of_the_device_instance(
    store: Store, case: str, fmt: int
) -> None:
    """int-203 / int-204: the Device instance in one TLV / LwM2M JSON payload."""

    async def scenario() -> None:
        async with session(store) as (server, device):
            result = await server.read(EP, "/3/0", format=fmt)
            assert result.ok and isinstance(result.content, ObjectInstance), result
            assert result.content_format == fmt
            resources = result.content.resources
            assert _value(resources[0]) == device.read("/3/0/0")
            assert _value(resources[2]) == EP

    run(scenario())


@pytest.mark.parametrize(
    ("case", "fmt"),
    [
        ("int_205_plain_text", CF.TEXT),
        ("int_212_cbor", CF.CBOR),
        ("int_215_tlv", CF.TLV),
        ("int_220_json", CF.LWM2M_JSON),
        ("int_233_senml_cbor", CF.SENML_CBOR),
        ("int_234_senml_json", CF.SENML_JSON),
    ],
)
def test_setting_basic_information(store: Store, case: str, fmt: int) -> None:
    """int-205 / 212 / 215 / 220 / 233 / 234: Default Minimum Period (/1/0/2)."""

    async def scenario() -> None:
        async with session(store) as (server, device):
            node = SingleResource(2, Value.integer(17))
            result = await server.write(EP, "/1/0/2", node, format=fmt)
            assert result.ok, result
            assert device.read("/1/0/2") == 17

    run(scenario())


def test_int_221_attempt_to_perform_operations_on_security(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            read = await server.read(EP, "/0")
            assert (read.status, read.code) == (OperationStatus.DEVICE_ERROR, "4.01")
            write = await server.write_value(EP, "/0/0/2", "3")
            assert write.code == "4.01"
            delete = await server.delete(EP, "/0/0")
            assert delete.code == "4.01"
            discover = await server.discover(EP, "/0")
            assert discover.code == "4.01"

    run(scenario())


def test_int_222_to_225_read_on_object_instance_resource_and_resource_instance(
    store: Store,
) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device):
            obj = await server.read(EP, "/3")
            assert obj.ok and isinstance(obj.content, LwM2MObject)
            assert 0 in obj.content.instances
            inst = await server.read(EP, "/3/0")
            assert inst.ok and isinstance(inst.content, ObjectInstance)
            res = await server.read(EP, "/3/0/7")
            assert res.ok and isinstance(res.content, MultipleResource)
            assert dict(res.content.instances)[0].value == device.read("/3/0/7/0")
            ri = await server.read(EP, "/3/0/7/1")
            assert ri.ok and isinstance(ri.content, ResourceInstance)
            assert ri.content.value.value == device.read("/3/0/7/1")

    run(scenario())


def test_int_226_write_partial_update_on_object_instance(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device):
            instance = ObjectInstance.of(
                0,
                [
                    SingleResource(14, Value.string("+02:00")),
                    SingleResource(15, Value.string("Europe/Berlin")),
                ],
            )
            result = await server.write(EP, "/3/0", instance, replace=False)
            assert result.ok, result
            assert device.read("/3/0/14") == "+02:00"
            assert device.read("/3/0/15") == "Europe/Berlin"
            assert device.read("/3/0/0") == "fleetloop-sim"  # untouched

    run(scenario())


def test_int_227_write_replace_on_resource(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device):
            result = await server.write(EP, "/1/0/3", SingleResource(3, Value.integer(300)))
            assert result.ok, result
            assert device.read("/1/0/3") == 300

    run(scenario())


def test_int_228_write_on_resource_instance(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device):
            flags = MultipleResource(7, DataType.STRING, {0: Value.string("a=1")})
            assert (await server.write(EP, "/32001/0/7", flags)).ok
            result = await server.write_value(EP, "/32001/0/7/1", "b=2")
            assert result.ok, result
            assert device.read("/32001/0/7") == {0: "a=1", 1: "b=2"}

    run(scenario())


def test_int_229_and_280_read_composite_operation(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device):
            result = await server.read_composite(EP, ["/3/0/0", "/1/0/1", "/3/0/7"])
            assert result.ok, result
            content = result.content
            assert _value(content[Path.parse("/3/0/0")]) == device.read("/3/0/0")
            assert _value(content[Path.parse("/1/0/1")]) == 300
            assert isinstance(content[Path.parse("/3/0/7")], MultipleResource)

    run(scenario())


def test_int_230_and_257_write_composite_operation(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device):
            content = {
                Path.parse("/1/0/2"): SingleResource(2, Value.integer(5)),
                Path.parse("/3/0/14"): SingleResource(14, Value.string("+01:00")),
            }
            result = await server.write_composite(EP, content)
            assert result.ok, result
            assert device.read("/1/0/2") == 5
            assert device.read("/3/0/14") == "+01:00"

    run(scenario())


def test_int_235_read_composite_operation_on_root_path(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            result = await server.read_composite(EP, ["/"])
            assert result.ok, result
            # "/" is not a node: the answer is keyed per object
            assert {Path.of(1), Path.of(3)} <= set(result.content)
            assert isinstance(result.content[Path.of(3)], LwM2MObject)

    run(scenario())


def test_int_236_and_281_read_composite_partial_presence(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            result = await server.read_composite(EP, ["/3/0/0", "/3/0/12", "/9999/0/0"])
            assert result.ok, result
            assert set(result.content) == {Path.parse("/3/0/0")}

    run(scenario())


def test_int_237_read_on_object_without_specifying_content_type(store: Store) -> None:
    async def scenario() -> None:
        async with session(store, version="1.1") as (server, _device):
            result = await server.read(EP, "/3", format=CLIENT_CHOICE)
            assert result.ok and isinstance(result.content, LwM2MObject), result
            # no Accept: the simulated 1.1 client answers in its default, SenML CBOR
            assert result.content_format == CF.SENML_CBOR

    run(scenario())


def test_int_241_executable_resource_rebooting_the_device(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device), collecting(server) as log:
            before = server.registration(EP)
            result = await server.execute(EP, "/3/0/4")
            assert result.ok, result
            await eventually(lambda: bool(log.of(Registered)))
            after = server.registration(EP)
            assert after is not None and before is not None and after.id != before.id
            assert log.of(Registered)[0].replaced is not None

    run(scenario())


def test_int_256_write_operation_failure(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            read_only = await server.write_value(EP, "/3/0/9", "50")
            assert (read_only.status, read_only.code) == (OperationStatus.DEVICE_ERROR, "4.05")
            missing = await server.write_value(EP, "/3/7/0", "x")
            assert missing.code == "4.04"
            assert not missing.ok and missing.reason

    run(scenario())


def test_int_260_discover_command(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            result = await server.discover(EP, "/3")
            assert result.ok, result
            targets = [link.target for link in result.links]
            assert "/3" in targets and "/3/0" in targets and "/3/0/0" in targets

    run(scenario())


def test_int_261_write_attribute_operation_on_a_multiple_resource(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            update = AttributeUpdate(Attributes(pmin=10, pmax=60))
            result = await server.write_attributes(EP, "/3/0/7", update)
            assert result.ok, result
            discovered = await server.discover(EP, "/3/0/7")
            assert discovered.ok
            own = next(link for link in discovered.links if link.target == "/3/0/7")
            assert own.param("pmin") == "10" and own.param("pmax") == "60"
            unset = await server.write_attributes(
                EP, "/3/0/7", AttributeUpdate(unset=frozenset({"pmin"}))
            )
            assert unset.ok

    run(scenario())


def test_create_and_delete_an_instance(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device):
            resources = [
                SingleResource(0, Value.string("backup")),
                SingleResource(4, Value.integer(0)),
            ]
            created = await server.create(EP, "/11", resources)
            assert created.ok, created
            assert created.location == Path.parse("/11/1")
            assert device.read("/11/1/0") == "backup"
            with_id = ObjectInstance.of(7, resources)
            created7 = await server.create(EP, "/11", with_id, format=CF.SENML_CBOR)
            assert created7.ok and created7.location == Path.parse("/11/7"), created7
            deleted = await server.delete(EP, "/11/1")
            assert deleted.ok, deleted
            again = await server.delete(EP, "/11/1")
            assert again.code == "4.04"

    run(scenario())


def test_reads_are_recorded_as_reported_values(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            assert (await server.read(EP, "/3/0/9")).ok
            await store.flush()
            values = await server.last_values(EP)
            assert values[Path.parse("/3/0/9")].source is Source.READ

    run(scenario())


def test_requests_that_cannot_be_built_raise_invalid_request(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device):
            bad_calls = [
                server.read(EP, "/"),
                server.read(EP, "/3/0", format=CF.TEXT),
                server.read(EP, "/3/x"),
                server.execute(EP, "/3/0"),
                server.delete(EP, "/3"),
                server.create(EP, "/3/0", []),
                server.write_value(EP, "/3/0/7", "1"),
                server.write_value(EP, "/1/0/1", "ten"),
                server.read_composite(EP, ["/3/0/0"], format=CF.TLV),
                server.write_attributes(EP, "/3/0/9", AttributeUpdate()),
            ]
            for call in bad_calls:
                with pytest.raises(InvalidRequest):
                    await call

    run(scenario())


# -- every operation in every content format (SQLite) -------------------------------------
@pytest.mark.parametrize("fmt", MULTI_FORMATS, ids=lambda f: CF(f).name)
def test_read_and_write_instances_in_every_multi_value_format(
    sqlite_store: Store, fmt: int
) -> None:
    async def scenario() -> None:
        async with session(sqlite_store) as (server, device):
            read = await server.read(EP, "/3/0", format=fmt)
            assert read.ok and read.content_format == fmt, read
            assert isinstance(read.content, ObjectInstance)
            obj = await server.read(EP, "/3", format=fmt)
            assert obj.ok and isinstance(obj.content, LwM2MObject), obj
            multi = await server.read(EP, "/3/0/7", format=fmt)
            assert multi.ok and isinstance(multi.content, MultipleResource), multi
            update = ObjectInstance.of(0, [SingleResource(14, Value.string(f"+0{fmt % 9}:00"))])
            written = await server.write(EP, "/3/0", update, replace=False, format=fmt)
            assert written.ok, written
            assert device.read("/3/0/14") == f"+0{fmt % 9}:00"

    run(scenario())


@pytest.mark.parametrize("fmt", SINGLE_FORMATS, ids=lambda f: CF(f).name)
def test_read_and_write_single_values_in_every_format(sqlite_store: Store, fmt: int) -> None:
    async def scenario() -> None:
        async with session(sqlite_store) as (server, device):
            for path, expected in (("/3/0/0", "fleetloop-sim"), ("/3/0/9", None)):
                result = await server.read(EP, path, format=fmt)
                assert result.ok, (path, result)
                wanted = device.read(path) if expected is None else expected
                assert _value(result.content) == wanted
            lifetime = SingleResource(1, Value.integer(240))
            assert (await server.write(EP, "/1/0/1", lifetime, format=fmt)).ok
            assert device.read("/1/0/1") == 240
            flag = ResourceInstance(0, Value.string("x=1"))
            assert (await server.write(EP, "/32001/0/7/0", flag, format=fmt)).ok
            assert device.read("/32001/0/7/0") == "x=1"

    run(scenario())


def test_opaque_values_in_octet_stream(sqlite_store: Store) -> None:
    async def scenario() -> None:
        async with session(sqlite_store) as (server, device):
            digest = bytes(range(32))
            written = await server.write(EP, "/32001/0/2", SingleResource(2, Value.opaque(digest)))
            assert written.ok, written
            assert device.read("/32001/0/2") == digest
            read = await server.read(EP, "/32001/0/2")
            assert read.ok and read.content_format == CF.OPAQUE
            assert _value(read.content) == digest

    run(scenario())


@pytest.mark.parametrize("fmt", COMPOSITE_FORMATS, ids=lambda f: CF(f).name)
def test_composite_operations_in_every_composite_format(sqlite_store: Store, fmt: int) -> None:
    async def scenario() -> None:
        async with session(sqlite_store) as (server, device):
            read = await server.read_composite(EP, ["/3/0/0", "/1/0"], format=fmt)
            assert read.ok and read.content_format == fmt, read
            assert isinstance(read.content[Path.parse("/1/0")], ObjectInstance)
            content: dict[Path, Node] = {
                Path.parse("/1/0/3"): SingleResource(3, Value.integer(99)),
                Path.parse("/32001/0/7/4"): ResourceInstance(4, Value.string("z=9")),
            }
            written = await server.write_composite(EP, content, format=fmt)
            assert written.ok, written
            assert device.read("/1/0/3") == 99
            assert device.read("/32001/0/7/4") == "z=9"

    run(scenario())


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_default_formats_work_with_each_version(sqlite_store: Store, version: str) -> None:
    """No ``format=``: choose_format's pick is one the client speaks, for every version."""

    async def scenario() -> None:
        async with session(sqlite_store, version=version) as (server, device):
            assert (await server.read(EP, "/3/0")).ok
            assert (await server.read(EP, "/3/0/0")).ok
            assert (await server.read(EP, "/3/0/7")).ok
            assert (await server.write_value(EP, "/1/0/1", "123")).ok
            assert device.read("/1/0/1") == 123
            update = ObjectInstance.of(0, [SingleResource(15, Value.string("UTC"))])
            assert (await server.write(EP, "/3/0", update, replace=False)).ok
            created = await server.create(EP, "/11", [SingleResource(0, Value.string("n"))])
            assert created.ok, created
            if version != "1.0":
                assert (await server.read_composite(EP, ["/3/0/0"])).ok
            else:
                with pytest.raises(InvalidRequest):
                    await server.read_composite(EP, ["/3/0/0"])

    run(scenario())
