"""Subscription tasks of the seed guide (IndoStar), on the `subscriptions` queue (routed by exact name)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from payments.gateways import TransientGatewayError


@shared_task(name="payments.process_due_subscriptions")
def process_due_subscriptions() -> dict[str, Any]:
    """Queue one `process_single_subscription` per active subscription due today or earlier (daily, 00:00 UTC)."""
    from payments.services.subscriptions import subscriptions_queue_due

    return subscriptions_queue_due()


# Timeouts, 5xx and 429 are retried with the same idempotency key, so a retry never charges twice;
# a decline or a configuration error is an outcome, not retried. So is a lost database connection:
# the money may be taken and the charge row still `initiated` (its completion not committed), and
# its intent has run, so nothing else would finish it before the next day's run; the retry asks
# the gateway with the same key and order, gets the payment already made, and completes it.
@shared_task(
    name="payments.process_single_subscription",
    autoretry_for=(TransientGatewayError, OperationalError, InterfaceError),
    max_retries=3,
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
)
def process_single_subscription(subscription_id: int, period_start: str | None = None) -> dict[str, Any]:
    """Charge one subscription's period once (its next charge date when `period_start` is omitted) and deliver it."""
    from payments.services.subscriptions import subscription_charge

    return subscription_charge(subscription_id=int(subscription_id), period_start=period_start)


@shared_task(name="payments.send_subscription_renewal_reminders")
def send_subscription_renewal_reminders() -> dict[str, Any]:
    """Remind subscribers charged within the next 24 hours, once per period (hourly)."""
    from payments.services.subscriptions import subscriptions_remind_renewals

    return subscriptions_remind_renewals()


@shared_task(name="payments.charge_subscriptions_now")
def charge_subscriptions_now(subscription_ids: list[int]) -> dict[str, Any]:
    """The admin's "Charge now": queue these subscriptions' next period for charging, due or not."""
    from payments.services.subscriptions import subscriptions_charge_now

    return subscriptions_charge_now(subscription_ids=subscription_ids)
