"""DTLS-PSK server and client over real sockets on 127.0.0.1: interop, identities, refusals."""

from __future__ import annotations

import asyncio

import pytest
from aiocoap import Message

from lwm2m.transport import (
    DtlsClient,
    DtlsClientConfig,
    HandshakeFailed,
    HandshakeTimeout,
    MessageTooLarge,
    NoSession,
    Peer,
    PskIdentity,
    WrongTransport,
)
from tests.transport.helpers import (
    PSK_IDENTITY,
    PSK_KEY,
    Collector,
    Relay,
    dtls_echo_server,
    echo_roundtrip,
    eventually,
    local_socket,
    psk_client,
    psk_server_config,
    require_binary,
    run,
    run_process,
)


def test_python_client_and_server_exchange_coap_with_the_psk_identity_attached() -> None:
    async def scenario() -> None:
        server, responder = await dtls_echo_server(psk_server_config())
        try:
            client, sink = await psk_client(server.local_address[1])
            assert client.cipher == "TLS-PSK-WITH-AES-128-CCM-8"
            assert client.peer.identity == PskIdentity(PSK_IDENTITY)
            answer = await echo_roundtrip(client, sink, 1, b"!")
            assert answer == b"echo psk:" + PSK_IDENTITY + b"!"
            assert await echo_roundtrip(client, sink, 2) == b"echo psk:" + PSK_IDENTITY
            _, peer = responder.requests[0]
            assert peer.secure and peer.identity == PskIdentity(PSK_IDENTITY)
            assert peer.address == client.local_address
            assert responder.requests[1][1] is peer  # one Peer object per session
            client.close()
            await eventually(lambda: server.session_count == 0)
        finally:
            server.close()
            await server.wait_closed()
        stats = server.stats
        assert stats.handshakes_completed == 1 and stats.hello_verify_sent == 1
        assert stats.messages_received == 2 and stats.messages_sent == 2
        assert stats.sessions_closed_by_peer == 1

    run(scenario())


def test_libcoap_openssl_client_gets_an_answer_over_dtls_psk() -> None:
    binary = require_binary("coap-client-openssl")

    async def scenario() -> None:
        server, responder = await dtls_echo_server(psk_server_config())
        try:
            uri = f"coaps://127.0.0.1:{server.local_address[1]}/echo"
            argv = ("-m", "get", "-B", "10", "-u", PSK_IDENTITY.decode(), "-k", PSK_KEY.decode())
            rc, out, err = await run_process(binary, *argv, uri)
        finally:
            server.close()
        assert rc == 0, err
        assert out.strip() == b"echo psk:" + PSK_IDENTITY
        assert server.stats.handshakes_completed == 1
        assert responder.requests[0][1].identity == PskIdentity(PSK_IDENTITY)

    run(scenario())


def test_a_wrong_key_is_refused_and_counted() -> None:
    async def scenario() -> None:
        server, _ = await dtls_echo_server(psk_server_config())
        try:
            with pytest.raises(HandshakeFailed):
                await psk_client(server.local_address[1], key=b"not-the-right-key")
        finally:
            server.close()
        assert server.stats.bad_finished == 1
        assert server.stats.handshakes_failed == 1
        assert server.stats.handshakes_completed == 0
        assert server.session_count == 0 and server.handshake_count == 0

    run(scenario())


def test_libcoap_with_a_wrong_key_gets_no_answer_and_is_counted() -> None:
    binary = require_binary("coap-client-openssl")

    async def scenario() -> None:
        server, responder = await dtls_echo_server(psk_server_config())
        try:
            uri = f"coaps://127.0.0.1:{server.local_address[1]}/echo"
            argv = ("-m", "get", "-B", "3", "-u", PSK_IDENTITY.decode(), "-k", "wrong-key")
            _, out, _ = await run_process(binary, *argv, uri)
        finally:
            server.close()
        assert b"echo" not in out
        assert responder.requests == []
        assert server.stats.bad_finished == 1

    run(scenario())


def test_an_unknown_identity_is_refused_and_counted() -> None:
    async def scenario() -> None:
        server, _ = await dtls_echo_server(psk_server_config())
        try:
            with pytest.raises(HandshakeFailed):
                await psk_client(server.local_address[1], identity=b"urn:imei:000000000000000")
        finally:
            server.close()
        assert server.stats.unknown_identity == 1
        assert server.stats.handshakes_failed == 1
        assert server.session_count == 0

    run(scenario())


