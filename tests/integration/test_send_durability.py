"""A Send answered 2.04 Changed survives ``kill -9``: the device deletes buffered readings once
they are acknowledged, so the server answers only after the COMMIT holding them.

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
from tests.integration.conftest import Api, run, start_serve

pytestmark = pytest.mark.integration

SENDS = 40
READINGS = 5
ENDPOINT = "send-durable-1"


class _Device(asyncio.DatagramProtocol):
    """One raw-CoAP device: CON requests, answers matched by token."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[bytes, asyncio.Future[Message]] = {}
        self.mid = 100

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = Message.decode(data)
        assert self.transport is not None
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
            register = Message(code=Code.POST, payload=b"</1/0>,</3/0>")
            register.opt.uri_path = ("rd",)
            register.opt.uri_query = (f"ep={ENDPOINT}", "lt=300", "lwm2m=1.1")
            register.opt.content_format = 40
            assert (await device.request(register)).code == Code.CREATED
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

    async def history(api: Api) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "1000"} | ({"cursor": cursor} if cursor else {})
            page = await api.get(f"/v1/devices/{ENDPOINT}/telemetry/3/0/9", params=params)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    with start_serve(data_dir) as second:

        async def check() -> None:
            api = Api(second)
            try:
                deadline = time.monotonic() + 10
                while True:
                    found = await history(api)
                    if len(found) >= SENDS * READINGS or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
            finally:
                await api.aclose()
            assert len(found) == SENDS * READINGS, (
                f"{SENDS * READINGS - len(found)} acknowledged readings lost to kill -9"
            )

        run(check(), timeout=60)
