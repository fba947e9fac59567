from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from core.services.health import health_report


@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """Database, broker, workers and beat; 503 naming what is down."""
    report = health_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
