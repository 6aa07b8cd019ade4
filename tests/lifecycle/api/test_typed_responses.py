"""Every response model of the API is closed and typed: no ``extra="allow"`` (a field a route
answers must be declared, so ``/openapi.json`` names it) and no untyped records (audit records,
proofs, bootstrap state and explanations are models, not ``object``)."""

from __future__ import annotations

import importlib
from typing import Any

from lifecycle.api import ApiContext, create_app

OTHERS = ("lifecycle.api.campaign_models", "lifecycle.api.campaign_routes")
"""Modules other engineers own (campaigns): their models are theirs to close."""


def _app() -> Any:
    context = ApiContext.__new__(ApiContext)  # the routes only: nothing runs
    context.version = "test"
    return create_app(context)


def test_no_response_model_allows_undeclared_fields() -> None:
    schemas = _app().openapi()["components"]["schemas"]
    assert len(schemas) > 40
    theirs = {name for module in OTHERS for name in dir(importlib.import_module(module))}
    open_models = sorted(
        name
        for name, schema in schemas.items()
        if schema.get("additionalProperties") is True
        and name not in theirs
        and not name.startswith("lifecycle__api__campaign_models__")
    )
    assert not open_models, open_models
    error = schemas["ErrorOut"]  # the error envelope is closed too: every field declared
    assert error.get("additionalProperties") is False and error["required"] == [
        "status",
        "message",
    ]
    assert {"field", "errors", "endpoint", "coap_code", "eid", "report"} <= set(error["properties"])


def test_records_are_typed_in_the_openapi_document() -> None:
    schemas = _app().openapi()["components"]["schemas"]
    assert schemas["AuditPage"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/AuditRecordOut"
    }
    for name in ("ProofOut", "BootstrapStateOut", "ExplanationOut", "RebootstrapOut"):
        assert schemas[name]["properties"], name
        assert schemas[name].get("additionalProperties") is False, name
    identity = schemas["IdentityRecord"]["properties"]
    assert {"serial", "sku", "has_psk_key", "import_batch", "bootstrap"} <= set(identity)
    paths = _app().openapi()["paths"]
    status = paths["/v1/bootstrap/status/{endpoint}"]["get"]["responses"]["200"]
    assert status["content"]["application/json"]["schema"]["$ref"].endswith("BootstrapStateOut")
