"""Domain events: read an order or subscription from payments (lazily, it may not exist yet) and notify."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import models

from notifications.models import Channel, Notification
from notifications.services.outbox import NotifyRequest, notify, outbox_write_many

logger = logging.getLogger(__name__)

ORDER_EVENTS = ("order_confirmation", "order_shipped", "payment_failed")
# The payments sweep's chunk is 1,000 orders: one INSERT of 2,000 rows keeps its queries constant.
PAYMENT_FAILED_CHUNK = 1000


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
        # The whole id: its first 8 hex digits collide from about 77,000 orders on.
        "order_number": str(order.pk).upper(),
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


def payment_failed_notify_many(*, order_ids: Sequence[str | UUID]) -> int:
    """`payment_failed` for up to a few thousand orders, in the caller's transaction.

    payments calls it from `orders_notify_payment_failed`, in the transaction that marks the
    orders `payment_failed_notified_at`, so the flag and the outbox rows commit (or roll back)
    together. One `notifications.deliver_batch` message is published at commit; if it is
    lost, the rows stay pending and `notification_outbox_recovery` sends them. Returns the
    rows written.
    """
    return payment_failed_record(order_ids=order_ids)["notifications_written"]


def payment_failed_notify(*, order_id: str | UUID) -> int:
    """`payment_failed` for one order; see payment_failed_notify_many."""
    return payment_failed_notify_many(order_ids=[order_id])


def payment_failed_record(*, order_ids: Sequence[str | UUID]) -> dict[str, int]:
    """payment_failed_notify_many with the full count (the tasks' summary): orders, found, missing, written.

    A constant number of queries whatever the count: the orders with their customers, their
    items with products (the email lists them), the dedupe check, the templates, one INSERT
    and the ids of the pending rows.
    """
    order_model = _model("Order")
    item_model = _model("OrderItem")
    if order_model is None or item_model is None:
        logger.warning("payment_failed for %d orders: payments.Order is not installed", len(order_ids))
        return {"orders": len(order_ids), "found": 0, "missing": len(order_ids), "notifications_written": 0}
    wanted = _valid_pks(order_model, order_ids)
    orders = (
        list(
            order_model.objects.filter(pk__in=wanted)  # type: ignore[attr-defined]
            .select_related("customer")
            .prefetch_related(
                models.Prefetch(
                    "items",
                    queryset=item_model.objects.select_related("product"),  # type: ignore[attr-defined]
                )
            )
        )
        if wanted
        else []
    )
    requests = [
        NotifyRequest(
            template="payment_failed",
            user=order.customer,
            context=order_context(order),
            channels=[Channel.EMAIL, Channel.SMS],
            dedupe_key=f"payment_failed:{order.pk}",
        )
        for order in orders
    ]
    written = len(outbox_write_many(requests, dispatch="batch", chunk_size=PAYMENT_FAILED_CHUNK)) if requests else 0
    distinct = len({str(pk) for pk in order_ids})
    missing = distinct - len(orders)
    if missing:
        logger.warning("payment_failed: %d of %d orders do not exist; skipped", missing, distinct)
    return {"orders": distinct, "found": len(orders), "missing": missing, "notifications_written": written}


def _valid_pks(model: type[models.Model], values: Sequence[str | UUID]) -> list[Any]:
    # "not-a-uuid" would make the whole IN query fail; such an id is simply an order that does not exist.
    pk_field = model._meta.pk
    assert pk_field is not None
    valid = []
    for value in values:
        try:
            valid.append(pk_field.to_python(value))
        except (ValidationError, ValueError, TypeError):
            continue
    return list(dict.fromkeys(valid))


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
