"""The eSIM campaign kind's two gated phases in the engine, on SQLite and PostgreSQL.

The rig of ``test_engine`` (a real LwM2M server, store, state component, inventory; the
devices' verdicts are recorded through the real state observer, as the eIM's applier does in
``fleetloop serve``). What is checked is what the engine writes: no ``esim`` desired value (the
enable) exists for any device of a wave until that wave's download gate passed on a complete
outcome, the phase barrier survives a restart of the engine, and the enable is verified only
by a registration Update after the signed result (silence past ``deadlines.registered`` is a
timeout the gates count). tests/sgp32/test_esim_phases.py runs the same against a real
``fleetloop serve`` with simulated eUICCs, IPAs and an SM-DP+.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.campaigns.component import CampaignComponent
from lifecycle.campaigns.model import (
    CampaignError,
    CampaignSpec,
    CampaignState,
    CanarySpec,
    Component,
    Deadlines,
    DeviceState,
    GateSpec,
    OnFailure,
    Pacing,
    Scope,
    WaveSpec,
)
from lifecycle.campaigns.spec import esim_switch, parse_spec, spec_to_dict
from lifecycle.schema import create_schema
from lifecycle.service import LifecycleService
from lifecycle.state.dimensions import Dimension
from lwm2m.server import Updated
from lwm2m.store import Address, Identity, NewRegistration, Store
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)
from tests.lifecycle.campaigns.test_engine import (
    Rig,
    _audit_actions,
    _audited,
    _records,
    _steps,
    eventually,
    rig,
)

OLD, NEW = "8988247000000000011", "8988247000000000029"
CODE = "1$smdp.example.com$ORDER-4711"


@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[Store]:  # noqa: F811
    opened = Store.open(database_url, tmp_path)
    opened.create_schema()
    create_schema(opened)
    try:
        yield opened
    finally:
        opened.close()


def _spec(prefix: str, **changes: Any) -> CampaignSpec:
    from dataclasses import replace

    download, enable = esim_switch(
        Component(Dimension.ESIM, {"iccid": NEW, "activation_code": CODE})
    )
    base = CampaignSpec(
        name="carrier B",
        selector=f"endpoint={prefix}*",
        components=(download, enable),
        canary=CanarySpec(per_stratum=4, max_devices=4, bake_s=0.0),
        waves=(WaveSpec(percent=100.0, bake_s=0.0),),
        pacing=Pacing(rate=1000.0, concurrency=1000),
        gates=GateSpec(
            min_sample=2,
            max_failure_pct=30.0,
            max_timeout_pct=30.0,
            min_ack_pct=None,
            min_verified_pct=None,
            cohort_by=(Scope.REGION,),
        ),
        deadlines=Deadlines(delivered_s=30.0, applied_s=30.0, registered_s=3.0, verified_s=30.0),
        on_failure=OnFailure.HALT,
    )
    return replace(base, **changes)


async def _desired(r: Rig, endpoint: str, dim: Dimension) -> dict[str, Any] | None:
    found = await r.store.read(lambda tx: r.state.repository.desired(tx, endpoint))
    want = found.get(dim)
    return dict(want.value) if want is not None else None


async def _in_state(r: Rig, cid: str, state: DeviceState, n: int | None = None) -> list[str]:
    report = await r.campaigns.report(cid)
    found = [d["endpoint"] for d in report["device_list"] if d["state"] == state.value]
    return found if n is None or len(found) == n else []


async def _wait_state(r: Rig, cid: str, state: DeviceState, n: int) -> list[str]:
    out: list[str] = []

    async def check() -> bool:
        out[:] = await _in_state(r, cid, state, n)
        return len(out) == n

    await eventually(check)
    return out


async def _downloaded(r: Rig, endpoints: list[str], ok: bool = True) -> None:
    """What the eIM's applier records: the profile on the eUICC, or the download failed."""
    for endpoint in endpoints:
        await _told(r, endpoint, Dimension.ESIM_DOWNLOAD)
        if ok:  # the eIM knows the profiles now: the one enabled is reported too
            values = {
                Dimension.ESIM_DOWNLOAD: {"iccids": [NEW, OLD]},
                Dimension.ESIM: {"iccid": OLD, "state": "enabled", "fallback": True},
            }
            await r.state.observer.record(endpoint, values, "esim")
        else:
            failure = {Dimension.ESIM_DOWNLOAD: "download of the profile failed: 8 (bppRebinding)"}
            await r.state.observer.record(endpoint, {}, "esim", failures=failure)


