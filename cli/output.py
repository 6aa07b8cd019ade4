"""Human output of the CLI: aligned tables and one-line values.

Everything here works on the JSON the API returned (the CLI has no object model of its own);
``--json`` bypasses it and prints the API's JSON as is, for scripts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import click

from lifecycle.jsonview import flatten

OPAQUE_PREVIEW = 32


OUTPUT_KEY = "fleetloop.output"
"""Where ``-o FORMAT`` leaves its choice for this command (``click.Context.meta``)."""


OUTPUTS = ("table", "wide", "json", "yaml")
"""What ``-o`` accepts, on every command that prints data."""

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    """``--json`` and ``-o/--output table|wide|json|yaml`` on every command that prints data.

    ``-o json`` is ``--json``; ``-o yaml`` prints the same data as YAML; ``-o wide`` adds
    columns where a table has more to show (every list command, through :func:`widen`).
    The command sees ``as_json`` (true for json and yaml); :func:`cli.output.print_json`
    picks the notation.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, output: str | None, **kwargs: Any) -> Any:
        if output is not None:
            click.get_current_context().find_root().meta[OUTPUT_KEY] = output
            if output in ("json", "yaml"):
                kwargs["as_json"] = True
        elif kwargs.get("as_json"):
            click.get_current_context().find_root().meta[OUTPUT_KEY] = "json"
        return f(*args, **kwargs)

    wrapped = click.option("--json", "as_json", is_flag=True, help="print the API's JSON")(wrapper)
    wrapped = click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUTS),
        help="table (default), wide (more columns), json or yaml",
    )(wrapped)
    return cast(F, wrapped)


def output_format() -> str:
    """What ``-o`` asked for in this command (``table`` when nothing)."""
    current = click.get_current_context(silent=True)
    if current is None:
        return "table"
    return str(current.find_root().meta.get(OUTPUT_KEY, "table"))


def widen(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    items: Sequence[Mapping[str, Any]],
    extra: Sequence[tuple[str, Callable[[Mapping[str, Any]], Any]]],
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """``headers`` and ``rows`` (one per item), with the ``extra`` columns under ``-o wide``:
    every list command shows more of each item there (the table's columns come first)."""
    if output_format() != "wide":
        return tuple(headers), [tuple(r) for r in rows]
    return (
        (*headers, *(name for name, _ in extra)),
        [(*row, *(cell(item) for _, cell in extra)) for row, item in zip(rows, items, strict=True)],
    )


def iso_time(epoch: float | None) -> str | None:
    """Seconds since the epoch (an API's ``*_epoch`` field) as ISO 8601 UTC to the second;
    None (shown as ``-``) when the API has no time."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_json(data: Any) -> None:
    """The API's data as JSON, or as YAML when the command ran with ``-o yaml``."""
    current = click.get_current_context(silent=True)
    wanted = current.find_root().meta.get(OUTPUT_KEY) if current is not None else None
    if wanted == "yaml":
        click.echo(to_yaml(data))
        return
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def to_yaml(data: Any, indent: int = 0) -> str:
    """Block-style YAML of JSON data (strings double-quoted as JSON is valid YAML)."""
    pad = "  " * indent
    if isinstance(data, dict):
        if not data:
            return pad + "{}"
        lines = []
        for key, value in data.items():
            name = _quoted(str(key))
            if isinstance(value, dict | list) and value:
                lines.append(f"{pad}{name}:\n{to_yaml(value, indent + 1)}")
            else:
                lines.append(f"{pad}{name}: {to_yaml(value).strip()}")
        return "\n".join(lines)
    if isinstance(data, list):
        if not data:
            return pad + "[]"
        lines = []
        for item in data:
            text = to_yaml(item, indent + 1)
            lines.append(
                f"{pad}- {text.strip()}"
                if not isinstance(item, dict | list) or not item
                else f"{pad}-\n{text}"
            )
        return "\n".join(lines)
    if data is None:
        return pad + "null"
    if isinstance(data, bool):
        return pad + ("true" if data else "false")
    if isinstance(data, int):
        return pad + json.dumps(data)
    if isinstance(data, float):
        return pad + _yaml_float(data)
    return pad + _quoted(str(data))


def _yaml_float(number: float) -> str:
    """JSON's float text in the form YAML 1.1 readers want: ``5.0e-324``, ``1.0e+16``."""
    text = json.dumps(number)
    mantissa, e, exponent = text.lower().partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if e and exponent[:1] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}" if e else mantissa


def _yaml_printable(char: str) -> bool:
    code = ord(char)
    return (
        code in (0x09, 0x0A, 0x0D)
        or 0x20 <= code <= 0x7E
        or (0xA0 <= code <= 0xD7FF and code not in (0x2028, 0x2029))
        or 0xE000 <= code <= 0xFFFD
        or code >= 0x10000
    )


def _quoted(text: str) -> str:
    """A double-quoted scalar: JSON's escapes (valid YAML), and ``\\uXXXX`` for what YAML
    does not allow in a document even when quoted (DEL, C1 controls, surrogates)."""
    quoted = json.dumps(text, ensure_ascii=False)
    if all(_yaml_printable(c) for c in quoted):
        return quoted
    return "".join(c if _yaml_printable(c) else f"\\u{ord(c):04x}" for c in quoted)


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
