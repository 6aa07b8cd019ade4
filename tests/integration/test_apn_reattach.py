"""An APN switch is verified even when the device's address does not change, and never waits
for a device for ever: real UDP, the server and the reconciler in-process (the re-attach
wait is shortened, which ``serve`` takes from the environment only).

The reconciler switches a device's APN by writing the Server object's APN link; the device
detaches and re-attaches. Until it is back it cannot answer, so the pass waits. It used to
wait for an Update *from a new address* and for nothing else: a device on a static-IP APN
(same address, no Update) or one whose answer to the link write was lost stayed ``pending``
with no detail and no retry. Now:

* a notification that names the new APN as active ends the wait, whatever the address
  (``static`` device: a private APN with a static IP, its client sends no Update);
* without any sign, the wait ends after ``reattach_wait`` seconds: the device is read back
  where it is registered and verified, and the audit says it gave no sign (``quiet`` device:
  the same link, with a Default Minimum Period of 60 s, so its report comes a minute later).
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FsPath
from typing import Any

import pytest

from lifecycle.schema import create_schema
from lifecycle.service import LifecycleService
from lifecycle.state.component import StateComponent
from lifecycle.state.dimensions import Dimension, Policy, Status, parse_desired
from lifecycle.state.reconciler import ReconcilerConfig
from lwm2m.model import Path, SingleResource, Value
from lwm2m.server import LwM2MServer, ServerConfig
from lwm2m.store import Store
from simulators.fleet.runner import DeviceFleet
from simulators.profiles import DeviceProfile
from tests.integration.conftest import eventually, run

pytestmark = pytest.mark.integration

OLD, NEW = "iot.fleetloop", "iot.static"
STATIC = DeviceProfile().with_link(attach_time=0.2, static_address=True)
REATTACH_WAIT = 8.0


def _steps(store: Store, endpoint: str) -> list[dict[str, Any]]:
    records = store.read_sync(
        lambda tx: store.audit.list(tx, action_prefix="state.reconcile", endpoints=[endpoint])
    )
    steps: list[dict[str, Any]] = []
    for record in records:
        found = record.detail.get("steps")
        if isinstance(found, list):
            steps.extend(s for s in found if isinstance(s, dict))
    return steps


def test_a_static_address_apn_switch_is_verified_by_its_report_or_after_the_wait(
    tmp_path: FsPath,
) -> None:
    async def case() -> None:
        store = Store.open(None, tmp_path)
        store.create_schema()
        create_schema(store)
        config = ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=None)
        server = await LwM2MServer.start(config, store)
        service = LifecycleService(server)
        state = StateComponent(server, store, ReconcilerConfig(reattach_wait=REATTACH_WAIT))
        state.install(service)
        service.start()
        state.start()
        assert server.coap_address is not None
        try:
            uri = f"coap://127.0.0.1:{server.coap_address[1]}"
            async with DeviceFleet(uri, seed=4, record_events=True) as fleet:
                fleet.spawn(2, prefix="sa-", profile=STATIC)
                await fleet.wait_registered(timeout=15)
                static, quiet = fleet.device(0), fleet.device(1)
                before = {d.endpoint: d.local_address for d in (static, quiet)}
                # the quiet one notifies at most once a minute (Default Minimum Period)
                pmin = SingleResource(2, Value.integer(60))
                assert (await server.write(quiet.endpoint, Path.of(1, 0, 2), pmin)).ok
                desired = parse_desired(Dimension.CONNECTIVITY, f"{NEW},{OLD}")
                await store.write(
                    lambda tx: state.repository.set_desired(
                        tx,
                        list(before),
                        {Dimension.CONNECTIVITY: desired},
                        policy=Policy.ENFORCE,
                        actor="test",
                        now=0.0,
                    )
                )
                loop = asyncio.get_running_loop()
                started = loop.time()
                state.reconciler.desired_changed(list(before))

                async def status_of(endpoint: str) -> Status | None:
                    view = await store.read(lambda tx: state.repository.view(tx, endpoint))
                    return next(
                        (v.status for v in view if v.dimension is Dimension.CONNECTIVITY), None
                    )

                # both take the link write and re-attach on the new APN, from the same address
                for device in (static, quiet):
                    await device.wait_outcome("apn_changed", timeout=15)
                assert {d.endpoint: d.local_address for d in (static, quiet)} == before
                assert await status_of(quiet.endpoint) is Status.PENDING  # waiting for it

                async def applied(endpoint: str) -> bool:
                    return await status_of(endpoint) is Status.APPLIED

                await eventually(lambda: applied(static.endpoint), timeout=REATTACH_WAIT)
                static_steps = [s["step"] for s in _steps(store, static.endpoint)]
                assert "set-apns" in static_steps and "no-reattach" not in static_steps

                # the quiet one is looked at again once the wait ran out, and verified there
                await eventually(lambda: applied(quiet.endpoint), timeout=REATTACH_WAIT + 20)
                assert loop.time() - started >= REATTACH_WAIT, _steps(store, quiet.endpoint)
                quiet_steps = _steps(store, quiet.endpoint)
                gave = [s for s in quiet_steps if s.get("step") == "no-reattach"]
                assert gave and "no sign of the device on APN iot.static" in str(gave[0]["reason"])
        finally:
            await state.stop()
            await service.stop()
            await server.stop()
            await store.aclose()

    run(case(), timeout=90)
