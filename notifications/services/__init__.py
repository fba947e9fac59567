"""The notifications app's public services: `notify` is the one way to send a message."""

from __future__ import annotations

from notifications.services.delivery import RetryPolicy, notification_render, notifications_deliver_batch
from notifications.services.operations import notification_retry, notifications_recover_stuck
from notifications.services.outbox import (
    NotifyRequest,
    deliveries_record,
    notify,
    notify_many,
    summary_of,
)
from notifications.services.templates import notification_templates_install_defaults

__all__ = [
    "NotifyRequest",
    "RetryPolicy",
    "deliveries_record",
    "notification_render",
    "notification_retry",
    "notification_templates_install_defaults",
    "notifications_deliver_batch",
    "notifications_recover_stuck",
    "notify",
    "notify_many",
    "summary_of",
]
