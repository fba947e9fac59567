from __future__ import annotations

from django.db.models import QuerySet

from notifications.models import Notification


def notifications_dead_letter() -> QuerySet[Notification]:
    """Messages that ended `failed`: retries spent, a permanent error, or bad input."""
    return Notification.objects.filter(status=Notification.Status.FAILED).select_related("user", "device")


def notifications_for_group(*, dedupe_key: str) -> QuerySet[Notification]:
    return Notification.objects.filter(dedupe_group=dedupe_key).order_by("pk")
