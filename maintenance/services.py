"""Cleanup over the other apps' data: set-based, chunked deletes."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.sessions.models import Session
from django.utils import timezone

from core.models import AuditLog
from core.services.bulk import delete_in_chunks


def audit_logs_delete_old(*, older_than_days: int | None = None) -> dict[str, int]:
    days = older_than_days or settings.AUDIT_LOG_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    return {"deleted": delete_in_chunks(AuditLog.objects.filter(created_at__lt=cutoff)), "older_than_days": days}


def sessions_delete_expired() -> dict[str, int]:
    return {"deleted": delete_in_chunks(Session.objects.filter(expire_date__lt=timezone.now()))}