async def _enabled(r: Rig, endpoints: list[str]) -> None:
    """The eUICC's signed enable result reached the eIM."""
    for endpoint in endpoints:
        await _told(r, endpoint, Dimension.ESIM)
        value = {"iccid": NEW, "state": "enabled", "carrier": "Carrier B"}
        await r.state.observer.record(endpoint, {Dimension.ESIM: value}, "esim")


async def _has_desired(r: Rig, endpoint: str, dim: Dimension) -> bool:
    return await _desired(r, endpoint, dim) is not None


async def _told(r: Rig, endpoint: str, dim: Dimension) -> None:
    """Wait until the engine wrote ``dim``'s desired value for ``endpoint``."""

    async def check() -> bool:
        return await _has_desired(r, endpoint, dim)

    await eventually(check)


async def _update(r: Rig, campaigns: CampaignComponent, endpoints: list[str]) -> None:
    """The devices send a registration Update (over the new profile)."""
    for endpoint in endpoints:
        new = NewRegistration(
            endpoint=endpoint,
            lifetime=300,
            address=Address("10.9.0.1", 5683),
            identity=Identity.psk(f"id-{endpoint}"),
        )

        def write(tx: Any, n: NewRegistration = new) -> Any:
            return r.store.registrations.register(tx, n, 1.0)[0]

        registration = await r.store.write(write)
        await campaigns._on_updated(Updated(endpoint, registration, registration))


def test_spec_builds_the_two_phases_and_refuses_a_misplaced_download() -> None:
    raw = {
        "name": "carrier B",
        "selector": "region=north",
        "kind": "esim",
        "esim": {"iccid": NEW, "activation_code": CODE},
        "change": [{"apn": "iot.carrier-b"}],
    }
    spec = parse_spec(raw)
    assert [c.dimension for c in spec.components] == [
        Dimension.ESIM_DOWNLOAD,
        Dimension.ESIM,
        Dimension.CONNECTIVITY,
    ]
    assert spec.phase_split == 1 and spec.kind == "esim"
    assert spec.components[1].value == {"iccid": NEW}  # the enable carries no code
    assert parse_spec(spec_to_dict(spec)) == spec  # persisted form reloads as it was
    same = parse_spec(
        {
            "name": "carrier B",
            "selector": "region=north",
            "change": [{"esim": {"iccid": NEW, "activation_code": CODE}}, {"apn": "iot.carrier-b"}],
        }
    )
    assert same.components == spec.components
    with pytest.raises(CampaignError, match="download phase comes first"):
        parse_spec(
            {
                "name": "x",
                "selector": "",
                "change": [{"apn": "a"}, {"esim": {"iccid": NEW, "activation_code": CODE}}],
            }
        )
    with pytest.raises(CampaignError, match="kind esim needs"):
        parse_spec({"name": "x", "selector": "", "kind": "esim"})


