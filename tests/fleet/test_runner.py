"""The fleet runner on real sockets against the real DM server (in-process, SQLite): the
Python API tests use -- spawn, wait, inspect, inject -- and the I/O it does for the engine."""

from __future__ import annotations

import ast
import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from lwm2m.server import LwM2MServer, ServerConfig
from lwm2m.store import Store
from simulators.device.events import Rebooted, Registered, Updated
from simulators.fleet.runner import DeviceFleet, FleetError
from simulators.netem import PRESETS
from simulators.profiles import DeviceProfile

REPO = Path(__file__).resolve().parents[2]


def run(coro: object, timeout: float = 30.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)  # type: ignore[arg-type]

    asyncio.run(bounded())


@asynccontextmanager
async def server_and_fleet(
    tmp_path: Path, **fleet: object
) -> AsyncIterator[tuple[LwM2MServer, DeviceFleet]]:
    store = Store.open(None, tmp_path)
    store.create_schema()
    config = ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=None)
    server = await LwM2MServer.start(config, store)
    address = server.coap_address
    assert address is not None
    try:
        async with DeviceFleet(
            f"coap://{address[0]}:{address[1]}",
            seed=1,
            record_events=True,
            **fleet,  # type: ignore[arg-type]
        ) as devices:
            yield server, devices
    finally:
        await server.stop()
        store.close()


def test_every_device_has_its_own_socket_and_the_server_sees_each_address(
    tmp_path: Path,
) -> None:
    async def case() -> None:
        async with server_and_fleet(tmp_path) as (server, fleet):
            fleet.spawn(50)
            await fleet.wait_registered(timeout=20)
            addresses = {fleet.device(i).local_address for i in range(50)}
            assert len(addresses) == 50
            registered = {(r.address.host, r.address.port) for r in server.registrations()}
            assert registered == addresses
            assert fleet.counts()["registered"] == 50

    run(case())


def test_inspect_act_and_inject_through_the_python_api(tmp_path: Path) -> None:
    async def case() -> None:
        async with server_and_fleet(tmp_path) as (server, fleet):
            fleet.spawn(3, prefix="api-")
            await fleet.wait_registered()
            device = fleet.device("api-000002")
            assert device.status == "registered"
            assert device.read("/3/0/2") == "api-000002"
            assert device.node("/3/0/0").value.value == "fleetloop-sim"  # type: ignore[union-attr]
            device.set("/3/0/9", 50)
            result = await server.read("api-000002", "/3/0/9")
            assert result.ok and result.content.value.value == 50  # type: ignore[union-attr]

            before = device.local_address
            mark = len(device.events)
            fleet.inject("api-000002", "rebind")  # NAT rebinding: new source port
            fleet.inject("api-000002", "update")
            await device.wait_event(Updated, since=mark)
            assert device.local_address != before
            registration = server.registration("api-000002")
            assert registration is not None
            assert (registration.address.host, registration.address.port) == device.local_address

            mark = len(device.events)
            device.inject("reboot")
            await device.wait_event(Rebooted, since=mark)
            await device.wait_event(Registered, since=mark)

            with pytest.raises(FleetError, match="unknown fault"):
                fleet.inject(0, "meteor")
            with pytest.raises(FleetError, match="no device"):
                fleet.device("nobody")

    run(case())


def test_a_cut_link_loses_what_the_server_sends_until_restored(tmp_path: Path) -> None:
    async def case() -> None:
        async with server_and_fleet(tmp_path) as (server, fleet):
            fleet.spawn(1)
            await fleet.wait_registered()
            fleet.inject(0, "cut")
            lost = await server.read("sim-000001", "/3/0/0", timeout=3)
            assert not lost.ok and lost.status.value == "timeout"
            assert fleet.counters.dropped_offline >= 1
            fleet.inject(0, "restore")
            back = await server.read("sim-000001", "/3/0/0")
            assert back.ok

    run(case())


def test_link_emulation_on_real_sockets_delays_the_registration(tmp_path: Path) -> None:
    async def case() -> None:
        profile = DeviceProfile(link=PRESETS["ltem"].replace(loss=0.0, rtt=0.4, jitter=0.0))
        async with server_and_fleet(tmp_path) as (server, fleet):
            loop = asyncio.get_running_loop()
            started = loop.time()
            fleet.spawn(10, profile=profile)
            await fleet.wait_registered()
            assert loop.time() - started >= 0.4  # one RTT at least
            asked = loop.time()
            result = await server.read("sim-000003", "/3/0/0")
            assert result.ok
            assert loop.time() - asked >= 0.4

    run(case())


