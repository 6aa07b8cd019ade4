"""The error envelope is typed (:class:`lifecycle.api.naming.ErrorOut`, ``extra="forbid"``):
every context field an error of the API can carry is declared there.

The fields are the keyword arguments of the ``ApiError(...)`` calls in ``lifecycle/api/``
(the only way an error body is built, docs/API.md), found in the source; a ``**fields``
argument counts the string keys its function puts in dicts. A new field an error
carries without a declaration fails here, before schemathesis meets it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

import lifecycle.api
from lifecycle.api.errors import ApiError, result_error, unknown_endpoint
from lifecycle.api.naming import ErrorOut
from lwm2m.server import OperationResult, OperationStatus

API = Path(lifecycle.api.__file__).parent


def _name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def dict_keys(function: ast.AST) -> list[str]:
    """The string keys a function puts in dicts: ``{"key": ...}`` and ``d["key"] = ...``."""
    keys: list[str] = []
    for node in ast.walk(function):
        if isinstance(node, ast.Dict):
            found = list(node.keys)
        elif isinstance(node, ast.Assign):
            found = [t.slice for t in node.targets if isinstance(t, ast.Subscript)]
        else:
            continue
        keys += [k.value for k in found if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return keys


def error_fields() -> dict[str, str]:
    """Every context field some ``ApiError(...)`` of the API passes -> one place that does."""
    found: dict[str, str] = {}
    for source in sorted(API.glob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for function in functions:
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and _name(node) == "ApiError"):
                    continue
                where = f"{source.name}:{node.lineno}"
                for keyword in node.keywords:
                    if keyword.arg is not None:
                        found.setdefault(keyword.arg, where)
                        continue
                    keys = dict_keys(function)
                    assert keys, f"{where}: **fields without a dict key to read them from"
                    for key in keys:
                        found.setdefault(key, where)
    return found


def test_every_field_an_error_carries_is_declared() -> None:
    found = error_fields()
    # the search works: the fields of a device error and of a refused request are among them
    assert {"endpoint", "coap_code", "queued_request_id", "field", "errors", "holders"} <= set(
        found
    )
    declared = set(ErrorOut.model_fields)
    missing = {name: where for name, where in found.items() if name not in declared}
    assert not missing, f"declare these in lifecycle.api.naming.ErrorOut: {missing}"


def test_the_bodies_validate_and_an_undeclared_field_does_not() -> None:
    result = OperationResult(OperationStatus.DEVICE_ERROR, code="4.04", reason="Not Found")
    device = result_error(result, endpoint="dev-1", operation="read", path="/3/0/99")
    for error in (
        device,
        unknown_endpoint("dev-1"),
        ApiError(422, "invalid_input", "x", field="a"),
    ):
        body = error.body()
        assert ErrorOut.model_validate(body).model_dump(exclude_unset=True) == body
    with pytest.raises(ValidationError):
        ErrorOut.model_validate({"status": "conflict", "message": "m", "undeclared": 1})
