"""Test helpers for the transports: an event loop runner, a tiny CoAP responder built on
aiocoap's Message codec, a collecting sink, and X.509 material generated with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import shutil
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiocoap import ACK, CON, CONTENT, NON, NOT_FOUND, Message
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mbedtls import tls
from mbedtls.exceptions import TLSError

from lwm2m.transport import (
    PSK_CIPHERS,
    DtlsClient,
    DtlsClientConfig,
    DtlsServer,
    DtlsServerConfig,
    MappingPskStore,
    Peer,
    Transport,
    X509Credentials,
)
from lwm2m.transport._common import take_output
from lwm2m.transport._engine import step_handshake

T = TypeVar("T")

PSK_IDENTITY = b"urn:imei:490154203237518"
PSK_KEY = b"fleetloop-secret"  # printable: libcoap's -k takes a string


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test coroutine on a fresh loop, with a hard ceiling so a hang fails."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Wait until ``predicate()`` holds (fails the test after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


class CoapResponder:
    """Answers every CoAP request: ``GET /echo`` returns the query-less path and the peer's
    identity; anything else 4.04. Records what it saw. Uses aiocoap's Message codec only."""

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.requests: list[tuple[Message, Peer]] = []

    def datagram_received(self, data: bytes, peer: Peer) -> None:
        request = Message.decode(data)
        self.requests.append((request, peer))
        if request.mtype not in (CON, NON) or not request.code.is_request():
            return
        if tuple(request.opt.uri_path) == ("echo",):
            ident = str(peer.identity) if peer.identity is not None else "anonymous"
            response = Message(code=CONTENT, payload=b"echo " + ident.encode() + request.payload)
        else:
            response = Message(code=NOT_FOUND)
        response.mtype = ACK if request.mtype == CON else NON
        response.mid = request.mid if request.mtype == CON else (request.mid + 1) & 0xFFFF
        response.token = request.token
        assert self.transport is not None
        self.transport.send(response.encode(), peer)


class Collector:
    """A sink that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Peer]] = asyncio.Queue()

    def datagram_received(self, data: bytes, peer: Peer) -> None:
        self.queue.put_nowait((data, peer))

    async def get(self, timeout: float = 5.0) -> tuple[bytes, Peer]:
        return await asyncio.wait_for(self.queue.get(), timeout)


def coap_get(path: str, mid: int, token: bytes, payload: bytes = b"") -> bytes:
    request = Message(code=1, uri_path=tuple(path.split("/")), payload=payload)
    request.mtype = CON
    request.mid = mid
    request.token = token
    return bytes(request.encode())


def local_socket() -> socket.socket:
    """A UDP socket bound to 127.0.0.1 on an ephemeral port (tests never bind elsewhere)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install libcoap3-bin; CI installs it)")
    return path


async def run_process(*argv: str, timeout: float = 15.0) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