def test_a_failing_psk_store_counts_as_unknown_identity_and_the_server_carries_on() -> None:
    class BrokenStore:
        def __init__(self) -> None:
            self.calls = 0

        def lookup(self, identity: bytes) -> bytes | None:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("credential database unreachable")
            return PSK_KEY

    async def scenario() -> None:
        from lwm2m.transport import DtlsServerConfig

        server, _ = await dtls_echo_server(DtlsServerConfig(psk_store=BrokenStore()))
        try:
            with pytest.raises(HandshakeFailed):
                await psk_client(server.local_address[1])
            client, sink = await psk_client(server.local_address[1])
            assert await echo_roundtrip(client, sink, 7) == b"echo psk:" + PSK_IDENTITY
            client.close()
        finally:
            server.close()
        assert server.stats.psk_store_errors == 1
        assert server.stats.unknown_identity == 1
        assert server.stats.handshakes_completed == 1

    run(scenario())


def test_fifty_concurrent_clients_handshake_and_each_sees_its_own_identity() -> None:
    async def scenario() -> None:
        keys = {f"urn:dev:{i:03d}".encode(): f"key-{i:03d}".encode() for i in range(50)}
        # All test clients share 127.0.0.1; lift the per-source limit as distinct devices would.
        config = psk_server_config(keys=keys, max_handshakes_per_source=50)
        server, _ = await dtls_echo_server(config)
        clients: list[tuple[DtlsClient, Collector]] = []
        try:
            port = server.local_address[1]
            clients = list(
                await asyncio.gather(*(psk_client(port, ident, key) for ident, key in keys.items()))
            )
            assert server.session_count == 50
            answers = await asyncio.gather(
                *(echo_roundtrip(c, s, i) for i, (c, s) in enumerate(clients))
            )
            for (client, _), answer in zip(clients, answers, strict=True):
                identity = client.peer.identity
                assert isinstance(identity, PskIdentity)
                assert answer == b"echo psk:" + identity.identity
        finally:
            for client, _ in clients:
                client.close()
            server.close()
        assert server.stats.handshakes_completed == 50
        assert server.stats.handshakes_failed == 0
        assert len({c.local_address for c, _ in clients}) == 50

    run(scenario())


def test_sending_to_a_stale_or_plain_peer_is_refused() -> None:
    async def scenario() -> None:
        server, responder = await dtls_echo_server(psk_server_config())
        try:
            client, sink = await psk_client(server.local_address[1])
            await echo_roundtrip(client, sink, 1)
            live = responder.requests[0][1]
            other_identity = Peer(live.address, PskIdentity(b"someone-else"), secure=True)
            with pytest.raises(NoSession):
                server.send(b"\x40\x01\x00\x01", other_identity)
            with pytest.raises(WrongTransport):
                server.send(b"\x40\x01\x00\x01", Peer(live.address))
            with pytest.raises(NoSession):
                server.send(b"\x40\x01\x00\x01", Peer(("127.0.0.1", 9), live.identity, True))
            server.send(b"\x40\x01\x00\x02", live)  # the live peer still works
            data, _ = await sink.get()
            assert data == b"\x40\x01\x00\x02"
            client.close()
        finally:
            server.close()

    run(scenario())


def test_a_message_too_large_for_one_record_is_refused_without_killing_the_session() -> None:
    async def scenario() -> None:
        server, responder = await dtls_echo_server(psk_server_config(mtu=600))
        try:
            client, sink = await psk_client(server.local_address[1], mtu=600)
            await echo_roundtrip(client, sink, 1)
            peer = responder.requests[0][1]
            with pytest.raises(MessageTooLarge):
                server.send(b"x" * 600, peer)
            with pytest.raises(MessageTooLarge):
                client.send(b"x" * 600)
            server.send(b"y" * (600 - 29), peer)  # CCM_8: 13-byte header + 16 bytes expansion
            data, _ = await sink.get()
            assert data == b"y" * 571
            assert await echo_roundtrip(client, sink, 2) == b"echo psk:" + PSK_IDENTITY
            client.close()
        finally:
            server.close()

    run(scenario())


