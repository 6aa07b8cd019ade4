"""Structured log lines: key=value and JSON, extra fields kept, uvicorn access lines as fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from cli import logs


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_extra_fields(restore_root: None) -> None:
    stream = io.StringIO()
    logs.configure("json", "info", stream)
    logging.getLogger("fleetloop.serve").info("ready", extra={"api": "http://x", "port": 5})
    logging.getLogger("fleetloop.serve").debug("not shown at info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["msg"] == "ready" and entry["level"] == "info"
    assert entry["api"] == "http://x" and entry["port"] == 5
    assert entry["ts"].endswith("Z")


def test_key_value_lines_quote_what_needs_quoting(restore_root: None) -> None:
    stream = io.StringIO()
    logs.configure("kv", "debug", stream)
    logging.getLogger("x").warning("two words", extra={"path": "/3/0", "empty": ""})
    line = stream.getvalue().strip()
    assert 'level=warning logger=x msg="two words" path=/3/0 empty=""' in line


def test_uvicorn_access_lines_become_fields(restore_root: None) -> None:
    stream = io.StringIO()
    logs.configure("json", "info", stream)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/devices", "1.1", 200
    )
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "http request"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/devices", 200)
