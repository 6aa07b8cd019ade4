"""``fleetloop state``: desired vs reported state per device, desired values for a selection,
the devices out of line, and the named config bundles.

::

    fleetloop state show dev-1                         # side by side, drift highlighted
    fleetloop state bundle put eu-v7 @eu-v7.json       # register a bundle (immutable)
    fleetloop state set --select region=eu-west config=eu-v7 apn=iot.eu,iot.fleetloop \\
        flags.telemetry=on firmware=2.4.1@coap://fw.example/fw-2.4.1.bin
    fleetloop state drift --select region=eu-west

HTTP only (the API's ``/devices/{ep}/state``, ``/state``, ``/state/drift``,
``/config-bundles``); ``--json`` prints the API's JSON.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from cli.commands import api, ep_url, json_option, load_json_arg
from cli.output import print_json, table, widen

MARK = {
    "drifted": "!",
    "failed": "x",
    "pending": "~",
    "unknown": "?",
    "applied": "",
    "unmanaged": "",
}
COLOURS = {"drifted": "red", "failed": "red", "pending": "yellow", "unknown": "yellow"}


@click.group()
def state() -> None:
    """Desired vs reported state: show, set, drift; config bundles."""


def _brief(value: Any) -> str:
    """A desired or reported value in one short cell."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        if "version" in value and ("digest" in value or "staged_digest" in value or "uri" in value):
            return str(value["version"])
        if set(value) >= {"apns", "active"}:
            others = [a for a in value.get("apns") or [] if a != value.get("active")]
            return f"{value.get('active')}" + (f" (+{','.join(others)})" if others else "")
        if set(value) >= {"version"}:
            extra = value.get("result") or value.get("update_state")
            return f"{value['version']}" + (f" [{extra}]" if extra else "")
        return ",".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    return str(value)


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


@state.command("show")
@click.argument("endpoint")
@json_option
def show(endpoint: str, as_json: bool) -> None:
    """Desired and reported state of ENDPOINT per dimension; drift is highlighted."""
    with api() as client:
        found = client.request("GET", ep_url(endpoint, "state"))
    if as_json:
        print_json(found)
        return
    rows = []
    for dim in found["dimensions"]:
        status = dim["status"]
        generation = dim.get("generation")
        observed = dim.get("observed_generation")
        gens = f"{_or_dash(generation)}/{_or_dash(observed)}"
        rows.append(
            (
                dim["dimension"],
                _brief(dim.get("desired")),
                _brief(dim.get("reported")),
                gens,
                dim.get("policy") or "-",
                f"{status}{MARK.get(status, '')}",
                dim.get("detail") or "",
            )
        )
    registered = "registered" if found.get("registered") else "not registered"
    click.echo(f"{found['endpoint']} ({registered})")
    if not rows:
        click.echo("(no desired or reported state yet)")
        return
    text = table(
        ("DIMENSION", "DESIRED", "REPORTED", "GEN/SEEN", "POLICY", "STATUS", "DETAIL"), rows
    )
    lines = text.splitlines()
    click.echo(lines[0])
    for line, row in zip(lines[1:], rows, strict=True):
        status = row[5].rstrip("!x~?")
        colour = COLOURS.get(status)
        click.echo(click.style(line, fg=colour, bold=status == "drifted") if colour else line)


def parse_assignments(assignments: tuple[str, ...]) -> dict[str, Any]:
    """``firmware=2.4.1[@URI]``, ``config=NAME``, ``apn=a[,b]``, ``flags.k=v``,
    ``credentials=N``, ``esim=ICCID`` into the API's ``values``."""
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE (firmware=2.4.1@URI, config=NAME, apn=a,b, flags.k=v)",
                param_hint="ASSIGNMENTS",
            )
        if key.startswith("flags."):
            flag = key.removeprefix("flags.")
            if not flag:
                raise click.BadParameter(f"{item!r}: name the flag (flags.NAME=VALUE)")
            values.setdefault("flags", {})[flag] = value
        elif key in ("firmware", "fw"):
            version, at, uri = value.partition("@")
            values["firmware"] = {"version": version, "uri": uri} if at else version
        elif key == "credentials":
            try:
                values["credentials"] = {"generation": int(value)}
            except ValueError:
                raise click.BadParameter(
                    f"{item!r}: the credentials generation is a number"
                ) from None
        elif key in ("config", "apn", "connectivity", "esim"):
            values[key] = value
        else:
            raise click.BadParameter(
                f"unknown key {key!r}; use firmware, config, apn, flags.NAME, credentials, esim",
                param_hint="ASSIGNMENTS",
            )
    if not values:
        raise click.UsageError("give at least one KEY=VALUE (e.g. config=eu-v7)")
    return values


