"""A Send answered 2.04 Changed, and a CON notification acknowledged, survive ``kill -9``: a
device deletes buffered readings (and notifications it stored while offline) once they are
acknowledged, so the server answers only after the COMMIT holding them.

A real ``fleetloop serve`` (SQLite, ``synchronous=FULL``), a raw-CoAP device on a real UDP
socket: it registers, sends Sends of timestamped readings back to back, and the server is
killed (SIGKILL) the moment the last 2.04 arrives. After a restart on the same data directory
every acknowledged reading is in the device's telemetry history. Before the fix the 2.04 went
out before the readings were queued for the group commit, so the readings of the last Sends
could die with the process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path as FsPath
from typing import Any

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.codec import ContentFormat, encode_timestamped
from lwm2m.codec.api import TimestampedNodes
from lwm2m.model import Path, SingleResource, Value
from objects import BUILTIN_MODEL
from tests.integration.conftest import Api, Serve, run, start_serve

pytestmark = pytest.mark.integration

SENDS = 40
READINGS = 5
ENDPOINT = "send-durable-1"


class _Device(asyncio.DatagramProtocol):
    """One raw-CoAP device: CON requests, answers matched by token."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[bytes, asyncio.Future[Message]] = {}
        self.acks: dict[int, asyncio.Future[None]] = {}
        #: Observe tokens by path (serve's state layer observes resources of its own too).
        self.observed: dict[str, asyncio.Future[bytes]] = {}
        self.mid = 100

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = Message.decode(data)
        assert self.transport is not None
        if message.code.is_request():  # the server's Observe of /3/0/9: answer with a value
            reply = Message(code=Code.CONTENT, payload=b"0")
            reply.opt.content_format = 0
            if message.opt.observe == 0:
                reply.opt.observe = 1
                path = "/" + "/".join(message.opt.uri_path)
                waiter = self.observed.setdefault(path, asyncio.get_running_loop().create_future())
                if not waiter.done():
                    waiter.set_result(message.token)
            reply.mtype, reply.mid, reply.token = Type.ACK, message.mid, message.token
            self.transport.sendto(reply.encode())
            return
        if message.mtype == Type.ACK and message.code == Code.EMPTY:
            acked = self.acks.pop(message.mid, None)
            if acked is not None and not acked.done():
                acked.set_result(None)
            return
        if message.mtype == Type.CON:  # a separate response, or a request: acknowledge
            ack = Message(code=Code.EMPTY)
            ack.mtype, ack.mid = Type.ACK, message.mid
            self.transport.sendto(ack.encode())
        if message.code.is_request() or message.code == Code.EMPTY:
            return
        future = self.waiting.pop(message.token, None)
        if future is not None and not future.done():
            future.set_result(message)

    async def request(self, message: Message) -> Message:
        assert self.transport is not None
        self.mid += 1
        message.mtype, message.mid = Type.CON, self.mid
        message.token = self.mid.to_bytes(2, "big")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.waiting[message.token] = future
        data = message.encode()
        for _ in range(4):
            self.transport.sendto(data)
            try:
                return await asyncio.wait_for(asyncio.shield(future), 2.0)
            except TimeoutError:
                continue
        raise AssertionError(f"no answer to {message.code} {message.opt.uri_path}")

    async def notify(self, token: bytes, sequence: int, value: int) -> None:
        """A CON text notification, retransmitted until its empty ACK arrives."""
        assert self.transport is not None
        self.mid += 1
        note = Message(code=Code.CONTENT, payload=str(value).encode())
        note.opt.content_format = 0
        note.opt.observe = sequence
        note.mtype, note.mid, note.token = Type.CON, self.mid, token
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks[self.mid] = acked
        for _ in range(4):
            self.transport.sendto(note.encode())
            try:
                return await asyncio.wait_for(asyncio.shield(acked), 2.0)
            except TimeoutError:
                continue
        raise AssertionError(f"notification {sequence} not acknowledged")


