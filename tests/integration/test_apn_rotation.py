"""An APN switch that strands one carrier's devices, end to end against the real
``fleetloop serve`` with the simulated fleet over real UDP.

Two carriers' devices get the same connectivity change (new active APN ``iot.global``). Acme
serves it: those devices re-attach on it, register from their new address and are verified
(applied, reporting ``iot.global`` as their active APN). Beta does not: each of its devices
loses its connection, falls back to its old APN by itself (the modem's watchdog,
``Behaviour.apn_fallback``), comes back, is switched again ... and after the reconciler's
``MAX_APN_SWITCHES`` the state layer marks it **failed** -- never applied -- with a reason
that says it fell back, which is what a campaign gate counts. Reverting only Beta's devices
to their old APN set (what a campaign's carrier-scoped revert does) then verifies them, and
Acme's devices keep the new APN.
"""

from __future__ import annotations

from typing import Any

import pytest

from simulators.fleet.runner import DeviceFleet
from simulators.profiles import DeviceProfile
from tests.integration.conftest import Api, Serve, eventually, run

pytestmark = pytest.mark.integration

PER_CARRIER = 20
OLD = "iot.fleetloop"
NEW = "iot.global"
FAST = DeviceProfile().with_link(attach_time=0.2)
ACME = FAST.replace(name="acme", reachable_apns=frozenset({OLD, NEW}))
BETA = FAST.replace(name="beta", reachable_apns=frozenset({OLD})).with_behaviour(apn_fallback=0.5)


async def _rows(api: Api, endpoints: list[str]) -> dict[str, dict[str, Any]]:
    """endpoint -> its connectivity state row."""
    found = {}
    for endpoint in endpoints:
        state = await api.get(f"/v1/devices/{endpoint}/state")
        for row in state["dimensions"]:
            if row["dimension"] == "connectivity":
                found[endpoint] = row
    return found


async def _all(api: Api, endpoints: list[str], status: str) -> bool:
    rows = await _rows(api, endpoints)
    return len(rows) == len(endpoints) and all(r["status"] == status for r in rows.values())


async def _wait(api: Api, endpoints: list[str], status: str, timeout: float) -> None:
    try:
        await eventually(lambda: _all(api, endpoints, status), timeout=timeout)
    except AssertionError:
        rows = await _rows(api, endpoints)
        left = {e: (r["status"], r.get("detail")) for e, r in rows.items() if r["status"] != status}
        raise AssertionError(f"{len(left)} not {status}: {list(left.items())[:3]}") from None


def test_an_apn_that_one_carrier_does_not_serve_fails_there_and_is_reverted(serve: Serve) -> None:
    async def case() -> None:
        api = Api(serve)
        try:
            async with DeviceFleet(serve.coap_uri, seed=5, record_events=True) as fleet:
                fleet.spawn(PER_CARRIER, prefix="apn-acme-", profile=ACME)
                fleet.spawn(PER_CARRIER, prefix="apn-beta-", profile=BETA)
                await fleet.wait_registered(timeout=30)
                names = [fleet.device(i).endpoint for i in range(2 * PER_CARRIER)]
                acme = [n for n in names if n.startswith("apn-acme-")]
                beta = [n for n in names if n.startswith("apn-beta-")]
                assert len(acme) == len(beta) == PER_CARRIER

                changed = await api.put(
                    "/v1/state",
                    {"endpoints": acme + beta, "values": {"connectivity": f"{NEW},{OLD}"}},
                )
                assert changed["changed"] == 2 * PER_CARRIER

                await _wait(api, acme, "applied", timeout=60)
                await _wait(api, beta, "failed", timeout=90)
                rows = await _rows(api, acme + beta)
                for endpoint in acme:
                    assert rows[endpoint]["reported"]["active"] == NEW
                    assert rows[endpoint]["observed_generation"] == rows[endpoint]["generation"]
                for endpoint in beta:
                    row = rows[endpoint]
                    assert row["reported"]["active"] == OLD  # it fell back by itself
                    assert "falls back" in row["detail"], row
                    assert row["observed_generation"] != row["generation"]  # never verified
                lost = sum(
                    1
                    for i in range(2 * PER_CARRIER)
                    if fleet.device(i).endpoint in beta
                    and any(getattr(e, "name", "") == "apn_lost" for e in fleet.device(i).events)
                )
                assert lost == PER_CARRIER

                # revert only the stranded carrier to its old APN set
                reverted = await api.put(
                    "/v1/state",
                    {"endpoints": beta, "values": {"connectivity": {"apns": [OLD], "active": OLD}}},
                )
                assert reverted["changed"] == PER_CARRIER
                await _wait(api, beta, "applied", timeout=60)
                rows = await _rows(api, acme + beta)
                assert all(rows[e]["reported"]["active"] == OLD for e in beta)
                assert all(rows[e]["reported"]["active"] == NEW for e in acme)
                assert all(rows[e]["status"] == "applied" for e in acme)
        finally:
            await api.aclose()

    run(case(), timeout=240)