# --- X.509 ------------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Pki:
    """A CA and helpers to issue P-256 leaf certificates from it."""

    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "fleetloop test CA") -> Pki:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def ca_pem(self) -> bytes:
        return _pem(self.ca_cert)

    def issue(
        self, common_name: str, *, dns: tuple[str, ...] = (), uris: tuple[str, ...] = ()
    ) -> tuple[bytes, bytes]:
        """``(certificate PEM, key PEM)`` for a leaf named ``common_name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return _pem(cert), _key_pem(key)

    def credentials(
        self,
        common_name: str,
        trust: bytes,
        *,
        dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
    ) -> X509Credentials:
        cert, key = self.issue(common_name, dns=dns, uris=uris)
        return X509Credentials(chain=(cert,), private_key=key, trust_anchors=(trust,))


async def gather_limited(coros: list[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*coros))


# --- DTLS helpers -----------------------------------------------------------------------------


def psk_server_config(**overrides: Any) -> DtlsServerConfig:
    keys = overrides.pop("keys", {PSK_IDENTITY: PSK_KEY})
    return DtlsServerConfig(psk_store=MappingPskStore(keys), **overrides)


async def dtls_echo_server(
    config: DtlsServerConfig, ended: list[tuple[Peer, str]] | None = None
) -> tuple[DtlsServer, CoapResponder]:
    """A DTLS server on 127.0.0.1:0 answering with :class:`CoapResponder`; session ends are
    appended to ``ended`` as ``(peer, reason)``."""
    responder = CoapResponder()
    on_closed = None if ended is None else (lambda peer, reason: ended.append((peer, reason)))
    server = await DtlsServer.create(
        responder, config, host="127.0.0.1", port=0, on_session_closed=on_closed
    )
    responder.transport = server
    return server, responder


async def psk_client(
    port: int,
    identity: bytes = PSK_IDENTITY,
    key: bytes = PSK_KEY,
    sink: Collector | None = None,
    **config: Any,
) -> tuple[DtlsClient, Collector]:
    sink = sink or Collector()
    local_addr = config.pop("local_addr", ("127.0.0.1", 0))
    on_session_closed = config.pop("on_session_closed", None)
    client = await DtlsClient.connect(
        sink,
        "127.0.0.1",
        port,
        DtlsClientConfig(psk=(identity, key), **config),
        local_addr=local_addr,
        on_session_closed=on_session_closed,
    )
    return client, sink


async def echo_roundtrip(
    client: DtlsClient, sink: Collector, mid: int, payload: bytes = b""
) -> bytes:
    """GET /echo over the client; the decoded response payload."""
    token = mid.to_bytes(2, "big")
    client.send(coap_get("echo", mid, token, payload), client.peer)
    while True:
        data, peer = await sink.get()
        assert peer is client.peer
        response = Message.decode(data)
        if response.token == token:
            return bytes(response.payload)


class HalfHandshake:
    """A raw python-mbedtls client that completes the cookie exchange and then goes silent,
    leaving the server with a handshake in progress for this source (a slow or malicious
    device). Records every datagram the server sends it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = local_socket()
        self.sock.setblocking(False)
        conf = tls.DTLSConfiguration(
            pre_shared_key=(PSK_IDENTITY.decode(), PSK_KEY),
            ciphers=PSK_CIPHERS,
            validate_certificates=False,
        )
        self.buffer = tls.ClientContext(conf).wrap_buffers(None)
        self.received: list[bytes] = []

    def _step(self) -> bytes:
        with contextlib.suppress(TLSError):
            step_handshake(self.buffer)
        return take_output(self.buffer)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, self._step(), ("127.0.0.1", self.port))
        hello_verify = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), 5)
        self.buffer.receive_from_network(hello_verify)
        await loop.sock_sendto(self.sock, self._step(), ("127.0.0.1", self.port))

    async def collect(self, duration: float) -> list[bytes]:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        while (left := end - loop.time()) > 0:
            try:
                self.received.append(await asyncio.wait_for(loop.sock_recv(self.sock, 4096), left))
            except TimeoutError:
                break
        return self.received

    def close(self) -> None:
        self.sock.close()


class Relay(asyncio.DatagramProtocol):
    """A UDP relay on 127.0.0.1 between one client and a server: our packet capture, and a
    lossy link when ``drop(direction, datagram)`` says so (direction "c2s" or "s2c")."""

    def __init__(self, server: Any, drop: Callable[[str, bytes], bool] | None = None) -> None:
        self.server = server
        self.drop = drop
        self.client: Any = None
        self.transport: Any = None
        self.captured: list[tuple[str, bytes]] = []
        self.dropped: list[tuple[str, bytes]] = []

    @classmethod
    async def start(
        cls, server: Any, drop: Callable[[str, bytes], bool] | None = None
    ) -> tuple[Relay, int]:
        loop = asyncio.get_running_loop()
        relay = cls(server, drop)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: relay, local_addr=("127.0.0.1", 0)
        )
        return relay, transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr == self.server:
            direction, target = "s2c", self.client
        else:
            self.client = addr
            direction, target = "c2s", self.server
        if self.drop is not None and self.drop(direction, data):
            self.dropped.append((direction, data))
            return
        self.captured.append((direction, data))
        self.transport.sendto(data, target)

    def close(self) -> None:
        self.transport.close()