async def _register(device: _Device, endpoint: str) -> None:
    register = Message(code=Code.POST, payload=b"</1/0>,</3/0>")
    register.opt.uri_path = ("rd",)
    register.opt.uri_query = (f"ep={endpoint}", "lt=300", "lwm2m=1.1")
    register.opt.content_format = 40
    assert (await device.request(register)).code == Code.CREATED


async def _history(api: Api, endpoint: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000"} | ({"cursor": cursor} if cursor else {})
        page = await api.get(f"/v1/devices/{endpoint}/telemetry/3/0/9", params=params)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def _until(api: Api, endpoint: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = await _history(api, endpoint)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def _readings(send: int) -> bytes:
    base = 1_765_000_000 + send * READINGS
    groups = [
        TimestampedNodes(
            float(base + i), {Path.parse("/3/0/9"): SingleResource(9, Value.integer(i))}
        )
        for i in range(READINGS)
    ]
    return encode_timestamped(ContentFormat.SENML_CBOR, groups, BUILTIN_MODEL)


def test_every_acknowledged_send_survives_kill_9(tmp_path: FsPath) -> None:
    data_dir = tmp_path / "data"

    async def send_all(port: int) -> None:
        loop = asyncio.get_running_loop()
        _, device = await loop.create_datagram_endpoint(_Device, remote_addr=("127.0.0.1", port))
        try:
            await _register(device, ENDPOINT)
            for send in range(SENDS):
                message = Message(code=Code.POST, payload=_readings(send))
                message.opt.uri_path = ("dp",)
                message.opt.content_format = ContentFormat.SENML_CBOR
                answer = await device.request(message)
                assert answer.code == Code.CHANGED, answer
        finally:
            device.transport.close()  # type: ignore[union-attr]

    with start_serve(data_dir) as first:
        run(send_all(first.port("coap")), timeout=60)
        first.process.kill()  # the moment the last 2.04 is in
        first.process.wait(10)
    (data_dir / "api.json").unlink()  # the killed process's; the restart writes its own

    with start_serve(data_dir) as second:

        async def check() -> None:
            api = Api(second)
            try:
                found = await _until(api, ENDPOINT, SENDS * READINGS)
            finally:
                await api.aclose()
            assert len(found) == SENDS * READINGS, (
                f"{SENDS * READINGS - len(found)} acknowledged readings lost to kill -9"
            )

        run(check(), timeout=60)


NOTES = 60


def test_every_acknowledged_notification_survives_kill_9(tmp_path: FsPath) -> None:
    data_dir = tmp_path / "data"
    endpoint = "notify-durable-1"

    async def notify_all(serve: Serve) -> None:
        loop = asyncio.get_running_loop()
        _, device = await loop.create_datagram_endpoint(
            _Device, remote_addr=("127.0.0.1", serve.port("coap"))
        )
        api = Api(serve)
        try:
            await _register(device, endpoint)
            await api.post(f"/v1/devices/{endpoint}/observe/3/0/9")
            waiter = device.observed.setdefault("/3/0/9", loop.create_future())
            token = await asyncio.wait_for(waiter, 10)
            for sequence in range(2, NOTES + 2):
                await device.notify(token, sequence, sequence)
        finally:
            await api.aclose()
            device.transport.close()  # type: ignore[union-attr]

    with start_serve(data_dir) as first:
        run(notify_all(first), timeout=60)
        first.process.kill()  # the moment the last ACK is in
        first.process.wait(10)
    (data_dir / "api.json").unlink()

    with start_serve(data_dir) as second:

        async def check() -> None:
            api = Api(second)
            try:
                found = await _until(api, endpoint, NOTES + 1)  # + the Observe answer
            finally:
                await api.aclose()
            values = {int(item["value"]) for item in found}
            missing = set(range(2, NOTES + 2)) - values
            assert not missing, f"{len(missing)} acknowledged notifications lost to kill -9"

        run(check(), timeout=60)
