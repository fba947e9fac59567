"""The OpenAPI schema documents every error an operation can answer, derived from the view itself.

An operation's `extend_schema` lists its domain outcomes (404 unknown key, 409 conflict). The
errors that come from the framework around it are added here, from what the view declares, so
a new endpoint is documented correctly without repeating them:

- 400 when it takes a body or query parameters (invalid input, a body that does not parse);
- 401 and 403 unless anyone may call it (`AllowAny`): anonymous, and signed in without the role;
- 404 when its path has parameters (no such object, or not yours to see);
- 413 and 415 when it takes a body (over `DATA_UPLOAD_MAX_MEMORY_SIZE`, an unsupported media type);
- 429 when it is throttled.

Every 4xx and 5xx response gets the one error body (`core.serializers.ErrorSerializer`) when
its annotation gave none: every API error is `{"detail": ..., "errors": {...}}`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny

_BODY_METHODS = {"POST", "PUT", "PATCH"}

_DESCRIPTIONS = {
    "400": "Invalid input: the field and the reason",
    "401": "Not authenticated: send a token (Authorization: Token ...), a session or basic auth",
    "403": "Authenticated, but not allowed to do this",
    "404": "No such object, or not yours to see",
    "413": "The request body is larger than the limit",
    "415": "Unsupported media type for the body",
    "429": "Too many requests: retry after the Retry-After header's seconds",
}


class ErrorDocumentingAutoSchema(AutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses: dict[str, Any] = operation.setdefault("responses", {})
        for code in self._framework_errors(operation):
            responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
        error_ref = self._error_ref()
        for code, response in responses.items():
            if code[0] in "45" and "content" not in response:
                response["content"] = {"application/json": {"schema": error_ref}}
        return operation

    def _framework_errors(self, operation: dict[str, Any]) -> list[str]:
        codes: list[str] = []
        parameters = operation.get("parameters", [])
        takes_body = self.method.upper() in _BODY_METHODS
        if takes_body or any(p.get("in") in ("query", "header") for p in parameters):
            codes.append("400")
        permissions = self.view.get_permissions()
        if not all(isinstance(p, AllowAny) for p in permissions):
            codes += ["401", "403"]
        if any(p.get("in") == "path" for p in parameters):
            codes.append("404")
        if takes_body:
            codes += ["413", "415"]
        if self.view.get_throttles():
            codes.append("429")
        return codes

    def _error_ref(self) -> dict[str, str]:
        from core.serializers import ErrorSerializer

        component = self.resolve_serializer(ErrorSerializer, "response")
        ref: dict[str, str] = component.ref
        return ref


def nested_field_errors_hook(result: dict[str, Any], **_: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the error body's `errors` as DRF really nests them.

    A field's reasons are a list of strings; a nested input's are nested the same way, as an
    object (a list field's items by index, a nested object's fields) or a list of such objects
    (a list of nested objects), e.g. `{"milestones": {"0": {"amount": ["A valid number is required."]}}}`.
    """
    error = result.get("components", {}).get("schemas", {}).get("Error")
    if error is not None:
        errors = error["properties"]["errors"]
        errors["additionalProperties"] = {
            "anyOf": [{"type": "array", "items": {}}, {"type": "object"}],
        }
    return result
