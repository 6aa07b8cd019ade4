"""Mistakes the CLI can see on its own, reported in CLI words with exit code 2.

The server checks everything again (it has the object model); these checks exist so that an
operator who mistypes an option hears about the option (``--format``, ``PATH``, ``--psk-key``)
before a request is sent, and so that the answer is a usage error (exit 2), not a failed
request (exit 1). :func:`cli_words` rewrites the API's field names (``body.value``) in the
server's 422 answers the same way, for the checks only the server can make.
"""

from __future__ import annotations

import re

import click

FORMATS = (
    "text",
    "link",
    "opaque",
    "cbor",
    "senml-json",
    "senml-cbor",
    "tlv",
    "lwm2m-json",
    "lwm2m-cbor",
)
"""The content-format names the API accepts (``lifecycle.api.views.FORMAT_NAMES``; a test
keeps the two equal); a number is accepted too."""

ATTRIBUTES = ("pmin", "pmax", "gt", "lt", "st", "epmin", "epmax")
"""The notification attributes Write-Attributes can set or unset."""

MAX_ID = 65535
PATH_LEVELS = ("object", "instance", "resource", "resource instance")


def content_format(value: str | None) -> str | None:
    """A format name or number, or a usage error listing the names."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in FORMATS or (text.isdigit() and int(text) <= MAX_ID):
        return text
    raise click.BadParameter(
        f"{value!r} is not a content format; use one of {', '.join(FORMATS)} or a number",
        param_hint="--format",
    )


def lwm2m_path(path: str, *, hint: str = "PATH") -> str:
    """``/3/0/1`` as the URL tail ``3/0/1``: one to four ids (object/instance/resource/
    resource instance), each 0..65535."""
    body = path.strip().strip("/")
    parts = body.split("/") if body else []
    if not parts or not all(p.isascii() and p.isdigit() for p in parts):
        raise click.BadParameter(f"{path!r} is not an LwM2M path like /3/0/1", param_hint=hint)
    if len(parts) > len(PATH_LEVELS):
        raise click.BadParameter(
            f"{path!r} has {len(parts)} levels; an LwM2M path has at most four: "
            "/object/instance/resource/resource-instance",
            param_hint=hint,
        )
    for level, part in zip(PATH_LEVELS, parts, strict=False):
        if int(part) > MAX_ID:
            raise click.BadParameter(
                f"{path!r}: {level} id {part} is above {MAX_ID}", param_hint=hint
            )
    return "/".join(str(int(p)) for p in parts)


def attribute_name(name: str) -> str:
    if name not in ATTRIBUTES:
        raise click.BadParameter(
            f"{name!r} is not a notification attribute; use one of {', '.join(ATTRIBUTES)}",
            param_hint="NAME=VALUE",
        )
    return name


def hex_key(text: str, *, hint: str = "--psk-key") -> str:
    """A key given in hex (``00:11`` and spaces allowed): an even number of hex digits."""
    cleaned = text.strip().replace(":", "").replace(" ", "")
    if not cleaned or len(cleaned) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", cleaned):
        raise click.BadParameter(
            f"{text!r} is not a hex key; give two hex digits per byte, e.g. 000102...0f",
            param_hint=hint,
        )
    return cleaned


_FIELD_WORDS = {
    "body.value": "VALUE",
    "body.type": "--type",
    "body.arguments": "ARGUMENTS",
    "body.psk_key": "--psk-key",
    "body.psk_identity": "--psk-identity",
    "body.certificate": "--cert",
    "body.allow_nosec": "--allow-nosec",
    "query.format": "--format",
    "query.timeout": "--timeout",
    "query.queue_deadline": "--queue-deadline",
    "query.limit": "--limit",
    "query.select": "--select",
    "query.cursor": "--cursor",
}
_OPENAPI_HINT = re.compile(r";?\s*see GET /openapi\.json[^;]*")


def cli_field(field: str) -> str:
    """The command-line name of an API field (``body.value`` → ``VALUE``)."""
    if field in _FIELD_WORDS:
        return _FIELD_WORDS[field]
    for prefix in ("body.", "query.", "path."):
        if field.startswith(prefix):
            return field.removeprefix(prefix)
    return field


def cli_words(message: str, field: str | None) -> str:
    """The server's message with API field names replaced by CLI names, API hints removed."""
    text = _OPENAPI_HINT.sub("", message)
    if field:
        shown = cli_field(field)
        text = text.replace(f"{field}:", f"{shown}:").replace(field, shown)
        if not text.startswith(shown):
            text = f"{shown}: {text}"
    for api_name, cli_name in _FIELD_WORDS.items():
        text = text.replace(api_name, cli_name)
    return text


_API_HINT = re.compile(r"(?:GET|POST|PUT|PATCH|DELETE) /v1/\S+ \((`fleetloop [^`]+`)\)")


def api_paths_to_commands(message: str) -> str:
    """``list them with GET /v1/groups (`fleetloop groups list`)`` → ``... with `fleetloop
    groups list```: the server names both; the command line needs only the command."""
    return _API_HINT.sub(r"\1", message)
