"""The order messages of the seed guide (IndoStar): confirmation, shipped, payment failed."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="payments.send_order_confirmation")
def send_order_confirmation(order_id: str) -> dict[str, Any]:
    from payments.services.orders import order_event_notify

    return order_event_notify(event="order_confirmation", order_id=order_id)


@shared_task(name="payments.send_order_shipped")
def send_order_shipped(order_id: str) -> dict[str, Any]:
    from payments.services.orders import order_event_notify

    return order_event_notify(event="order_shipped", order_id=order_id)


@shared_task(name="payments.send_payment_failed")
def send_payment_failed(order_id: str) -> dict[str, Any]:
    """One order's payment_failed message; the sweep writes these itself, through `notify_payment_failed`."""
    from payments.services.orders import order_event_notify

    return order_event_notify(event="payment_failed", order_id=order_id)
