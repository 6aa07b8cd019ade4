"""The operator commands that talk to a running server's API.

Each command is a thin translation: arguments to one API request (``docs/API.md``), the JSON
answer to a table, or printed as is with ``--json``. Failures surface as
:class:`cli.client.CliFailure` and are printed as one line by the group (:mod:`cli.main`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click

from cli import checks
from cli.client import ApiClient, CliFailure, find_server
from cli.contexts import CONTEXT_KEY
from cli.output import OUTPUTS as OUTPUTS  # re-exported: older imports name cli.commands
from cli.output import json_option as json_option
from cli.output import output_format as output_format
from cli.output import (
    print_json,
    print_nodes,
    show_value,
    table,
    widen,
)

F = TypeVar("F", bound=Callable[..., Any])

VALUES_MAY_BE_NEGATIVE = {"ignore_unknown_options": True}
"""``fleetloop write dev /3/0/14 -5``: a value starting with '-' is a value, not an option."""


@contextmanager
def api(timeout: float | None = None) -> Iterator[ApiClient]:
    """A client for the server this CLI finds (env or data directory).

    The HTTP timeout outlasts the operation's own ``--timeout`` (and the server's default of
    120 s) so the server, not the HTTP client, reports a device that does not answer.
    """
    http_timeout = (timeout + 15.0) if timeout is not None else 180.0
    env = dict(os.environ)
    current = click.get_current_context(silent=True)
    chosen = current.find_root().meta.get(CONTEXT_KEY) if current is not None else None
    if chosen:
        env["FLEETLOOP_CONTEXT"] = chosen  # --context NAME, for this command only
    with ApiClient(find_server(env), timeout=http_timeout) as client:
        yield client


def ep_url(endpoint: str, *parts: str) -> str:
    """``/devices/{endpoint}/...`` with the endpoint name escaped (``urn:imei:...`` is fine)."""
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    base = f"/devices/{quote(endpoint, safe='')}"
    return f"{base}/{tail}" if tail else base


def path_part(path: str) -> str:
    """An LwM2M path as the URL tail (``/3/0/1`` → ``3/0/1``); a usage error unless it is one."""
    return checks.lwm2m_path(path)


def op_options(f: F) -> F:
    """``--format``, ``--timeout`` and ``--queue-deadline``, passed to the server."""
    f = click.option(
        "--queue-deadline",
        type=click.FloatRange(min=0, min_open=True),
        help="seconds a request may wait for a sleeping (queue-mode) device",
    )(f)
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        help="seconds to wait for the device's answer (server default: 120)",
    )(f)
    return f


def format_option(f: F) -> F:
    return click.option(
        "--format",
        "content_format",
        metavar="FORMAT",
        help="content format: text, tlv, senml-json, senml-cbor, lwm2m-json, lwm2m-cbor, cbor, "
        "opaque (or a number); default: the server's choice for the device",
        callback=lambda _ctx, _param, value: checks.content_format(value),
    )(f)


def op_params(
    timeout: float | None, queue_deadline: float | None, content_format: str | None = None
) -> dict[str, Any]:
    return {"timeout": timeout, "queue_deadline": queue_deadline, "format": content_format}


def load_json_arg(text: str, what: str) -> Any:
    """JSON given inline, or ``@file.json`` (``@-`` reads stdin)."""
    source = text
    if text.startswith("@"):
        name = text[1:]
        try:
            source = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise click.BadParameter(f"cannot read {name}: {err}", param_hint=what) from None
    try:
        return json.loads(source)
    except ValueError as err:
        raise click.BadParameter(f"not valid JSON: {err}", param_hint=what) from None


PROGRESS_AFTER = 2.0
"""Seconds of silence before the CLI says it is still waiting for the device."""
GRACE = 3.0
"""Seconds past ``--timeout`` (+ ``--queue-deadline``) after which the CLI stops waiting even
if the server has not given up yet."""


def device_call(
    client: ApiClient,
    endpoint: str,
    timeout: float | None,
    queue_deadline: float | None,
    method: str,
    path: str,
    **kwargs: Any,
) -> Any:
    """``client.request`` for an operation on a device, never waiting silently.

    After :data:`PROGRESS_AFTER` seconds the CLI says on stderr that it is waiting (the server
    retransmits to a device that does not answer); with ``--timeout`` it stops at the timeout
    (+ queue deadline) whatever the server and the CoAP layer are still doing.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = client.request(method, path, **kwargs)
        except BaseException as err:  # handed to the caller's thread
            outcome["error"] = err

    worker = threading.Thread(target=run, name="fleetloop-request", daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(PROGRESS_AFTER)
    limit = None if timeout is None else timeout + (queue_deadline or 0.0)
    terminal = sys.stderr.isatty()
    shown = False
    while worker.is_alive():
        waited = time.monotonic() - started
        if limit is not None and waited > limit + GRACE:
            if shown and terminal:
                click.echo(err=True)
            raise CliFailure(
                f"device {endpoint!r} did not answer within --timeout {limit:g} s; it may be "
                "offline or asleep (see `fleetloop devices show`); retry, or raise --timeout"
            )
        until = f"gives up after {limit:g} s" if limit is not None else "server default timeout"
        line = (
            f"waiting for device {endpoint!r}: {waited:.0f} s, the server is retrying "
            f"({until}; Ctrl-C stops)"
        )
        click.echo(f"\r{line}" if terminal else line, err=True, nl=not terminal)
        shown = True
        worker.join(1.0 if terminal else 5.0)
    if shown and terminal:
        click.echo(err=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def _done(result: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print_json(result)
        return
    code = result.get("coap_code")
    suffix = f" ({code})" if code else ""
    queued = " [was queued for the sleeping device]" if result.get("queued") else ""
    click.echo(f"{text}{suffix}{queued}")


# -- devices --------------------------------------------------------------------------------------


@click.group()
def devices() -> None:
    """List and inspect registered devices."""


def pages(
    client: ApiClient, path: str, params: dict[str, Any], limit: int | None = None
) -> list[Any]:
    """Every item of a paged list (``items`` + ``next_cursor``), up to ``limit`` items."""
    items: list[Any] = []
    cursor = None
    while True:
        want = 1000 if limit is None else min(1000, limit - len(items))
        page = client.request("GET", path, params={**params, "cursor": cursor, "limit": want})
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if cursor is None or (limit is not None and len(items) >= limit):
            return items


@devices.command("list")
@click.option("--prefix", help="only endpoints starting with this")
@click.option(
    "--select", metavar="SELECTOR", help="only devices the selector names (region=eu,label:x)"
)
@click.option("--limit", type=click.IntRange(min=1), help="at most this many devices")
@json_option
def devices_list(prefix: str | None, select: str | None, limit: int | None, as_json: bool) -> None:
    """Registered devices with when they were last heard from and whether they answer now
    (``--json``: a list, each with an ``endpoint`` key)."""
    with api() as client:
        items = pages(client, "/devices", {"prefix": prefix, "select": select}, limit)
    if as_json:
        print_json(items)
        return
    if not items:
        click.echo("no devices registered")
        return
    rows: list[tuple[Any, ...]] = [
        (
            d["endpoint"],
            d["address"],
            d["identity"]["kind"],
            d["lwm2m_version"],
            d["binding"] + (" (queue)" if d["queue_mode"] else ""),
            d["lifetime"],
            d.get("reachability"),
            d.get("last_seen") or d["updated_at"],
        )
        for d in items
    ]
    headers: tuple[str, ...] = (
        "ENDPOINT",
        "ADDRESS",
        "SECURITY",
        "LWM2M",
        "BINDING",
        "LIFETIME",
        "REACHABLE",
        "LAST SEEN",
    )
    if output_format() == "wide":
        extra = {
            d["endpoint"]: (
                d["registration_id"],
                d["registered_at"],
                d["expires_at"],
                ",".join(f or "?" for f in d["supported_formats"]) or "-",
            )
            for d in items
        }
        headers = (*headers, "REGISTRATION", "REGISTERED", "EXPIRES", "FORMATS")
        rows = [(*row, *extra[row[0]]) for row in rows]
    click.echo(
        table(
            headers,
            rows,
        )
    )


@devices.command("remove")
@click.argument("endpoint")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@json_option
def devices_remove(endpoint: str, yes: bool, as_json: bool) -> None:
    """Remove the registration of a stale device that will not de-register itself. Its
    inventory record, desired state and audit trail stay; a device that is in fact alive
    registers again at its next Update."""
    if not yes and not click.confirm(f"remove the registration of {endpoint}?", err=True):
        raise click.exceptions.Exit(1)
    with api() as client:
        removed = client.request("DELETE", ep_url(endpoint))
    if as_json:
        print_json(removed)
        return
    click.echo(
        f"removed {endpoint} (registration {removed['registration_id']}, "
        f"last seen {removed.get('last_seen') or 'never'})"
    )


@devices.command("show")
@click.argument("endpoint")
@json_option
def devices_show(endpoint: str, as_json: bool) -> None:
    """One device: registration, objects, last values, observations, security mode."""
    with api() as client:
        device = client.request("GET", ep_url(endpoint))
    if as_json:
        print_json(device)
        return
    security = device.get("security")
    lines = [
        ("endpoint", device["endpoint"]),
        ("registration", device["registration_id"]),
        ("address", device["address"]),
        ("identity", f"{device['identity']['kind']} {device['identity']['value'] or ''}".strip()),
        ("credentials", ", ".join(security["modes"]) if security else "none configured"),
        ("lwm2m", device["lwm2m_version"]),
        ("binding", device["binding"] + (" (queue mode)" if device["queue_mode"] else "")),
        ("lifetime", f"{device['lifetime']} s, expires {device['expires_at']}"),
        ("registered", device["registered_at"]),
        ("last update", device["updated_at"]),
    ]
    click.echo(table(("FIELD", "VALUE"), lines))
    click.echo("")
    objects_rows = [
        (o["path"], o["name"] or "?", o["version"], ",".join(str(i) for i in o["instances"]) or "-")
        for o in device.get("objects", [])
    ]
    click.echo(table(("OBJECT", "NAME", "VERSION", "INSTANCES"), objects_rows))
    values = device.get("last_values", [])
    if values:
        click.echo("")
        rows = [(v["path"], v["name"] or "?", show_value(v), v["at"], v["source"]) for v in values]
        click.echo(table(("PATH", "NAME", "LAST VALUE", "AT", "SOURCE"), rows))
    observations = device.get("observations", [])
    if observations:
        click.echo("")
        obs_rows = [
            (o["observation_id"], " ".join(o["paths"]), o["notifications"]) for o in observations
        ]
        click.echo(table(("OBSERVATION", "PATHS", "NOTIFICATIONS"), obs_rows))


# -- single-path operations -----------------------------------------------------------------------


@click.command()
@click.argument("endpoint")
@click.argument("path")
@format_option
@op_options
@json_option
def read(
    endpoint: str,
    path: str,
    content_format: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Read PATH (/3/0, /3/0/1, ...) on device ENDPOINT; prints values with resource names."""
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "GET",
            ep_url(endpoint, "data", path_part(path)),
            params=op_params(timeout, queue_deadline, content_format),
        )
    if as_json:
        print_json(result)
        return
    content = result.get("content")
    print_nodes([content] if content else [])


@click.command(context_settings=VALUES_MAY_BE_NEGATIVE)
@click.argument("endpoint")
@click.argument("path")
@click.argument("value", required=False)
@click.option(
    "--node", "node_json", metavar="JSON|@FILE", help="the node as JSON (shape as `read --json`)"
)
@click.option("--type", "value_type", help="the resource's type, if the object model lacks it")
@click.option("--update", is_flag=True, help="partial update (CoAP POST) instead of replace")
@format_option
@op_options
@json_option
def write(
    endpoint: str,
    path: str,
    value: str | None,
    node_json: str | None,
    value_type: str | None,
    update: bool,
    content_format: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Write VALUE to one resource, or a whole node with --node.

    \b
    fleetloop write dev-1 /1/0/1 300
    fleetloop write dev-1 /3/0/14 +02:00
    fleetloop write dev-1 /1/0 --update --node '{"resources": [{"id": 1, "value": 60}]}'
    """
    if (value is None) == (node_json is None):
        raise click.UsageError("give either VALUE or --node JSON (not both)")
    body: dict[str, Any]
    if node_json is not None:
        loaded = load_json_arg(node_json, "--node")
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--node")
        body = loaded
    else:
        body = {"value": value}
        if value_type:
            body["type"] = value_type
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "PATCH" if update else "PUT",
            ep_url(endpoint, "data", path_part(path)),
            json_body=body,
            params=op_params(timeout, queue_deadline, content_format),
        )
    _done(result, as_json, f"wrote {path} on {endpoint}")


@click.command("exec")
@click.argument("endpoint")
@click.argument("path")
@click.argument("arguments", required=False)
@op_options
@json_option
def execute(
    endpoint: str,
    path: str,
    arguments: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Execute PATH (/3/0/4 reboots), with optional ARGUMENTS like 0='v1',1."""
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "POST",
            ep_url(endpoint, "execute", path_part(path)),
            json_body={"arguments": arguments},
            params=op_params(timeout, queue_deadline),
        )
    _done(result, as_json, f"executed {path} on {endpoint}")


@click.command()
@click.argument("endpoint")
@click.argument("path")
@op_options
@json_option
def discover(
    endpoint: str, path: str, timeout: float | None, queue_deadline: float | None, as_json: bool
) -> None:
    """Discover what lies under PATH and its attributes."""
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "GET",
            ep_url(endpoint, "discover", path_part(path)),
            params=op_params(timeout, queue_deadline),
        )
    if as_json:
        print_json(result)
        return
    rows = [
        (
            link["path"],
            link["name"] or "?",
            ";".join(k if v is None else f"{k}={v}" for k, v in link["attributes"].items()) or "-",
        )
        for link in result["links"]
    ]
    click.echo(table(("PATH", "NAME", "ATTRIBUTES"), rows))


def _assignments(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        pairs.append((key.strip(), value))
    return pairs


@click.command(context_settings=VALUES_MAY_BE_NEGATIVE)
@click.argument("endpoint")
@click.argument("object_path")
@click.argument("resources", nargs=-1, metavar="[RID=VALUE]...")
@click.option("--id", "instance_id", type=click.IntRange(0, 65534), help="the new instance's id")
@click.option("--node", "node_json", metavar="JSON|@FILE", help='{"id":..., "resources":[...]}')
@format_option
@op_options
@json_option
def create(
    endpoint: str,
    object_path: str,
    resources: tuple[str, ...],
    instance_id: int | None,
    node_json: str | None,
    content_format: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Create an instance of OBJECT_PATH (like /11) with resources RID=VALUE.

    \b
    fleetloop create dev-1 /11 0=iot-apn 4=0
    """
    body: dict[str, Any]
    if node_json is not None:
        if resources:
            raise click.UsageError("give either RID=VALUE arguments or --node, not both")
        loaded = load_json_arg(node_json, "--node")
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--node")
        body = loaded
    else:
        items = []
        for key, value in _assignments(resources, "RID=VALUE"):
            if not key.isdigit():
                raise click.BadParameter(f"{key!r} is not a resource id", param_hint="RID=VALUE")
            items.append({"id": int(key), "value": value})
        body = {"resources": items}
    if instance_id is not None:
        body["id"] = instance_id
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "POST",
            ep_url(endpoint, "data", path_part(object_path)),
            json_body=body,
            params=op_params(timeout, queue_deadline, content_format),
        )
    _done(result, as_json, f"created {result.get('location') or object_path} on {endpoint}")


@click.command()
@click.argument("endpoint")
@click.argument("path")
@op_options
@json_option
def delete(
    endpoint: str, path: str, timeout: float | None, queue_deadline: float | None, as_json: bool
) -> None:
    """Delete the object instance PATH (like /11/1)."""
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "DELETE",
            ep_url(endpoint, "data", path_part(path)),
            params=op_params(timeout, queue_deadline),
        )
    _done(result, as_json, f"deleted {path} on {endpoint}")


@click.command()
@click.argument("endpoint")
@click.argument("path")
@click.argument("attributes", nargs=-1, required=True, metavar="NAME=VALUE|NAME...")
@op_options
@json_option
def attributes(
    endpoint: str,
    path: str,
    attributes: tuple[str, ...],
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Write-Attributes: NAME=VALUE sets, a bare NAME unsets.

    Names: pmin, pmax, gt, lt, st, epmin, epmax.

    \b
    fleetloop attributes dev-1 /3/0/9 pmin=10 pmax=60 st=5
    fleetloop attributes dev-1 /3/0/9 st
    """
    body: dict[str, Any] = {"unset": []}
    for item in attributes:
        name, sep, value = item.partition("=")
        checks.attribute_name(name.strip())
        if not sep:
            body["unset"].append(name.strip())
        else:
            body[name.strip()] = value
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "PUT",
            ep_url(endpoint, "attributes", path_part(path)),
            json_body=body,
            params=op_params(timeout, queue_deadline),
        )
    _done(result, as_json, f"wrote attributes of {path} on {endpoint}")


# -- observe ---------------------------------------------------------------------------------------


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C from here on, so ``finally`` blocks clean up either way."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _stream_notifications(
    client: ApiClient,
    endpoint: str,
    start: Callable[[], dict[str, Any]],
    as_json: bool,
    count: int | None,
    keep: bool,
) -> None:
    """Subscribe to the event stream, start the observation, print until Ctrl-C (or COUNT).

    The stream is open (``ready`` received) before the observation starts, so the first
    notification cannot be missed; Ctrl-C or SIGTERM (a supervisor, ``kill``, ``timeout``)
    cancels the observation unless ``--keep``.
    """
    events = client.events({"endpoint": endpoint, "type": ["notification", "observation_ended"]})
    observation_id: str | None = None
    seen = 0
    try:
        stop_on_sigterm()
        for name, data in events:
            if name == "ready":
                result = start()
                observation_id = result.get("observation_id")
                if as_json:
                    click.echo(json.dumps(result, ensure_ascii=False))
                else:
                    click.echo(
                        f"observing {' '.join(result.get('paths', []))} on {endpoint} "
                        f"(observation {observation_id}); Ctrl-C to stop"
                    )
                    print_nodes(result.get("content", []))
                continue
            if not isinstance(data, dict) or data.get("observation_id") != observation_id:
                continue
            if name == "observation_ended":
                observation_id = None
                raise CliFailure(f"the observation ended: {data.get('reason')}")
            seen += 1
            if as_json:
                click.echo(json.dumps(data, ensure_ascii=False))
            else:
                click.echo(f"--- {data.get('timestamp')}")
                print_nodes(data.get("content", []))
            if count is not None and seen >= count:
                break
        else:
            observation_id = None  # the server is going away; nothing left to cancel
            raise CliFailure(
                f"the server ended the event stream while observing {endpoint!r} (did it shut "
                "down?); check `fleetloop devices show` and observe again"
            )
    except KeyboardInterrupt:
        pass
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        events.close()
        if observation_id is not None and not keep:
            try:
                client.request("DELETE", f"/observations/{quote(observation_id, safe='')}")
            except CliFailure as err:
                click.echo(
                    f"could not cancel observation {observation_id}: {err.message}", err=True
                )


@click.command()
@click.argument("endpoint")
@click.argument("path")
@click.option("--count", type=click.IntRange(min=1), help="stop after this many notifications")
@click.option("--keep", is_flag=True, help="leave the observation active on exit")
@format_option
@op_options
@json_option
def observe(
    endpoint: str,
    path: str,
    count: int | None,
    keep: bool,
    content_format: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Observe PATH and print notifications until Ctrl-C (``--json``: one JSON per line)."""
    url = ep_url(endpoint, "observe", path_part(path))
    with api(timeout) as client:

        def start() -> dict[str, Any]:
            result: dict[str, Any] = client.request(
                "POST", url, params=op_params(timeout, queue_deadline, content_format)
            )
            return result

        _stream_notifications(client, endpoint, start, as_json, count, keep)


@click.command()
@click.argument("endpoint")
@click.argument("path", required=False)
@click.option(
    "--id", "observation_id", help="cancel this observation (see `fleetloop observations`)"
)
@click.option("--passive", is_flag=True, help="forget it without telling the device")
@json_option
def cancel(
    endpoint: str, path: str | None, observation_id: str | None, passive: bool, as_json: bool
) -> None:
    """Cancel the observations of ENDPOINT on PATH (or one by --id)."""
    if (path is None) == (observation_id is None):
        raise click.UsageError("give PATH or --id OBSERVATION_ID")
    with api() as client:
        if observation_id is not None:
            ids = [observation_id]
        else:
            wanted = "/" + path_part(path or "")
            found = client.request("GET", ep_url(endpoint, "observations"))
            ids = [o["observation_id"] for o in found if o["paths"] == [wanted]]
            if not ids:
                raise CliFailure(
                    f"device {endpoint!r} has no observation of {wanted}; list them with "
                    f"`fleetloop observations {endpoint}`"
                )
        results = [
            client.request(
                "DELETE",
                f"/observations/{quote(i, safe='')}",
                params={"active": "false" if passive else "true"},
            )
            for i in ids
        ]
    if as_json:
        print_json(results)
        return
    for result in results:
        click.echo(f"cancelled observation {result['observation_id']}")


@click.command()
@click.argument("endpoint", required=False)
@click.option("--select", metavar="SELECTOR", help="only devices the selector names")
@json_option
def observations(endpoint: str | None, select: str | None, as_json: bool) -> None:
    """Active observations (of ENDPOINT, of the devices --select names, or of every device)."""
    with api() as client:
        items = client.request(
            "GET", "/observations", params={"endpoint": endpoint, "select": select}
        )
    if as_json:
        print_json(items)
        return
    rows = [
        (
            o["observation_id"],
            o["endpoint"],
            " ".join(o["paths"]),
            o["notifications"],
            o["created_at"],
        )
        for o in items
    ]
    headers, rows = widen(
        ("OBSERVATION", "ENDPOINT", "PATHS", "NOTIFICATIONS", "SINCE"),
        rows,
        items,
        (
            ("NAMES", lambda o: ", ".join(str(n) for n in o.get("names") or [])),
            ("COMPOSITE", lambda o: o.get("composite")),
            ("FORMAT", lambda o: o.get("content_format")),
        ),
    )
    click.echo(table(headers, rows) if rows else "no active observations")


@click.command()
@click.argument("endpoint")
@json_option
def queue(endpoint: str, as_json: bool) -> None:
    """Requests queued for the sleeping (queue-mode) device ENDPOINT."""
    with api() as client:
        items = client.request("GET", ep_url(endpoint, "queue"))
    if as_json:
        print_json(items)
        return
    rows = [
        (r["id"], r["operation"], " ".join(r["paths"]), r["state"], r["created_at"], r["deadline"])
        for r in items
    ]
    headers, rows = widen(
        ("ID", "OPERATION", "PATHS", "STATE", "CREATED", "DEADLINE"),
        rows,
        items,
        (
            ("FORMAT", lambda r: r.get("content_format")),
            ("CORRELATION", lambda r: r.get("correlation")),
            ("RESPONSE", lambda r: r.get("response_code")),
        ),
    )
    click.echo(table(headers, rows) if rows else f"nothing queued for {endpoint}")


# -- composite -------------------------------------------------------------------------------------


@click.group()
def composite() -> None:
    """Read-, Write- and Observe-Composite: several paths in one request (LwM2M 1.1)."""


@composite.command("read")
@click.argument("endpoint")
@click.argument("paths", nargs=-1, required=True)
@format_option
@op_options
@json_option
def composite_read(
    endpoint: str,
    paths: tuple[str, ...],
    content_format: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Read PATHS of ENDPOINT in one request."""
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "POST",
            ep_url(endpoint, "composite", "read"),
            json_body={"paths": ["/" + path_part(p) for p in paths]},
            params=op_params(timeout, queue_deadline, content_format),
        )
    if as_json:
        print_json(result)
        return
    print_nodes(result.get("content", []))


@composite.command("write", context_settings=VALUES_MAY_BE_NEGATIVE)
@click.argument("endpoint")
@click.argument("assignments", nargs=-1, metavar="PATH=VALUE...")
@click.option("--node", "node_json", metavar="JSON|@FILE", help="a JSON list of nodes with paths")
@format_option
@op_options
@json_option
def composite_write(
    endpoint: str,
    assignments: tuple[str, ...],
    node_json: str | None,
    content_format: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Write several resources atomically: PATH=VALUE ... (or --node with a JSON list).

    \b
    fleetloop composite write dev-1 /1/0/1=300 /3/0/14=+01:00
    """
    if bool(assignments) == (node_json is not None):
        raise click.UsageError("give PATH=VALUE arguments or --node JSON (one of the two)")
    content: Any
    if node_json is not None:
        content = load_json_arg(node_json, "--node")
        if not isinstance(content, list):
            raise click.BadParameter("must be a JSON list of nodes", param_hint="--node")
    else:
        content = [
            {"path": "/" + path_part(p), "value": v}
            for p, v in _assignments(assignments, "PATH=VALUE")
        ]
    with api(timeout) as client:
        result = device_call(
            client,
            endpoint,
            timeout,
            queue_deadline,
            "POST",
            ep_url(endpoint, "composite", "write"),
            json_body={"content": content},
            params=op_params(timeout, queue_deadline, content_format),
        )
    _done(result, as_json, f"wrote {' '.join(result.get('paths', []))} on {endpoint}")


@composite.command("observe")
@click.argument("endpoint")
@click.argument("paths", nargs=-1, required=True)
@click.option("--count", type=click.IntRange(min=1), help="stop after this many notifications")
@click.option("--keep", is_flag=True, help="leave the observation active on exit")
@format_option
@op_options
@json_option
def composite_observe(
    endpoint: str,
    paths: tuple[str, ...],
    count: int | None,
    keep: bool,
    content_format: str | None,
    timeout: float | None,
    queue_deadline: float | None,
    as_json: bool,
) -> None:
    """Observe PATHS as one observation; print notifications until Ctrl-C."""
    body = {"paths": ["/" + path_part(p) for p in paths]}
    url = ep_url(endpoint, "composite", "observe")
    with api(timeout) as client:

        def start() -> dict[str, Any]:
            result: dict[str, Any] = client.request(
                "POST",
                url,
                json_body=body,
                params=op_params(timeout, queue_deadline, content_format),
            )
            return result

        _stream_notifications(client, endpoint, start, as_json, count, keep)


# -- security --------------------------------------------------------------------------------------


@click.group()
def security() -> None:
    """Per-endpoint DTLS credentials (PSK or certificate) and NoSec grants."""


def _security_rows(items: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            s["endpoint"],
            ",".join(s["modes"]),
            s["psk_identity"],
            f"{s['psk_key_length']} bytes, fingerprint {s['psk_key_fingerprint']}"
            if s["psk_key_length"]
            else None,
            s["x509_subject"],
            s["updated_at"],
        )
        for s in items
    ]


_SECURITY_HEADERS = ("ENDPOINT", "MODES", "PSK IDENTITY", "PSK KEY", "CERT SUBJECT", "UPDATED")


@security.command("set")
@click.argument("endpoint")
@click.option("--psk-identity", help="the PSK identity the device presents")
@click.option("--psk-key", metavar="HEX", help="the pre-shared key, hex")
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the device's certificate (PEM); its subject and SHA-256 are pinned",
)
@click.option("--allow-nosec", is_flag=True, help="let it register over plain CoAP")
@json_option
def security_set(
    endpoint: str,
    psk_identity: str | None,
    psk_key: str | None,
    cert_file: Path | None,
    allow_nosec: bool,
    as_json: bool,
) -> None:
    """Set ENDPOINT's credentials (replaces what it had; the key is never shown again).

    \b
    fleetloop security set dev-1 --psk-identity dev-1 --psk-key 000102030405060708090a0b0c0d0e0f
    fleetloop security set dev-2 --cert dev-2.pem
    fleetloop security set lab-3 --allow-nosec
    """
    body: dict[str, Any] = {"allow_nosec": allow_nosec}
    if psk_identity is not None or psk_key is not None:
        if psk_identity is None or psk_key is None:
            raise click.UsageError("--psk-identity and --psk-key go together: give both")
        body["psk_identity"] = psk_identity
        body["psk_key"] = checks.hex_key(psk_key)
    if cert_file is not None:
        try:
            body["certificate"] = cert_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as err:
            raise click.BadParameter(f"cannot read PEM: {err}", param_hint="--cert") from None
    if len(body) == 1 and not allow_nosec:
        raise click.UsageError("give --psk-identity and --psk-key, --cert, or --allow-nosec")
    with api() as client:
        result = client.request("PUT", f"/security/{quote(endpoint, safe='')}", json_body=body)
    if as_json:
        print_json(result)
        return
    click.echo(f"security of {endpoint}: {', '.join(result['modes'])}")


@security.command("list")
@click.option(
    "--select", metavar="SELECTOR", help="only devices the selector names (region=eu,label:x)"
)
@json_option
def security_list(select: str | None, as_json: bool) -> None:
    """Every endpoint's security record (keys are never shown)."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    with api() as client:
        while True:
            page = client.request("GET", "/security", params={"after": after, "select": select})
            items.extend(page["items"])
            after = page.get("next_after")
            if not after:
                break
    if as_json:
        print_json(items)
        return
    headers, rows = widen(
        _SECURITY_HEADERS,
        _security_rows(items),
        items,
        (
            ("CERT SHA-256", lambda s: s.get("x509_fingerprint_sha256")),
            ("NOSEC", lambda s: s.get("allow_nosec")),
        ),
    )
    click.echo(table(headers, rows) if items else "no security records")


@security.command("show")
@click.argument("endpoint")
@json_option
def security_show(endpoint: str, as_json: bool) -> None:
    """One endpoint's security record (the key is never shown)."""
    with api() as client:
        result = client.request("GET", f"/security/{quote(endpoint, safe='')}")
    if as_json:
        print_json(result)
        return
    click.echo(table(_SECURITY_HEADERS, _security_rows([result])))


@security.command("remove")
@click.argument("endpoint")
@json_option
def security_remove(endpoint: str, as_json: bool) -> None:
    """Remove ENDPOINT's security record."""
    with api() as client:
        result = client.request("DELETE", f"/security/{quote(endpoint, safe='')}")
    if as_json:
        print_json(result)
        return
    click.echo(f"removed the security record of {endpoint}")


ALL_COMMANDS: tuple[click.Command, ...] = (
    devices,
    read,
    write,
    execute,
    discover,
    create,
    delete,
    attributes,
    observe,
    cancel,
    observations,
    queue,
    composite,
    security,
)
