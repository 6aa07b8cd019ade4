"""Queue mode over real sockets (ETS int-108, int-109) on SQLite and PostgreSQL: requests to a
sleeping device wait, persisted, and go out after its next Update; deadlines expire them;
cancellation; and a queue that outlives a server restart."""

from __future__ import annotations

import asyncio
import time

from lwm2m.model import Path, SingleResource, Value
from lwm2m.server import (
    LwM2MServer,
    OperationStatus,
    QueueState,
    QueueStateChanged,
)
from lwm2m.server.operations import Write
from lwm2m.store import Store
from objects import BUILTIN_MODEL
from simulators.device.config import ClientConfig
from simulators.device.events import Sleeping
from simulators.device.events import Updated as DeviceUpdated
from simulators.runner import SimulatedDevice
from tests.server.conftest import (
    coap_uri,
    collecting,
    eventually,
    run,
    running_server,
    server_config,
)

EP = "sleepy"
#: The device stays awake 0.4 s after each exchange; the server assumes 0.2 s.
DEVICE = ClientConfig(lwm2m_version="1.1", queue_mode=True, awake_time=0.4)
SERVER_AWAKE = 0.2


async def _asleep(server: LwM2MServer, device: SimulatedDevice) -> None:
    await device.wait_event(Sleeping)
    await eventually(lambda: not server.is_awake(EP))


def test_int_108_turn_on_queue_mode(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store, queue_awake_time=SERVER_AWAKE) as server,
            SimulatedDevice(EP, coap_uri(server), config=DEVICE) as device,
        ):
            await device.wait_registered()
            reg = server.registration(EP)
            assert reg is not None and reg.queue_mode and reg.binding == "U"
            assert server.is_awake(EP)  # it just registered
            assert (await server.read(EP, "/3/0/0")).ok  # awake: sent at once, not queued

    run(scenario())


def test_int_109_behavior_in_queue_mode(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store, queue_awake_time=SERVER_AWAKE) as server,
            collecting(server) as log,
            SimulatedDevice(EP, coap_uri(server), config=DEVICE) as device,
        ):
            await device.wait_registered()
            await _asleep(server, device)
            read = asyncio.ensure_future(server.read(EP, "/3/0/0"))
            write = asyncio.ensure_future(server.write_value(EP, "/1/0/1", "200"))
            await eventually(
                lambda: (
                    len([e for e in log.of(QueueStateChanged) if e.state is QueueState.PENDING])
                    == 2
                )
            )
            assert not read.done()
            pending = await server.queued_requests(EP)
            assert [r.operation for r in pending] == ["read", "write"]
            mark = len(device.events)
            device.trigger_update()  # the device wakes up and Updates
            await device.wait_event(DeviceUpdated, since=mark)
            result = await asyncio.wait_for(read, 5)
            assert result.ok and result.queued and result.queued_request_id is not None
            assert result.content is not None
            assert (await asyncio.wait_for(write, 5)).ok
            assert device.read("/1/0/1") == 200
            states = [e.state for e in log.of(QueueStateChanged)]
            assert states.count(QueueState.ANSWERED) == 2
            await store.flush()
            rows = await server.queued_requests(EP, include_finished=True)
            assert {r.state for r in rows} == {QueueState.ANSWERED}
            assert rows[0].response_code == "2.05"

    run(scenario())


def test_queued_request_expires_at_its_deadline(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store, queue_awake_time=SERVER_AWAKE) as server,
            SimulatedDevice(EP, coap_uri(server), config=DEVICE) as device,
        ):
            await device.wait_registered()
            await _asleep(server, device)
            result = await server.read(EP, "/3/0/0", queue_deadline=0.3)
            assert result.status is OperationStatus.QUEUED_EXPIRED
            assert result.queued and result.queued_request_id is not None
            await store.flush()
            rows = await server.queued_requests(EP, include_finished=True)
            assert [r.state for r in rows] == [QueueState.EXPIRED]

    run(scenario())


def test_queued_request_can_be_cancelled(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store, queue_awake_time=SERVER_AWAKE) as server,
            collecting(server) as log,
            SimulatedDevice(EP, coap_uri(server), config=DEVICE) as device,
        ):
            await device.wait_registered()
            await _asleep(server, device)
            waiting = asyncio.ensure_future(server.execute(EP, "/3/0/4"))
            await eventually(lambda: bool(log.of(QueueStateChanged)))
            request_id = log.of(QueueStateChanged)[0].request_id
            assert await server.cancel_queued(request_id) is True
            result = await asyncio.wait_for(waiting, 5)
            assert result.status is OperationStatus.CANCELLED
            assert await server.cancel_queued(request_id) is False
            await store.flush()
            rows = await server.queued_requests(EP, include_finished=True)
            assert [r.state for r in rows] == [QueueState.CANCELLED]

    run(scenario())