def _selection_options(f: Any) -> Any:
    f = click.option(
        "--endpoint", "endpoints", multiple=True, metavar="EP", help="a device (repeatable)"
    )(f)
    f = click.option("--select", "-s", metavar="SELECTOR", help="e.g. region=eu-west,sku=T1")(f)
    return f


@state.command("set")
@_selection_options
@click.argument("assignments", nargs=-1)
@click.option(
    "--policy",
    type=click.Choice(["enforce", "report-only"]),
    default="enforce",
    show_default=True,
    help="enforce: the reconciler applies it; report-only: drift is only reported",
)
@json_option
def set_state(
    select: str | None,
    endpoints: tuple[str, ...],
    assignments: tuple[str, ...],
    policy: str,
    as_json: bool,
) -> None:
    """Set desired state for a selection: firmware=2.4.1@URI config=NAME apn=a,b flags.k=v."""
    if select is None and not endpoints:
        raise click.UsageError("name the devices with --select SELECTOR and/or --endpoint EP")
    body = {
        "select": select,
        "endpoints": list(endpoints) or None,
        "values": parse_assignments(assignments),
        "policy": policy,
    }
    with api() as client:
        result = client.request("PUT", "/state", json_body=body)
    if as_json:
        print_json(result)
        return
    click.echo(
        f"{result['selected']} devices selected; {result['changed']} values changed "
        f"({result['policy']}); the reconciler applies them -- follow with `fleetloop state drift`"
    )


@state.command("drift")
@_selection_options
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pending", "drifted", "failed", "unknown"]),
    help="only these statuses (repeatable)",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@json_option
def drift(
    select: str | None,
    endpoints: tuple[str, ...],
    statuses: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """Devices out of line: pending, drifted, failed or unknown, per dimension."""
    params: dict[str, Any] = {
        "select": select,
        "endpoint": list(endpoints) or None,
        "status": list(statuses) or None,
        "limit": limit,
    }
    with api() as client:
        found = client.request("GET", "/state/drift", params=params)
    if as_json:
        print_json(found)
        return
    items = found["items"]
    if not items:
        click.echo("no device out of line")
        return
    rows = [
        (
            i["endpoint"],
            i["dimension"],
            _brief(i.get("desired")),
            _brief(i.get("reported")),
            i["status"],
            i.get("detail") or "",
        )
        for i in items
    ]
    headers, rows = widen(
        ("ENDPOINT", "DIMENSION", "DESIRED", "REPORTED", "STATUS", "DETAIL"),
        rows,
        items,
        (
            ("DESIRED (FULL)", lambda i: json.dumps(i.get("desired"), sort_keys=True)),
            ("REPORTED (FULL)", lambda i: json.dumps(i.get("reported"), sort_keys=True)),
        ),
    )
    click.echo(table(headers, rows))
    if found.get("truncated"):
        click.echo(f"(first {limit}; raise --limit or narrow --select)", err=True)


@state.group("bundle")
def bundle() -> None:
    """Named config bundles behind config=NAME (immutable once registered)."""


@bundle.command("put")
@click.argument("name")
@click.argument("content")
@json_option
def bundle_put(name: str, content: str, as_json: bool) -> None:
    """Register bundle NAME with CONTENT: a JSON object, inline or @file.json (@- stdin)."""
    data = load_json_arg(content, "CONTENT")
    if not isinstance(data, dict):
        raise click.BadParameter("a bundle is a JSON object", param_hint="CONTENT")
    with api() as client:
        made = client.request("PUT", f"/config-bundles/{quote(name, safe='')}", json_body=data)
    if as_json:
        print_json(made)
        return
    click.echo(f"bundle {made['name']}: sha-256 {made['digest']} ({made['size']} bytes)")


@bundle.command("list")
@json_option
def bundle_list(as_json: bool) -> None:
    """The registered config bundles."""
    with api() as client:
        found = client.request("GET", "/config-bundles")
    if as_json:
        print_json(found)
        return
    rows = [
        (b["name"], b["digest"][:16], b["size"], b["created_by"], b["created_at"]) for b in found
    ]
    headers, rows = widen(
        ("NAME", "SHA-256", "BYTES", "BY", "AT"),
        rows,
        found,
        (("SHA-256 (FULL)", lambda b: b.get("digest")),),
    )
    click.echo(table(headers, rows) if rows else "(no bundles)")


@bundle.command("show")
@click.argument("name")
def bundle_show(name: str) -> None:
    """One bundle with its content (JSON)."""
    with api() as client:
        found = client.request("GET", f"/config-bundles/{quote(name, safe='')}")
    click.echo(json.dumps(found, indent=2, ensure_ascii=False))


__all__ = ["parse_assignments", "state"]
