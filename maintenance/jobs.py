from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.catalog import Crontab, Job


class AuditLogParams(serializers.Serializer[dict[str, Any]]):
    older_than_days = serializers.IntegerField(
        min_value=1,
        max_value=3650,
        required=False,
        help_text="Delete entries older than this (AUDIT_LOG_RETENTION_DAYS, 90).",
    )


def _default_cart_days() -> int:
    return int(settings.CART_EXPIRY_DAYS)


class ExpiredCartsParams(serializers.Serializer[dict[str, Any]]):
    days_old = serializers.IntegerField(
        min_value=1,
        max_value=3650,
        default=_default_cart_days,
        help_text="Delete carts not updated for this many days (CART_EXPIRY_DAYS, 30).",
    )


JOBS = [
    Job(
        key="expired_discounts_cleanup",
        task="maintenance.cleanup_expired_discounts",
        description="Mark discounts past their validity (the batch's expiry), or whose batch is gone, expired.",
        schedule=Crontab(minute="0", hour="2"),
        lease_seconds=300,
    ),
    Job(
        key="expired_carts_cleanup",
        task="maintenance.cleanup_expired_carts",
        description="Delete carts (and their items) not updated for `days_old` days.",
        schedule=Crontab(minute="0", hour="2"),
        params=ExpiredCartsParams,
        lease_seconds=300,
    ),
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