def test_download_failures_halt_before_any_enable_and_resume_enables_only_the_downloaded(
    store: Store,
) -> None:
    async def case() -> None:
        records = _records("eh-", {"eu": 8})
        async with rig(store, records) as r:
            cid = await r.campaigns.create(_spec("eh-"), actor="op")
            canary = await _wait_state(r, cid, DeviceState.DELIVERING, 4)
            await _downloaded(r, canary[:2])
            await _wait_state(r, cid, DeviceState.STAGED, 2)
            for endpoint in canary:  # the barrier: nothing enabled while the wave downloads
                assert await _desired(r, endpoint, Dimension.ESIM) is None
            await _downloaded(r, canary[2:], ok=False)  # 2/4 = 50 % > 30 %: the gate fails

            async def halted() -> bool:
                return bool((await r.campaigns.status(cid))["state"] == "halted")

            await eventually(halted)
            status = await r.campaigns.status(cid)
            assert "download phase" in status["reason"] and "nothing" in status["reason"]
            assert status["phase"] == "download" and status["kind"] == "esim"
            for endpoint in canary:
                assert await _desired(r, endpoint, Dimension.ESIM) is None
            staged = await _in_state(r, cid, DeviceState.STAGED)
            assert sorted(staged) == sorted(canary[:2])
            # (the status is the engine's memory; the tick commits the audit right after)
            await eventually(lambda: _audited(store, cid, {"campaign.halt", "campaign.gate"}))
            assert "campaign.phase" not in await _audit_actions(store, cid)

            # a restart keeps the barrier: still halted, still nothing enabled
            await r.campaigns.stop()
            again = CampaignComponent(r.server, store, r.state, r.inventory, coalesce_s=0.0)
            again.install(LifecycleService(r.server))
            again.start()
            await again.ready()
            r.campaigns = again
            await asyncio.sleep(0.3)
            assert (await again.status(cid))["state"] == CampaignState.HALTED.value
            for endpoint in canary:
                assert await _desired(r, endpoint, Dimension.ESIM) is None

            # the operator accepts the download failures: only the downloaded two enable
            await again.resume(cid, actor="op")
            for endpoint in canary[:2]:
                await _told(r, endpoint, Dimension.ESIM)
                assert await _desired(r, endpoint, Dimension.ESIM) == {"iccid": NEW}
            for endpoint in canary[2:]:
                assert await _desired(r, endpoint, Dimension.ESIM) is None
            wave = (await again.status(cid))["waves"][0]
            assert wave["phase"] == "enable"
            assert any(v["verdict"] == "failed" for v in wave["download_verdicts"])

    asyncio.run(asyncio.wait_for(case(), 60))


def test_a_restart_between_the_phases_resumes_and_the_enable_waits_for_a_registration(
    store: Store,
) -> None:
    async def case() -> None:
        records = _records("er-", {"eu": 8})
        async with rig(store, records) as r:
            cid = await r.campaigns.create(_spec("er-"), actor="op")
            canary = await _wait_state(r, cid, DeviceState.DELIVERING, 4)
            await _downloaded(r, canary[:3])
            await _wait_state(r, cid, DeviceState.STAGED, 3)
            # the engine dies between the phases; the last download verifies meanwhile
            await r.campaigns.stop()
            r.state.observer.status_hooks.clear()
            await _downloaded(r, canary[3:])
            again = CampaignComponent(r.server, store, r.state, r.inventory, coalesce_s=0.0)
            again.install(LifecycleService(r.server))
            again.start()
            await again.ready()
            r.campaigns = again
            # the download gate passes: the four enable, each written once
            await _wait_state(r, cid, DeviceState.DELIVERING, 4)
            await _enabled(r, canary)
            await _wait_state(r, cid, DeviceState.REGISTERING, 4)
            await _update(r, again, canary[:3])  # the fourth stays silent
            await _wait_state(r, cid, DeviceState.SUCCEEDED, 3)
            silent = await _wait_state(r, cid, DeviceState.TIMED_OUT, 1)
            assert silent == canary[3:]
            report = await again.report(cid)
            row = next(d for d in report["device_list"] if d["endpoint"] == canary[3])
            assert "did not register" in row["reason"] and "deadlines.registered" in row["reason"]
            # the enable's rollback target: the profile it ran, learnt before the enable (none
            # was known at admission); the download has none (it is not undone)
            assert row["rollback"] == {"esim_download": None, "esim": {"iccid": OLD}}
            # 1/4 timed out = 25 % <= 30 %: the next wave downloads, then enables
            rest = await _wait_state(r, cid, DeviceState.DELIVERING, 4)
            assert not set(rest) & set(canary)
            await _downloaded(r, rest)
            await _wait_state(r, cid, DeviceState.DELIVERING, 4)
            await _enabled(r, rest)
            await _wait_state(r, cid, DeviceState.REGISTERING, 4)
            await _update(r, again, rest)

            async def completed() -> bool:
                return bool((await again.status(cid))["state"] == "completed")

            await eventually(completed)
            assert (await again.status(cid))["counts"] == {"succeeded": 7, "timed_out": 1}
            await eventually(lambda: _audited(store, cid, {"campaign.complete"}))
            steps = await _steps(store, cid)
            assert len(steps) == len(set(steps)) == 16  # 8 downloads + 8 enables, once each
            actions = await _audit_actions(store, cid)
            assert actions.count("campaign.phase") == 2
            assert actions.count("campaign.esim_registered") == 7

    asyncio.run(asyncio.wait_for(case(), 60))


