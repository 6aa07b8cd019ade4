"""``fleetloop serve``'s :class:`cli.serve.Service` in a background thread with its own event
loop, so click's synchronous CliRunner can call the real API while simulated devices run.

The service is started exactly as ``serve`` starts it (data directory, token, api.json,
uvicorn on an ephemeral port), so the CLI under test finds it through ``FLEETLOOP_DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from click.testing import CliRunner, Result

from cli.datadir import ApiInfo
from cli.main import main
from cli.serve import Service
from cli.settings import Listen, ServeSettings
from simulators.device.template import DeviceTemplate
from simulators.runner import SimulatedDevice

T = TypeVar("T")


class Background:
    """A running service and the loop it runs on."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.service = Service(settings)
        self.devices: list[SimulatedDevice] = []
        self.info: ApiInfo | None = None

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.info = self.call(self.service.start())

    def stop(self) -> None:
        for device in self.devices:
            self.call(device.stop(timeout=1.0))
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def coap_uri(self) -> str:
        assert self.info is not None and self.info.coap is not None
        return f"coap://127.0.0.1:{self.info.coap['port']}"

    @property
    def coaps_uri(self) -> str:
        assert self.info is not None and self.info.coaps is not None
        return f"coaps://127.0.0.1:{self.info.coaps['port']}"

    def add_device(
        self,
        endpoint: str,
        template: DeviceTemplate | None = None,
        *,
        uri: str | None = None,
        **kwargs: Any,
    ) -> SimulatedDevice:
        device = SimulatedDevice(endpoint, uri or self.coap_uri, template=template, **kwargs)

        async def start() -> None:
            await device.start()
            await device.wait_registered()

        self.call(start())
        self.devices.append(device)
        return device

    def on_loop(self, function: Any, *args: Any) -> Any:
        """Run a plain function on the service's loop (devices are not thread-safe)."""

        async def call() -> Any:
            return function(*args)

        return self.call(call())


@contextmanager
def background_service(data_dir: Path, **overrides: Any) -> Iterator[Background]:
    settings = ServeSettings(
        data_dir=data_dir,
        coap=Listen("127.0.0.1", 0),
        coaps=Listen("127.0.0.1", 0),
        bs_coap=None,
        bs_coaps=None,
        api=Listen("127.0.0.1", 0),
        **overrides,
    )
    background = Background(settings)
    background.start()
    try:
        yield background
    finally:
        background.stop()


def invoke(
    data_dir: Path, *args: str, env: dict[str, str | None] | None = None, input: str | None = None
) -> Result:
    """Run ``fleetloop ARGS`` finding the server through the data directory only."""
    environment: dict[str, str | None] = {
        "FLEETLOOP_DATA_DIR": str(data_dir),
        "FLEETLOOP_URL": None,
        "FLEETLOOP_TOKEN": None,
        "FLEETLOOP_DEBUG": None,
        "FLEETLOOP_CONTEXT": None,
        "FLEETLOOP_CONTEXTS": str(data_dir / "no-contexts.json"),  # not the user's own file
        **(env or {}),
    }
    return CliRunner().invoke(
        main, list(args), env=environment, catch_exceptions=False, input=input
    )
