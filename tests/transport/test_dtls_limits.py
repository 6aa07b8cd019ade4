"""The DTLS server's limits: session cap (LRU), handshake limits, idle timeout, retransmission,
and datagrams that are not DTLS at all. Real sockets on 127.0.0.1, short timeouts."""

from __future__ import annotations

import asyncio
import os

from lwm2m.transport import DtlsClient, Peer
from tests.transport.helpers import (
    PSK_IDENTITY,
    Collector,
    HalfHandshake,
    dtls_echo_server,
    echo_roundtrip,
    eventually,
    local_socket,
    psk_client,
    psk_server_config,
    run,
)

ECHO = b"echo psk:" + PSK_IDENTITY


def without_record_numbers(datagram: bytes) -> bytes:
    out = bytearray(datagram)
    pos = 0
    while pos + 13 <= len(out):
        out[pos + 5 : pos + 11] = bytes(6)
        pos += 13 + ((out[pos + 11] << 8) | out[pos + 12])
    return bytes(out)


def test_the_session_cap_evicts_the_least_recently_used_session() -> None:
    async def scenario() -> None:
        ended: list[tuple[Peer, str]] = []
        server, _ = await dtls_echo_server(psk_server_config(max_sessions=3), ended)
        clients: list[tuple[DtlsClient, Collector]] = []
        try:
            port = server.local_address[1]
            for _ in range(3):
                clients.append(await psk_client(port))
            first, second, third = clients
            assert await echo_roundtrip(*first, 1) == ECHO  # first is now more recent than second
            clients.append(await psk_client(port))  # over the cap: second is the LRU
            await second[0].wait_closed()  # it was told (close_notify)
            assert server.session_count == 3
            assert server.stats.sessions_evicted == 1
            for mid, (client, sink) in enumerate((first, third, clients[3]), start=10):
                assert await echo_roundtrip(client, sink, mid) == ECHO
            assert second[0].closed and not first[0].closed
            assert [(p.address, reason) for p, reason in ended] == [
                (second[0].local_address, "evicted")
            ]
        finally:
            for client, _ in clients:
                client.close()
            server.close()

    run(scenario())


def test_a_handshake_flood_from_one_source_is_capped_and_established_devices_carry_on() -> None:
    async def scenario() -> None:
        config = psk_server_config(
            max_handshakes_per_source=3, handshake_timeout_min=5.0, handshake_timeout_max=10.0
        )
        server, _ = await dtls_echo_server(config)
        port = server.local_address[1]
        device, sink = await psk_client(port)  # established before the flood
        flood = [HalfHandshake(port) for _ in range(10)]
        try:
            await asyncio.gather(*(h.start() for h in flood))
            await eventually(lambda: server.stats.handshakes_started >= 11)
            assert server.handshake_count == 3  # the source's oldest stalled ones made room
            assert server.stats.handshakes_evicted_per_source == 7
            for mid in range(5):
                assert await echo_roundtrip(device, sink, mid) == ECHO
            assert server.session_count == 1
        finally:
            for h in flood:
                h.close()
            device.close()
            server.close()

    run(scenario())


def test_the_handshake_table_drops_the_oldest_handshake_when_full() -> None:
    async def scenario() -> None:
        config = psk_server_config(
            max_handshakes=2, handshake_timeout_min=5.0, handshake_timeout_max=10.0
        )
        server, _ = await dtls_echo_server(config)
        port = server.local_address[1]
        pending = [HalfHandshake(port) for _ in range(4)]
        try:
            for h in pending:
                await h.start()
                await eventually(lambda: server.handshake_count >= 1)
            await eventually(lambda: server.stats.handshakes_started == 4)
            assert server.handshake_count == 2
            assert server.stats.handshakes_evicted == 2
            device, sink = await psk_client(port)  # a real device still gets in
            assert await echo_roundtrip(device, sink, 1) == ECHO
            device.close()
        finally:
            for h in pending:
                h.close()
            server.close()

    run(scenario())


def test_the_server_retransmits_its_flight_and_gives_up_on_a_silent_client() -> None:
    async def scenario() -> None:
        config = psk_server_config(handshake_timeout_min=0.05, handshake_timeout_max=0.2)
        server, _ = await dtls_echo_server(config)
        silent = HalfHandshake(server.local_address[1])
        try:
            await silent.start()
            flights = await silent.collect(0.7)
            await eventually(lambda: server.stats.handshake_timeouts == 1)
        finally:
            silent.close()
            server.close()
        # ServerHello..ServerHelloDone, then at 0.05, 0.1, 0.2 s the same flight again (only the
        # record sequence numbers differ).
        assert len(flights) >= 3
        assert len({without_record_numbers(f) for f in flights}) == 1
        assert flights[0][13] == 2  # server_hello
        assert server.handshake_count == 0
        assert server.stats.handshakes_failed == 1

    run(scenario())


def test_idle_sessions_expire_and_active_ones_stay() -> None:
    async def scenario() -> None:
        ended: list[tuple[Peer, str]] = []
        server, _ = await dtls_echo_server(psk_server_config(idle_timeout=0.3), ended)
        port = server.local_address[1]
        client_saw: list[tuple[Peer, str]] = []
        idle, _ = await psk_client(
            port, on_session_closed=lambda peer, reason: client_saw.append((peer, reason))
        )
        active, sink = await psk_client(port)
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 0.8
            mid = 0
            while loop.time() < end:
                mid += 1
                assert await echo_roundtrip(active, sink, mid) == ECHO
                await asyncio.sleep(0.05)
            await asyncio.wait_for(idle.wait_closed(), 2)  # told by close_notify
            assert server.session_count == 1
            assert server.stats.sessions_expired == 1
            assert not active.closed
            assert [(p.address, reason) for p, reason in ended] == [(idle.local_address, "expired")]
            assert [(p.address, reason) for p, reason in client_saw] == [
                (server.local_address, "closed by peer")
            ]
        finally:
            idle.close()
            active.close()
            server.close()

    run(scenario())


def test_garbage_datagrams_do_not_disturb_established_sessions() -> None:
    async def scenario() -> None:
        server, _ = await dtls_echo_server(psk_server_config())
        port = server.local_address[1]
        device, sink = await psk_client(port)
        stranger = local_socket()
        try:
            assert await echo_roundtrip(device, sink, 1) == ECHO
            client_hello_like = b"\x16\xfe\xfd\x00\x00" + os.urandom(8) + b"\x01" + os.urandom(60)
            for payload in (b"", b"\x00", os.urandom(40), os.urandom(1400), client_hello_like):
                stranger.sendto(payload, ("127.0.0.1", port))
            # Spoofed garbage "from" the device's own address, straight into the receive path.
            for payload in (os.urandom(30), b"\x17\xfe\xfd\x00\x01" + os.urandom(40), b"\x15"):
                server.datagram_received(payload, device.local_address)
            for mid in range(2, 6):
                assert await echo_roundtrip(device, sink, mid) == ECHO
            await eventually(lambda: server.stats.datagrams_received >= 13)
        finally:
            stranger.close()
            device.close()
            server.close()
        assert server.stats.internal_errors == 0
        assert server.stats.dropped_no_session >= 4
        assert server.stats.bad_client_hello + server.stats.hello_verify_sent >= 1
        assert server.stats.handshakes_completed == 1

    run(scenario())