def test_a_device_reconnecting_from_the_same_address_gets_a_new_session_and_identity() -> None:
    async def scenario() -> None:
        keys = {b"device-a": b"key-a", b"device-b": b"key-b"}
        ended: list[tuple[Peer, str]] = []
        server, responder = await dtls_echo_server(psk_server_config(keys=keys), ended)
        try:
            port = server.local_address[1]
            first, sink1 = await psk_client(port, b"device-a", b"key-a")
            await echo_roundtrip(first, sink1, 1)
            old_peer = responder.requests[-1][1]
            address = first.local_address
            first.abort()  # no close_notify: the server still holds the session
            assert server.session_count == 1
            second, sink2 = await psk_client(
                port, b"device-b", b"key-b", local_addr=(address[0], address[1])
            )
            assert await echo_roundtrip(second, sink2, 2) == b"echo psk:device-b"
            new_peer = responder.requests[-1][1]
            assert new_peer.address == old_peer.address
            assert new_peer.identity == PskIdentity(b"device-b")
            with pytest.raises(NoSession):
                server.send(b"\x40\x01\x00\x03", old_peer)
            assert server.session_count == 1
            assert ended == [(old_peer, "replaced")]
            second.close()
            await eventually(lambda: len(ended) == 2)
            assert ended[1] == (new_peer, "closed by peer")
        finally:
            server.close()
        assert server.stats.reconnects == 1
        assert server.stats.handshakes_completed == 2

    run(scenario())


def test_a_client_whose_server_never_answers_times_out() -> None:
    async def scenario() -> None:
        silent = local_socket()  # bound, never read: a server that is down
        try:
            config = DtlsClientConfig(
                psk=(PSK_IDENTITY, PSK_KEY), handshake_timeout_min=0.05, handshake_timeout_max=0.2
            )
            with pytest.raises(HandshakeTimeout):
                await DtlsClient.connect(
                    Collector(),
                    "127.0.0.1",
                    silent.getsockname()[1],
                    config,
                    local_addr=("127.0.0.1", 0),
                )
        finally:
            silent.close()

    run(scenario())


def test_coap_over_the_session_survives_a_non_coap_payload() -> None:
    async def scenario() -> None:
        server, responder = await dtls_echo_server(psk_server_config())
        try:
            client, sink = await psk_client(server.local_address[1])
            client.send(b"\xff not coap")  # the responder's decoder raises: a sink error
            assert await echo_roundtrip(client, sink, 3) == b"echo psk:" + PSK_IDENTITY
            client.close()
        finally:
            server.close()
        assert server.stats.sink_errors == 1
        assert isinstance(responder.requests[0][0], Message)

    run(scenario())


def test_a_lost_final_flight_is_resent_by_the_established_server() -> None:
    """The server's ChangeCipherSpec + Finished is lost once: the device retransmits its own
    last flight, and the server, which already counts the session as established, must answer
    it again (Mbed TLS keeps the flight until the first application record)."""

    def drop_first_final_flight(direction: str, datagram: bytes) -> bool:
        if direction == "s2c" and datagram[0] == 20 and not state["dropped"]:
            state["dropped"] = True
            return True
        return False

    state = {"dropped": False}

    async def scenario() -> None:
        server, _ = await dtls_echo_server(psk_server_config())
        relay, relay_port = await Relay.start(server.local_address, drop_first_final_flight)
        try:
            client, sink = await psk_client(
                relay_port, handshake_timeout_min=0.1, handshake_timeout_max=1.0
            )
            assert await echo_roundtrip(client, sink, 1) == b"echo psk:" + PSK_IDENTITY
            client.close()
        finally:
            server.close()
            relay.close()
        assert len(relay.dropped) == 1
        assert server.stats.handshakes_completed == 1 and server.stats.handshakes_failed == 0

    run(scenario())


def test_a_lost_hello_verify_request_and_server_flight_are_recovered() -> None:
    """Drop the first HelloVerifyRequest and the first ServerHello flight: the client's and
    the server's retransmission timers recover both."""
    seen: dict[int, int] = {}

    def drop_first_of_each(direction: str, datagram: bytes) -> bool:
        if direction != "s2c" or datagram[0] != 22 or len(datagram) < 14:
            return False
        kind = datagram[13]  # 3: HelloVerifyRequest, 2: ServerHello
        seen[kind] = seen.get(kind, 0) + 1
        return kind in (2, 3) and seen[kind] == 1

    async def scenario() -> None:
        config = psk_server_config(handshake_timeout_min=0.1, handshake_timeout_max=1.0)
        server, _ = await dtls_echo_server(config)
        relay, relay_port = await Relay.start(server.local_address, drop_first_of_each)
        try:
            client, sink = await psk_client(
                relay_port, handshake_timeout_min=0.1, handshake_timeout_max=1.0
            )
            assert await echo_roundtrip(client, sink, 1) == b"echo psk:" + PSK_IDENTITY
            client.close()
        finally:
            server.close()
            relay.close()
        assert [d[13] for _, d in relay.dropped] == [3, 2]
        assert server.stats.handshakes_completed == 1

    run(scenario())
