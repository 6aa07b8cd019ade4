"""The registration interface over real sockets and a real store (SQLite and PostgreSQL):
ETS int-101..107, version negotiation, malformed requests, expiry, re-registration, NAT
rebinding and restart persistence."""

from __future__ import annotations

import asyncio

from aiocoap.numbers.codes import Code

from lwm2m.model import Path
from lwm2m.server import (
    Deregistered,
    Expired,
    LwM2MServer,
    ObservationEnded,
    OperationStatus,
    Registered,
    RegistrationRefused,
    Updated,
)
from lwm2m.store import IdentityKind, Store
from simulators.device.config import ClientConfig
from simulators.device.events import Registered as DeviceRegistered
from simulators.device.events import Updated as DeviceUpdated
from simulators.device.events import VersionFallback
from simulators.runner import SimulatedDevice
from tests.server.conftest import (
    RawClient,
    coap_uri,
    collecting,
    eventually,
    location,
    run,
    running_server,
    server_config,
)


def test_int_101_initial_registration(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store) as server,
            collecting(server) as log,
            SimulatedDevice("int-101", coap_uri(server), lifetime=120) as device,
        ):
            await device.wait_registered()
            reg = server.registration("int-101")
            assert reg is not None
            assert (reg.lwm2m_version, reg.lifetime, reg.binding) == ("1.2", 120, "U")
            assert reg.root_path == "/"
            assert "</3/0>" in reg.object_links
            assert reg.supported_formats  # ct= of the root link
            assert reg.identity.kind is IdentityKind.NOSEC
            # the 2.01 went out after the commit: the store has it already
            stored = store.read_sync(lambda tx: store.registrations.get(tx, reg.id))
            assert stored is not None and stored.endpoint == "int-101"
            await eventually(lambda: bool(log.of(Registered)))
            assert log.of(Registered)[0].replaced is None

    run(scenario())


def test_int_102_registration_update(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store) as server,
            collecting(server) as log,
            SimulatedDevice("int-102", coap_uri(server)) as device,
        ):
            await device.wait_registered()
            before = server.registration("int-102")
            assert before is not None
            mark = len(device.events)
            device.trigger_update()
            await device.wait_event(DeviceUpdated, since=mark)
            after = server.registration("int-102")
            assert after is not None and after.id == before.id
            assert after.updated_at >= before.updated_at
            await eventually(lambda: bool(log.of(Updated)))

    run(scenario())


def test_int_103_deregistration(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server, collecting(server) as log:
            device = SimulatedDevice("int-103", coap_uri(server))
            await device.start()
            await device.wait_registered()
            reg = server.registration("int-103")
            assert reg is not None
            await device.stop()
            assert server.registration("int-103") is None
            await eventually(lambda: bool(log.of(Deregistered)))
            assert store.read_sync(lambda tx: store.registrations.get(tx, reg.id)) is None

    run(scenario())


def test_deregistration_ends_the_observations_and_their_rows_go_with_the_registration(
    store: Store,
) -> None:
    """The observation rows are deleted by the De-register's own commit (not one by one
    afterwards, issue 13): none is left, the end is announced, and no write failed."""

    async def scenario() -> None:
        async with running_server(store) as server, collecting(server) as log:
            device = SimulatedDevice("bye", coap_uri(server))
            await device.start()
            await device.wait_registered()
            observed = await server.observe("bye", "/3/0/9")
            assert observed.ok and observed.observation_id is not None
            await store.flush()
            assert len(store.read_sync(lambda tx: store.observations.for_endpoint(tx, "bye"))) == 1
            await device.stop()
            await eventually(lambda: bool(log.of(Deregistered)))
            assert server.observations("bye") == []
            assert any(
                e.observation_id == observed.observation_id for e in log.of(ObservationEnded)
            )
            await store.flush()
            assert store.read_sync(lambda tx: store.observations.for_endpoint(tx, "bye")) == []
            assert store.batcher.stats.failed_items == 0

    run(scenario())


def test_int_104_registration_update_trigger(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store) as server,
            collecting(server) as log,
            SimulatedDevice("int-104", coap_uri(server)) as device,
        ):
            await device.wait_registered()
            mark = len(device.events)
            result = await server.execute("int-104", "/1/0/8")
            assert result.ok, result
            await device.wait_event(DeviceUpdated, since=mark)
            await eventually(lambda: bool(log.of(Updated)))

    run(scenario())


