"""Pure helpers over the API's JSON that both the server and the CLI need.

They live outside :mod:`lifecycle.api` on purpose: importing anything under ``lifecycle.api``
imports the FastAPI application, which costs the CLI most of a second per command. This module
imports the standard library only (``tests/cli/test_import_cost.py`` holds the CLI to that).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any


def iso8601(epoch: float) -> str:
    """UTC ISO 8601 with a ``Z`` suffix; whole seconds print without a fraction."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    if moment.microsecond == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown_address(host: str, port: int) -> str:
    """``127.0.0.1:5683`` for IPv4 (also when a dual-stack socket saw it as
    ``::ffff:127.0.0.1``), ``[2001:db8::1]:5683`` for IPv6."""
    if host.lower().startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def flatten(rendered: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every leaf of a rendered node as ``{"path", "name", "type", "value", ...}``, in order.

    Used by the CLI to print a node as a table with one line per value; it works on the JSON
    the API returned, so it needs no object model.
    """
    kind = rendered.get("kind")
    if kind == "object":
        for instance in rendered.get("instances", ()):
            yield from flatten(instance)
    elif kind == "instance":
        for resource in rendered.get("resources", ()):
            yield from flatten(resource)
    elif rendered.get("multiple"):
        base = str(rendered.get("path", ""))
        for item in rendered.get("instances", ()):
            yield {
                **item,
                "path": f"{base}/{item.get('id')}",
                "name": rendered.get("name"),
                "type": rendered.get("type"),
            }
    elif "value" in rendered:
        yield dict(rendered)
