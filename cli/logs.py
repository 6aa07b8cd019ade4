"""Structured logs for ``fleetloop serve``: key=value lines (default) or JSON lines.

Every record becomes one line on stderr with ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
``msg`` and every ``extra={...}`` field the caller attached, so a log shipper can index
``endpoint=`` or ``port=`` without parsing prose. uvicorn's loggers are routed through the
same handler (``log_config=None``), so the API's access lines have the same shape.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "color_message", "taskName"}
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
    fields: dict[str, Any] = {
        "ts": ts.replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values that JSON cannot carry are written with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


def _kv_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' "=\n\t\\'):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=... msg="..." key=value``: greppable and readable."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_kv_value(v)}" for k, v in _fields(record).items())


class AccessFields(logging.Filter):
    """Give uvicorn's access lines fields instead of prose: ``client``, ``method``, ``path``,
    ``status`` (its record args are ``(client, method, path, http_version, status)``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, _, status = args
            record.msg, record.args = "http request", ()
            record.client, record.method, record.path, record.status = (
                client,
                method,
                path,
                status,
            )
        return True


def configure(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Route every logger to one stderr handler with the chosen format and level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessFields) for f in access.filters):
        access.addFilter(AccessFields())