def test_int_105_discarded_register_update(store: Store, tmp_path: object) -> None:
    """An Update for a registration the server does not know gets 4.04, and the client
    registers again (here: the server restarts on an empty database at the same port)."""

    async def scenario() -> None:
        first = await LwM2MServer.start(server_config(), store)
        address = first.coap_address
        assert address is not None
        client = await RawClient().connect(address)
        unknown = await client.request(Code.POST, "/rd/nosuchid")
        assert unknown.code == Code.NOT_FOUND
        client.close()
        device = SimulatedDevice("int-105", f"coap://127.0.0.1:{address[1]}")
        await device.start()
        await device.wait_registered()
        await first.stop()
        empty = Store.open(None, str(tmp_path) + "/empty")
        empty.create_schema()
        second = await LwM2MServer.start(server_config(coap_port=address[1]), empty)
        try:
            async with collecting(second) as log:
                mark = len(device.events)
                device.trigger_update()
                try:
                    await device.wait_event(DeviceRegistered, since=mark, timeout=5)
                except TimeoutError:
                    raise AssertionError(device.events[mark:]) from None
                assert second.registration("int-105") is not None
                await eventually(lambda: bool(log.of(Registered)))
            await device.stop()
        finally:
            await second.stop()
            empty.close()

    run(scenario())


def test_int_107_extending_the_lifetime_of_a_registration(store: Store) -> None:
    async def scenario() -> None:
        async with (
            running_server(store) as server,
            SimulatedDevice("int-107", coap_uri(server), lifetime=60) as device,
        ):
            await device.wait_registered()
            before = server.registration("int-107")
            assert before is not None and before.lifetime == 60
            mark = len(device.events)
            assert (await server.write_value("int-107", "/1/0/1", "600")).ok
            await device.wait_event(DeviceUpdated, since=mark)
            after = server.registration("int-107")
            assert after is not None and after.lifetime == 600
            assert after.expires_at > before.expires_at + 500

    run(scenario())


