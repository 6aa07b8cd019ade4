"""``fleetloop identities``: import, list, show, revoke and move factory identities.

Every command goes through the management API (``/identities``, ``docs/API.md``). ``import``
always checks first (a dry run on the server, against the database) and prints the rejected
rows; without ``--allow-partial`` a file with a rejected row imports nothing and the command
exits 1 -- a production batch is either complete or absent.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from cli.client import CliFailure
from cli.commands import api, json_option
from cli.output import print_json, table, widen


def actor() -> str:
    """Who is asking, for the audit trail: the login name (``cli`` when there is none)."""
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def ident_url(endpoint: str, *tail: str) -> str:
    base = f"/identities/{quote(endpoint, safe='')}"
    return "/".join((base, *tail)) if tail else base


def _rejection_rows(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (r["row"] or "file", r["endpoint"], r["reason"], r["field"], r["message"])
        for r in report["rejected"]
    ]


@click.group()
def identities() -> None:
    """Factory identities: what the factory knows about each device before it connects."""


@identities.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="check everything, import nothing")
@click.option("--allow-partial", is_flag=True, help="import the good rows even if some fail")
@click.option(
    "--format", "file_format", type=click.Choice(["csv", "json"]), help="default: by name"
)
@json_option
def import_(
    file: Path, dry_run: bool, allow_partial: bool, file_format: str | None, as_json: bool
) -> None:
    """Import FILE (CSV with a header row, or JSON); see docs/IMPORTING_IDENTITIES.md.

    \b
    columns: endpoint (required), serial, hardware_id, imei, eid, sku, tenant, region,
             policy_group, security_mode (nosec|psk|x509, default psk), psk_identity,
             psk_key (hex)
    """
    try:
        content = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise click.BadParameter(f"cannot read {file}: {err}", param_hint="FILE") from None
    body = {
        "content": content,
        "source": file.name,
        "format": file_format,
        "dry_run": True,
        "allow_partial": allow_partial,
        "actor": actor(),
    }
    with api() as client:
        report = client.request("POST", "/identities/import", json_body=body)
        blocked = bool(report["rejected"]) and not allow_partial
        if not dry_run and not blocked:
            report = client.request(
                "POST", "/identities/import", json_body={**body, "dry_run": False}
            )
    if as_json:
        print_json(report)
    else:
        if report["rejected"]:
            click.echo(
                table(("ROW", "ENDPOINT", "REASON", "FIELD", "MESSAGE"), _rejection_rows(report))
            )
        click.echo(report["summary"])
        for endpoint, (cert, key) in sorted(report["issued_certificates"].items()):
            click.echo(f"certificate for {endpoint}: {cert} (key {key}, mode 0600)")
    if dry_run and report["rejected"] and not allow_partial:
        # a dry run gates a CI job: rejected rows must fail it
        raise CliFailure(
            f"dry run: {len(report['rejected'])} of {report['rows']} rows would be rejected "
            "-- fix them before importing (or import with --allow-partial)"
        )
    if blocked and not dry_run:
        raise CliFailure(
            f"{len(report['rejected'])} of {report['rows']} rows rejected; nothing was imported "
            "-- fix the rows, or use --allow-partial to import the others"
        )


@identities.command("list")
@click.option("--tenant")
@click.option("--region")
@click.option("--sku")
@click.option("--policy-group")
@click.option("--status", type=click.Choice(["active", "revoked"]))
@click.option("--batch", help="an import batch id (from the import report)")
@click.option(
    "--select", metavar="SELECTOR", help="only devices the selector names (carrier=tmo,label:x)"
)
@json_option
def list_(
    select: str | None,
    tenant: str | None,
    region: str | None,
    sku: str | None,
    policy_group: str | None,
    status: str | None,
    batch: str | None,
    as_json: bool,
) -> None:
    """Identities in endpoint order (all pages)."""
    params = {
        "tenant": tenant,
        "region": region,
        "sku": sku,
        "policy_group": policy_group,
        "status": status,
        "batch": batch,
        "select": select,
        "limit": 1000,
    }
    items: list[dict[str, Any]] = []
    after: str | None = None
    with api() as client:
        while True:
            page = client.request("GET", "/identities", params={**params, "after": after})
            items.extend(page["items"])
            after = page["next_after"]
            if after is None:
                break
    if as_json:
        print_json(items)
        return
    if not items:
        click.echo("no identities")
        return
    rows = [
        (
            i["endpoint"],
            i["security_mode"],
            i["tenant"],
            i["region"],
            i["sku"],
            i["policy_group"],
            i["serial"],
            i["status"],
        )
        for i in items
    ]
    headers, wide_rows = widen(
        ("ENDPOINT", "MODE", "TENANT", "REGION", "SKU", "GROUP", "SERIAL", "STATUS"),
        rows,
        items,
        (
            ("COUNTRY", lambda i: i.get("country")),
            ("CARRIER", lambda i: i.get("carrier")),
            ("IMEI", lambda i: i.get("imei")),
            ("BATCH", lambda i: i.get("batch")),
            ("CREATED", lambda i: i.get("created_at")),
        ),
    )
    click.echo(table(headers, wide_rows))


@identities.command("show")
@click.argument("endpoint")
@json_option
def show(endpoint: str, as_json: bool) -> None:
    """One identity (by endpoint, serial, IMEI, EID or PSK identity) and its bootstrap state."""
    with api() as client:
        found = client.request("GET", ident_url(endpoint))
    if as_json:
        print_json(found)
        return
    bootstrap = found["bootstrap"]
    rows = [
        (name, found[name])
        for name in (
            "endpoint",
            "status",
            "security_mode",
            "psk_identity",
            "certificate_fingerprint",
            "serial",
            "hardware_id",
            "imei",
            "eid",
            "sku",
            "tenant",
            "region",
            "policy_group",
            "import_batch",
            "created_at",
            "revoked_at",
            "revoked_reason",
        )
    ]
    rows.append(("bootstrap", bootstrap["phase"]))
    click.echo(table(("FIELD", "VALUE"), rows))


@identities.command("revoke")
@click.argument("endpoint")
@click.option("--reason", required=True, help="why (recorded in the audit trail)")
@json_option
def revoke(endpoint: str, reason: str, as_json: bool) -> None:
    """Revoke ENDPOINT: it can never bootstrap again; its certificates are revoked."""
    with api() as client:
        result = client.request(
            "POST", ident_url(endpoint, "revoke"), json_body={"reason": reason, "actor": actor()}
        )
    if as_json:
        print_json(result)
        return
    click.echo(f"revoked {result['endpoint']}: {result['revoked_reason']}")


def move_options(f: Any) -> Any:
    for name in ("--policy-group", "--sku", "--region", "--tenant"):
        f = click.option(name, help="new value ('' clears it)")(f)
    return f


def move_body(**values: str | None) -> dict[str, str | None]:
    return {k: v for k, v in values.items() if v is not None}


@identities.command("move")
@click.argument("endpoint")
@move_options
@json_option
def move(
    endpoint: str,
    tenant: str | None,
    region: str | None,
    sku: str | None,
    policy_group: str | None,
    as_json: bool,
) -> None:
    """Change ENDPOINT's tenant/region/SKU/group (its next bootstrap follows them); to make it
    bootstrap now, use `fleetloop rebootstrap ENDPOINT --region ...` instead."""
    body = move_body(tenant=tenant, region=region, sku=sku, policy_group=policy_group)
    if not body:
        raise click.UsageError("give at least one of --tenant, --region, --sku, --policy-group")
    with api() as client:
        result = client.request("PATCH", ident_url(endpoint), json_body={**body, "actor": actor()})
    if as_json:
        print_json(result)
        return
    click.echo(
        f"{result['endpoint']}: tenant={result['tenant']} region={result['region']} "
        f"sku={result['sku']} policy_group={result['policy_group']}"
    )


__all__ = ["actor", "identities", "move_body", "move_options"]
