from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.catalog import Crontab, Job
from payments.services.orders import MAX_TIMEOUT_DAYS, MIN_TIMEOUT_DAYS
from payments.services.pricing import DEFAULT_DAYS_THRESHOLD, MAX_DAYS_THRESHOLD, MIN_DAYS_THRESHOLD


def _default_timeout_days() -> int:
    return int(settings.PAYMENT_TIMEOUT_DAYS)


class PaymentTimeoutsParams(serializers.Serializer[dict[str, Any]]):
    older_than_days = serializers.IntegerField(
        min_value=MIN_TIMEOUT_DAYS,
        max_value=MAX_TIMEOUT_DAYS,
        default=_default_timeout_days,
        help_text="Cancel orders still unpaid this many days after they were placed (PAYMENT_TIMEOUT_DAYS).",
    )


class DiscountRecomputeParams(serializers.Serializer[dict[str, Any]]):
    days_threshold = serializers.IntegerField(
        min_value=MIN_DAYS_THRESHOLD,
        max_value=MAX_DAYS_THRESHOLD,
        default=DEFAULT_DAYS_THRESHOLD,
        help_text="Discount batches with stock that expire within this many days (1-365).",
    )


def _default_funding_reminder_days() -> int:
    return int(settings.ESCROW_FUNDING_REMINDER_DAYS)


def _default_overdue_milestone_days() -> int:
    return int(settings.ESCROW_OVERDUE_MILESTONE_DAYS)


class EscrowFundingRemindersParams(serializers.Serializer[dict[str, Any]]):
    older_than_days = serializers.IntegerField(
        min_value=1,
        max_value=365,
        default=_default_funding_reminder_days,
        help_text="Remind buyers of transactions unfunded this many days after creation (ESCROW_FUNDING_REMINDER_DAYS).",
    )


class EscrowOverdueMilestonesParams(serializers.Serializer[dict[str, Any]]):
    older_than_days = serializers.IntegerField(
        min_value=1,
        max_value=365,
        default=_default_overdue_milestone_days,
        help_text="Notify sellers of milestones pending this many days after funding (ESCROW_OVERDUE_MILESTONE_DAYS).",
    )


class SubscriptionIdsField(serializers.ListField):
    """A list of subscription ids, or the CLI's `--param subscription_ids=12,15,31`."""

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, str):
            data = [part.strip() for part in data.split(",") if part.strip()]
        return super().to_internal_value(data)


class SubscriptionChargeNowParams(serializers.Serializer[dict[str, Any]]):
    subscription_ids = SubscriptionIdsField(
        child=serializers.IntegerField(min_value=1),
        min_length=1,
        max_length=1000,
        help_text="Active subscriptions whose next period to charge now, due or not (1 to 1,000 ids).",
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
        critical=True,
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
    Job(
        key="discount_recompute",
        task="payments.recompute_all_discounts",
        description=(
            "Give every batch with stock that expires within `days_threshold` days its tier's discount (never "
            "below cost plus the policy's margin); end the discounts of batches that left the window or sold out."
        ),
        schedule=Crontab(minute="0"),
        params=DiscountRecomputeParams,
        lease_seconds=300,
    ),
    Job(
        key="price_history",
        task="payments.update_price_history",
        description="Snapshot the effective price of every active batch, once per 6-hour slot.",
        schedule=Crontab(minute="0", hour="*/6"),
        lease_seconds=300,
    ),
    Job(
        key="due_subscriptions",
        task="payments.process_due_subscriptions",
        description=(
            "Queue `payments.process_single_subscription` for every active subscription due today or earlier "
            "(through the outbox, a pipelined batch per 1,000); each charges its period once and creates the "
            "delivery order."
        ),
        schedule=Crontab(minute="0", hour="0"),
        lease_seconds=300,
        critical=True,
    ),
    Job(
        key="subscription_reminders",
        task="payments.send_subscription_renewal_reminders",
        description=(
            "Remind (email and SMS) the subscribers whose next charge falls within the next 24 hours, once per "
            "period however often it runs."
        ),
        schedule=Crontab(minute="0"),
        lease_seconds=300,
    ),
    Job(
        key="subscription_charge_now",
        task="payments.charge_subscriptions_now",
        description=(
            "Charge the given active subscriptions' next period now, due or not (the admin's \"Charge now\"); "
            "a period already charged is not charged again."
        ),
        schedule=None,
        params=SubscriptionChargeNowParams,
    ),
    Job(
        key="escrow_daily_summary",
        task="payments.send_daily_transaction_summary",
        description=(
            "One summary email per user with active escrow transactions (counts and amounts by status, milestones "
            "waiting on them), at most one per user and day."
        ),
        schedule=Crontab(minute="0", hour="8", timezone=settings.TIME_ZONE),
        lease_seconds=300,
    ),
    Job(
        key="escrow_funding_reminders",
        task="payments.cleanup_old_pending_transactions",
        description=(
            "Remind the buyers of escrow transactions created and unfunded for more than `older_than_days` days, "
            "once per transaction and day."
        ),
        schedule=Crontab(minute="0", hour="2", timezone=settings.TIME_ZONE),
        params=EscrowFundingRemindersParams,
        lease_seconds=300,
    ),
    Job(
        key="escrow_overdue_milestones",
        task="payments.check_overdue_milestones",
        description=(
            "Notify the sellers of milestones still pending `older_than_days` days after their transaction was "
            "funded, once per milestone and ISO week."
        ),
        schedule=Crontab(minute="0", hour="10", day_of_week="1", timezone=settings.TIME_ZONE),
        params=EscrowOverdueMilestonesParams,
        lease_seconds=300,
    ),
]
