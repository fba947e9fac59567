"""Domain events: read an order or subscription from payments (lazily, it may not exist yet) and notify."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import models

from notifications.models import Channel, Notification
from notifications.services.outbox import CHUNK_SIZE, NotifyRequest, notify, notify_many

logger = logging.getLogger(__name__)

ORDER_EVENTS = ("order_confirmation", "order_shipped", "payment_failed")


def _model(name: str) -> type[models.Model] | None:
    try:
        return apps.get_model("payments", name)
    except LookupError:
        return None


def _summary(rows: Sequence[Notification], **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "notifications": [{"id": n.pk, "channel": n.channel, "status": n.status, "error": n.last_error} for n in rows],
    }


def order_context(order: Any) -> dict[str, Any]:
    customer = order.customer
    items = []
    for item in sorted(order.items.all(), key=lambda i: i.pk):
        product = item.product
        items.append(
            {
                "product": getattr(product, "name", str(product)),
                "quantity": item.quantity,
                "unit_price": str(item.unit_price),
            }
        )
    return {
        "order_id": str(order.pk),
        "order_number": str(order.pk).split("-")[0].upper(),
        "customer_name": customer.get_full_name() or customer.get_username(),
        "total": str(order.total),
        "currency": order.currency,
        "status": order.status,
        "payment_status": getattr(order, "payment_status", ""),
        "cancel_reason": getattr(order, "cancel_reason", "") or "",
        "created_at": order.created_at.date().isoformat() if order.created_at else "",
        "tracking_number": getattr(order, "tracking_number", "") or "",
        "items": items,
    }


def order_event_notify(*, event: str, order_id: str) -> dict[str, Any]:
    """One event (`order_confirmation`, `order_shipped`, `payment_failed`) to the order's customer, once."""
    if event not in ORDER_EVENTS:
        raise ValueError(f"unknown order event {event!r}")
    order_model = _model("Order")
    if order_model is None:
        logger.warning("%s for order %s: payments.Order is not installed", event, order_id)
        return {"order_id": str(order_id), "outcome": "model_missing"}
    try:
        order = order_model.objects.select_related("customer").prefetch_related("items__product").get(pk=order_id)  # type: ignore[attr-defined]
    except (order_model.DoesNotExist, ValidationError, ValueError, TypeError):  # type: ignore[attr-defined]
        logger.warning("%s: order %s does not exist", event, order_id)
        return {"order_id": str(order_id), "outcome": "not_found"}
    rows = notify(
        template=event,
        user=order.customer,
        context=order_context(order),
        channels=[Channel.EMAIL, Channel.SMS],
        dedupe_key=f"{event}:{order.pk}",
    )
    return _summary(rows, order_id=str(order.pk), outcome="notified")


def payment_failed_notify_many(*, order_ids: Sequence[str]) -> dict[str, Any]:
    """`payment_failed` for thousands of orders at once (the payment-timeout sweep's fan-out)."""
    order_model = _model("Order")
    if order_model is None:
        logger.warning("payment_failed for %d orders: payments.Order is not installed", len(order_ids))
        return {"orders": len(order_ids), "outcome": "model_missing"}
    found = 0

    def requests() -> Iterator[NotifyRequest]:
        nonlocal found
        ids = [str(pk) for pk in order_ids]
        for start in range(0, len(ids), CHUNK_SIZE):
            chunk = (
                order_model.objects.filter(pk__in=ids[start : start + CHUNK_SIZE])  # type: ignore[attr-defined]
                .select_related("customer")
                .prefetch_related("items__product")
            )
            for order in chunk:
                found += 1
                yield NotifyRequest(
                    template="payment_failed",
                    user=order.customer,
                    context=order_context(order),
                    channels=[Channel.EMAIL, Channel.SMS],
                    dedupe_key=f"payment_failed:{order.pk}",
                )

    written = notify_many(requests())
    missing = len(set(map(str, order_ids))) - found
    if missing:
        logger.warning("payment_failed: %d of %d orders no longer exist", missing, len(order_ids))
    return {"orders": len(order_ids), "found": found, "missing": missing, "notifications_written": written}


def subscription_reminder_notify(*, subscription_id: str | int) -> dict[str, Any]:
    """Remind a subscriber of the next charge, once per billing period."""
    model = _model("Subscription")
    if model is None:
        logger.warning("renewal reminder for subscription %s: payments.Subscription is not installed", subscription_id)
        return {"subscription_id": str(subscription_id), "outcome": "model_missing"}
    try:
        sub = model.objects.get(pk=subscription_id)  # type: ignore[attr-defined]
    except (model.DoesNotExist, ValidationError, ValueError, TypeError):  # type: ignore[attr-defined]
        logger.warning("renewal reminder: subscription %s does not exist", subscription_id)
        return {"subscription_id": str(subscription_id), "outcome": "not_found"}
    user = _first_attr(sub, "customer", "user")
    if user is None:
        return {"subscription_id": str(sub.pk), "outcome": "no_user"}
    next_charge = _first_attr(sub, "next_billing_date", "next_charge_at", "next_billing_at", "current_period_end")
    product = _first_attr(sub, "product", "plan")
    amount = _first_attr(sub, "amount", "price", "total")
    period = next_charge.isoformat() if isinstance(next_charge, (date, datetime)) else "next"
    context = {
        "subscription_id": str(sub.pk),
        "customer_name": user.get_full_name() or user.get_username(),
        "product_name": getattr(product, "name", str(product)) if product is not None else "your subscription",
        "renewal_date": next_charge.date().isoformat()
        if isinstance(next_charge, datetime)
        else (next_charge.isoformat() if isinstance(next_charge, date) else ""),
        "amount": str(amount) if amount is not None else "",
        "currency": getattr(sub, "currency", "") or getattr(product, "currency", "") or "",
    }
    rows = notify(
        template="subscription_renewal_reminder",
        user=user,
        context=context,
        channels=[Channel.EMAIL, Channel.SMS],
        dedupe_key=f"subscription_renewal_reminder:{sub.pk}:{period}",
    )
    return _summary(rows, subscription_id=str(sub.pk), outcome="notified")


def _first_attr(obj: Any, *names: str) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None
