"""Issue 14 item 13: a device's new DTLS handshake from the address of its live session is
answered when its ClientHello carries record version 0xFE00, as Anjay 3.14 (mbedtls) sends it.

Before the fix a real ``fleetloop serve`` answered neither HelloVerifyRequest nor ServerHello
(the live session's Mbed TLS context dropped the record for its version), logged nothing, and
the device stayed unreachable until its handshake timed out (~140 s). The project's own client
sends 0xFEFF/0xFEFD, which always worked.

Bytes: ``../shared/interop`` holds no DTLS datagrams (its Anjay and wakaama runs used plain
``coap://``; see its README), so the ClientHello here is built by Mbed TLS itself
(python-mbedtls, the library Anjay uses) with its record version set to 0xFE00 -- the one
field the captured Anjay record differed in. A test against captured DTLS bytes needs a DTLS
capture in ../shared/interop first."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from mbedtls import tls
from mbedtls.exceptions import TLSError

from lwm2m.transport import DtlsClient, DtlsClientConfig
from lwm2m.transport._common import take_output
from lwm2m.transport._engine import step_handshake
from lwm2m.transport.credentials import PSK_CIPHERS
from tests.hardening.serve_proc import ServeProcess

KEY = bytes(range(32, 48))
HANDSHAKE, CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST = 22, 1, 2, 3


class _Sink:
    def datagram_received(self, data: bytes, peer: object) -> None:
        pass


def _anjay_shaped(record: bytes) -> bytes:
    assert record[0] == HANDSHAKE and record[13] == CLIENT_HELLO
    return record[:1] + b"\xfe\x00" + record[3:]


def test_a_0xfe00_client_hello_from_a_live_sessions_address_starts_a_new_handshake(
    tmp_path: Path,
) -> None:
    server = ServeProcess(tmp_path / "data")
    server.start()
    try:
        with server.api() as api:
            answer = api.put(
                "/security/anjay-1", json={"psk_identity": "anjay-1", "psk_key": KEY.hex()}
            )
            assert answer.status_code < 300, answer.text
        port = server.coaps_port

        async def live_session() -> tuple[str, int]:
            client = await DtlsClient.connect(
                _Sink(), "127.0.0.1", port, DtlsClientConfig(psk=(b"anjay-1", KEY)), timeout=10
            )
            address = client.local_address
            client.abort()  # the device reboots: the server still holds the session
            return address[0], address[1]

        local = asyncio.run(live_session())
        conf = tls.DTLSConfiguration(
            pre_shared_key=("anjay-1", KEY), ciphers=PSK_CIPHERS, validate_certificates=False
        )
        buffer = tls.ClientContext(conf).wrap_buffers(None)

        def flight() -> bytes:
            with contextlib.suppress(TLSError):
                step_handshake(buffer)
            return take_output(buffer)

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(local)  # the live session's address
        sock.settimeout(3)
        try:
            sock.sendto(_anjay_shaped(flight()), ("127.0.0.1", port))
            verify = sock.recv(4096)
            assert verify[0] == HANDSHAKE and verify[13] == HELLO_VERIFY_REQUEST
            buffer.receive_from_network(verify)
            sock.sendto(_anjay_shaped(flight()), ("127.0.0.1", port))
            hello = sock.recv(4096)
            assert hello[0] == HANDSHAKE and hello[13] == SERVER_HELLO
        finally:
            sock.close()
    finally:
        assert server.stop() == 0
    assert "started a new handshake" in server.log()
