from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.catalog import Every, Job


class OutboxRecoveryParams(serializers.Serializer[dict[str, Any]]):
    older_than_seconds = serializers.IntegerField(
        min_value=1,
        max_value=7 * 24 * 3600,
        required=False,
        help_text="Rows pending or sending for longer than this are re-enqueued "
        "(default NOTIFICATIONS_STUCK_AFTER_SECONDS, 300; at least three provider timeouts, 30 by default).",
    )

    def validate_older_than_seconds(self, value: int) -> int:
        from notifications.services.operations import stuck_threshold_min_seconds

        # Below three provider timeouts a live send would be taken for a dead one and sent twice.
        minimum = stuck_threshold_min_seconds()
        if value < minimum:
            raise serializers.ValidationError(f"must be at least {minimum} (three times the slowest provider timeout)")
        return value


JOBS = [
    Job(
        key="notification_outbox_recovery",
        task="notifications.recover_outbox",
        description="Re-queue notifications left sending (a worker killed mid-send) or pending (a lost retry "
        "message) for longer than the threshold, through the core outbox.",
        schedule=Every(seconds=300),
        params=OutboxRecoveryParams,
        lease_seconds=120,
    ),
]
