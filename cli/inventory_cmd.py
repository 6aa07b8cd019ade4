"""``fleetloop inventory`` and ``fleetloop groups``: the device records, selectors and groups.

Every command goes through the management API (``/inventory``, ``/groups``); selectors are
checked by the server, which answers a mistake with the position and the fix (printed as
``error: ...``, exit 1). Selector syntax: docs/GROUPS.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli.client import ApiClient
from cli.commands import api, json_option
from cli.output import print_json, table, widen

SELECT_HELP = "a selector, e.g. region=eu-west,sku=T1,label:pilot,firmware<2.3.0"


def _device_url(endpoint: str, *tail: str) -> str:
    return "/".join((f"/inventory/{quote(endpoint, safe='')}", *tail))


def _group_url(name: str, *tail: str) -> str:
    return "/".join((f"/groups/{quote(name, safe='')}", *tail))


def _labels_text(labels: dict[str, str]) -> str:
    return ";".join(k if v == "" else f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _all_pages(client: ApiClient, path: str, params: dict[str, Any]) -> tuple[list[Any], Any]:
    """Every item of a cursor-paged listing, and the first page (for its other fields)."""
    items: list[Any] = []
    cursor: str | None = None
    first: Any = None
    while True:
        page = client.request("GET", path, params={**params, "cursor": cursor, "limit": 1000})
        first = first if first is not None else page
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, first


# -- inventory ------------------------------------------------------------------------------------


@click.group()
def inventory() -> None:
    """Device records: identity, registration, reported facts, lifecycle stage, labels."""


@inventory.command("list")
@click.option("--select", "selector", default="", help=SELECT_HELP)
@json_option
def list_(selector: str, as_json: bool) -> None:
    """The devices matching --select (all pages), in endpoint order."""
    with api() as client:
        items, first = _all_pages(client, "/inventory", {"select": selector or None})
    if as_json:
        print_json(items)
        return
    rows = [
        (d["endpoint"], d["tenant"], d["region"], d["sku"], d["carrier"], d["stage"],
         d["firmware"], d["registered"], _labels_text(d["labels"]))
        for d in items
    ]  # fmt: skip
    headers, rows = widen(
        ("ENDPOINT", "TENANT", "REGION", "SKU", "CARRIER", "STAGE", "FIRMWARE", "REG", "LABELS"),
        rows,
        items,
        (
            ("COUNTRY", lambda d: d.get("country")),
            ("SERIAL", lambda d: d.get("serial")),
            ("IMEI", lambda d: d.get("imei")),
            ("MODEL", lambda d: d.get("model")),
            ("RADIO", lambda d: d.get("radio")),
            ("LAST SEEN", lambda d: d.get("last_seen")),
        ),
    )
    click.echo(table(headers, rows) if rows else "(no devices match)")
    click.echo(f"{first['count']} device(s) match {first['select'] or '(everything)'}")


@inventory.command("show")
@click.argument("endpoint")
@json_option
def show(endpoint: str, as_json: bool) -> None:
    """One device's record, with its stage history and groups."""
    with api() as client:
        record = client.request("GET", _device_url(endpoint))
    if as_json:
        print_json(record)
        return
    skip = {"stage_history", "labels", "iccids", "groups", "last_seen_epoch"}
    rows = [(k, v) for k, v in record.items() if k not in skip]
    rows += [
        ("iccids", ", ".join(record["iccids"]) or "-"),
        ("labels", _labels_text(record["labels"])),
        ("groups", ", ".join(record["groups"] or []) or "-"),
        ("history", " -> ".join(f"{m['stage']} ({m['at']})" for m in record["stage_history"])),
    ]
    click.echo(table(("FIELD", "VALUE"), rows))


