"""Named server contexts, like kubeconfig: ``fleetloop --context lab devices list``.

A context is a server the CLI can talk to: an API URL and token, or a data directory whose
``api.json`` names a local server. They live in ``contexts.json`` in the user's config
directory (``$XDG_CONFIG_HOME/fleetloop``, or the file ``FLEETLOOP_CONTEXTS`` names), mode
0600 because it holds tokens. One of them may be *current*; ``--context NAME`` (or
``FLEETLOOP_CONTEXT``) picks another for one command. ``FLEETLOOP_URL`` still wins over both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from cli.output import json_option, print_json, table, widen

CONTEXT_KEY = "fleetloop.context"
"""Where ``--context NAME`` leaves the name for this command (``click.Context.meta``)."""


class ContextError(Exception):
    """The contexts file is unreadable, or names no such context."""


def contexts_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("FLEETLOOP_CONTEXTS"):
        return Path(env["FLEETLOOP_CONTEXTS"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fleetloop" / "contexts.json"


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"current": None, "contexts": {}}
    except (OSError, ValueError) as err:
        raise ContextError(f"{path} is unreadable ({err}); fix or delete it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("contexts"), dict):
        raise ContextError(f"{path} is not a fleetloop contexts file; fix or delete it")
    return doc


def save(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=2)
    os.replace(temporary, path)


def selected(env: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]] | None:
    """The context for this command: ``FLEETLOOP_CONTEXT`` (what ``--context`` sets), else the
    current one; ``None`` when neither is set."""
    env = os.environ if env is None else env
    path = contexts_file(env)
    wanted = env.get("FLEETLOOP_CONTEXT", "").strip()
    if not wanted and not path.exists():
        return None
    doc = load(path)
    name = wanted or doc.get("current")
    if not name:
        return None
    found = doc["contexts"].get(name)
    if found is None:
        known = ", ".join(sorted(doc["contexts"])) or "none yet"
        raise ContextError(
            f"no context {name!r} in {path} (known: {known}); add it with "
            f"`fleetloop context add {name} --url URL --token TOKEN`"
        )
    return str(name), dict(found)


# -- fleetloop context ... ------------------------------------------------------------------------


@click.group()
def context() -> None:
    """Named servers to talk to (like kubeconfig): add, use, list, remove."""


@context.command("add")
@click.argument("name")
@click.option("--url", help="the server's API URL (http://host:port)")
@click.option("--token", help="an operator token for it (`fleetloop tokens create`)")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="instead of URL and token: a local server's data directory",
)
@click.option("--use", "make_current", is_flag=True, help="make it the current context")
def add(
    name: str, url: str | None, token: str | None, data_dir: Path | None, make_current: bool
) -> None:
    """Add (or replace) context NAME."""
    if data_dir is not None and (url or token):
        raise click.UsageError("give --data-dir, or --url with --token; not both")
    if data_dir is None and not (url and token):
        raise click.UsageError("give --url and --token (or --data-dir for a local server)")
    if url is not None and not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    path = contexts_file()
    doc = _load_or_fail(path)
    entry = {"data_dir": str(data_dir.resolve())} if data_dir else {"url": url, "token": token}
    doc["contexts"][name] = entry
    if make_current or not doc.get("current"):
        doc["current"] = name
    save(path, doc)
    click.echo(f"context {name} saved in {path}" + (" (current)" if doc["current"] == name else ""))


@context.command("use")
@click.argument("name")
def use(name: str) -> None:
    """Make NAME the current context."""
    path = contexts_file()
    doc = _load_or_fail(path)
    if name not in doc["contexts"]:
        raise click.BadParameter(f"no context {name!r}; see `fleetloop context list`")
    doc["current"] = name
    save(path, doc)
    click.echo(f"current context: {name}")


@context.command("list")
@json_option
def list_(as_json: bool) -> None:
    """The contexts; * marks the current one. Tokens are never shown."""
    doc = _load_or_fail(contexts_file())
    rows = [
        (
            "*" if name == doc.get("current") else "",
            name,
            entry.get("url") or f"data dir {entry.get('data_dir')}",
        )
        for name, entry in sorted(doc["contexts"].items())
    ]
    if as_json:  # tokens withheld
        print_json([{"current": r[0] == "*", "name": r[1], "server": r[2]} for r in rows])
        return
    entries = [entry for _, entry in sorted(doc["contexts"].items())]
    headers, rows = widen(
        ("", "NAME", "SERVER"),
        rows,
        entries,
        (
            ("TOKEN", lambda e: "set" if e.get("token") else "from the data dir"),
            ("DATA DIR", lambda e: e.get("data_dir")),
        ),
    )
    click.echo(table(headers, rows) if rows else "no contexts yet")


@context.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Forget context NAME."""
    path = contexts_file()
    doc = _load_or_fail(path)
    if doc["contexts"].pop(name, None) is None:
        raise click.BadParameter(f"no context {name!r}; see `fleetloop context list`")
    if doc.get("current") == name:
        doc["current"] = None
    save(path, doc)
    click.echo(f"context {name} removed")


def _load_or_fail(path: Path) -> dict[str, Any]:
    try:
        return load(path)
    except ContextError as err:
        raise click.ClickException(str(err)) from None