def test_queue_survives_a_server_restart(store: Store) -> None:
    """A request queued before a restart is sent when the device next wakes, and its outcome
    lands in the store (nobody waits for it any more)."""

    async def scenario() -> None:
        first = await LwM2MServer.start(server_config(queue_awake_time=SERVER_AWAKE), store)
        address = first.coap_address
        assert address is not None
        device = SimulatedDevice(EP, f"coap://127.0.0.1:{address[1]}", config=DEVICE)
        await device.start()
        await device.wait_registered()
        await _asleep(first, device)
        await first.stop()
        # a request the stopped server left queued (any operation serialises to a row)
        op = Write.of(
            Path.parse("/1/0/1"),
            SingleResource(1, Value.integer(222)),
            0,
            BUILTIN_MODEL,
            replace=True,
        )
        now = time.time()
        with store.transaction() as tx:
            row = store.queue.enqueue(tx, op.to_queued(EP, now + 60), now)
        second = await LwM2MServer.start(
            server_config(coap_port=address[1], queue_awake_time=SERVER_AWAKE), store
        )
        try:
            async with collecting(second) as log:
                mark = len(device.events)
                device.trigger_update()
                await device.wait_event(DeviceUpdated, since=mark)
                await eventually(
                    lambda: any(
                        e.request_id == row.id and e.state is QueueState.ANSWERED
                        for e in log.of(QueueStateChanged)
                    )
                )
                assert device.read("/1/0/1") == 222
            await device.stop()
            await store.flush()
            stored = store.read_sync(lambda tx: store.queue.get(tx, row.id))
            assert stored is not None and stored.state is QueueState.ANSWERED
            assert stored.response_code == "2.04"
        finally:
            await second.stop()

    run(scenario())


def test_requests_queued_for_an_endpoint_that_deregisters_are_cancelled(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store, queue_awake_time=SERVER_AWAKE) as server:
            device = SimulatedDevice(EP, coap_uri(server), config=DEVICE)
            await device.start()
            await device.wait_registered()
            await _asleep(server, device)
            waiting = asyncio.ensure_future(server.read(EP, "/3/0/0"))
            await eventually(lambda: bool(server.registration(EP)) and not waiting.done())
            await asyncio.sleep(0.05)
            await device.stop()  # wakes to de-register; the request is dropped with it
            result = await asyncio.wait_for(waiting, 5)
            assert result.status is OperationStatus.DEREGISTERED

    run(scenario())


def test_housekeeping_expires_queued_rows_nobody_holds(store: Store) -> None:
    """Rows left by a stopped server for a device that never came back end ``expired``."""

    async def scenario() -> None:
        async with running_server(store) as server:
            op = Write.of(
                Path.parse("/1/0/1"),
                SingleResource(1, Value.integer(5)),
                0,
                BUILTIN_MODEL,
                replace=True,
            )
            now = time.time()
            with store.transaction() as tx:
                row = store.queue.enqueue(tx, op.to_queued("never-back", now + 0.1), now)
            await asyncio.sleep(0.15)
            await server._housekeep()
            stored = store.read_sync(lambda tx: store.queue.get(tx, row.id))
            assert stored is not None and stored.state is QueueState.EXPIRED

    run(scenario())


def test_a_request_queued_for_an_endpoint_not_registered_at_start_goes_out_on_its_register(
    store: Store,
) -> None:
    """A queued row whose registration is gone (expired while the server was down) waits in
    the store; the server reads it when that endpoint registers -- and only then: a Register
    of any other endpoint no longer reads the queue table (issue 13)."""

    async def scenario() -> None:
        op = Write.of(
            Path.parse("/1/0/1"),
            SingleResource(1, Value.integer(333)),
            0,
            BUILTIN_MODEL,
            replace=True,
        )
        now = time.time()
        with store.transaction() as tx:
            row = store.queue.enqueue(tx, op.to_queued(EP, now + 60), now)
        async with running_server(store, queue_awake_time=SERVER_AWAKE) as server:
            assert server._queued_in_store == {EP}
            async with collecting(server) as log:
                other = SimulatedDevice("bystander", coap_uri(server), config=DEVICE)
                async with other:
                    await other.wait_registered()
                assert server._queued_in_store == {EP}  # still waiting for its endpoint
                async with SimulatedDevice(EP, coap_uri(server), config=DEVICE) as device:
                    await device.wait_registered()
                    await eventually(
                        lambda: any(
                            e.request_id == row.id and e.state is QueueState.ANSWERED
                            for e in log.of(QueueStateChanged)
                        )
                    )
                    assert device.read("/1/0/1") == 333
                assert server._queued_in_store == set()

    run(scenario())
