from __future__ import annotations

from rest_framework import serializers

from core.catalog import Crontab, Job


class AuditLogParams(serializers.Serializer):
    older_than_days = serializers.IntegerField(
        min_value=1,
        max_value=3650,
        required=False,
        help_text="Delete entries older than this (AUDIT_LOG_RETENTION_DAYS, 90).",
    )


JOBS = [
    Job(
        key="expired_tokens_cleanup",
        task="maintenance.cleanup_expired_tokens",
        description="Remove expired one-time tokens from Redis.",
        schedule=Crontab(minute="0", hour="3"),
    ),
    Job(
        key="audit_logs_cleanup",
        task="maintenance.cleanup_old_audit_logs",
        description="Delete audit logs older than 90 days.",
        schedule=Crontab(minute="30", hour="3"),
        enabled=False,
        params=AuditLogParams,
        lease_seconds=300,
    ),
    Job(
        key="abandoned_sessions_cleanup",
        task="maintenance.cleanup_abandoned_sessions",
        description="Delete expired Django sessions.",
        schedule=Crontab(minute="45", hour="3"),
        enabled=False,
        lease_seconds=300,
    ),
]
