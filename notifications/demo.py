"""Demo data for `make run`: a push device for the demo EIC user and one message per outbox state."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from notifications.models import Notification, NotificationTemplate, PushDevice
from notifications.services import notify


def load_demo_data() -> dict[str, int]:
    """Idempotent: the device is matched on its token, the messages on their dedupe keys."""
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username="notifications_demo", defaults={"email": "demo@example.com", "phone_number": "+14155552671"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    PushDevice.objects.get_or_create(
        token="demo-fcm-token-notifications",  # noqa: S106 - a fake device token, not a secret
        defaults={"user": user, "platform": PushDevice.Platform.ANDROID},
    )
    with transaction.atomic():
        # Sent by the console providers once a worker runs.
        notify(
            template="order_confirmation",
            user=user,
            context={"order_number": "DEMO1", "customer_name": "Demo", "total": "42.00", "currency": "EUR"},
            channels=["email", "sms"],
            dedupe_key="demo:order_confirmation",
        )
        # Bad input, so the dead-letter view (status "failed") has a row to look at and retry.
        notify(
            template="raw_sms",
            to="0044 not a number",
            context={"body": "never sent"},
            channels=["sms"],
            dedupe_key="demo:malformed-sms",
        )
    return {
        "templates": NotificationTemplate.objects.count(),
        "push_devices": PushDevice.objects.count(),
        "notifications": Notification.objects.count(),
    }
