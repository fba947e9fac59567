"""The OpenAPI document and Swagger UI (/api/v1/schema/, /api/v1/docs/), with the API's JSON errors.

drf-spectacular's views render YAML, OpenAPI JSON or an HTML page, and would render their 401
and 403 the same way ("403 Forbidden" as HTML, or an OpenAPI-typed body). Here an error is
rendered as every other API error: `application/json`, `{"detail": ..., "errors": {...}}`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class _JsonErrorsView(APIView):
    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        if getattr(response, "exception", False):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class SchemaApi(_JsonErrorsView, SpectacularAPIView):
    """GET /api/v1/schema/ (staff): the OpenAPI document."""


class SwaggerUiApi(_JsonErrorsView, SpectacularSwaggerView):
    """GET /api/v1/docs/ (staff): Swagger UI over the schema."""
