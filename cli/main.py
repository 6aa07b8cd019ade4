"""Entry point of the ``fleetloop`` console script.

Every operator command lives under this group; commands that act on a running server talk to
its HTTP management API (found from ``FLEETLOOP_URL``/``FLEETLOOP_TOKEN`` or the data dir).

Failures print one line on stderr (``error: ...``) and exit non-zero -- 1 when the request
failed, 2 for usage errors, 3 when no server could be reached (see :mod:`cli.client`). A
traceback is never shown to an operator; ``FLEETLOOP_DEBUG=1`` shows it for bug reports.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli import __version__
from cli.client import CliFailure
from cli.commands import ALL_COMMANDS
from cli.contexts import CONTEXT_KEY, context
from cli.settings import LOG_FORMATS, LOG_LEVELS
from cli.status_cmd import status, watch

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, not an operator mistake

LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "apn-profile": ("cli.artifacts_cmd", "apn_profile", "APN profiles per carrier / country."),
    "audit": ("cli.audit_cmd", "audit", "The one audit log: who changed what; verify, prove."),
    "bundle": ("cli.artifacts_cmd", "bundle", "Versioned config bundles: publish, diff."),
    "campaign": ("cli.campaign_cmd", "campaign", "Staged roll-outs with health gates."),
    "credentials": ("cli.artifacts_cmd", "credentials", "Rotate DM credentials, renew certs."),
    "bootstrap": ("cli.bootstrap_cmd", "bootstrap", "Bootstrap policies, status, audit trail."),
    "esim": ("cli.esim_cmd", "esim", "eSIM (SGP.32 eIM): eUICCs, profiles, packages."),
    "firmware": ("cli.firmware_cmd", "firmware", "Firmware images: upload, quarantine."),
    "groups": ("cli.inventory_cmd", "groups", "Named device groups: dynamic or snapshot."),
    "history": ("cli.telemetry_cmd", "history", "What a device reported for PATH over time."),
    "identities": ("cli.identities_cmd", "identities", "Factory identities of the devices."),
    "inventory": ("cli.inventory_cmd", "inventory", "Device records, stages and labels."),
    "rebootstrap": ("cli.bootstrap_cmd", "rebootstrap", "Send a device back to bootstrap."),
    "sim": ("cli.sim_cmd", "sim", "Simulated devices and fleets against a server."),
    "state": ("cli.state_cmd", "state", "Desired vs reported state, drift, config bundles."),
    "tokens": ("cli.tokens_cmd", "tokens", "Operator tokens: roles and tenants."),
}
"""Command groups imported only when invoked: ``(module, attribute, one-line help)``.

