"""A real management API for tests: LwM2MServer on 127.0.0.1 port 0, a real store, uvicorn on
an ephemeral port in the same loop, and an httpx client with the token.

Devices are the project's simulator (:class:`simulators.runner.SimulatedDevice`) over real
UDP/DTLS; :class:`MuteDevice` is a device that registers and then never answers, for timeouts.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from cli.serve import _EmbeddedUvicorn, api_url, bind_api_socket
from cli.settings import Listen
from lifecycle.api import ApiContext, create_app
from lifecycle.schema import create_schema as create_lifecycle_schema
from lwm2m.model import ObjectModel
from lwm2m.server import LwM2MServer, ServerConfig
from lwm2m.store import Store
from objects import BUILTIN_MODEL, builtin_definition
from simulators.device.defaults import default_template
from simulators.device.template import DeviceTemplate, InstanceTemplate, ObjectTemplate
from simulators.runner import SimulatedDevice

TOKEN = "test-token-" + "x" * 32


@dataclass
class Api:
    server: LwM2MServer
    store: Store
    context: ApiContext
    url: str
    http: httpx.AsyncClient

    @property
    def coap_uri(self) -> str:
        address = self.server.coap_address
        assert address is not None
        return f"coap://127.0.0.1:{address[1]}"

    @property
    def coaps_uri(self) -> str:
        address = self.server.coaps_address
        assert address is not None
        return f"coaps://127.0.0.1:{address[1]}"

    def device(self, endpoint: str, **kwargs: Any) -> SimulatedDevice:
        return SimulatedDevice(endpoint, kwargs.pop("uri", self.coap_uri), **kwargs)


@asynccontextmanager
async def running_api(
    data_dir: Path,
    *,
    database_url: str | None = None,
    secure_only: bool = False,
    model: ObjectModel = BUILTIN_MODEL,
    request_timeout: float = 5.0,
    queue_awake_time: float = 93.0,
    keepalive_interval: float = 15.0,
) -> AsyncIterator[Api]:
    store = Store.open(database_url, data_dir)
    store.create_schema()
    create_lifecycle_schema(store)  # as serve does: the routes record tenants from lc_device
    server = await LwM2MServer.start(
        ServerConfig(
            coap_host="127.0.0.1",
            coap_port=0,
            coaps_host="127.0.0.1",
            coaps_port=0,
            secure_only=secure_only,
            request_timeout=request_timeout,
            queue_awake_time=queue_awake_time,
        ),
        store,
        model,
    )
    context = ApiContext(server, store, model, TOKEN, keepalive_interval=keepalive_interval)
    sock = bind_api_socket(Listen("127.0.0.1", 0))
    url = api_url(*sock.getsockname()[:2])
    web = _EmbeddedUvicorn(
        uvicorn.Config(
            create_app(context), log_config=None, lifespan="off", timeout_graceful_shutdown=2
        )
    )
    task = asyncio.create_task(web.serve(sockets=[sock]))
    while not web.started:
        assert not task.done(), "uvicorn stopped during start-up"
        await asyncio.sleep(0.005)
    http = httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30.0
    )
    try:
        yield Api(server, store, context, url, http)
    finally:
        await http.aclose()
        context.close_streams()
        web.should_exit = True
        await asyncio.wait_for(task, 10)
        await server.stop()
        await store.aclose()


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    """Run one async scenario with an overall deadline (a hung test fails, it does not hang)."""

    async def bounded() -> None:
        await asyncio.wait_for(scenario(), timeout)

    asyncio.run(bounded())


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def apn_template() -> DeviceTemplate:
    """The default device plus object 11 (APN profiles), which the server may create/delete."""
    apn = ObjectTemplate(
        builtin_definition(11),
        {},
        new_instance=InstanceTemplate({0: "default-apn", 1: "internet"}),
        deletable=True,
    )
    return default_template().replace(apn)


class MuteDevice(asyncio.DatagramProtocol):
    """Registers over plain UDP, then ignores every request: the device that never answers."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.registered = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def register(cls, port: int, endpoint: str) -> MuteDevice:
        loop = asyncio.get_running_loop()
        device = cls(endpoint)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: device, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        device.transport = transport
        request = Message(code=Code.POST, uri_path=("rd",), payload=b"</1/0>,</3/0>")
        request.opt.uri_query = (f"ep={endpoint}", "lt=300", "lwm2m=1.1", "b=U")
        request.opt.content_format = 40
        request.mtype, request.mid, request.token = Type.CON, 0x1234, b"\x01\x02"
        assert device.transport is not None
        device.transport.sendto(request.encode(), ("127.0.0.1", port))
        await asyncio.wait_for(device.registered, 5)
        return device

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        message = Message.decode(data)
        if message.code == Code.CREATED and not self.registered.done():
            self.registered.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def sse_events(
    api: Api, params: dict[str, Any], into: list[tuple[str, Any]], ready: asyncio.Event
) -> None:
    """Read ``/events`` into ``into`` until cancelled; ``ready`` is set on the ready event."""
    async with api.http.stream("GET", "/v1/events", params=params, timeout=None) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        event = "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                into.append((event, json.loads(line[len("data: ") :])))
                if event == "ready":
                    ready.set()