def test_a_start_rate_ramps_the_fleet_up(tmp_path: Path) -> None:
    async def case() -> None:
        async with server_and_fleet(tmp_path, start_rate=100.0) as (_, fleet):
            loop = asyncio.get_running_loop()
            started = loop.time()
            fleet.spawn(50)
            await fleet.wait_registered()
            assert loop.time() - started >= 0.4  # 50 devices at 100/s

    run(case())


def test_leaving_the_fleet_deregisters_and_closes_every_socket(tmp_path: Path) -> None:
    async def case() -> None:
        async with server_and_fleet(tmp_path) as (server, fleet):
            fleet.spawn(20)
            await fleet.wait_registered()
            sockets = [s for s in fleet._socks if s is not None]
            assert len(sockets) == 20
            await fleet.close()
            assert server.registrations() == []
            assert all(s.fileno() == -1 for s in sockets)
            assert fleet.counters.deregistrations == 20

    run(case())


def test_a_coaps_fleet_needs_psk_identities(tmp_path: Path) -> None:
    async def case() -> None:
        async with DeviceFleet("coaps://127.0.0.1:5684") as fleet:
            with pytest.raises(FleetError, match="has no PSK"):
                fleet.spawn(1)

    run(case())


def test_the_engine_and_link_emulation_are_sans_io() -> None:
    forbidden = {"asyncio", "socket", "time", "select", "selectors"}
    for name in ("fleet/engine.py", "netem.py", "profiles.py", "identities.py"):
        tree = ast.parse((REPO / "simulators" / name).read_text())
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                assert module.split(".")[0] not in forbidden, f"{name} imports {module}"


def test_device_sockets_bind_loopback_for_a_loopback_server() -> None:
    async def case() -> None:
        async with DeviceFleet("coap://127.0.0.1:9", seed=1) as fleet:
            fleet.spawn(1, start=False)
            sock = fleet._open_socket(0)
            assert sock.family == socket.AF_INET
            assert sock.getsockname()[0] == "127.0.0.1"
            await fleet.close(deregister=False)

    run(case())


def test_starting_all_at_once_runs_the_loop_between_chunks_and_times_each_device_alone() -> None:
    """ "All at once" starts devices as fast as the fleet builds their Registers, but in
    chunks: the event loop runs in between (so answers are read while the rest start), and a
    device's first retransmission waits ACK_TIMEOUT from its own Register, not from a clock
    read before the whole start-up (which made every timer overdue in a 10 000-device storm)."""

    async def case() -> None:
        loop = asyncio.get_running_loop()
        arrivals: dict[int, list[float]] = {}

        class Silent(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
                arrivals.setdefault(addr[1], []).append(loop.time())

        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # holds every Register
        raw.bind(("127.0.0.1", 0))
        sink, _ = await loop.create_datagram_endpoint(Silent, sock=raw)
        port = sink.get_extra_info("sockname")[1]
        count = 400
        try:
            async with DeviceFleet(f"coap://127.0.0.1:{port}", seed=1, start_rate=0.0) as fleet:
                seen: list[int] = []

                async def watch() -> None:
                    while True:
                        seen.append(fleet.counters.datagrams_sent)
                        await asyncio.sleep(0)

                watcher = asyncio.create_task(watch())
                await asyncio.sleep(0)
                fleet.spawn(count, profile=DeviceProfile(lifetime=86_400))
                while len(arrivals) < count:
                    await asyncio.sleep(0.01)
                assert any(0 < sent < count for sent in seen), "the start-up blocked the loop"
                watcher.cancel()
                for _ in range(500):  # the longest first timeout is 2 s x 1.5
                    if all(len(times) > 1 for times in arrivals.values()):
                        break
                    await asyncio.sleep(0.01)
                gaps = [times[1] - times[0] for times in arrivals.values() if len(times) > 1]
                assert len(gaps) == count  # every silent Register was retransmitted...
                # ...ACK_TIMEOUT (2 s) after it was sent, not at once (the sink reads each
                # Register only between chunks, so its first stamp can be a little late)
                assert min(gaps) >= 1.5
                await fleet.close(deregister=False, timeout=1)
        finally:
            sink.close()

    run(case())
