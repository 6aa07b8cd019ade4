"""``fleetloop tokens``: create, list and revoke named operator tokens (admin).

Through the management API (``/tokens``, docs/OPERATORS.md). ``create`` prints the token text
once -- the server keeps only its hash -- with the line to use it::

    export FLEETLOOP_TOKEN=flt_3f9c0a1b2c4d_...
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli.commands import api, json_option
from cli.output import print_json, table, widen


@click.group()
def tokens() -> None:
    """Operator tokens: who may call the API, with which role, for which tenants."""


@tokens.command("create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "admin"]),
    required=True,
    help="viewer reads; operator also changes devices; admin also manages tokens, "
    "credentials, identities and policies",
)
@click.option(
    "--tenant",
    "tenants",
    multiple=True,
    metavar="TENANT",
    help="limit the token to this tenant (repeat for several); default: every tenant",
)
@json_option
def create(name: str, role: str, tenants: tuple[str, ...], as_json: bool) -> None:
    """Create the token NAME and print it (shown this once: store it now)."""
    body: dict[str, Any] = {"name": name, "role": role, "tenants": list(tenants) or None}
    with api() as client:
        made = client.request("POST", "/tokens", json_body=body)
    if as_json:
        print_json(made)
        return
    scope = ", ".join(made["tenants"]) if made["tenants"] else "every tenant"
    click.echo(f"created token {made['name']!r} (id {made['id']}): {made['role']}, {scope}")
    click.echo(made["token"])
    click.echo(
        "store it now: it is not shown again. Use it with\n"
        f"  export FLEETLOOP_TOKEN={made['token']}",
        err=True,
    )


@tokens.command("list")
@click.option("--revoked", is_flag=True, help="include revoked tokens")
@json_option
def list_(revoked: bool, as_json: bool) -> None:
    """The tokens (never their text), oldest first."""
    with api() as client:
        found = client.request("GET", "/tokens", params={"revoked": revoked or None})
    if as_json:
        print_json(found)
        return
    items = found["items"]
    if not items:
        click.echo("(no named tokens; the serve token is the all-tenant admin)")
        return
    rows = [
        (
            t["id"],
            t["name"],
            t["role"],
            ",".join(t["tenants"]) if t["tenants"] else "*",
            t["created_at"],
            t["last_used_at"],
            t["revoked_at"],
        )
        for t in items
    ]
    headers, wide_rows = widen(
        ("ID", "NAME", "ROLE", "TENANTS", "CREATED", "LAST USED", "REVOKED"),
        rows,
        items,
        (("CREATED BY", lambda t: t.get("created_by")),),
    )
    click.echo(table(headers, wide_rows))


@tokens.command("revoke")
@click.argument("token")
@json_option
def revoke(token: str, as_json: bool) -> None:
    """Revoke TOKEN (its id or name); requests with it are refused from now on."""
    with api() as client:
        done = client.request("DELETE", f"/tokens/{quote(token, safe='')}")
    if as_json:
        print_json(done)
        return
    click.echo(f"revoked token {done['name']!r} (id {done['id']})")


__all__ = ["tokens"]