def _label_pair(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if not name.strip():
        raise click.BadParameter(f"{text!r}: write NAME=VALUE or NAME", param_hint="--add")
    return name.strip(), value.strip()


def _bulk_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    click.echo(f"{result['action']}: {result['count']} device(s) changed ({result['select']})")


@inventory.command("label")
@click.option("--select", "selector", required=True, help=SELECT_HELP)
@click.option("--add", "add", multiple=True, help="NAME=VALUE or NAME (a flag); repeatable")
@click.option("--remove", "remove", multiple=True, help="a label name; repeatable")
@json_option
def label(selector: str, add: tuple[str, ...], remove: tuple[str, ...], as_json: bool) -> None:
    """Add and remove labels on every selected device (one audit record)."""
    if not add and not remove:
        raise click.UsageError("give --add NAME=VALUE and/or --remove NAME")
    body = {
        "select": selector,
        "labels": {"add": dict(_label_pair(a) for a in add), "remove": list(remove)},
    }
    with api() as client:
        _bulk_result(client.request("POST", "/inventory/bulk", json_body=body), as_json)


@inventory.command("move")
@click.option("--select", "selector", required=True, help=SELECT_HELP)
@click.option("--region")
@click.option("--policy-group")
@json_option
def move(selector: str, region: str | None, policy_group: str | None, as_json: bool) -> None:
    """Move every selected device to another region or policy group (one audit record)."""
    if (region is None) == (policy_group is None):
        raise click.UsageError("give exactly one of --region or --policy-group")
    body: dict[str, Any] = {"select": selector}
    body["region" if region is not None else "policy_group"] = region or policy_group
    with api() as client:
        _bulk_result(client.request("POST", "/inventory/bulk", json_body=body), as_json)


@inventory.command("stage")
@click.argument("endpoint")
@click.argument("action", type=click.Choice(["suspend", "resume", "retire"]))
@json_option
def stage(endpoint: str, action: str, as_json: bool) -> None:
    """Suspend, resume or retire one device."""
    with api() as client:
        record = client.request(
            "POST", _device_url(endpoint, "stage"), json_body={"action": action}
        )
    if as_json:
        print_json(record)
        return
    click.echo(f"{record['endpoint']}: {record['stage']}")


# -- groups ---------------------------------------------------------------------------------------


@click.group()
def groups() -> None:
    """Named device groups: dynamic (members follow the selector) or snapshot (fixed)."""


def _group_rows(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (g["name"], g["tenant"], g["kind"], g["members"], g["select"] or "(everything)")
        for g in items
    ]


_GROUP_HEADERS = ("NAME", "TENANT", "KIND", "MEMBERS", "SELECT")


@groups.command("create")
@click.argument("name")
@click.option("--select", "selector", required=True, help=SELECT_HELP)
@click.option("--snapshot", is_flag=True, help="freeze today's members instead of following")
@click.option("--tenant", help="the group's tenant (default: the token's only tenant)")
@json_option
def create(name: str, selector: str, snapshot: bool, tenant: str | None, as_json: bool) -> None:
    """Create group NAME from --select."""
    body = {
        "name": name,
        "select": selector,
        "kind": "snapshot" if snapshot else "dynamic",
        "tenant": tenant,
    }
    with api() as client:
        group = client.request("POST", "/groups", json_body=body)
    if as_json:
        print_json(group)
        return
    click.echo(f"group {group['name']} ({group['kind']}): {group['members']} member(s)")


@groups.command("list")
@json_option
def list_groups(as_json: bool) -> None:
    """The groups this token sees."""
    with api() as client:
        items = client.request("GET", "/groups")["items"]
    if as_json:
        print_json(items)
        return
    headers, rows = widen(
        _GROUP_HEADERS,
        _group_rows(items),
        items,
        (("CREATED BY", lambda g: g.get("created_by")), ("CREATED", lambda g: g.get("created_at"))),
    )
    click.echo(table(headers, rows) if items else "(no groups)")


@groups.command("show")
@click.argument("name")
@click.option("--tenant", help="which tenant's group, when several have this name")
@json_option
def show_group(name: str, tenant: str | None, as_json: bool) -> None:
    with api() as client:
        group = client.request("GET", _group_url(name), params={"tenant": tenant})
    if as_json:
        print_json(group)
        return
    click.echo(table(("FIELD", "VALUE"), list(group.items())))


@groups.command("members")
@click.argument("name")
@click.option("--tenant", help="which tenant's group, when several have this name")
@json_option
def members(name: str, tenant: str | None, as_json: bool) -> None:
    """Every member of group NAME, since when."""
    with api() as client:
        items, _ = _all_pages(client, _group_url(name, "members"), {"tenant": tenant})
    if as_json:
        print_json(items)
        return
    rows = [(m["endpoint"], m["since"]) for m in items]
    click.echo(table(("ENDPOINT", "SINCE"), rows) if rows else "(no members)")


@groups.command("delete")
@click.argument("name")
@click.option("--tenant", help="which tenant's group, when several have this name")
@json_option
def delete(name: str, tenant: str | None, as_json: bool) -> None:
    """Delete group NAME (its devices stay)."""
    with api() as client:
        group = client.request("DELETE", _group_url(name), params={"tenant": tenant})
    if as_json:
        print_json(group)
        return
    click.echo(f"group {group['name']} deleted ({group['members']} member(s) released)")


__all__ = ["groups", "inventory"]
