"""Cleanup over the other apps' data: set-based, chunked deletes."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db.models import Model, QuerySet
from django.utils import timezone

from core.models import AuditLog

# 5,000 primary keys per DELETE keeps each statement well under a second on
# PostgreSQL and lets autovacuum keep up; one unbounded DELETE would hold locks long.
CHUNK_SIZE = 5000


def _delete_in_chunks(queryset: QuerySet[Model], *, chunk_size: int = CHUNK_SIZE) -> int:
    deleted = 0
    model = queryset.model
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:chunk_size])
        if not ids:
            return deleted
        deleted += model._default_manager.filter(pk__in=ids).delete()[0]


def audit_logs_delete_old(*, older_than_days: int | None = None) -> dict[str, int]:
    days = older_than_days or settings.AUDIT_LOG_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    return {"deleted": _delete_in_chunks(AuditLog.objects.filter(created_at__lt=cutoff)), "older_than_days": days}


def sessions_delete_expired() -> dict[str, int]:
    return {"deleted": _delete_in_chunks(Session.objects.filter(expire_date__lt=timezone.now()))}


def tokens_delete_expired() -> dict[str, int]:
    from core.tokens import tokens_cleanup_expired

    return tokens_cleanup_expired()
