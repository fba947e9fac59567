from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path

from core.api_docs import SchemaApi, SwaggerUiApi
from core.apis import api_not_found
from core.metrics import metrics_view
from core.views import health

# Each domain app adds its v1 routes in <app>/urls.py (api_v1_urlpatterns) and
# any unversioned routes the seed clients call (urlpatterns).
api_v1: list[URLPattern | URLResolver] = [
    path("", include("core.urls")),
    path("", include(("notifications.urls", "notifications"), namespace="notifications")),
    path("", include(("payments.urls", "payments"), namespace="payments")),
    path("schema/", SchemaApi.as_view(), name="schema"),
    path("docs/", SwaggerUiApi.as_view(url_name="api:schema"), name="swagger-ui"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/", include(("logistics.urls", "logistics"), namespace="logistics")),
    # Last: any other /api/ URL answers the API's JSON 404, not Django's HTML page.
    re_path(r"^api/(?P<unmatched>.*)$", api_not_found),
]
