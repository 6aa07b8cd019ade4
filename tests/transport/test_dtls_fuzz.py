"""Fuzz: arbitrary datagrams into the DTLS server's receive path never raise out of it, never
count as internal errors, and never break an established session."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwm2m.transport import DtlsClient, DtlsServer
from tests.transport.helpers import (
    PSK_IDENTITY,
    Collector,
    dtls_echo_server,
    echo_roundtrip,
    local_socket,
    psk_client,
    psk_server_config,
)


@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    server: DtlsServer
    client: DtlsClient
    sink: Collector
    #: Addresses the fuzzed "senders" claim: sockets we own and never read, so whatever the
    #: server answers (HelloVerifyRequests, alerts) reaches no one else on this machine.
    decoys: list[socket.socket]
    mid: int = 0

    def roundtrip(self) -> bytes:
        self.mid += 1
        return self.loop.run_until_complete(
            asyncio.wait_for(echo_roundtrip(self.client, self.sink, self.mid), 5)
        )


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    loop = asyncio.new_event_loop()

    async def setup() -> tuple[DtlsServer, DtlsClient, Collector]:
        server, _ = await dtls_echo_server(psk_server_config())
        client, sink = await psk_client(server.local_address[1])
        return server, client, sink

    server, client, sink = loop.run_until_complete(setup())
    decoys = [local_socket() for _ in range(4)]
    yield Rig(loop, server, client, sink, decoys)
    for decoy in decoys:
        decoy.close()
    client.close()
    server.close()
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()


# Datagrams that pass the server's cheap pre-filters and reach Mbed TLS: epoch-0 handshake
# records claiming to be a ClientHello, and records in the session's epoch.
client_hellos = st.binary(min_size=0, max_size=600).map(
    lambda tail: b"\x16\xfe\xfd\x00\x00" + tail[:8].ljust(8, b"\x00") + b"\x01" + tail[8:]
)
epoch_one = st.binary(min_size=0, max_size=300).map(lambda tail: b"\x17\xfe\xfd\x00\x01" + tail)
datagrams = st.one_of(st.binary(max_size=2000), client_hellos, epoch_one)
decoy_index = st.integers(min_value=0, max_value=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datagrams, decoy=decoy_index)
def test_random_datagrams_from_anywhere_never_escape_the_receive_path(
    rig: Rig, data: bytes, decoy: int
) -> None:
    rig.server.datagram_received(data, rig.decoys[decoy].getsockname())
    assert rig.server.stats.internal_errors == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datagrams)
def test_random_datagrams_spoofed_from_a_device_never_break_its_session(
    rig: Rig, data: bytes
) -> None:
    rig.server.datagram_received(data, rig.client.local_address)
    assert rig.server.stats.internal_errors == 0
    assert rig.server.session_count == 1


def test_the_fuzzed_session_still_works(rig: Rig) -> None:
    # Runs after the property tests above (file order): the device was never disturbed.
    assert rig.roundtrip() == b"echo psk:" + PSK_IDENTITY
    assert rig.server.stats.internal_errors == 0
