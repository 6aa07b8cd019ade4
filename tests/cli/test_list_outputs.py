"""``-o table|wide|json|yaml`` on every list command, against a real service.

The list commands are found by walking the click tree (every command named ``list``, plus the
commands that list without the name), so a new list command is covered without editing this
test. Each must accept the four outputs; ``json`` is JSON, ``yaml`` is YAML (not JSON
brackets), and ``wide`` is the table with more columns: every table column first, then at
least one more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import click
import pytest
import yaml

from cli.main import main
from cli.output import OUTPUTS
from tests.cli.harness import Background, background_service, invoke

LIST_LIKE = {
    ("observations",),
    ("queue",),
    ("audit", "log"),
    ("bootstrap", "audit"),
    ("state", "drift"),
    ("esim", "eims"),
    ("esim", "packages"),
    ("esim", "results"),
}
"""List commands not named ``list``."""

ARGS: dict[tuple[str, ...], list[str]] = {("queue",): ["lst-1"]}
"""Arguments a list command needs."""

NEEDS_EIM = {
    ("esim", "list"),
    ("esim", "eim", "list"),
    ("esim", "eims"),
    ("esim", "packages"),
    ("esim", "results"),
}
"""Answer only when the server runs the eIM (``--esipa-https``): here, only ``-o`` is checked
(tests/cli/test_esim_wide.py shows their wide columns against a server with the eIM)."""


def list_commands() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    ctx = click.Context(main)

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, (*path, name))
        elif path[-1] == "list" or path in LIST_LIKE:
            found.append(path)

    walk(main, ())
    return sorted(found)


def test_the_walk_finds_the_list_commands() -> None:
    found = list_commands()
    assert ("devices", "list") in found and ("context", "list") in found
    assert set(found) >= LIST_LIKE and ("campaign", "list") in found
    assert len(found) >= 20


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with background_service(tmp_path_factory.mktemp("data")) as background:
        background.add_device("lst-1")
        data_dir = background.service.data_dir
        identities = data_dir / "ids.csv"
        identities.write_text("endpoint,serial,security_mode\nlst-1,SN-1,nosec\n")
        policy = data_dir / "policy.json"
        policy.write_text(
            json.dumps(
                {
                    "name": "lst",
                    "match": {"region": "lst"},
                    "servers": [
                        {
                            "uri": "coaps://127.0.0.1:5684",
                            "short_server_id": 1,
                            "nosec_uri": "coap://127.0.0.1:5683",
                        }
                    ],
                }
            )
        )
        for args in (
            ("identities", "import", str(identities)),
            ("bootstrap", "policy", "add", str(policy)),
            ("state", "bundle", "put", "lst-b", '{"a": 1}'),
            ("tokens", "create", "viewer-1", "--role", "viewer"),
            (
                "security",
                "set",
                "lst-9",
                "--psk-identity",
                "lst-9",
                "--psk-key",
                "00112233445566778899aabbccddeeff",
            ),
            ("groups", "create", "all-lst", "--select", "endpoint=lst-*"),
            ("context", "add", "here", "--data-dir", str(data_dir)),
            # a campaign, so that `campaign list` has a row to widen
            ("campaign", "create", "--name", "lst-c", "--select", "endpoint=lst-1",
             "--config", "lst-b"),
        ):  # fmt: skip
            result = invoke(data_dir, *args)
            assert result.exit_code == 0, (args, result.output)
        yield background


@pytest.mark.parametrize("path", list_commands(), ids=" ".join)
def test_every_list_command_speaks_table_wide_json_and_yaml(
    served: Background, path: tuple[str, ...]
) -> None:
    ctx = click.Context(main)
    command: click.Command | None = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.get_command(ctx, name)
    assert command is not None
    output = next((p for p in command.params if p.name == "output"), None)
    assert output is not None, f"{' '.join(path)} has no -o"
    assert isinstance(output.type, click.Choice) and tuple(output.type.choices) == OUTPUTS

    if path in NEEDS_EIM:
        return
    data_dir = served.service.data_dir
    args = [*path, *ARGS.get(path, [])]
    for _attempt in range(5):
        # the fixture's device may still be bootstrapping and registering (new audit rows):
        # the four views are compared only when the list did not change while they were taken
        shown: dict[str, str] = {}
        for fmt in (*OUTPUTS, "json"):
            result = invoke(data_dir, *args, "-o", fmt)
            assert result.exit_code == 0, (path, fmt, result.output)
            if fmt in shown and result.stdout != shown[fmt]:
                break
            shown[fmt] = result.stdout
        else:
            break
    data = json.loads(shown["json"])
    assert yaml.safe_load(shown["yaml"]) == data  # the same data, as YAML
    items = data.get("items") if isinstance(data, dict) else data
    table_head = shown["table"].splitlines()[0].split()
    wide_head = shown["wide"].splitlines()[0].split()
    assert wide_head[: len(table_head)] == table_head, path  # the table's columns, in order
    if path == ("campaign", "list"):
        assert items, shown["table"]  # the fixture's campaign: its wide columns are checked
    if not items:
        return  # no rows: a message, not a table
    assert len(wide_head) > len(table_head), f"{' '.join(path)}: -o wide adds no column"