def test_unsupported_version_gets_4_12(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server, collecting(server) as log:
            client = await RawClient().connect(server.coap_address)
            response = await client.register("v13", version="1.3")
            assert response.code == Code.PRECONDITION_FAILED
            assert b"1.3" in response.payload
            ok = await client.register("v13", version="1.1")
            assert ok.code == Code.CREATED
            client.close()
            await eventually(lambda: bool(log.of(RegistrationRefused)))
            refused = log.of(RegistrationRefused)[0]
            assert (refused.endpoint, refused.code) == ("v13", "4.12")

    run(scenario())


def test_client_falls_back_to_1_1_when_1_2_is_disabled(store: Store) -> None:
    """Anjay's behaviour: Register lwm2m=1.2, 4.12, Register lwm2m=1.1 at once."""

    async def scenario() -> None:
        async with running_server(store, allowed_versions=("1.0", "1.1")) as server:
            config = ClientConfig(lwm2m_version="1.2")
            async with SimulatedDevice("fallback", coap_uri(server), config=config) as device:
                await device.wait_registered()
                fallback = await device.wait_event(VersionFallback)
                assert (fallback.rejected, fallback.retry) == ("1.2", "1.1")
                reg = server.registration("fallback")
                assert reg is not None and reg.lwm2m_version == "1.1"

    run(scenario())


def test_malformed_registrations_get_4_00_with_a_reason_and_the_server_keeps_serving(
    store: Store,
) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            client = await RawClient().connect(server.coap_address)
            cases = [
                ((), b"</1/0>", "endpoint"),
                (("ep=x", "lt=abc"), b"</1/0>", "lt="),
                (("ep=x", "lt=0"), b"</1/0>", "lifetime"),
                (("ep=x", "b=XQ"), b"</1/0>", "binding"),
                (("ep=x", "lwm2m=one"), b"</1/0>", "version"),
                (("ep=x", "ep=y"), b"</1/0>", "twice"),
                (("ep=x",), b"</1/0", "object list"),
                (("ep=x",), b"\xff\xfe", "UTF-8"),
            ]
            for query, payload, words in cases:
                response = await client.request(
                    Code.POST, "/rd", query=query, payload=payload, content_format=40
                )
                assert response.code == Code.BAD_REQUEST, (query, payload)
                assert words.encode() in response.payload, (words, response.payload)
            wrong_method = await client.request(Code.GET, "/rd")
            assert wrong_method.code == Code.METHOD_NOT_ALLOWED
            nowhere = await client.request(Code.POST, "/bs")
            assert nowhere.code == Code.NOT_FOUND
            assert server.registrations() == []
            ok = await client.register("after-garbage")
            assert ok.code == Code.CREATED
            client.close()

    run(scenario())


def test_lifetime_expiry_removes_the_registration(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server, collecting(server) as log:
            client = await RawClient().connect(server.coap_address)
            response = await client.register("short", lifetime=1)
            reg_id = location(response).split("/")[-1]
            assert server.registration("short") is not None
            await eventually(lambda: server.registration("short") is None, timeout=3)
            await eventually(lambda: bool(log.of(Expired)))
            assert log.of(Expired)[0].endpoint == "short"
            await store.flush()
            assert store.read_sync(lambda tx: store.registrations.get(tx, reg_id)) is None
            late = await client.request(Code.POST, location(response))
            assert late.code == Code.NOT_FOUND
            client.close()

    run(scenario())


def test_updates_extend_the_expiry_with_one_timer_entry_and_a_shorter_lifetime_wins(
    store: Store,
) -> None:
    """Updates that extend the lifetime keep one expiry entry in the server's timer heap (an
    entry per Update grew the heap by every Update until the old expiry: issue 13); the
    registration still expires a lifetime after its last Update, and an Update that shortens
    the lifetime makes it expire at the shorter time."""

    def reg_entries(server: LwM2MServer) -> int:
        return sum(1 for entry in server._heap if entry[2] == "reg")

    async def scenario() -> None:
        async with running_server(store) as server:
            client = await RawClient().connect(server.coap_address)
            response = await client.register("extended", lifetime=1)
            path = location(response)
            for _ in range(4):  # 1.6 s of Updates: past the first lifetime
                await asyncio.sleep(0.4)
                assert (await client.request(Code.POST, path)).code == Code.CHANGED
                assert reg_entries(server) <= 2
            assert server.registration("extended") is not None
            await eventually(lambda: server.registration("extended") is None, timeout=3)
            assert reg_entries(server) == 0

            response = await client.register("shortened", lifetime=60)
            path = location(response)
            updated = await client.request(Code.POST, path, query=("lt=1",))
            assert updated.code == Code.CHANGED
            await eventually(lambda: server.registration("shortened") is None, timeout=3)
            client.close()

    run(scenario())


def test_register_again_replaces_the_old_registration_and_cancels_its_observations(
    store: Store,
) -> None:
    async def scenario() -> None:
        async with (
            running_server(store) as server,
            collecting(server) as log,
            SimulatedDevice("again", coap_uri(server)) as device,
        ):
            await device.wait_registered()
            old = server.registration("again")
            observed = await server.observe("again", "/3/0/9")
            assert observed.ok and observed.observation_id is not None
            client = await RawClient().connect(server.coap_address)
            response = await client.register("again")
            assert response.code == Code.CREATED
            new = server.registration("again")
            assert old is not None and new is not None and new.id != old.id
            assert server.observations("again") == []
            await eventually(lambda: len(log.of(Registered)) == 2)
            replaced = log.of(Registered)[1].replaced
            assert replaced is not None and replaced.id == old.id
            assert any(
                e.observation_id == observed.observation_id for e in log.of(ObservationEnded)
            )
            assert store.read_sync(lambda tx: store.observations.for_endpoint(tx, "again")) == []
            client.close()

    run(scenario())


def test_update_from_a_new_port_moves_the_registration(store: Store) -> None:
    """NAT rebinding: the Update arrives from another source port; requests follow it."""

    async def scenario() -> None:
        def answer(message: object) -> object:
            from aiocoap import Message

            reply = Message(code=Code.CONTENT, payload=b"moved")
            reply.opt.content_format = 0
            return reply

        async with running_server(store) as server:
            first = await RawClient().connect(server.coap_address)
            response = await first.register("nat", version="1.0")
            first.close()
            second = await RawClient(answer).connect(server.coap_address)
            update = await second.request(Code.POST, location(response))
            assert update.code == Code.CHANGED
            reg = server.registration("nat")
            assert reg is not None and reg.address.port == second.local_port
            result = await server.read("nat", "/3/0/0")
            assert result.ok and result.content is not None
            assert second.requests and tuple(second.requests[0].opt.uri_path) == ("3", "0", "0")
            second.close()

    run(scenario())


def test_registrations_survive_a_server_restart(store: Store) -> None:
    async def scenario() -> None:
        server = await LwM2MServer.start(server_config(), store)
        address = server.coap_address
        assert address is not None
        device = SimulatedDevice("restart", f"coap://127.0.0.1:{address[1]}")
        await device.start()
        await device.wait_registered()
        before = server.registration("restart")
        await server.stop()
        again = await LwM2MServer.start(server_config(coap_port=address[1]), store)
        try:
            reg = again.registration("restart")
            assert reg is not None and before is not None and reg.id == before.id
            # a plain-UDP device is reachable at its stored address before it talks again
            read = await again.read("restart", "/3/0/0")
            assert read.ok, read
            mark = len(device.events)
            device.trigger_update()
            await device.wait_event(DeviceUpdated, since=mark)
            await device.stop()
            assert again.registration("restart") is None
        finally:
            await again.stop()

    run(scenario())


def test_expired_while_down_is_dropped_at_start(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            client = await RawClient().connect(server.coap_address)
            assert (await client.register("gone", lifetime=1)).code == Code.CREATED
            client.close()
        await asyncio.sleep(1.1)
        async with running_server(store) as server:
            assert server.registration("gone") is None
            assert store.read_sync(lambda tx: store.registrations.count(tx)) == 0

    run(scenario())


def test_operations_on_unknown_endpoints_raise_before_sending(store: Store) -> None:
    from lwm2m.server import UnknownEndpoint

    async def scenario() -> None:
        async with running_server(store) as server:
            try:
                await server.read("nobody", "/3/0")
            except UnknownEndpoint as exc:
                assert "fleetloop devices list" in str(exc)
            else:
                raise AssertionError("UnknownEndpoint expected")

    run(scenario())


def test_queue_mode_and_binding_are_recorded_per_version(store: Store) -> None:
    async def scenario() -> None:
        async with running_server(store) as server:
            client = await RawClient().connect(server.coap_address)
            await client.register("q10", version="1.0", extra=("b=UQ",))
            await client.register("q11", version="1.1", extra=("b=U", "Q"))
            await client.register("nq", version="1.1", extra=("b=U",))
            client.close()
            q10, q11, nq = (server.registration(e) for e in ("q10", "q11", "nq"))
            assert q10 is not None and (q10.binding, q10.queue_mode) == ("U", True)
            assert q11 is not None and (q11.binding, q11.queue_mode) == ("U", True)
            assert nq is not None and not nq.queue_mode

    run(scenario())


def test_alternate_root_path_prefixes_requests(store: Store) -> None:
    async def scenario() -> None:
        def answer(message: object) -> object:
            from aiocoap import Message

            reply = Message(code=Code.CONTENT, payload=b"x")
            reply.opt.content_format = 0
            return reply

        async with running_server(store) as server:
            client = await RawClient(answer).connect(server.coap_address)
            payload = b'</lwm2m>;rt="oma.lwm2m",</lwm2m/1/0>,</lwm2m/3/0>'
            assert (await client.register("alt", payload=payload)).code == Code.CREATED
            reg = server.registration("alt")
            assert reg is not None and reg.root_path == "/lwm2m"
            result = await server.read("alt", Path.of(3, 0, 0))
            assert result.status is OperationStatus.SUCCESS
            assert tuple(client.requests[0].opt.uri_path) == ("lwm2m", "3", "0", "0")
            client.close()

    run(scenario())


def test_a_failing_store_answers_5_03_and_acknowledges_nothing(sqlite_store: Store) -> None:
    async def scenario() -> None:
        async with running_server(sqlite_store) as server:
            client = await RawClient().connect(server.coap_address)
            assert (await client.register("before")).code == Code.CREATED
            await sqlite_store.aclose()  # the database goes away
            response = await client.register("after")
            assert response.code == Code.SERVICE_UNAVAILABLE
            assert server.registration("after") is None
            client.close()

    run(scenario())
