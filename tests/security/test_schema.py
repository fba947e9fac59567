"""The OpenAPI schema documents every error an operation can answer (core.openapi), with the one error body."""

from __future__ import annotations

from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    generated: dict[str, Any] = SchemaGenerator().get_schema(request=None, public=True)
    return generated


def operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method.upper()} {path}", op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def test_every_error_response_is_the_json_error_body(schema: dict[str, Any]) -> None:
    for label, operation in operations(schema):
        for code, response in operation["responses"].items():
            if code[0] in "45":
                assert response["content"] == {"application/json": {"schema": ERROR_REF}}, (label, code)


def test_protected_operations_document_401_and_403_and_open_ones_do_not(schema: dict[str, Any]) -> None:
    open_operations = {"GET /api/v1/products/{id}/price/", "POST /api/v1/webhooks/razorpay/"}
    for label, operation in operations(schema):
        documented = set(operation["responses"])
        if label in open_operations:
            assert not documented & {"401", "403"}, label
            assert "429" in documented, label  # throttled instead
        else:
            assert {"401", "403"} <= documented, label


def test_path_parameters_document_404_and_bodies_document_400_413_415(schema: dict[str, Any]) -> None:
    for label, operation in operations(schema):
        documented = set(operation["responses"])
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            assert "404" in documented, label
        if "requestBody" in operation or label.startswith(("POST", "PATCH", "PUT")):
            assert {"400", "413", "415"} <= documented, label


def test_nested_field_errors_are_documented_as_drf_nests_them(schema: dict[str, Any]) -> None:
    errors = schema["components"]["schemas"]["Error"]["properties"]["errors"]
    assert errors["additionalProperties"] == {"anyOf": [{"type": "array", "items": {}}, {"type": "object"}]}


def test_paginated_lists_are_documented_as_pages(schema: dict[str, Any]) -> None:
    for path in ("/api/v1/escrow/transactions/", "/api/v1/escrow/verifications/"):
        get = schema["paths"][path]["get"]
        ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert {"count", "next", "previous", "results"} <= set(page["properties"]), path
        assert {"limit", "offset"} <= {p["name"] for p in get["parameters"]}, path
