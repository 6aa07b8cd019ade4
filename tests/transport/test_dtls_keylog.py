"""The optional NSS key log: the secrets it writes really decrypt the captured traffic."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from aiocoap import Message
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from tests.transport.helpers import (
    PSK_IDENTITY,
    Relay,
    coap_get,
    dtls_echo_server,
    echo_roundtrip,
    psk_client,
    psk_server_config,
    run,
)


def prf_sha256(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.2 PRF (RFC 5246, section 5)."""
    seed = label + seed
    a, out = seed, b""
    while len(out) < length:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:length]


def records(datagram: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 13 <= len(datagram):
        end = pos + 13 + int.from_bytes(datagram[pos + 11 : pos + 13], "big")
        out.append(datagram[pos:end])
        pos = end
    return out


def decrypt_ccm8(record: bytes, key: bytes, implicit_iv: bytes) -> bytes:
    """Open an AES-128-CCM-8 DTLS 1.2 record (RFC 6655 nonce, RFC 6347 additional data)."""
    explicit, ciphertext = record[13:21], record[21:]
    aad = record[3:11] + record[0:3] + (len(ciphertext) - 8).to_bytes(2, "big")
    return AESCCM(key, tag_length=8).decrypt(implicit_iv + explicit, ciphertext, aad)


def test_key_log_lines_decrypt_the_captured_session_which_keeps_working(tmp_path: Path) -> None:
    server_log, client_log = tmp_path / "server.keys", tmp_path / "client.keys"

    async def scenario() -> Relay:
        server, _ = await dtls_echo_server(psk_server_config(key_log=server_log))
        relay, relay_port = await Relay.start(server.local_address)
        try:
            client, sink = await psk_client(relay_port, key_log=client_log)
            assert await echo_roundtrip(client, sink, 0x1234) == b"echo psk:" + PSK_IDENTITY
            assert await echo_roundtrip(client, sink, 0x1235) == b"echo psk:" + PSK_IDENTITY
            client.close()
        finally:
            server.close()
            relay.close()
        assert server.stats.keylog_failures == 0
        return relay

    relay = run(scenario())
    server_lines = server_log.read_text().splitlines()
    assert server_lines == client_log.read_text().splitlines()
    assert len(server_lines) == 1
    label, client_random_hex, master_hex = server_lines[0].split()
    assert label == "CLIENT_RANDOM"
    client_random, master = bytes.fromhex(client_random_hex), bytes.fromhex(master_hex)

    # The client random is the one in the ClientHello on the wire (the second, with the cookie).
    hellos = [d for direction, d in relay.captured if direction == "c2s" and d[13] == 1]
    assert hellos[-1][27:59] == client_random

    # Derive the CCM_8 keys (RFC 5246 6.3) and open the first request and its response.
    server_random = next(
        d[27:59] for direction, d in relay.captured if direction == "s2c" and d[13] == 2
    )
    block = prf_sha256(master, b"key expansion", server_random + client_random, 40)
    client_key, server_key, client_iv, server_iv = (
        block[:16],
        block[16:32],
        block[32:36],
        block[36:],
    )
    app = [(direction, r) for direction, d in relay.captured for r in records(d) if r[0] == 23]
    request = decrypt_ccm8(app[0][1], client_key, client_iv)
    assert app[0][0] == "c2s"
    assert request == coap_get("echo", 0x1234, b"\x12\x34")
    response_record = next(r for direction, r in app if direction == "s2c")
    response = Message.decode(decrypt_ccm8(response_record, server_key, server_iv))
    assert response.payload == b"echo psk:" + PSK_IDENTITY


def test_key_log_with_a_cbc_suite_is_refused_gracefully(tmp_path: Path) -> None:
    async def scenario() -> None:
        cbc = ("TLS-PSK-WITH-AES-128-CBC-SHA256",)
        config = psk_server_config(key_log=tmp_path / "keys", psk_ciphers=cbc)
        server, _ = await dtls_echo_server(config)
        try:
            client, sink = await psk_client(server.local_address[1], psk_ciphers=cbc)
            assert client.cipher == "TLS-PSK-WITH-AES-128-CBC-SHA256"
            for mid in range(5):
                assert await echo_roundtrip(client, sink, mid) == b"echo psk:" + PSK_IDENTITY
            client.close()
        finally:
            server.close()
        assert server.stats.keylog_failures == 1
        assert (tmp_path / "keys").read_text() == ""

    run(scenario())
