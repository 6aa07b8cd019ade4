"""docs/API.md lists every route of the OpenAPI document (issue 11: it once omitted 16)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from lifecycle.api import create_app

API_MD = Path(__file__).resolve().parents[3] / "docs" / "API.md"


def test_api_md_lists_every_route_with_its_operation_id() -> None:
    app = create_app(cast(Any, SimpleNamespace(version="0")))  # the document needs no server
    text = API_MD.read_text(encoding="utf-8")
    missing = [
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if f"`{method.upper()} {path}` | `{operation['operationId']}`" not in text
    ]
    assert not missing, f"docs/API.md lacks {missing}; regenerate its 'Every route' table"
