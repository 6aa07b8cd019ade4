"""``fleetloop status`` (is the server healthy, how busy, where it listens) and ``fleetloop
watch`` (the server's events as they happen: registrations, notifications, campaign progress
and audit records; ``--kind registration,campaign,audit`` selects).

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
    "campaign_progress",
    "campaign_wave",
    "campaign_state",
    "campaign_revert",
    "campaign_quarantine",
    "audit",
)
EVENT_KINDS = ("registration", "notification", "queue", "campaign", "audit")
"""Families of event types (``GET /v1/events?kind=``; docs/API.md, Event stream)."""


def _kinds(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    kinds: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name not in EVENT_KINDS:
                raise click.BadParameter(
                    f"{name!r} is not a kind of event; use {', '.join(EVENT_KINDS)}"
                )
            kinds.append(name)
    return kinds


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
    if event.startswith("campaign_"):
        return _describe_campaign(event, data)
    if event == "audit":
        devices = ",".join(data.get("endpoints") or [])
        who = f"{data.get('actor')} {data.get('action')} {data.get('subject')}"
        return f"{event:<13} #{data.get('seq')} {who} {devices} ({data.get('outcome')})".rstrip()
    rest = {k: v for k, v in data.items() if k not in ("type", "endpoint")}
    return f"{event:<13} {endpoint}  {json.dumps(rest, ensure_ascii=False)}"


def _describe_campaign(event: str, data: dict[str, Any]) -> str:
    kind = data.get("event")
    head = f"{event:<13} {data.get('campaign', '')}"
    if kind == "wave":
        return f"{head}  wave {data.get('wave')} {data.get('state')}"
    if kind == "state":
        reason = f": {data['reason']}" if data.get("reason") else ""
        return f"{head}  {data.get('state')}{reason}"
    if kind == "revert":
        return f"{head}  reverting {data.get('devices')} device(s): {data.get('reason')}"
    if kind == "progress":
        counts = " ".join(f"{k}={v}" for k, v in sorted((data.get("counts") or {}).items()))
        return f"{head}  {data.get('state')} {counts}".rstrip()
    if kind == "quarantine":
        halted = ",".join(data.get("halted") or [])
        return f"{event:<13} {data.get('artifact')} quarantined ({data.get('reason')}) {halted}"
    rest = {k: v for k, v in data.items() if k not in ("type", "event", "campaign")}
    return f"{head}  {json.dumps(rest, ensure_ascii=False)}"


@click.command()
@click.option("--endpoint", "endpoints", multiple=True, help="only this device (repeatable)")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    callback=_kinds,
    metavar="KIND[,KIND]",
    help="only these kinds of event: " + ", ".join(EVENT_KINDS) + " (repeatable)",
)
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
    endpoints: tuple[str, ...],
    kinds: list[str],
    types: tuple[str, ...],
    count: int | None,
    as_json: bool,
) -> None:
    """Stream the server's events as they happen (registrations, notifications, campaign
    waves and gate decisions, audit records, ...) until Ctrl-C; ``--json`` prints one JSON
    object per line."""
    seen = 0
    with api() as client:
        query = {
            "endpoint": list(endpoints) or None,
            "kind": ",".join(kinds) or None,
            "type": list(types) or None,
        }
        events = client.events(query)
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
