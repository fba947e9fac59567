from __future__ import annotations

from django.urls import URLPattern, path

from notifications import apis

urlpatterns: list[URLPattern] = [
    path(
        "admin/notifications/<int:notification_id>/retry/",
        apis.NotificationRetryApi.as_view(),
        name="notification-retry",
    ),
]