def test_the_cli_builds_the_esim_kind_and_shows_the_phases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import click

    from cli.campaign_cmd import _spec as cli_spec
    from cli.campaign_cmd import show_status
    from lifecycle.campaigns.runs import CampaignRun, WaveRun
    from lifecycle.campaigns.views import status_of

    flags = {
        "name": "carrier B",
        "select": "region=north",
        "kind": "esim",
        "iccid": NEW,
        "activation_code": CODE,
        "apn": "carrier-b-iot",
    }
    spec, _, flagged = cli_spec(None, flags)
    assert spec["kind"] == "esim" and spec["esim"] == {"iccid": NEW, "activation_code": CODE}
    assert spec["change"] == [{"connectivity": "profile:carrier-b-iot"}]
    assert {"kind", "esim"} <= flagged
    alone, _, _ = cli_spec(None, {**flags, "apn": None})
    parsed = parse_spec(alone)  # the switch alone: download, enable
    assert [c.dimension for c in parsed.components] == [Dimension.ESIM_DOWNLOAD, Dimension.ESIM]
    with pytest.raises(click.UsageError, match="--kind esim"):
        cli_spec(None, {**flags, "kind": None})

    run = CampaignRun("c-1", parsed, CampaignState.RUNNING, "op", 1.0)
    run.waves = [WaveRun(0, "canary", 0.0, phase="download")]
    found = status_of(run)
    found.update(created_at="2026-12-05T08:00:00Z")
    for wave in found["waves"]:
        wave["cohorts"] = []
    show_status(found)
    out = capsys.readouterr().out
    assert "phases download (esim_download) -> enable (esim); now: download" in out
    assert "running (download)" in out or "pending (download)" in out


def test_a_device_already_on_the_new_profile_is_not_waited_for(store: Store) -> None:
    async def case() -> None:
        records = _records("ea-", {"eu": 2})
        async with rig(store, records) as r:
            cid = await r.campaigns.create(_spec("ea-"), actor="op")
            both = await _wait_state(r, cid, DeviceState.DELIVERING, 2)
            await _downloaded(r, both[:1])  # runs the old profile
            on_new = {"iccid": NEW, "state": "enabled", "carrier": "Carrier B"}
            await _told(r, both[1], Dimension.ESIM_DOWNLOAD)
            values = {Dimension.ESIM_DOWNLOAD: {"iccids": [NEW, OLD]}, Dimension.ESIM: on_new}
            await r.state.observer.record(both[1], values, "esim")  # switched before us
            await _wait_state(r, cid, DeviceState.DELIVERING, 2)
            await _enabled(r, both)
            assert await _wait_state(r, cid, DeviceState.SUCCEEDED, 1) == both[1:]
            assert await _wait_state(r, cid, DeviceState.REGISTERING, 1) == both[:1]

    asyncio.run(asyncio.wait_for(case(), 60))
