"""Human output of the CLI: aligned tables and one-line values.

Everything here works on the JSON the API returned (the CLI has no object model of its own);
``--json`` bypasses it and prints the API's JSON as is, for scripts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click

from lifecycle.jsonview import flatten

OPAQUE_PREVIEW = 32


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    text_rows = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *text_rows]:
        cells = [c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def show_value(leaf: Mapping[str, Any]) -> str:
    """A leaf's value for people: Time as ISO 8601, Opaque as hex (shortened), text as is."""
    value = leaf.get("value")
    kind = leaf.get("type")
    if leaf.get("label") is not None:
        return f"{leaf['label']} ({value})"  # an enumerated value: its name, then the number
    if kind == "Time" and leaf.get("iso"):
        return f"{leaf['iso']} ({value})"
    if kind == "Opaque" and isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value
        shown = raw[:OPAQUE_PREVIEW].hex()
        more = f"... ({len(raw)} bytes)" if len(raw) > OPAQUE_PREVIEW else f" ({len(raw)} bytes)"
        return f"0x{shown}{more}" if raw else "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "-" if kind == "none" else "null"
    return str(value)


def leaf_rows(nodes: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """``(path, name, value)`` for every value in the rendered nodes."""
    rows = []
    for node in nodes:
        for leaf in flatten(node):
            rows.append((str(leaf.get("path")), leaf.get("name") or "?", show_value(leaf)))
    return rows


def print_nodes(nodes: Iterable[Mapping[str, Any]], empty: str = "(no values)") -> None:
    rows = leaf_rows(nodes)
    click.echo(table(("PATH", "NAME", "VALUE"), rows) if rows else empty)