Some of them reach into server-side code (the simulator, the bootstrap CA, the audit
checkpoint verifier); loading them for every ``fleetloop`` call would cost each command
hundreds of milliseconds (``benchmarks/bench_cli.py``, ``tests/cli/test_import_cost.py``).
"""


class FleetloopGroup(click.Group):
    """A click group that turns every failure into one line and an exit code, and loads the
    command groups of :data:`LAZY_COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module_name, attribute, _ = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """``--help`` lists the lazy groups by their one-line help, without importing them."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit=formatter.width)))
            else:
                rows.append((name, LAZY_COMMANDS[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliFailure as failure:
            click.echo(f"error: {failure.message}", err=True)
            ctx.exit(failure.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            ctx.exit(130)
        except BrokenPipeError:
            # `fleetloop devices list | head`: the reader left; stop quietly, as a Unix tool
            # does (no error line: nothing is wrong). Point stdout at /dev/null so the
            # interpreter's final flush does not raise again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except Exception as err:
            if os.environ.get("FLEETLOOP_DEBUG"):
                raise
            click.echo(
                f"error: internal error ({type(err).__name__}: {err}); rerun with "
                "FLEETLOOP_DEBUG=1 for the traceback and report it",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=FleetloopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="fleetloop")
@click.option(
    "--context",
    "context_name",
    metavar="NAME",
    help="talk to this named server (`fleetloop context list`; env FLEETLOOP_CONTEXT)",
)
def main(context_name: str | None) -> None:
    """fleetloop — LwM2M bootstrap + device management for cellular IoT fleets.

    Start the server with `fleetloop serve`; the other commands talk to it, finding it through
    FLEETLOOP_URL + FLEETLOOP_TOKEN or the data directory (FLEETLOOP_DATA_DIR, default
    ~/.local/share/fleetloop) where `serve` records its address and token, or a named
    context (`--context NAME`, `fleetloop context add`).
    """
    if context_name:
        click.get_current_context().meta[CONTEXT_KEY] = context_name


def _listen_option(flag: str, help_text: str) -> Callable[[F], F]:
    return click.option(flag, metavar="[HOST:]PORT", help=help_text)


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (env FLEETLOOP_CONFIG); flags and env override it",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="database, token and api.json (default: $XDG_DATA_HOME/fleetloop)",
)
@_listen_option("--coap", "DM server CoAP port (default 5683; 0: any free port)")
@_listen_option("--coaps", "DM server CoAPs/DTLS port (default 5684; off: disabled)")
@_listen_option("--bs-coap", "bootstrap CoAP port (default 5783; off: disabled)")
@_listen_option("--bs-coaps", "bootstrap CoAPs port (default 5784; off: disabled)")
@_listen_option("--api", "management API address (default 127.0.0.1:8080)")
@click.option("--database-url", metavar="URL", help="postgresql+psycopg://... (default: SQLite)")
@click.option(
    "--secure-only/--no-secure-only",
    default=None,
    help="refuse plain-CoAP registration without a per-endpoint NoSec grant",
)
@click.option(
    "--objects",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder of OMA DDF XML object definitions (repeatable)",
)
@click.option(
    "--x509-cert", type=click.Path(dir_okay=False, path_type=Path), help="server cert chain (PEM)"
)
@click.option(
    "--x509-key", type=click.Path(dir_okay=False, path_type=Path), help="server key (PEM)"
)
@click.option("--x509-ca", type=click.Path(dir_okay=False, path_type=Path), help="device CA (PEM)")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), help="kv (default) or json lines")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="default: info")
@_listen_option("--esipa-https", "eIM ESipa HTTPS listener (default off; docs/SGP32.md)")
@click.option("--eim-id", metavar="TEXT", help="the eIM's eimId (default eim.fleetloop.local)")
@click.option("--eim-ci", type=click.Path(dir_okay=False, path_type=Path), help="eUICC CIs (PEM)")
@click.option(
    "--eim-identities",
    type=click.Path(dir_okay=False, path_type=Path),
    help="more eIM identities: JSON [{eim_id, key, certificate}] (docs/ESIM.md)",
)
@click.option("--telemetry-max-age", metavar="DURATION", help="history kept (default 30d; off)")
@click.option("--telemetry-max-rows", metavar="N", help="history rows per device (100000; off)")
@click.option("--telemetry-retention-interval", metavar="DURATION", help="default 60s")
@click.option(
    "--ephemeral-ports/--no-ephemeral-ports",
    default=None,
    help="every listener (CoAP, CoAPs, bootstrap, API, eIM) on a free port; the ready line, "
    "api.json and `fleetloop status` name the ports bound",
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the LwM2M DM server (CoAP + CoAPs) and the management API until SIGINT/SIGTERM.

    Every setting is also an environment variable (FLEETLOOP_COAP, ...) and a TOML key;
    precedence: flag > environment > --config file > default (docs/CONFIG.md).
    """
    import asyncio

    from cli import logs
    from cli import serve as serving
    from cli import settings as settings_mod
    from cli.datadir import DataDirError
    from cli.settings import SettingsError
    from lwm2m.store import StoreError

    try:
        settings = settings_mod.load(flags, config_file=config_file)
    except SettingsError as err:
        raise CliFailure(str(err), 2) from None
    logs.configure(settings.log_format, settings.log_level)
    try:
        asyncio.run(serving.serve(settings))
    except (serving.ServeError, DataDirError, StoreError) as err:
        raise CliFailure(str(err)) from None
    sys.exit(0)


for _command in ALL_COMMANDS:
    main.add_command(_command)
main.add_command(status)
main.add_command(context)
main.add_command(watch)
main.add_command(watch, "events")  # the same stream, by the API's name for it


if __name__ == "__main__":  # pragma: no cover
    main()
