"""DM PSK rotation end to end against the real ``fleetloop serve``: devices from a factory
identity CSV bootstrap over DTLS-PSK and register; ``credentials={"generation": 1}`` for the
selection makes the reconciler ask each device to re-bootstrap (Execute /1/x/9); each gets a
fresh PSK from the bootstrap server, registers again with it, and the dimension is verified
(applied, generation 1). Afterwards a DTLS client presenting a device's OLD PSK is refused the
handshake by the DM server, while the new key still opens a session.

100 devices here (a test must take seconds); ``benchmarks/bench_credentials_rotation.py``
rotates 500 the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from lwm2m.transport import DtlsClient, DtlsClientConfig, HandshakeFailed
from simulators.device.bootstrap import dm_account
from simulators.fleet.runner import DeviceFleet
from simulators.identities import from_csv
from tests.integration.conftest import Api, Serve, eventually, run, start_serve

pytestmark = pytest.mark.integration

FLEET = 100
PREFIX = "cr-"


@pytest.fixture(scope="module")
def cr_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with start_serve(tmp_path_factory.mktemp("credentials") / "data") as running:
        yield running


class _Sink:
    def datagram_received(self, data: bytes, peer: object) -> None:
        pass


async def _handshake(port: int, identity: bytes, key: bytes) -> bool:
    """Whether the DM server completes a DTLS-PSK handshake with this identity and key."""
    try:
        client = await DtlsClient.connect(
            _Sink(), "127.0.0.1", port, DtlsClientConfig(psk=(identity, key)), timeout=5.0
        )
    except (HandshakeFailed, TimeoutError):
        return False
    client.close()
    return True


def test_psk_rotation_of_a_fleet_refuses_the_old_keys_afterwards(
    cr_serve: Serve, tmp_path: Path
) -> None:
    serve = cr_serve
    csv_file = tmp_path / "factory.csv"
    made = serve.cli(
        "sim", "identities", "-n", str(FLEET), "--prefix", PREFIX, "--out", str(csv_file)
    )
    assert made.returncode == 0, made.stderr
    imported = serve.cli("identities", "import", str(csv_file))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    identities = from_csv(csv_file.read_text())

    async def case() -> None:
        api = Api(serve)
        try:
            async with DeviceFleet(bootstrap_uri=serve.bootstrap_coaps_uri, seed=3) as fleet:
                fleet.spawn(identities=identities)
                await fleet.wait_registered(timeout=120)
                old = {}
                for i in range(FLEET):
                    account = dm_account(fleet.device(i).store)
                    assert account is not None and account.secret
                    old[fleet.device(i).endpoint] = (account.identity, account.secret)

                changed = await api.put(
                    "/v1/state",
                    {"select": f"endpoint={PREFIX}*", "values": {"credentials": {"generation": 1}}},
                )
                assert changed["selected"] == FLEET

                async def rotated() -> bool:
                    drift = await api.get(
                        "/v1/state/drift", params={"select": f"endpoint={PREFIX}*", "limit": 1000}
                    )
                    return not drift["items"]

                try:
                    await eventually(rotated, timeout=150)
                except AssertionError:
                    drift = await api.get(
                        "/v1/state/drift", params={"select": f"endpoint={PREFIX}*", "limit": 1000}
                    )
                    left = drift["items"]
                    raise AssertionError(f"{len(left)} not rotated, e.g. {left[:3]}") from None

                some = sorted(old)[7]
                state = await api.get(f"/v1/devices/{some}/state")
                row = {r["dimension"]: r for r in state["dimensions"]}["credentials"]
                assert row["status"] == "applied" and row["reported"] == {"generation": 1}

                # every device holds a new key and is registered (again) with it
                new = {}
                for i in range(FLEET):
                    view = fleet.device(i)
                    account = dm_account(view.store)
                    assert account is not None
                    new[view.endpoint] = (account.identity, account.secret)
                    assert account.secret != old[view.endpoint][1], view.endpoint
                await eventually(lambda: _all_registered(fleet), timeout=30)  # the runner's view

                port = serve.port("coaps")
                for endpoint in sorted(old)[:5]:
                    identity, key = old[endpoint]
                    assert not await _handshake(port, identity, key), f"{endpoint}: old key"
                    identity, key = new[endpoint]
                    assert await _handshake(port, identity, key), f"{endpoint}: new key refused"

                # the pass that asked for the re-bootstrap is in the audit log
                audit = await api.get(
                    "/v1/audit", params={"action": "state.reconcile", "endpoint": some}
                )
                steps = [
                    step.get("step")
                    for record in audit["items"]
                    for step in record.get("detail", {}).get("steps", [])
                ]
                assert "rotate-credentials" in steps and "verified" in steps, steps
        finally:
            await api.aclose()

    run(case(), timeout=300)


async def _all_registered(fleet: DeviceFleet) -> bool:
    await asyncio.sleep(0)
    return all(fleet.device(i).registered for i in range(FLEET))
