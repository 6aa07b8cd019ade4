"""A client command must not import the server: ``import cli.main`` stays light.

Every ``fleetloop`` call starts a fresh interpreter, so whatever ``cli.main`` imports is paid
by every command (the FastAPI app alone cost ≈ 0.8 s). The wall-time goal lives in
``benchmarks/bench_cli.py``; this test holds the cause: the modules that make it slow.
"""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from cli.main import LAZY_COMMANDS, main

SERVER_SIDE = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "sqlalchemy",
    "httpx",
    "asyncio",
    "lwm2m.server",
    "lwm2m.store",
    "lwm2m.coap",
    "lifecycle.api",
    "bootstrap",
    "simulators",
)


def imported_by(statement: str) -> set[str]:
    """The modules a fresh interpreter imports to run ``statement`` (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    )
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_importing_the_cli_imports_no_server_code() -> None:
    names = imported_by("import cli.main")
    assert "cli.client" in names  # the measurement works
    heavy = sorted(n for n in names if n.split(".")[0] in SERVER_SIDE or n.startswith(SERVER_SIDE))
    assert not heavy, f"import cli.main pulls in server-side modules: {heavy}"


def test_help_lists_the_lazy_groups_without_importing_them() -> None:
    names = imported_by(
        "from click.testing import CliRunner; from cli.main import main; "
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0"
    )
    assert {"cli.main", "click.testing"} <= names
    loaded = sorted({m for m, _, _ in LAZY_COMMANDS.values()} & names)
    assert not loaded, f"--help imported {loaded}"


def test_every_lazy_group_loads_when_invoked() -> None:
    runner = CliRunner()
    listing = runner.invoke(main, ["--help"])
    assert listing.exit_code == 0
    for name in LAZY_COMMANDS:
        assert f"  {name} " in listing.output
        shown = runner.invoke(main, [name, "--help"])
        assert shown.exit_code == 0, (name, shown.output)
        assert "Usage:" in shown.output


def test_the_version_the_cli_prints_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    import cli

    assert cli.__version__ == version("fleetloop")
    shown = CliRunner().invoke(main, ["--version"])
    assert shown.output.strip() == f"fleetloop, version {cli.__version__}"
