"""``fleetloop status`` (is the server healthy, how busy, where it listens) and ``fleetloop
watch`` (the server's events as they happen: registrations, notifications, audit records).

Both talk to the API only (``GET /v1/status``, ``GET /v1/events``); ``watch`` ends on Ctrl-C
or SIGTERM like ``observe``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cli.commands import api, json_option, stop_on_sigterm
from cli.output import print_json, table

EVENT_TYPES = (
    "registered",
    "updated",
    "deregistered",
    "expired",
    "registration_refused",
    "notification",
    "send",
    "queue_state",
    "observation_ended",
)


@click.command()
@json_option
def status(as_json: bool) -> None:
    """The server: version, uptime, ports, devices registered, store and load."""
    with api() as client:
        found = client.request("GET", "/status")
    if as_json:
        print_json(found)
        return
    ports = found["ports"]
    load = found["load"]
    rows = [
        ("version", found["version"]),
        ("up since", f"{found['started_at']} ({_duration(found['uptime_s'])})"),
        *((f"port {name}", ports.get(name) or "off") for name in sorted(ports)),
        ("devices registered", found["devices_registered"]),
        ("devices sleeping", found["devices_sleeping"]),
        ("observations", found["observations"]),
        ("store", found["store"]),
        ("load (1/5/15 min)", f"{load['load1']:.2f} {load['load5']:.2f} {load['load15']:.2f}"),
        ("server CPU", f"{load['cpu_s']} s, {load['max_rss_mb']} MB max RSS"),
    ]
    click.echo(table(("SERVER", ""), rows))


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def describe(event: str, data: Any) -> str:
    """One line per event, for people."""
    if not isinstance(data, dict):
        return f"{event}: {data}"
    endpoint = data.get("endpoint", "")
    if event in ("registered", "updated"):
        device = data.get("device") or {}
        return f"{event:<13} {endpoint}  {device.get('address', '')}"
    if event == "notification":
        values = []
        for node in data.get("content", []):
            if "value" in node:
                values.append(f"{node.get('path')}={node.get('value')}")
        return f"{event:<13} {endpoint}  {' '.join(values) or data.get('paths')}"
    if event == "registration_refused":
        return f"{event:<13} {endpoint}  {data.get('reason')} ({data.get('code')})"
    rest = {k: v for k, v in data.items() if k not in ("type", "endpoint")}
    return f"{event:<13} {endpoint}  {json.dumps(rest, ensure_ascii=False)}"


@click.command()
@click.option("--endpoint", "endpoints", multiple=True, help="only this device (repeatable)")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice(EVENT_TYPES),
    help="only this kind of event (repeatable)",
)
@click.option("--count", type=click.IntRange(min=1), help="stop after this many events")
@json_option
def watch(
    endpoints: tuple[str, ...], types: tuple[str, ...], count: int | None, as_json: bool
) -> None:
    """Stream the server's events as they happen (registrations, notifications, ...) until
    Ctrl-C; ``--json`` prints one JSON object per line."""
    seen = 0
    with api() as client:
        events = client.events({"endpoint": list(endpoints) or None, "type": list(types) or None})
        try:
            stop_on_sigterm()
            for event, data in events:
                if event == "ready":
                    click.echo("watching events; Ctrl-C to stop", err=True)
                    continue
                if as_json:
                    click.echo(json.dumps({"event": event, "data": data}, ensure_ascii=False))
                else:
                    click.echo(describe(event, data))
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            events.close()
