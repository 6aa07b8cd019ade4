"""The operator's walk-through, for real: ``fleetloop serve``'s service (DM server, bootstrap
server, API) on ephemeral ports, the CLI commands through the API, and a simulated device
from factory CSV to registered -- on SQLite and PostgreSQL.

This is the sequence ``docs/IMPORTING_IDENTITIES.md`` walks an operator through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cli.settings import Listen, ServeSettings
from simulators.device import ClientConfig
from simulators.device.events import Registered
from simulators.runner import SimulatedDevice
from tests.cli.harness import Background, invoke
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

FACTORY = """endpoint,serial,imei,sku,tenant,region,security_mode,psk_identity,psk_key
tracker-0001,SN-0001,490154203237518,TRK-1,acme,eu-west,psk,tracker-0001,000102030405060708090a0b0c0d0e0f
tracker-0002,SN-0002,,TRK-1,acme,eu-west,psk,tracker-0002,101112131415161718191a1b1c1d1e1f
lab-0001,SN-L01,,LAB,acme,,nosec,,
"""
BROKEN = (
    FACTORY
    + "tracker-0003,SN-0001,,TRK-1,acme,eu-west,psk,,202122232425262728292a2b2c2d2e2f\n"
    + "tracker-0004,SN-0004,,TRK-1,acme,eu-west,psk,,abc\n"
)


@pytest.fixture
def service(tmp_path: Path, database_url: str | None) -> Iterator[Background]:  # noqa: F811
    settings = ServeSettings(
        data_dir=tmp_path / "data",
        coap=Listen("127.0.0.1", 0),
        coaps=Listen("127.0.0.1", 0),
        bs_coap=Listen("127.0.0.1", 0),
        bs_coaps=Listen("127.0.0.1", 0),
        api=Listen("127.0.0.1", 0),
        database_url=database_url,
    )
    background = Background(settings)
    background.start()
    try:
        yield background
    finally:
        background.stop()


def fleetloop(service: Background, *args: str) -> str:
    result = invoke(service.settings.data_dir, *args)
    assert result.exit_code == 0, result.output
    return result.output


def bs_uri(service: Background, scheme: str) -> str:
    assert service.info is not None
    bound = service.info.extra[f"bs_{scheme}"]
    return f"{scheme}://127.0.0.1:{bound['port']}"


def test_from_factory_csv_to_a_registered_device(service: Background, tmp_path: Path) -> None:
    data_dir = service.settings.data_dir
    factory = tmp_path / "factory.csv"
    broken = tmp_path / "broken.csv"
    factory.write_text(FACTORY)
    broken.write_text(BROKEN)

    # a file with a bad row imports nothing, and says which row and why
    result = invoke(data_dir, "identities", "import", str(broken))
    assert result.exit_code == 1
    assert "duplicate_in_file" in result.output and "malformed_key" in result.output
    assert "nothing was imported" in result.output
    assert json.loads(fleetloop(service, "identities", "list", "--json")) == []

    # dry run, then the import
    assert "would import 3" in fleetloop(service, "identities", "import", str(factory), "--dry-run")
    assert "imported 3, rejected 0" in fleetloop(service, "identities", "import", str(factory))
    listed = json.loads(fleetloop(service, "identities", "list", "--json"))
    assert [i["endpoint"] for i in listed] == ["lab-0001", "tracker-0001", "tracker-0002"]
    assert all("psk_key" not in i for i in listed)
    # a selector (the inventory's language) filters identities like every other list
    selected = json.loads(
        fleetloop(
            service, "identities", "list", "--select", "sku=TRK-1,endpoint!=tracker-0002", "--json"
        )
    )
    assert [i["endpoint"] for i in selected] == ["tracker-0001"]
    shown = json.loads(fleetloop(service, "identities", "show", "490154203237518", "--json"))
    assert shown["endpoint"] == "tracker-0001" and shown["bootstrap"]["phase"] == "never"

    # with no policy the built-in default applies; then a regional policy
    explained = fleetloop(service, "bootstrap", "explain", "tracker-0001")
    assert "policy: builtin-default" in explained
    assert service.info is not None and service.info.coaps is not None
    dm_coaps = f"coaps://127.0.0.1:{service.info.coaps['port']}"
    policy = tmp_path / "eu-west.json"
    policy.write_text(
        json.dumps(
            {
                "name": "eu-west",
                "match": {"tenant": "acme", "region": "eu-west"},
                "servers": [{"uri": dm_coaps, "lifetime": 600}],
                "config": {"9": "eu-west-prod"},
            }
        )
    )
    added = fleetloop(service, "bootstrap", "policy", "add", str(policy), "--comment", "first")
    assert "now at version 1" in added
    assert "eu-west" in fleetloop(service, "bootstrap", "policy", "list")
    explained = json.loads(fleetloop(service, "bootstrap", "explain", "tracker-0001", "--json"))
    assert explained["policy"]["name"] == "eu-west"
    assert explained["provisions"][0]["credentials"] == "psk"

    # the device leaves the factory with its bootstrap PSK only, and ends up registered
    device = SimulatedDevice(
        "tracker-0001",
        bootstrap_uri=bs_uri(service, "coaps"),
        bootstrap_psk=(b"tracker-0001", bytes(range(16))),
        config=ClientConfig(lwm2m_version="1.1"),
    )
    service.devices.append(device)

    async def start() -> None:
        await device.start()
        await device.wait_registered()

    service.call(start())
    status = json.loads(fleetloop(service, "bootstrap", "status", "tracker-0001", "--json"))
    assert status["phase"] == "finished" and status["dm_uris"] == [dm_coaps]
    devices = json.loads(fleetloop(service, "devices", "list", "--json"))
    assert [d["endpoint"] for d in devices] == ["tracker-0001"]
    assert "eu-west-prod" in fleetloop(service, "read", "tracker-0001", "/32001/0/9")

    # a policy change, explained by its diff, applied by a re-bootstrap
    policy.write_text(policy.read_text().replace('"lifetime": 600', '"lifetime": 900'))
    assert "version 2" in fleetloop(service, "bootstrap", "policy", "add", str(policy))
    diff = fleetloop(service, "bootstrap", "policy", "diff", "eu-west")
    assert '-      "lifetime": 600' in diff and '+      "lifetime": 900' in diff
    mark = len(device.events)
    assert "answered 2.04" in fleetloop(service, "rebootstrap", "tracker-0001")

    async def registered_again() -> Registered:
        event = await device.wait_for(lambda e: isinstance(e, Registered), 15, since=mark)
        assert isinstance(event, Registered)
        return event

    assert service.call(registered_again()).lifetime == 900
    status = json.loads(fleetloop(service, "bootstrap", "status", "tracker-0001", "--json"))
    assert status["completed"] == 2 and status["policy"] == {"name": "eu-west", "version": 2}

    # revocation, and the audit trail of all of it
    fleetloop(service, "identities", "revoke", "tracker-0002", "--reason", "returned")
    assert (
        json.loads(fleetloop(service, "identities", "show", "tracker-0002", "--json"))["status"]
        == "revoked"
    )
    audit = json.loads(fleetloop(service, "bootstrap", "audit", "--json"))
    actions = [r["action"] for r in audit["items"]]
    assert actions[0] == "identities.import" and "policy.update" in actions
    assert "identity.revoke" in actions and actions.count("bootstrap.finished") == 2
    assert "audit trail intact" in fleetloop(service, "bootstrap", "audit", "--verify")


def test_api_errors_say_what_to_do(service: Background, tmp_path: Path) -> None:
    data_dir = service.settings.data_dir
    missing = invoke(data_dir, "bootstrap", "explain", "nobody")
    assert missing.exit_code == 1 and "no factory identity 'nobody'" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "servers": [{"uri": "http://nope"}]}))
    refused = invoke(data_dir, "bootstrap", "policy", "add", str(bad))
    assert refused.exit_code == 2 and "coap://" in refused.output
    not_registered = invoke(data_dir, "rebootstrap", "nobody")
    assert not_registered.exit_code == 1
    unknown_policy = invoke(data_dir, "bootstrap", "policy", "diff", "nothing")
    assert unknown_policy.exit_code == 1 and "no policy 'nothing'" in unknown_policy.output


def test_bootstrap_serve_alone_is_a_command() -> None:
    from cli.main import main

    ctx = click.Context(main)  # groups load lazily (cli.main.LAZY_COMMANDS): ask, don't peek
    assert "serve" in main.get_command(ctx, "bootstrap").commands  # type: ignore[union-attr]
    assert {"import", "list", "show", "revoke", "move"} <= set(
        main.get_command(ctx, "identities").commands  # type: ignore[union-attr]
    )
    assert "rebootstrap" in main.list_commands(ctx)
