from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from core.catalog import Crontab, Job
from payments.services.orders import MAX_TIMEOUT_DAYS, MIN_TIMEOUT_DAYS


def _default_timeout_days() -> int:
    return int(settings.PAYMENT_TIMEOUT_DAYS)


class PaymentTimeoutsParams(serializers.Serializer):
    older_than_days = serializers.IntegerField(
        min_value=MIN_TIMEOUT_DAYS,
        max_value=MAX_TIMEOUT_DAYS,
        default=_default_timeout_days,
        help_text="Cancel orders still unpaid this many days after they were placed (PAYMENT_TIMEOUT_DAYS).",
    )


JOBS = [
    Job(
        key="payment_timeouts",
        task="payments.check_payment_timeouts",
        description=(
            "Cancel orders pending payment for longer than `older_than_days`: payment failed, reserved "
            "stock restored once, open payment transactions cancelled, customers notified."
        ),
        schedule=Crontab(minute="0"),
        params=PaymentTimeoutsParams,
        lease_seconds=120,
    ),
    Job(
        key="exchange_rates",
        task="payments.update_exchange_rates",
        description="Fetch the ECB daily reference rates (EUR base) from EXCHANGE_RATES_URL and store them.",
        schedule=Crontab(minute="0", hour="0"),
        # No URL parameter on purpose: a caller-chosen URL would let the API fetch anything (SSRF).
        params=None,
        lease_seconds=120,
    ),
]
