"""Information reporting over real sockets: Observe and its cancellation (passive RST and
active Observe=1), Observe-Composite, notifications in every format, Send (ETS int-301..311),
on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiocoap.numbers.codes import Code

from lwm2m.codec import ContentFormat, encode_timestamped
from lwm2m.codec.api import TimestampedNodes
from lwm2m.model import LwM2MObject, ObjectInstance, Path, SingleResource, Value
from lwm2m.server import (
    LwM2MServer,
    Notification,
    ObservationEnded,
    SendReceived,
)
from lwm2m.store import Source, Store
from objects import BUILTIN_MODEL, builtin_definition
from simulators.device.client import ClientError
from simulators.device.config import ClientConfig
from simulators.device.defaults import default_template
from simulators.device.events import ObservationEnded as DeviceObservationEnded
from simulators.device.events import SendCompleted
from simulators.device.template import InstanceTemplate, ObjectTemplate
from simulators.runner import SimulatedDevice
from tests.server.conftest import (
    EventLog,
    RawClient,
    coap_uri,
    collecting,
    eventually,
    run,
    running_server,
)

CF = ContentFormat
EP = "obs-dev"


@contextlib.asynccontextmanager
async def session(
    store: Store, *, version: str = "1.2"
) -> AsyncIterator[tuple[LwM2MServer, SimulatedDevice, EventLog]]:
    async with running_server(store) as server, collecting(server) as log:
        uri = coap_uri(server)
        apn = ObjectTemplate(
            builtin_definition(11),
            {0: InstanceTemplate({0: "internet", 4: 0})},
            new_instance=InstanceTemplate({0: "", 4: 0}),
            deletable=True,
        )
        template = default_template(server_uri=uri).replace(apn)
        config = ClientConfig(lwm2m_version=version)
        async with SimulatedDevice(EP, uri, config=config, template=template) as device:
            await device.wait_registered()
            yield server, device, log


def _notifications(log: EventLog, observation_id: str | None) -> list[Notification]:
    return [n for n in log.of(Notification) if n.observation_id == observation_id]


def test_int_301_observation_and_notification_of_parameter_values(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device, log):
            observed = await server.observe(EP, "/3/0/9")
            assert observed.ok and observed.observation_id is not None, observed
            path = Path.parse("/3/0/9")
            assert observed.content[path] == SingleResource(9, Value.integer(95))
            [info] = server.observations(EP)
            assert info.paths == (path,) and not info.composite
            device.set("/3/0/9", 42)
            await eventually(lambda: bool(_notifications(log, observed.observation_id)))
            note = _notifications(log, observed.observation_id)[0]
            assert note.content[path] == SingleResource(9, Value.integer(42))
            await store.flush()
            values = await server.last_values(EP)
            assert values[path].value == Value.integer(42)
            assert values[path].source is Source.NOTIFY
            stored = store.read_sync(lambda tx: store.observations.for_endpoint(tx, EP))
            assert [o.paths for o in stored] == [(path,)]

    run(scenario())


def test_int_302_cancel_observations_using_reset_operation(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device, log):
            observed = await server.observe(EP, "/3/0/9")
            assert observed.observation_id is not None
            result = await server.cancel_observation(observed.observation_id, active=False)
            assert result.ok
            assert server.observations(EP) == []
            mark = len(device.events)
            device.set("/3/0/9", 7)  # the notification is answered RST
            await device.wait_event(DeviceObservationEnded, since=mark)
            assert _notifications(log, observed.observation_id) == []
            assert any(e.reason == "cancelled" for e in log.of(ObservationEnded))

    run(scenario())


def test_int_303_cancel_observations_using_observe_with_cancel_parameter(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device, _log):
            observed = await server.observe(EP, "/3/0/9")
            assert observed.observation_id is not None
            mark = len(device.events)
            result = await server.cancel_observation(observed.observation_id, active=True)
            assert result.ok and result.code == "2.05", result
            await device.wait_event(DeviceObservationEnded, since=mark)
            await store.flush()
            assert store.read_sync(lambda tx: store.observations.for_endpoint(tx, EP)) == []

    run(scenario())


def test_int_304_and_310_observe_composite_and_modification_of_values(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device, log):
            observed = await server.observe_composite(EP, ["/3/0/9", "/1/0/1"])
            assert observed.ok and observed.observation_id is not None, observed
            assert set(observed.content) == {Path.parse("/3/0/9"), Path.parse("/1/0/1")}
            device.set("/3/0/9", 11)
            await eventually(lambda: bool(_notifications(log, observed.observation_id)))
            note = _notifications(log, observed.observation_id)[0]
            assert note.content[Path.parse("/3/0/9")] == SingleResource(9, Value.integer(11))
            assert Path.parse("/1/0/1") in note.content

    run(scenario())


def test_int_305_cancel_observation_composite_operation(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device, log):
            observed = await server.observe_composite(EP, ["/3/0/9", "/3/0/13"])
            assert observed.observation_id is not None
            mark = len(device.events)
            result = await server.cancel_observation(observed.observation_id)
            assert result.ok, result
            await device.wait_event(DeviceObservationEnded, since=mark)
            device.set("/3/0/9", 3)
            assert _notifications(log, observed.observation_id) == []

    run(scenario())


def test_int_306_and_311_send_operation(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device, log):
            mark = len(device.events)
            device.send(["/3/0/9", "/3/0/0"])
            completed = await device.wait_event(SendCompleted, since=mark)
            assert completed.code == "2.04"
            await eventually(lambda: bool(log.of(SendReceived)))
            received = log.of(SendReceived)[0]
            assert received.endpoint == EP
            assert received.content[Path.parse("/3/0/0")] == SingleResource(
                0, Value.string("fleetloop-sim")
            )
            assert received.timestamps and received.timestamps[0].timestamp is not None
            await store.flush()
            values = await server.last_values(EP)
            assert values[Path.parse("/3/0/9")].source is Source.SEND

    run(scenario())


def test_int_307_muting_send(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, device, log):
            assert (await server.write_value(EP, "/1/0/23", "true")).ok
            with pytest.raises(ClientError):
                device.send(["/3/0/9"])
            assert (await server.write_value(EP, "/1/0/23", "false")).ok
            device.send(["/3/0/9"])
            await eventually(lambda: bool(log.of(SendReceived)))

    run(scenario())


def test_int_308_observe_composite_and_creating_object_instance(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device, log):
            observed = await server.observe_composite(EP, ["/11"])
            assert observed.ok and observed.observation_id is not None, observed
            created = await server.create(EP, "/11", [SingleResource(0, Value.string("new"))])
            assert created.ok and created.location is not None
            location = created.location

            def seen() -> bool:
                for note in _notifications(log, observed.observation_id):
                    obj = note.content.get(Path.of(11))
                    if isinstance(obj, LwM2MObject) and location.ids[1] in obj.instances:
                        return True
                return False

            await eventually(seen)

    run(scenario())


def test_int_309_observe_composite_and_deleting_object_instance(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device, log):
            created = await server.create(EP, "/11", [SingleResource(0, Value.string("tmp"))])
            assert created.ok and created.location is not None
            observed = await server.observe_composite(EP, ["/11"])
            assert observed.observation_id is not None
            assert (await server.delete(EP, created.location)).ok

            def seen() -> bool:
                for note in _notifications(log, observed.observation_id):
                    obj = note.content.get(Path.of(11))
                    if isinstance(obj, LwM2MObject) and created.location is not None:
                        return created.location.ids[1] not in obj.instances
                return False

            await eventually(seen)

    run(scenario())


def test_observed_instance_deleted_ends_the_observation(store: Store) -> None:
    async def scenario() -> None:
        async with session(store) as (server, _device, log):
            created = await server.create(EP, "/11", [SingleResource(0, Value.string("tmp"))])
            assert created.location is not None
            observed = await server.observe(EP, created.location)
            assert observed.observation_id is not None
            assert (await server.delete(EP, created.location)).ok
            await eventually(
                lambda: any(
                    e.observation_id == observed.observation_id for e in log.of(ObservationEnded)
                )
            )
            assert server.observations(EP) == []

    run(scenario())


@pytest.mark.parametrize(
    "fmt",
    [CF.TEXT, CF.CBOR, CF.TLV, CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_JSON, CF.LWM2M_CBOR],
    ids=lambda f: CF(f).name,
)
def test_notifications_in_every_format(sqlite_store: Store, fmt: int) -> None:
    async def scenario() -> None:
        async with session(sqlite_store) as (server, device, log):
            observed = await server.observe(EP, "/3/0/9", format=fmt)
            assert observed.ok and observed.content_format == fmt, observed
            device.set("/3/0/9", 64)
            await eventually(lambda: bool(_notifications(log, observed.observation_id)))
            note = _notifications(log, observed.observation_id)[0]
            assert note.content[Path.parse("/3/0/9")] == SingleResource(9, Value.integer(64))
            if fmt in (CF.TLV, CF.SENML_CBOR):
                instance = await server.observe(EP, "/3/0", format=fmt)
                assert instance.ok and isinstance(
                    instance.content[Path.parse("/3/0")], ObjectInstance
                )

    run(scenario())


# -- Send edge cases (raw client) ---------------------------------------------------------
def _senml(values: dict[str, Any]) -> bytes:
    nodes = {Path.parse(p): SingleResource(Path.parse(p).ids[2], v) for p, v in values.items()}
    return encode_timestamped(CF.SENML_CBOR, [TimestampedNodes(None, nodes)], BUILTIN_MODEL)


def test_send_needs_a_registration_lwm2m_1_1_and_a_multi_path_format(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            stranger = await RawClient().connect(server.coap_address)
            payload = _senml({"/3/0/9": Value.integer(1)})
            unknown = await stranger.request(
                Code.POST, "/dp", payload=payload, content_format=CF.SENML_CBOR
            )
            assert unknown.code == Code.NOT_FOUND
            await stranger.register("old", version="1.0")
            old = await stranger.request(
                Code.POST, "/dp", payload=payload, content_format=CF.SENML_CBOR
            )
            assert old.code == Code.METHOD_NOT_ALLOWED
            stranger.close()
            modern = await RawClient().connect(server.coap_address)
            await modern.register("new", version="1.1")
            text = await modern.request(Code.POST, "/dp", payload=b"1", content_format=0)
            assert text.code == Code.UNSUPPORTED_CONTENT_FORMAT
            garbage = await modern.request(
                Code.POST, "/dp", payload=b"\xff\x00", content_format=CF.SENML_CBOR
            )
            assert garbage.code == Code.BAD_REQUEST
            good = await modern.request(
                Code.POST, "/dp", payload=payload, content_format=CF.SENML_CBOR
            )
            assert good.code == Code.CHANGED
            modern.close()

    run(scenario())
