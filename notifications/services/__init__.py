"""The notifications app's public services: `notify` is the one way to send a message."""

from __future__ import annotations

from notifications.services.delivery import notification_deliver, notification_render
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
    "deliveries_record",
    "notification_deliver",
    "notification_render",
    "notification_retry",
    "notification_templates_install_defaults",
    "notifications_recover_stuck",
    "notify",
    "notify_many",
    "summary_of",
]
