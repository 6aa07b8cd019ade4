"""The campaign engine's state machine and tables on SQLite and PostgreSQL.

A real LwM2M server (no device registered), store, state component and inventory; the devices'
verifications are recorded through the real state observer (``observer.record``), so the
engine learns VERIFIED / FAILED through the same status hook as in ``fleetloop serve``. What
it writes is read back from the tables: desired values and their generations, the campaign
rows, the idempotency keys and the audit log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from lifecycle.campaigns.component import CampaignComponent, CampaignConflict
from lifecycle.campaigns.model import (
    CampaignSpec,
    CampaignState,
    CanarySpec,
    Component,
    Deadlines,
    DeviceState,
    GateSpec,
    Membership,
    OnFailure,
    Pacing,
    Scope,
    WaveSpec,
)
from lifecycle.campaigns.tables import STEP
from lifecycle.inventory import DeviceRecord
from lifecycle.inventory_events import InventoryService
from lifecycle.schema import create_schema
from lifecycle.service import LifecycleService
from lifecycle.state.component import StateComponent
from lifecycle.state.dimensions import Dimension, Policy
from lwm2m.server import LwM2MServer, ServerConfig
from lwm2m.store import Store
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)

LAST: dict[str, Any] = {}
V1 = {"v": "1"}
V2 = {"v": "2"}


@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[Store]:  # noqa: F811
    opened = Store.open(database_url, tmp_path)
    opened.create_schema()
    create_schema(opened)
    try:
        yield opened
    finally:
        opened.close()


@dataclass
class Rig:
    store: Store
    server: LwM2MServer
    state: StateComponent
    inventory: InventoryService
    campaigns: CampaignComponent

    async def _told(self, endpoint: str, value: dict[str, str]) -> None:
        """Wait until the state layer holds ``value`` as the desired one (the engine commits,
        then tells it): a device can only answer a change it was sent."""
        observer = self.state.observer

        async def told() -> bool:
            if not observer.ready(endpoint):
                await observer.state(endpoint)
            want = observer.desired.get(endpoint, {}).get(Dimension.FLAGS)
            return want is not None and want.value == value

        await eventually(told)

    async def verify(self, endpoints: list[str], value: dict[str, str]) -> None:
        """The devices report ``value`` verified (a read-back, as the reconciler records)."""
        for endpoint in endpoints:
            await self._told(endpoint, value)
            await self.state.observer.record(endpoint, {Dimension.FLAGS: value}, "verify")

    async def refuse(self, endpoints: list[str], reason: str, value: dict[str, str]) -> None:
        """The devices refuse ``value`` for good (what the reconciler records)."""
        for endpoint in endpoints:
            await self._told(endpoint, value)
            await self.state.observer.record(
                endpoint, {}, "verify", failures={Dimension.FLAGS: reason}
            )

    async def desired(self, endpoint: str) -> tuple[dict[str, Any], int, str] | None:
        found = await self.store.read(lambda tx: self.state.repository.desired(tx, endpoint))
        want = found.get(Dimension.FLAGS)
        if want is None:
            return None
        rows = await self.store.read(lambda tx: self.state.repository.view(tx, endpoint))
        return want.value, want.generation, str(rows[0].set_by)

    async def states(self, cid: str) -> dict[str, int]:
        return dict((await self.campaigns.status(cid))["counts"])

    async def devices_in(self, cid: str, state: DeviceState) -> list[str]:
        report = await self.campaigns.report(cid)
        return [d["endpoint"] for d in report["device_list"] if d["state"] == state.value]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time; last status: {LAST}")
        await asyncio.sleep(0.02)


def _records(prefix: str, regions: dict[str, int]) -> list[DeviceRecord]:
    out = []
    n = 0
    for region, count in regions.items():
        for _ in range(count):
            n += 1
            out.append(
                DeviceRecord(
                    f"{prefix}{n:04d}", region=region, carrier="c1", sku="s1", country="DE",
                    created_at=1.0, updated_at=1.0, stage="active",
                )
            )  # fmt: skip
    return out


@asynccontextmanager
async def rig(store: Store, records: list[DeviceRecord]) -> AsyncIterator[Rig]:
    config = ServerConfig(coap_host="127.0.0.1", coap_port=0, coaps_port=None)
    server = await LwM2MServer.start(config, store)
    service = LifecycleService(server)
    inventory = InventoryService(store)
    inventory.attach(service)
    state = StateComponent(server, store)
    state.install(service)
    await store.write(lambda tx: inventory.repository.upsert_many(tx, records))
    endpoints = [r.endpoint for r in records]
    # the fleet runs V1 (desired and verified): the last-known-good value
    await store.write(
        lambda tx: state.repository.set_desired(
            tx, endpoints, {Dimension.FLAGS: V1}, policy=Policy.ENFORCE, actor="op", now=1.0
        )
    )
    campaigns = CampaignComponent(server, store, state, inventory, coalesce_s=0.0)
    campaigns.install(service)
    harness = Rig(store, server, state, inventory, campaigns)
    await harness.verify(endpoints, V1)
    campaigns.start()
    await campaigns.ready()
    try:
        yield harness
    finally:
        await campaigns.stop()
        await server.stop()


def _spec(prefix: str, **changes: Any) -> CampaignSpec:
    base = CampaignSpec(
        name="flags v2",
        selector=f"endpoint={prefix}*",
        components=(Component(Dimension.FLAGS, V2, artifact="flags-v2"),),
        canary=CanarySpec(per_stratum=2, max_devices=10, bake_s=0.0),
        waves=(WaveSpec(percent=100.0, bake_s=0.0),),
        pacing=Pacing(rate=1000.0, concurrency=1000),
        gates=GateSpec(min_sample=2, min_ack_pct=None, cohort_by=(Scope.REGION,)),
        deadlines=Deadlines(delivered_s=30.0, applied_s=30.0, verified_s=30.0),
    )
    return _replace(base, **changes)


def _replace(spec: CampaignSpec, **changes: Any) -> CampaignSpec:
    from dataclasses import replace

    return replace(spec, **changes)


async def _steps(store: Store, cid: str) -> list[tuple[str, str, int]]:
    rows = await store.read(
        lambda tx: list(tx.execute(select(STEP.c.endpoint, STEP.c.step, STEP.c.attempt)
                                   .where(STEP.c.campaign == cid)))
    )  # fmt: skip
    return [(r.endpoint, r.step, int(r.attempt)) for r in rows]


async def _audited(store: Store, cid: str, wanted: set[str]) -> bool:
    """Whether every action of ``wanted`` is in the audit log (the status is the engine's
    memory; the tick commits rows and audit records right after)."""
    return wanted <= set(await _audit_actions(store, cid))


async def _audit_actions(store: Store, cid: str) -> list[str]:
    records = await store.read(
        lambda tx: store.audit.list(tx, subject=f"campaign:{cid}", limit=1000)
    )
    return [r.action for r in records]


def test_a_campaign_delivers_through_desired_state_wave_by_wave_and_completes(
    store: Store,
) -> None:
    async def case() -> None:
        records = _records("ok-", {"eu": 6, "us": 6})
        async with rig(store, records) as r:
            cid = await r.campaigns.create(_spec("ok-"), actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 4))
            canary = await r.devices_in(cid, DeviceState.DELIVERING)
            # only the canary (2 per stratum) has the new value, written by the campaign
            await r._told(canary[0], V2)  # committed, then told to the state layer
            assert await r.desired(canary[0]) == (V2, 2, f"campaign:{cid}")
            queued = await r.devices_in(cid, DeviceState.QUEUED)
            assert len(queued) == 8 and await r.desired(queued[0]) == (V1, 1, "op")
            await r.verify(canary, V2)
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 8))
            rest = await r.devices_in(cid, DeviceState.DELIVERING)
            assert set(rest).isdisjoint(canary)
            await r.verify(rest, V2)
            await eventually(lambda: _state(r, cid, CampaignState.COMPLETED))
            status = await r.campaigns.status(cid)
            assert status["counts"] == {"succeeded": 12}
            assert [w["state"] for w in status["waves"]] == ["done", "done"]
            assert {v["verdict"] for w in status["waves"] for v in w["verdicts"]} == {"passed"}
            # one idempotency key per device, no holds left
            steps = await _steps(store, cid)
            assert sorted(steps) == sorted((e.endpoint, "deliver:0:flags", 1) for e in records)
            assert r.campaigns.holder("ok-0001", Dimension.FLAGS) is None
            wanted = {
                "campaign.create",
                "campaign.wave_start",
                "campaign.gate",
                "campaign.wave_done",
                "campaign.complete",
            }
            await eventually(lambda: _audited(store, cid, wanted))

    asyncio.run(asyncio.wait_for(case(), 60))


async def _count(r: Rig, cid: str, state: DeviceState, n: int) -> bool:
    LAST.update(await r.campaigns.status(cid))  # shown when a wait fails
    return bool(LAST["counts"].get(state.value, 0) == n)


async def _state(r: Rig, cid: str, state: CampaignState) -> bool:
    LAST.update(await r.campaigns.status(cid))
    return bool(LAST["state"] == state.value)


def test_a_failing_region_is_reverted_to_last_known_good_while_the_other_completes(
    store: Store,
) -> None:
    async def case() -> None:
        records = _records("rv-", {"eu": 6, "us": 6})
        async with rig(store, records) as r:
            spec = _spec("rv-", canary=CanarySpec(per_stratum=3, max_devices=10, bake_s=0.0))
            cid = await r.campaigns.create(spec, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 6))
            canary = await r.devices_in(cid, DeviceState.DELIVERING)
            eu = [e for e in canary if int(e[3:]) <= 6]
            us = [e for e in canary if int(e[3:]) > 6]
            assert len(eu) == len(us) == 3
            await r.verify(us, V2)
            await r.refuse(eu, "apply result rejected_invalid (3)", V2)
            await eventually(lambda: _count(r, cid, DeviceState.REVERTING, 3))
            for endpoint in eu:  # back on V1, a new generation, written by the campaign
                await r._told(endpoint, V1)
                assert await r.desired(endpoint) == (V1, 3, f"campaign:{cid}")
            status = await r.campaigns.status(cid)
            assert status["reverted_cohorts"] == [{"scope": "region", "key": "eu"}]
            # eu's queued devices are skipped, us goes on to the next wave
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 3))
            rest = await r.devices_in(cid, DeviceState.DELIVERING)
            assert all(int(e[3:]) > 6 for e in rest)
            await r.verify(eu, V1)
            await r.verify(rest, V2)
            await eventually(lambda: _state(r, cid, CampaignState.COMPLETED))
            counts = await r.states(cid)
            assert counts == {"succeeded": 6, "reverted": 3, "skipped": 3}
            report = await r.campaigns.report(cid)
            assert report["by_region"]["eu"] == {"reverted": 3, "skipped": 3}
            assert any("cohort reverted" in f["reason"] for f in report["failures"])
            await eventually(lambda: _audited(store, cid, {"campaign.revert"}))

    asyncio.run(asyncio.wait_for(case(), 60))


def test_after_a_restart_the_engine_resumes_from_its_tables_without_writing_twice(
    store: Store,
) -> None:
    async def case() -> None:
        records = _records("rs-", {"eu": 5, "us": 5})
        async with rig(store, records) as r:
            cid = await r.campaigns.create(_spec("rs-"), actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 4))
            canary = await r.devices_in(cid, DeviceState.DELIVERING)
            for endpoint in canary:  # the admissions committed and told to the state layer
                await r._told(endpoint, V2)
            # the engine goes away (its task is cancelled: nothing more is written) ...
            await r.campaigns.stop()
            # ... while one device's verification commits without it hearing of it
            r.state.observer.status_hooks.clear()
            await r.verify(canary[:1], V2)
            again = CampaignComponent(r.server, store, r.state, r.inventory, coalesce_s=0.0)
            again.install(LifecycleService(r.server))
            again.start()
            await again.ready()
            r.campaigns = again
            await eventually(lambda: _count(r, cid, DeviceState.VERIFIED, 0))
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 3))
            await r.verify(canary[1:], V2)
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 6))
            await r.verify(await r.devices_in(cid, DeviceState.DELIVERING), V2)
            await eventually(lambda: _state(r, cid, CampaignState.COMPLETED))
            assert (await r.states(cid)) == {"succeeded": 10}
            steps = await _steps(store, cid)
            assert len(steps) == len(set(steps)) == 10  # each device written exactly once
            for endpoint in canary:
                assert (await r.desired(endpoint))[1] == 2  # type: ignore[index]

    asyncio.run(asyncio.wait_for(case(), 60))


def test_halt_policy_pause_resume_and_abort_with_revert(store: Store) -> None:
    async def case() -> None:
        records = _records("hl-", {"eu": 4, "us": 4})
        async with rig(store, records) as r:
            spec = _spec("hl-", on_failure=OnFailure.HALT)
            cid = await r.campaigns.create(spec, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 4))
            canary = await r.devices_in(cid, DeviceState.DELIVERING)
            await r.campaigns.pause(cid, actor="op")
            with pytest.raises(CampaignConflict):
                await r.campaigns.pause(cid, actor="op")
            await r.verify(canary, V2)
            await eventually(lambda: _count(r, cid, DeviceState.SUCCEEDED, 4))
            await asyncio.sleep(0.2)
            assert (await r.states(cid)).get("delivering", 0) == 0  # paused: nobody admitted
            await r.campaigns.resume(cid, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 4))
            wave = await r.devices_in(cid, DeviceState.DELIVERING)
            await r.refuse(wave, "apply result rejected_invalid (3)", V2)
            await eventually(lambda: _state(r, cid, CampaignState.HALTED))
            status = await r.campaigns.status(cid)
            assert "gate failed" in status["reason"]
            await r.campaigns.abort(cid, revert=True, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.REVERTING, 8))
            for endpoint in canary + wave:
                await r._told(endpoint, V1)
            await r.verify(canary + wave, V1)
            await eventually(lambda: _state(r, cid, CampaignState.ABORTED))
            assert (await r.states(cid)) == {"reverted": 8}
            wanted = {
                "campaign.pause",
                "campaign.resume",
                "campaign.halt",
                "campaign.abort",
                "campaign.revert",
                "campaign.aborted",
            }
            await eventually(lambda: _audited(store, cid, wanted))

    asyncio.run(asyncio.wait_for(case(), 60))


def test_held_devices_are_left_out_of_a_second_campaign_and_a_silent_device_times_out(
    store: Store,
) -> None:
    async def case() -> None:
        records = _records("hd-", {"eu": 3})
        async with rig(store, records) as r:
            first = await r.campaigns.create(
                _spec("hd-", deadlines=Deadlines(0.2, 0.2, 0.2, 0.2)), actor="op"
            )
            assert r.campaigns.holder("hd-0001", Dimension.FLAGS) == first
            second = _spec("hd-", components=(Component(Dimension.FLAGS, {"v": "3"}),))
            with pytest.raises(Exception, match="no device to change"):
                await r.campaigns.create(second, actor="op")
            # nobody verifies: every admitted device times out (counted by the gates)
            await eventually(lambda: _count(r, first, DeviceState.TIMED_OUT, 2), timeout=5)
            status = await r.campaigns.status(first)
            assert status["waves"][0]["verdicts"]
            report = await r.campaigns.report(first)
            assert any("deadline" in f["reason"] for f in report["failures"])
            n = await store.read(
                lambda tx: tx.execute(select(func.count()).select_from(STEP)).scalar_one()
            )
            assert n >= 2

    asyncio.run(asyncio.wait_for(case(), 60))


def test_dynamic_membership_rollback_by_selector_and_quarantine(store: Store) -> None:
    async def case() -> None:
        records = _records("dy-", {"eu": 4})
        async with rig(store, records) as r:
            spec = _spec(
                "dy-",
                membership=Membership.DYNAMIC,
                canary=CanarySpec(per_stratum=4, max_devices=10, bake_s=30.0),
            )
            cid = await r.campaigns.create(spec, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 4))
            await r.verify(await r.devices_in(cid, DeviceState.DELIVERING), V2)
            await eventually(lambda: _count(r, cid, DeviceState.VERIFIED, 4))  # baking 30 s
            # a device that joins the selection mid-campaign enters the current wave
            late = _records("dy-", {"eu": 5})[4:]
            await store.write(lambda tx: r.inventory.repository.upsert_many(tx, late))
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 1))
            assert r.campaigns.holder("dy-0005", Dimension.FLAGS) == cid
            await r.verify(["dy-0005"], V2)
            await eventually(lambda: _count(r, cid, DeviceState.VERIFIED, 5))
            # rollback by selector: the matching changed devices go back to last-known-good
            n = await r.campaigns.rollback(cid, selector="endpoint=dy-0001", actor="op")
            assert n == 1
            await eventually(lambda: _count(r, cid, DeviceState.REVERTING, 1))
            await r.verify(["dy-0001"], V1)
            await eventually(lambda: _count(r, cid, DeviceState.REVERTED, 1))
            assert r.campaigns.holder("dy-0001", Dimension.FLAGS) is None
            # quarantining the artifact halts the campaign; a new one using it is refused
            halted = await r.campaigns.quarantine("flags-v2", actor="op", reason="bad")
            assert halted == [cid]
            assert (await r.campaigns.status(cid))["state"] == "halted"
            with pytest.raises(CampaignConflict, match="quarantined"):
                await r.campaigns.create(_spec("dy-"), actor="op")
            with pytest.raises(CampaignConflict, match="quarantined"):
                await r.campaigns.resume(cid, actor="op")
            wanted = {"campaign.join", "campaign.rollback", "campaign.revert"}
            await eventually(lambda: _audited(store, cid, wanted))

    asyncio.run(asyncio.wait_for(case(), 60))


def test_components_apply_in_order_and_a_missing_rollback_target_is_reported(
    store: Store,
) -> None:
    apn = {"apns": ["apn-new"], "active": "apn-new"}

    async def case() -> None:
        records = _records("mc-", {"eu": 2})
        async with rig(store, records) as r:
            spec = _spec(
                "mc-",
                components=(
                    Component(Dimension.FLAGS, V2, artifact="flags-v2"),
                    Component(Dimension.CONNECTIVITY, apn, artifact="apn-new"),
                ),
                canary=CanarySpec(per_stratum=2, max_devices=10, bake_s=0.0),
            )
            cid = await r.campaigns.create(spec, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 2))
            first, second = sorted(await r.devices_in(cid, DeviceState.DELIVERING))
            await r._told(first, V2)

            async def connectivity(endpoint: str) -> Any:
                desired = await store.read(lambda tx: r.state.repository.desired(tx, endpoint))
                want = desired.get(Dimension.CONNECTIVITY)
                return want.value if want is not None else None

            assert await connectivity(first) is None  # not before the flags verified
            await r.verify([first], V2)
            await eventually(lambda: _has(connectivity(first), apn))
            assert (await r.states(cid)).get("delivering") == 2  # still on its 2nd component
            # abort --revert: flags go back to V1; connectivity had no value before the
            # campaign (no desired, nothing reported): reported, not silently skipped
            await r.campaigns.abort(cid, revert=True, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.REVERTING, 2))
            await r.verify([first, second], V1)
            await eventually(lambda: _state(r, cid, CampaignState.ABORTED))
            report = await r.campaigns.report(cid)
            assert report["no_rollback_target"] == [first]
            assert await connectivity(first) == apn  # nothing to go back to

    asyncio.run(asyncio.wait_for(case(), 60))


async def _has(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


def test_error_results_count_for_the_wave_and_for_the_control_cohort(store: Store) -> None:
    """Error results (a FAILED status report) on the control cohort's devices are counted
    against the wave's -- and written with the campaign before the gate reads them."""

    async def case() -> None:
        records = _records("er-", {"eu": 8}) + _records("ctl-", {"eu": 6})
        async with rig(store, records) as r:
            gates = GateSpec(
                min_sample=2, min_ack_pct=None, min_verified_pct=None, max_failure_pct=None,
                max_timeout_pct=None, max_error_excess_pct=20.0, cohort_by=(Scope.REGION,),
            )  # fmt: skip
            spec = _spec(
                "er-",
                canary=CanarySpec(per_stratum=6, max_devices=6, bake_s=30.0),
                gates=gates,
                on_failure=OnFailure.HALT,
            )
            cid = await r.campaigns.create(spec, actor="op")
            await eventually(lambda: _count(r, cid, DeviceState.DELIVERING, 6))
            canary = await r.devices_in(cid, DeviceState.DELIVERING)
            await r.verify(canary, V2)
            await eventually(lambda: _count(r, cid, DeviceState.VERIFIED, 6))
            # two control devices refuse a change of their own: an error result each, 2/6
            other = {"v": "other"}
            ctl = ["ctl-0001", "ctl-0002"]
            await store.write(
                lambda tx: r.state.repository.set_desired(
                    tx, ctl, {Dimension.FLAGS: other}, policy=Policy.ENFORCE, actor="op", now=2.0
                )
            )
            for endpoint in ctl:
                r.state.observer.forget_state(endpoint)
            await r.refuse(ctl, "apply result failed (4)", other)
            run = r.campaigns.runs[cid]
            await eventually(lambda: _has(_control_errors(store, cid), 2))
            assert sum(c[2] for c in run.control_counts.values()) == 2
            # four canary devices fail during the bake (they report a failed apply and another
            # value): 4/6 = 66.7%, +33.3 pp over the control
            for endpoint in canary[:4]:
                await r.state.observer.record(
                    endpoint,
                    {Dimension.FLAGS: {"v": "broken"}},
                    "verify",
                    failures={Dimension.FLAGS: "apply result failed (4)"},
                )
            await eventually(lambda: _state(r, cid, CampaignState.HALTED))
            verdicts = (await r.campaigns.status(cid))["waves"][0]["verdicts"]
            north = next(v for v in verdicts if v["scope"] == "region")
            assert north["verdict"] == "failed"
            assert north["reasons"] == [
                "error results 66.7% per device vs control 33.3% = +33.3 pp > "
                "max_error_excess_pct 20.0"
            ]

    asyncio.run(asyncio.wait_for(case(), 60))


async def _control_errors(store: Store, cid: str) -> int:
    from lifecycle.campaigns.tables import TELEMETRY

    rows = await store.read(
        lambda tx: list(tx.execute(select(TELEMETRY.c.error_results).where(
            TELEMETRY.c.campaign == cid, TELEMETRY.c.control.is_(True))))
    )  # fmt: skip
    return sum(int(r.error_results) for r in rows)
