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
  the same link, with a Default Minimum Period of 60 s, so its report comes a minute later);
* a device whose answer to the link write is lost but which comes back (an Update from its
  new address) ends the write's wait too: the pass does not sit out the request timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from simulators.device.events import Written
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


@asynccontextmanager
async def _stack(
    tmp_path: FsPath, config: ReconcilerConfig
) -> AsyncIterator[tuple[LwM2MServer, Store, StateComponent, str]]:
    """The LwM2M server, the store and the state component with ``config``; the CoAP URI."""
    store = Store.open(None, tmp_path)
    store.create_schema()
    create_schema(store)
    server_config = ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=None)
    server = await LwM2MServer.start(server_config, store)
    service = LifecycleService(server)
    state = StateComponent(server, store, config)
    state.install(service)
    service.start()
    state.start()
    assert server.coap_address is not None
    try:
        yield server, store, state, f"coap://127.0.0.1:{server.coap_address[1]}"
    finally:
        await state.stop()
        await service.stop()
        await server.stop()
        await store.aclose()


async def _switch(store: Store, state: StateComponent, endpoints: list[str]) -> None:
    """Desired connectivity NEW (active), OLD for ``endpoints``, enforced."""
    desired = parse_desired(Dimension.CONNECTIVITY, f"{NEW},{OLD}")
    await store.write(
        lambda tx: state.repository.set_desired(
            tx,
            endpoints,
            {Dimension.CONNECTIVITY: desired},
            policy=Policy.ENFORCE,
            actor="test",
            now=0.0,
        )
    )
    state.reconciler.desired_changed(endpoints)


async def _status_of(store: Store, state: StateComponent, endpoint: str) -> Status | None:
    view = await store.read(lambda tx: state.repository.view(tx, endpoint))
    return next((v.status for v in view if v.dimension is Dimension.CONNECTIVITY), None)


def test_a_static_address_apn_switch_is_verified_by_its_report_or_after_the_wait(
    tmp_path: FsPath,
) -> None:
    async def case() -> None:
        config = ReconcilerConfig(reattach_wait=REATTACH_WAIT)
        async with (
            _stack(tmp_path, config) as (server, store, state, uri),
            DeviceFleet(uri, seed=4, record_events=True) as fleet,
        ):
            fleet.spawn(2, prefix="sa-", profile=STATIC)
            await fleet.wait_registered(timeout=15)
            static, quiet = fleet.device(0), fleet.device(1)
            before = {d.endpoint: d.local_address for d in (static, quiet)}
            # the quiet one notifies at most once a minute (Default Minimum Period)
            pmin = SingleResource(2, Value.integer(60))
            assert (await server.write(quiet.endpoint, Path.of(1, 0, 2), pmin)).ok
            loop = asyncio.get_running_loop()
            started = loop.time()
            await _switch(store, state, list(before))

            # both take the link write and re-attach on the new APN, from the same address
            for device in (static, quiet):
                await device.wait_outcome("apn_changed", timeout=15)
            assert {d.endpoint: d.local_address for d in (static, quiet)} == before
            assert await _status_of(store, state, quiet.endpoint) is Status.PENDING

            async def applied(endpoint: str) -> bool:
                return await _status_of(store, state, endpoint) is Status.APPLIED

            await eventually(lambda: applied(static.endpoint), timeout=REATTACH_WAIT)
            static_steps = [s["step"] for s in _steps(store, static.endpoint)]
            assert "set-apns" in static_steps and "no-reattach" not in static_steps

            # the quiet one is looked at again once the wait ran out, and verified there
            await eventually(lambda: applied(quiet.endpoint), timeout=REATTACH_WAIT + 20)
            assert loop.time() - started >= REATTACH_WAIT, _steps(store, quiet.endpoint)
            gave = [s for s in _steps(store, quiet.endpoint) if s.get("step") == "no-reattach"]
            assert gave and "no sign of the device on APN iot.static" in str(gave[0]["reason"])

    run(case(), timeout=90)


def test_a_lost_answer_to_the_link_write_does_not_hold_the_pass_for_the_request_timeout(
    tmp_path: FsPath,
) -> None:
    timeout = 40.0  # the reconciler's request timeout: the old pass sat it out

    async def case() -> None:
        config = ReconcilerConfig(request_timeout=timeout)
        lossy: list[int] = []

        def lose_the_answer(index: int, event: object) -> None:
            # The device took the APN link write; its answer is lost on the way (the link is
            # cut until it re-attaches, which it does from a new address, with an Update).
            if (
                index in lossy
                and isinstance(event, Written)
                and any(p.object_id == 1 and p.ids[2:3] == (10,) for p in event.paths)
            ):
                lossy.remove(index)
                fleet.engine.cut(index, True, fleet.loop.time())
                fleet.loop.call_later(0.05, fleet.device(index).inject, "restore")

        async with _stack(tmp_path, config) as (_, store, state, uri):
            fleet = DeviceFleet(uri, seed=6, record_events=True, on_event=lose_the_answer)
            async with fleet:
                profile = DeviceProfile().with_link(attach_time=0.5)
                fleet.spawn(1, prefix="la-", profile=profile)
                await fleet.wait_registered(timeout=15)
                device = fleet.device(0)
                lossy.append(0)
                loop = asyncio.get_running_loop()
                started = loop.time()
                await _switch(store, state, [device.endpoint])
                await device.wait_outcome("apn_changed", timeout=15)
                assert not lossy  # the answer was dropped

                async def applied() -> bool:
                    return await _status_of(store, state, device.endpoint) is Status.APPLIED

                await eventually(applied, timeout=timeout - 10)
                assert loop.time() - started < timeout
                steps = [s for s in _steps(store, device.endpoint) if s.get("step") == "set-apns"]
                assert steps and "lost" in str(steps[0].get("answer")), steps
                assert fleet.engine.counters.dropped_offline >= 1

    run(case(), timeout=90)
