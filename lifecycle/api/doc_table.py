"""Regenerate docs/API.md's "Every route" table from the OpenAPI document.

``python -m lifecycle.api.doc_table [docs/API.md]`` rewrites the table in place (the rows
between its header and the next blank line), in the document's route order, so a new route
lands in the docs with the code that adds it; ``tests/lifecycle/api/test_api_doc.py`` fails
when one is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

HEADER = "| method and path | operationId | what |"


def rows() -> list[str]:
    from lifecycle.api import create_app

    app = create_app(cast(Any, SimpleNamespace(version="0")))  # the document needs no server
    out = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            summary = str(operation.get("summary", "")).replace("|", "\\|")
            out.append(f"| `{method.upper()} {path}` | `{operation['operationId']}` | {summary} |")
    return out


def rewrite(text: str) -> str:
    lines = text.splitlines()
    start = lines.index(HEADER)
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join([*lines[: start + 2], *rows(), *lines[end:]]) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "docs" / "API.md"
    target.write_text(rewrite(target.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
