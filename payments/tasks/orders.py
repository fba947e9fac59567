from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import OperationalError


@shared_task(name="payments.check_payment_timeouts")
def check_payment_timeouts(older_than_days: int | None = None) -> dict[str, Any]:
    from payments.services.orders import orders_cancel_expired

    return orders_cancel_expired(older_than_days=older_than_days)


@shared_task(name="payments.cancel_expired_order")
def cancel_expired_order(order_id: str, older_than_days: int | None = None) -> dict[str, Any]:
    """Cancel one unpaid order past its deadline. An unknown or no longer pending order is reported, not retried."""
    from payments.services.orders import order_cancel_expired

    return order_cancel_expired(order_id=order_id, older_than_days=older_than_days)


# A lost database connection or a deadlock is worth a retry: the intent is already published,
# so a failure here would otherwise lose the customers' notices. A repeat writes nothing twice.
@shared_task(
    name="payments.notify_payment_failed",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def notify_payment_failed(order_ids: list[str]) -> dict[str, int]:
    """Write the payment_failed notifications of cancelled orders; a repeat or a second worker writes nothing more."""
    from payments.services.orders import orders_notify_payment_failed

    return orders_notify_payment_failed(order_ids=order_ids)
