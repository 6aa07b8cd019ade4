"""Parked DTLS sessions (issue 13): an idle session is saved and its context freed; the next
record restores it with no handshake; a replayed record is still refused; with a session
store, sessions survive a server restart and outgoing sequence numbers never repeat.

Real DTLS over real UDP on 127.0.0.1. A :class:`Relay` between the client and the server is
the packet capture: it counts ClientHellos, reads record sequence numbers, and replays
captured records from the address the server knows the device by. The restart tests move the
relay to the new server's port, so the device keeps its address and its session.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import pytest
from aiocoap import Message

from lwm2m.store import Store
from lwm2m.store.dtls_sessions import StoreDtlsSessions
from lwm2m.transport import DtlsClient, DtlsClientConfig, DtlsServer, DtlsServerConfig, Peer
from lwm2m.transport._common import is_client_hello
from lwm2m.transport.errors import SendFailed
from lwm2m.transport.parking import (
    OUT_RESERVATION,
    ParkingError,
    counters,
    decode_blob,
    encode_blob,
    key_address,
    patch_counters,
    peer_key,
)
from lwm2m.transport.peer import CertificateIdentity, PskIdentity
from tests.transport.helpers import (
    PSK_IDENTITY,
    PSK_KEY,
    Collector,
    Pki,
    Relay,
    coap_get,
    dtls_echo_server,
    echo_roundtrip,
    eventually,
    psk_client,
    psk_server_config,
    run,
)

ECHO = b"echo psk:" + PSK_IDENTITY


def _records(datagram: bytes) -> list[tuple[int, int, int]]:
    """``(content type, epoch, sequence number)`` of each record in a datagram."""
    out = []
    pos = 0
    while pos + 13 <= len(datagram):
        epoch = int.from_bytes(datagram[pos + 3 : pos + 5], "big")
        seq = int.from_bytes(datagram[pos + 5 : pos + 11], "big")
        out.append((datagram[pos], epoch, seq))
        pos += 13 + int.from_bytes(datagram[pos + 11 : pos + 13], "big")
    return out


def _client_hellos(relay: Relay) -> int:
    return sum(1 for d, data in relay.captured if d == "c2s" and is_client_hello(data))


def _app_seqs(relay: Relay, direction: str) -> list[int]:
    return [
        seq
        for d, data in relay.captured
        if d == direction
        for ctype, epoch, seq in _records(data)
        if ctype == 23 and epoch > 0
    ]


def _last_app_record(relay: Relay, direction: str) -> bytes:
    return next(
        data
        for d, data in reversed(relay.captured)
        if d == direction and data[0] == 23 and data[3:5] != b"\x00\x00"
    )


async def _relayed_client(server: DtlsServer) -> tuple[Relay, DtlsClient, Collector]:
    relay, port = await Relay.start(server.local_address)
    client, sink = await psk_client(port)
    return relay, client, sink


async def _replay_is_refused(server: DtlsServer, relay: Relay, record: bytes, seen: int) -> None:
    """Send ``record`` again from the device's address: no message reaches the sink, and no
    answer comes back."""
    answers = len([1 for d, _ in relay.captured if d == "s2c"])
    relay.transport.sendto(record, server.local_address)
    await asyncio.sleep(0.3)
    assert server.stats.messages_received == seen
    assert len([1 for d, _ in relay.captured if d == "s2c"]) == answers


# -- blobs and counters (no network) ----------------------------------------------------------


def test_blobs_round_trip_and_bad_blobs_are_typed_errors() -> None:
    conn = bytes.fromhex(
        "021c0800ff00000e0000006d" + "00" * 109 + "00" * 64 + "00000000"
        "0000000000000005" + "000000000000003f" + "00" + "0001000000000004" + "0000" + "00"
    )
    assert counters(conn) == (4, 5)
    patched = patch_counters(conn, 1000, 9)
    assert counters(patched) == (1000, 9)
    assert patched[-20:-12] == b"\xff" * 8  # every record up to the high-water mark is seen
    assert patch_counters(conn, 2, 3) == conn  # never moves a counter back
    cert = CertificateIdentity("CN=dev", "dev", ("a.example",), (), bytes(range(32)))
    for identity in (PskIdentity(b"urn:imei:1"), cert, None):
        blob = encode_blob(1_700_000_000.7, 77, 66, identity, conn)
        stored = decode_blob(blob)
        assert (stored.out_reservation, stored.in_top, stored.identity) == (77, 66, identity)
        assert stored.connection == conn and stored.last_seen == 1_700_000_000
    for bad in (b"", b"\x02" + bytes(30), encode_blob(0, 0, 0, None, conn)[:-20]):
        with pytest.raises(ParkingError):
            decode_blob(bad)
    for address in (("127.0.0.1", 5684), ("::1", 5684, 0, 0)):
        assert key_address(peer_key(address)) == address
    with pytest.raises(ParkingError):
        key_address("nonsense")


# -- parking in memory --------------------------------------------------------------------------


def test_an_idle_session_parks_and_the_next_record_restores_it_without_a_handshake() -> None:
    async def scenario() -> None:
        ended: list[tuple[Peer, str]] = []
        server, responder = await dtls_echo_server(psk_server_config(park_after=0.2), ended)
        relay, client, sink = await _relayed_client(server)
        try:
            assert await echo_roundtrip(client, sink, 1) == ECHO
            first_peer = responder.requests[-1][1]
            hellos = _client_hellos(relay)
            assert hellos >= 1
            await eventually(lambda: server.parked_count == 1, timeout=3)
            assert server.session_count == 0 and server.stats.sessions_parked == 1
            for mid in range(2, 5):
                assert await echo_roundtrip(client, sink, mid) == ECHO
            assert server.stats.sessions_restored == 1
            assert server.stats.handshakes_started == server.stats.handshakes_completed == 1
            assert _client_hellos(relay) == hellos  # no ClientHello after parking
            assert responder.requests[-1][1] == first_peer  # same identity, same Peer
            assert ended == []
            out = _app_seqs(relay, "s2c")
            assert out == sorted(set(out))  # the restored session continues the numbering
        finally:
            client.close()
            server.close()
            relay.close()

    run(scenario())


def test_a_server_send_to_a_parked_device_restores_its_session() -> None:
    async def scenario() -> None:
        server, responder = await dtls_echo_server(psk_server_config(park_after=0.2))
        relay, client, sink = await _relayed_client(server)
        try:
            assert await echo_roundtrip(client, sink, 1) == ECHO
            peer = responder.requests[-1][1]
            await eventually(lambda: server.parked_count == 1, timeout=3)
            server.send(b"\x50\x01\x00\x07", peer)  # NON GET mid 7: the device gets it
            data, _ = await sink.get()
            assert data == b"\x50\x01\x00\x07"
            assert server.stats.sessions_restored == 1 and server.session_count == 1
            assert server.stats.handshakes_completed == 1
        finally:
            client.close()
            server.close()
            relay.close()

    run(scenario())


def test_a_replayed_record_is_refused_by_a_restored_session() -> None:
    async def scenario() -> None:
        server, _ = await dtls_echo_server(psk_server_config(park_after=0.2))
        relay, client, sink = await _relayed_client(server)
        try:
            assert await echo_roundtrip(client, sink, 1) == ECHO
            captured = _last_app_record(relay, "c2s")
            await eventually(lambda: server.parked_count == 1, timeout=3)
            # Replayed while parked: the record restores the session, which refuses it.
            await _replay_is_refused(server, relay, captured, seen=1)
            assert server.stats.sessions_restored == 1
            assert await echo_roundtrip(client, sink, 2) == ECHO
            await eventually(lambda: server.parked_count == 1, timeout=3)
            assert await echo_roundtrip(client, sink, 3) == ECHO  # parked and restored again
            await _replay_is_refused(server, relay, captured, seen=3)
            await _replay_is_refused(server, relay, _last_app_record(relay, "c2s"), seen=3)
        finally:
            client.close()
            server.close()
            relay.close()

    run(scenario())


def test_over_the_live_cap_the_least_recently_used_session_is_parked_not_evicted() -> None:
    async def scenario() -> None:
        ended: list[tuple[Peer, str]] = []
        server, _ = await dtls_echo_server(psk_server_config(max_sessions=2), ended)
        clients = []
        try:
            port = server.local_address[1]
            for mid in range(3):
                client, sink = await psk_client(port)
                clients.append((client, sink))
                assert await echo_roundtrip(client, sink, mid) == ECHO
            assert server.session_count == 2 and server.parked_count == 1
            assert server.stats.sessions_evicted == 0 and ended == []
            for mid, (client, sink) in enumerate(clients, start=10):
                assert await echo_roundtrip(client, sink, mid) == ECHO
            assert server.stats.handshakes_completed == 3
            assert server.stats.sessions_restored >= 1
        finally:
            for client, _ in clients:
                client.close()
            server.close()

    run(scenario())


def test_a_new_silent_session_is_parked_at_the_next_flush_and_its_context_serves_the_next_device(
    tmp_path: Path,
) -> None:
    """A device that handshook, sent one record and went quiet is parked at the next flush
    (not kept live with a snapshot). Its Mbed TLS context, reset by the save, carries the next
    device's handshake (another identity): that device gets its own identity, and both
    sessions keep working, the first one restored without a handshake."""
    other = (b"urn:dev:other", bytes(range(100, 116)))

    async def scenario() -> None:
        store = await asyncio.to_thread(Store.open, None, tmp_path)
        await asyncio.to_thread(store.create_schema)
        config = psk_server_config(
            session_store=StoreDtlsSessions(store),
            persist_interval=0.3,
            keys={PSK_IDENTITY: PSK_KEY, other[0]: other[1]},
        )
        server, responder = await dtls_echo_server(config)
        relay, first, first_sink = await _relayed_client(server)
        second: DtlsClient | None = None
        try:
            assert await echo_roundtrip(first, first_sink, 1) == ECHO
            hellos = _client_hellos(relay)  # with the cookie exchange's
            await eventually(lambda: server.parked_count == 1, timeout=3)
            assert server.session_count == 0
            await eventually(lambda: server.stats.sessions_persisted >= 1, timeout=3)
            second, second_sink = await psk_client(
                server.local_address[1], identity=other[0], key=other[1]
            )
            assert server.stats.contexts_reused == 1
            assert await echo_roundtrip(second, second_sink, 1) == b"echo psk:" + other[0]
            assert responder.requests[-1][1].identity == PskIdentity(other[0])
            assert await echo_roundtrip(first, first_sink, 2) == ECHO
            assert responder.requests[-1][1].identity == PskIdentity(PSK_IDENTITY)
            assert server.stats.handshakes_started == 2 and _client_hellos(relay) == hellos
            assert server.stats.sessions_restored == 1
        finally:
            first.close()
            if second is not None:
                second.close()
            server.close()
            await server.wait_closed()
            relay.close()
            await store.aclose()

    run(scenario())


def test_parked_sessions_expire_after_the_idle_timeout() -> None:
    async def scenario() -> None:
        ended: list[tuple[Peer, str]] = []
        server, _ = await dtls_echo_server(
            psk_server_config(park_after=0.1, idle_timeout=0.6), ended
        )
        client, sink = await psk_client(server.local_address[1])
        try:
            assert await echo_roundtrip(client, sink, 1) == ECHO
            await eventually(lambda: server.parked_count == 1, timeout=3)
            await eventually(lambda: server.parked_count == 0, timeout=3)
            assert server.stats.parked_expired == 1
            assert [reason for _, reason in ended] == ["expired"]
        finally:
            client.close()
            server.close()

    run(scenario())


def test_a_parked_session_takes_a_small_fraction_of_a_live_one() -> None:
    """Measured, not timed: Python heap per session, live vs parked (N sessions)."""

    async def scenario() -> tuple[int, int]:
        server, _ = await dtls_echo_server(psk_server_config(park_after=30.0))
        clients = []
        try:
            port = server.local_address[1]
            for mid in range(8):
                client, sink = await psk_client(port)
                clients.append(client)
                assert await echo_roundtrip(client, sink, mid) == ECHO
            sessions = list(server._established.values())
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for s in sessions:
                assert server._park(s)
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            blob_sizes = [len(entry) for entry in server._parked.values()]
            diffs = after.compare_to(before, "filename")
            parked_heap = sum(stat.size_diff for stat in diffs if stat.size_diff > 0)
            return max(blob_sizes), parked_heap // len(sessions)
        finally:
            for client in clients:
                client.close()
            server.close()

    entry, heap_per_session = run(scenario())
    assert entry <= 512  # the whole parked entry: header, PSK identity, Mbed TLS state
    assert heap_per_session <= 2048, heap_per_session


# -- persistence ----------------------------------------------------------------------------------


async def _restartable(
    tmp_path: Path, **overrides: object
) -> tuple[Store, StoreDtlsSessions, DtlsServer]:
    store = await asyncio.to_thread(Store.open, None, tmp_path)
    await asyncio.to_thread(store.create_schema)
    sessions = StoreDtlsSessions(store)
    server, _ = await dtls_echo_server(
        psk_server_config(session_store=sessions, persist_interval=0.1, **overrides)
    )
    return store, sessions, server


def test_sessions_survive_a_graceful_restart_with_a_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, sessions, server = await _restartable(tmp_path)
        relay, client, sink = await _relayed_client(server)
        try:
            assert await echo_roundtrip(client, sink, 1) == ECHO
            captured = _last_app_record(relay, "c2s")
            before = _app_seqs(relay, "s2c")
            server.close()
            await server.wait_closed()  # the live session was parked and written
            rows = await sessions.load_all()
            device = relay.transport.get_extra_info("sockname")
            assert [key for key, _ in rows] == [peer_key(device)]
            server, _ = await dtls_echo_server(
                psk_server_config(session_store=sessions, persist_interval=0.1)
            )
            assert server.parked_count == 1 and server.stats.sessions_loaded == 1
            relay.server = server.local_address
            assert await echo_roundtrip(client, sink, 2) == ECHO
            assert server.stats.handshakes_started == 0
            assert not client.closed
            after = _app_seqs(relay, "s2c")[len(before) :]
            assert min(after) > max(before)
            await _replay_is_refused(server, relay, captured, seen=1)
        finally:
            client.close()
            server.close()
            await server.wait_closed()
            relay.close()
            await store.aclose()

    run(scenario())


def test_a_graceful_stop_queues_every_live_session_before_close_returns(tmp_path: Path) -> None:
    """Many live sessions in three states at the stop: stored and unchanged since, stored and
    talked since, and new (never saved). ``close()`` queues what they need on the store before
    it returns, so the store's own flush at shutdown keeps them all even when the server's
    owner stops waiting for ``wait_closed()`` (``serve`` waits 2 s); the next process
    resumes every one without a handshake. (Before, close() parked them all and left the
    writing to a task, which the store, closed right away, never saw.)"""
    n = 60

    async def scenario() -> None:
        store, sessions, server = await _restartable(tmp_path, park_after=None)
        clients: list[tuple[DtlsClient, Collector]] = []
        relays: list[tuple[Relay, DtlsClient, Collector]] = []  # every 7th device, relayed
        try:
            for i in range(n):
                if i == n // 2:  # the first half reaches the store, untouched since
                    await asyncio.sleep(0.4)
                    assert server.stats.sessions_persisted >= n // 2
                if i % 7 == 3:
                    relay, client, sink = await _relayed_client(server)
                    relays.append((relay, client, sink))
                else:
                    client, sink = await psk_client(server.local_address[1])
                assert await echo_roundtrip(client, sink, 1) == ECHO
                clients.append((client, sink))
            for client, sink in clients[:10]:  # stored, then talked again
                assert await echo_roundtrip(client, sink, 2) == ECHO
            assert server.session_count == n
            server.close()
            store.close()  # at once: no task of the server runs after close() returned
            store = await asyncio.to_thread(Store.open, None, tmp_path)
            sessions = StoreDtlsSessions(store)
            assert len(await sessions.load_all()) == n
            server, _ = await dtls_echo_server(psk_server_config(session_store=sessions))
            assert server.parked_count == n
            for relay, client, sink in relays:  # new, stored, stored and talked since
                relay.server = server.local_address
                assert await echo_roundtrip(client, sink, 3) == ECHO
            assert server.stats.handshakes_started == 0
            assert server.stats.sessions_restored == len(relays)
        finally:
            for client, _ in clients:
                client.close()
            for relay, _, _ in relays:
                relay.close()
            server.close()
            await server.wait_closed()
            await store.aclose()

    run(scenario(), timeout=60)


def test_two_records_in_one_datagram_each_get_their_own_mark(tmp_path: Path) -> None:
    """A datagram may hold several records (RFC 6347 4.1.1). The server hands them to Mbed
    TLS one by one, so each message goes up with its own record's mark queued before it; a
    replay of either record alone is refused afterwards."""

    async def scenario() -> None:
        store, _, server = await _restartable(tmp_path)
        held: list[bytes] = []
        hold = {"on": False}

        def stash(direction: str, datagram: bytes) -> bool:
            if hold["on"] and direction == "c2s":
                held.append(datagram)
                return True
            return False

        relay, port = await Relay.start(server.local_address, stash)
        client, sink = await psk_client(port)
        try:
            assert await echo_roundtrip(client, sink, 1) == ECHO
            await eventually(lambda: server.stats.sessions_persisted >= 1, timeout=3)
            marks = server.stats.incoming_marks
            hold["on"] = True
            token2, token3 = b"\x00\x02", b"\x00\x03"
            client.send(coap_get("echo", 2, token2), client.peer)
            client.send(coap_get("echo", 3, token3), client.peer)
            await eventually(lambda: len(held) == 2, timeout=3)
            relay.transport.sendto(held[0] + held[1], server.local_address)  # one datagram
            answers = {Message.decode((await sink.get())[0]).token for _ in range(2)}
            assert answers == {token2, token3}
            assert server.stats.messages_received == 3
            assert server.stats.incoming_marks == marks + 2
            s = next(iter(server._established.values()))
            assert s.in_top == int.from_bytes(held[1][5:11], "big")
            for record in held:  # each alone, again: both refused
                await _replay_is_refused(server, relay, record, seen=3)
        finally:
            client.close()
            server.close()
            await server.wait_closed()
            relay.close()
            await store.aclose()

    run(scenario())


def test_after_a_crash_sequence_numbers_jump_and_replays_are_refused(tmp_path: Path) -> None:
    """A crash is simulated by dropping the server without close(): nothing more is written.
    (tests/hardening/test_dtls_restart.py does it with kill -9 of a real serve.)"""

    async def scenario() -> None:
        store, sessions, server = await _restartable(tmp_path)
        relay, client, sink = await _relayed_client(server)
        try:
            for mid in range(1, 4):
                assert await echo_roundtrip(client, sink, mid) == ECHO
            await asyncio.sleep(0.4)  # the live session's counters reach the store
            captured = _last_app_record(relay, "c2s")
            before = _app_seqs(relay, "s2c")
            server._transport.abort()  # type: ignore[union-attr]  # "kill -9": no close()
            server2, _ = await dtls_echo_server(
                psk_server_config(session_store=sessions, persist_interval=0.1)
            )
            relay.server = server2.local_address
            await _replay_is_refused(server2, relay, captured, seen=0)
            assert await echo_roundtrip(client, sink, 10) == ECHO
            assert server2.stats.handshakes_started == 0 and not client.closed
            after = _app_seqs(relay, "s2c")[len(before) :]
            assert min(after) >= max(before) + OUT_RESERVATION // 2
            server2.close()
            await server2.wait_closed()
        finally:
            client.close()
            relay.close()
            await store.aclose()

    run(scenario())


def test_after_a_rehandshake_from_the_same_address_the_new_session_is_what_survives(
    tmp_path: Path,
) -> None:
    """A stored session's device handshakes again from the same address (reboot, NAT): the
    store must then hold the *new* session (its keys, its marks), so that after a crash the
    device carries on over it without a handshake."""

    async def scenario() -> None:
        store = await asyncio.to_thread(Store.open, None, tmp_path)
        await asyncio.to_thread(store.create_schema)
        sessions = StoreDtlsSessions(store)
        server, _ = await dtls_echo_server(
            psk_server_config(session_store=sessions, persist_interval=0.5, park_after=None)
        )
        relay, port = await Relay.start(server.local_address)
        old, old_sink = await psk_client(port)
        new: DtlsClient | None = None
        server2: DtlsServer | None = None
        try:
            assert await echo_roundtrip(old, old_sink, 1) == ECHO
            await eventually(lambda: server.stats.sessions_persisted >= 1, timeout=5)
            old.abort()  # the device reboots; its new socket reaches the relay
            new, new_sink = await psk_client(port)
            assert await echo_roundtrip(new, new_sink, 1) == ECHO
            assert server.stats.reconnects == 1
            await store.flush()  # the old session's row went at once, not at the next flush
            assert await sessions.load_all() == []
            assert await echo_roundtrip(new, new_sink, 2) == ECHO
            persisted = server.stats.sessions_persisted
            await eventually(lambda: server.stats.sessions_persisted > persisted, timeout=3)
            server._transport.abort()  # type: ignore[union-attr]  # "kill -9": no close()
            server2, _ = await dtls_echo_server(
                psk_server_config(session_store=sessions, persist_interval=0.1)
            )
            assert server2.parked_count == 1
            relay.server = server2.local_address
            assert await echo_roundtrip(new, new_sink, 3) == ECHO
            assert server2.stats.handshakes_started == 0
        finally:
            if new is not None:
                new.close()
            if server2 is not None:
                server2.close()
                await server2.wait_closed()
            relay.close()
            await store.aclose()

    run(scenario())


def test_a_certificate_session_parks_and_survives_a_restart_with_its_identity(
    tmp_path: Path,
) -> None:
    pki = Pki.create()
    server_x509 = pki.credentials("lwm2m.example.net", pki.ca_pem, dns=("lwm2m.example.net",))
    device = pki.credentials("urn:dev:cert-1", pki.ca_pem, uris=("urn:dev:cert-1",))

    async def scenario() -> None:
        store = await asyncio.to_thread(Store.open, None, tmp_path)
        await asyncio.to_thread(store.create_schema)
        sessions = StoreDtlsSessions(store)
        config = DtlsServerConfig(
            x509=server_x509, park_after=0.2, session_store=sessions, persist_interval=0.1
        )
        server, responder = await dtls_echo_server(config)
        relay, port = await Relay.start(server.local_address)
        sink = Collector()
        client = await DtlsClient.connect(
            sink,
            "127.0.0.1",
            port,
            DtlsClientConfig(x509=device, server_hostname="lwm2m.example.net"),
            local_addr=("127.0.0.1", 0),
        )
        try:
            echo = b"echo x509:urn:dev:cert-1"
            assert await echo_roundtrip(client, sink, 1) == echo
            identity = responder.requests[-1][1].identity
            await eventually(lambda: server.parked_count == 1, timeout=3)
            assert await echo_roundtrip(client, sink, 2) == echo
            assert responder.requests[-1][1].identity == identity
            server.close()
            await server.wait_closed()
            ((_, blob),) = await sessions.load_all()
            assert len(blob) <= 2048, len(blob)  # 686 bytes: the peer certificate is kept
            server, responder = await dtls_echo_server(config)
            relay.server = server.local_address
            assert await echo_roundtrip(client, sink, 3) == echo
            assert responder.requests[-1][1].identity == identity  # names and fingerprint
            assert server.stats.handshakes_started == 0
        finally:
            client.close()
            server.close()
            await server.wait_closed()
            relay.close()
            await store.aclose()

    run(scenario())


def test_no_record_is_sent_at_or_above_a_reservation_that_may_be_stored(tmp_path: Path) -> None:
    """The outgoing counter reaches a stored reservation (white-box: set the limit where the
    counter is): sends are refused until the next reservation is committed, then resume."""

    async def scenario() -> None:
        store, _, server = await _restartable(tmp_path)
        relay, client, sink = await _relayed_client(server)
        try:
            assert await echo_roundtrip(client, sink, 1) == ECHO
            await asyncio.sleep(0.3)  # the settled session's first blob is committed
            s = next(iter(server._established.values()))
            assert s.limit >= s.out_next + OUT_RESERVATION // 2
            peer = s.peer
            assert peer is not None
            s.limit = s.reserve = s.out_next  # as if half the reservation were used up
            with pytest.raises(SendFailed, match="reservation"):
                server.send(b"\x50\x01\x00\x09", peer)
            assert server.stats.sends_deferred == 1
            await eventually(lambda: s.limit > s.out_next, timeout=3)
            server.send(b"\x50\x01\x00\x0a", peer)
            data, _ = await sink.get()
            assert data == b"\x50\x01\x00\x0a"
        finally:
            client.close()
            server.close()
            await server.wait_closed()
            relay.close()
            await store.aclose()

    run(scenario())


def test_a_malformed_stored_session_is_dropped_at_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await asyncio.to_thread(Store.open, None, tmp_path)
        await asyncio.to_thread(store.create_schema)
        sessions = StoreDtlsSessions(store)
        await sessions.save({"127.0.0.1 40000": b"\x01junk", "not a key": b"\x01" * 40})
        server, _ = await dtls_echo_server(psk_server_config(session_store=sessions))
        try:
            assert server.parked_count == 0
            assert server.stats.park_failures == 2
            assert await sessions.load_all() == []
        finally:
            server.close()
            await server.wait_closed()
            await store.aclose()

    run(scenario())
