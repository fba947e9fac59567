from __future__ import annotations

from rest_framework import serializers

from core.catalog import Every, Job


class OutboxRecoveryParams(serializers.Serializer):
    older_than_seconds = serializers.IntegerField(
        min_value=30,
        max_value=7 * 24 * 3600,
        required=False,
        help_text="Rows pending or sending for longer than this are re-enqueued "
        "(default NOTIFICATIONS_STUCK_AFTER_SECONDS, 300).",
    )


JOBS = [
    Job(
        key="notification_outbox_recovery",
        task="notifications.recover_outbox",
        description="Re-enqueue notifications left pending (a lost broker message) or sending (a worker killed "
        "mid-send) for longer than the threshold, so a Redis restart loses no notification.",
        schedule=Every(seconds=300),
        params=OutboxRecoveryParams,
        lease_seconds=120,
    ),
]
