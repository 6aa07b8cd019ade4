"""ruff and mypy are part of the suite: the code base stays lint- and type-clean."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


# Imports run down the layers (ARCHITECTURE.md): cli -> lifecycle -> sgp32, bootstrap -> lwm2m
# -> objects -> lwm2m.model. A package may never import one of the packages listed for it.
_FORBIDDEN_IMPORTS: dict[str, tuple[str, ...]] = {
    "lwm2m": ("bootstrap", "sgp32", "lifecycle", "cli", "simulators"),
    "objects": ("bootstrap", "sgp32", "lifecycle", "cli", "simulators"),
    "bootstrap": ("sgp32", "lifecycle", "cli", "simulators"),
    "sgp32": ("bootstrap", "lifecycle", "cli", "simulators"),
    "lifecycle": ("cli", "simulators"),
    "simulators": ("lwm2m.server", "lwm2m.store", "bootstrap", "lifecycle", "cli"),
}


def _imported_modules(source: str) -> list[str]:
    import ast

    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_imports_run_down_the_layers_only() -> None:
    violations: list[str] = []
    for package, forbidden in _FORBIDDEN_IMPORTS.items():
        for file in sorted((REPO / package).rglob("*.py")):
            for module in _imported_modules(file.read_text(encoding="utf-8")):
                for banned in forbidden:
                    if module == banned or module.startswith(banned + "."):
                        violations.append(f"{file.relative_to(REPO)} imports {module}")
    assert not violations, "imports that run up the layers:\n" + "\n".join(violations)
