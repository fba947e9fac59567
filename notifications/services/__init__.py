"""The notifications app's public services: `notify` is the one way to send a message."""

from __future__ import annotations

from notifications.services.delivery import notification_deliver, notification_render
from notifications.services.devices import push_device_register
from notifications.services.events import payment_failed_notify, payment_failed_notify_many
from notifications.services.operations import notification_retry, notifications_recover_stuck
from notifications.services.outbox import (
    NotifyRequest,
    enqueue_deliveries,
    notifications_dispatch,
    notify,
    notify_many,
)
from notifications.services.templates import notification_templates_install_defaults

__all__ = [
    "NotifyRequest",
    "enqueue_deliveries",
    "notification_deliver",
    "notification_render",
    "notification_retry",
    "notification_templates_install_defaults",
    "notifications_dispatch",
    "notifications_recover_stuck",
    "notify",
    "notify_many",
    "payment_failed_notify",
    "payment_failed_notify_many",
    "push_device_register",
]
