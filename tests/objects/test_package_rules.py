"""Rules the objects package keeps: no I/O frameworks, and the docs list every built-in."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from objects import BUILTIN_MODEL
from tests.conftest import REPO

FORBIDDEN = {"asyncio", "socket", "sqlmodel", "sqlalchemy", "aiocoap", "mbedtls", "psycopg"}


def test_objects_imports_no_asyncio_sockets_or_database() -> None:
    offenders: list[str] = []
    files = sorted((REPO / "objects").rglob("*.py"))
    assert len(files) >= 10
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert offenders == []


def test_objects_doc_table_lists_every_builtin_with_its_version() -> None:
    doc = (REPO / "docs" / "OBJECTS.md").read_text(encoding="utf-8")
    rows = {
        int(m[1]): m[2]
        for m in re.finditer(r"^\|\s*(\d+)\s*\|[^|]*\|\s*([\d.]+)\s*\|", doc, re.MULTILINE)
    }
    assert rows == {d.id: d.version for d in BUILTIN_MODEL}


def test_objects_doc_walkthrough_names_only_real_config_resources() -> None:
    doc = (REPO / "docs" / "OBJECTS.md").read_text(encoding="utf-8")
    config = BUILTIN_MODEL.get(32001)
    assert config is not None
    paths = set(re.findall(r"/32001/0/(\d+)", doc))
    assert paths  # the walk-through is written at the resource level
    assert {int(p) for p in paths} <= set(config.resources)
    assert Path(REPO / "docs" / "OBJECTS.md").is_file()
