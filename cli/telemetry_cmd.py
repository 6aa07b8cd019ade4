"""``fleetloop history ENDPOINT PATH``: what a device reported for one resource, over time.

The first question when a device misbehaves is "what did it say, and when" -- the battery
before it went silent, the signal strength the night its Updates stopped, the firmware version
after a campaign. This reads the server's telemetry history (``GET /v1/devices/{ep}/telemetry/
{path}``), newest first, and works for a device that is no longer registered.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cli.audit_cmd import since_value
from cli.commands import api, json_option, output_format
from cli.output import print_json, show_value, table


@click.command("history")
@click.argument("endpoint")
@click.argument("path")
@click.option("--since", help="1h, 30m, 2d ago, or ISO 8601 / epoch seconds")
@click.option("--until", help="1h, 30m, 2d ago, or ISO 8601 / epoch seconds")
@click.option("--oldest", is_flag=True, help="oldest first (default: newest first)")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", help="next page: the cursor the previous page printed")
@json_option
def history(
    endpoint: str,
    path: str,
    since: str | None,
    until: str | None,
    oldest: bool,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Values ENDPOINT reported for the resource PATH (like /3/0/9), newest first.

    \b
    fleetloop history meter-7 /3/0/9 --since 1h
    fleetloop history meter-7 /4/0/2 --since 2d --oldest -o json
    """
    params: dict[str, Any] = {
        "since": since_value(since),
        "until": since_value(until),
        "order": "oldest" if oldest else "newest",
        "limit": limit,
        "cursor": cursor,
    }
    where = f"/devices/{quote(endpoint, safe='')}/telemetry/{quote(path.strip('/'), safe='/')}"
    with api() as client:
        page = client.request("GET", where, params=params)
    if as_json:
        print_json(page)
        return
    items = page["items"]
    if not items:
        click.echo(f"no values of {page['path']} from {endpoint} in that time")
        return
    wide = output_format() == "wide"
    headers = ("AT", "VALUE", "SOURCE", *(("TYPE", "AT EPOCH") if wide else ()))
    rows = [
        (
            item.get("at") or "-",
            show_value(item),
            item["source"],
            *((item["type"], item.get("at_epoch")) if wide else ()),
        )
        for item in items
    ]
    name = f" ({page['name']})" if page.get("name") else ""
    click.echo(f"{endpoint} {page['path']}{name}")
    click.echo(table(headers, rows))
    if page.get("next_cursor") is not None:
        click.echo(f"(more: --cursor {page['next_cursor']})")
