"""Orders: place (reserve stock), pay, and cancel unpaid orders past their deadline.

Lock order: an order row before product rows, product rows by ascending primary key.
The sweep claims its orders in no particular order (Django drops order_by inside an
`__in` subquery), which is harmless: that claim uses SKIP LOCKED and never waits for
an order row, so it cannot close a cycle.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Prefetch, QuerySet, Sum
from django.utils import timezone

from core.errors import Conflict, Invalid, NotFound
from core.progress import Progress
from core.services.outbox import outbox_add
from notifications.models import Channel
from notifications.services import NotifyRequest, notify, notify_many, summary_of
from payments import selectors
from payments.models import Order, OrderItem, PaymentTransaction, Product
from payments.services.pricing import products_price_effective

logger = logging.getLogger(__name__)

# 1,000 orders (about 3,000 items) per transaction: measured with
# tests/benchmarks/payment_timeouts.py, 500 and 2,000 were within 10 % of it, and
# 1,000 keeps each transaction (and the rows it locks) well under a second.
SWEEP_CHUNK_SIZE = 1000
MIN_TIMEOUT_DAYS = 1
MAX_TIMEOUT_DAYS = 365


# The errors are the core vocabulary (404 / 409 / 400 in the API, exit codes in the CLI);
# the names say which rule refused.


class OrderInvalid(Invalid):
    """The order as asked cannot exist (no items, a quantity below 1, mixed currencies, unknown products)."""

    def __init__(self, message: str, *, field: str = "items") -> None:
        super().__init__({field: [message]}, detail=message)


class UnknownProduct(OrderInvalid):
    pass


class InsufficientStock(Conflict):
    def __init__(self, *, sku: str, requested: int, available: int) -> None:
        self.sku, self.requested, self.available = sku, requested, available
        super().__init__(f"Not enough stock for {sku}: {requested} requested, {available} available.")


class OrderNotFound(NotFound):
    pass


class OrderNotPayable(Conflict):
    pass


class PaymentMismatch(OrderNotPayable):
    """The provider charged another amount or currency than the order's: nothing was recorded."""


class PaymentNeedsRefund(OrderNotPayable):
    """The provider took money for an order that is no longer pending payment.

    The charge is recorded (status succeeded, `needs_refund`) and committed before this
    is raised; `transaction` is that record.
    """

    def __init__(self, message: str, *, payment: PaymentTransaction) -> None:
        self.transaction = payment
        super().__init__(message)


# Placing and paying ---------------------------------------------------------------


def order_place(*, customer_id: int, items: Mapping[int, int], order_id: uuid.UUID | None = None) -> Order:
    """Create an order for `items` (product id -> quantity) and reserve its stock.

    Refuses the whole order, changing nothing, when any product lacks the units.
    `order_id` lets an import or the demo data choose a stable id.
    """
    if not items:
        raise OrderInvalid("An order needs at least one item.")
    if any(qty <= 0 for qty in items.values()):
        raise OrderInvalid("Every quantity must be at least 1.")
    with transaction.atomic():
        products = list(Product.objects.select_for_update().filter(pk__in=list(items)).order_by("pk"))
        missing = set(items) - {p.pk for p in products}
        if missing:
            raise UnknownProduct(f"Unknown product id(s): {', '.join(str(m) for m in sorted(missing))}.")
        currencies = {p.currency for p in products}
        if len(currencies) > 1:
            raise OrderInvalid(f"An order is in one currency; these products mix {', '.join(sorted(currencies))}.")
        for product in products:
            if product.stock < items[product.pk]:
                raise InsufficientStock(sku=product.sku, requested=items[product.pk], available=product.stock)
        now = timezone.now()
        for product in products:
            # Conditional even under the row lock: the CHECK constraint and this guard both refuse oversell.
            taken = Product.objects.filter(pk=product.pk, stock__gte=items[product.pk]).update(
                stock=F("stock") - items[product.pk], updated_at=now
            )
            if taken != 1:
                raise InsufficientStock(sku=product.sku, requested=items[product.pk], available=product.stock)
        # Each line at the product's effective price at this moment: the discounted price of
        # the batch that ships first, else the base price (payments.services.pricing).
        effective = products_price_effective(product_ids=[p.pk for p in products], at=now)
        prices = {pk: quote.price for pk, quote in effective.items()}
        total = sum((prices[p.pk] * items[p.pk] for p in products), Decimal("0.00"))
        order = Order.objects.create(
            id=order_id or uuid.uuid4(), customer_id=customer_id, currency=currencies.pop(), total=total, created_at=now
        )
        OrderItem.objects.bulk_create(
            [OrderItem(order=order, product=p, quantity=items[p.pk], unit_price=prices[p.pk]) for p in products]
        )
    return order


def payment_initiate(*, order_id: uuid.UUID | str, provider: str, provider_reference: str) -> PaymentTransaction:
    """Record that a charge was started with a provider for an order awaiting payment."""
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None:
            raise OrderNotFound(f"No order {order_id}.")
        if order.status != Order.Status.PENDING_PAYMENT:
            raise OrderNotPayable(f"Order {order.pk} is {order.status}; only an order pending payment can be charged.")
        return PaymentTransaction.objects.create(
            order=order,
            provider=provider,
            provider_reference=provider_reference,
            amount=order.total,
            currency=order.currency,
            status=PaymentTransaction.Status.INITIATED,
        )


def order_pay(
    *, order_id: uuid.UUID | str, provider: str, provider_reference: str, amount: Decimal, currency: str
) -> PaymentTransaction:
    """Apply a successful payment of `amount` `currency`: the order becomes paid, its transaction succeeded.

    The order row is locked first, so a sweep cancelling it at the same moment either
    finished before (and this refuses: the order is cancelled) or waits for this
    commit (and then skips it: the order is paid). A repeated callback for the same
    provider reference returns the recorded transaction and changes nothing.

    Refusals: `PaymentMismatch` when amount or currency differ from the order's
    (nothing recorded); `PaymentNeedsRefund` when the order is no longer pending payment
    (the charge is committed with `needs_refund=True` first, so the money is traceable).
    Call it outside any transaction of your own, or that record rolls back with it.
    """
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise PaymentMismatch(f"The payment amount must be a finite Decimal, got {amount!r}.")
    currency = str(currency).upper()
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None:
            raise OrderNotFound(f"No order {order_id}.")
        existing = PaymentTransaction.objects.filter(provider=provider, provider_reference=provider_reference).first()
        if existing is not None and existing.order_id != order.pk:
            raise OrderNotPayable(f"Reference {provider}:{provider_reference} belongs to another order.")
        if existing is not None and existing.status == PaymentTransaction.Status.SUCCEEDED:
            if existing.needs_refund:
                raise PaymentNeedsRefund(_needs_refund_message(order, existing), payment=existing)
            return existing
        now = timezone.now()
        # The money is taken whatever we answer: for an order no longer payable, keep a
        # record to refund it from.
        needs_refund = order.status != Order.Status.PENDING_PAYMENT
        if not needs_refund:
            if amount != order.total or currency != order.currency:
                raise PaymentMismatch(
                    f"Payment of {amount} {currency} does not match the order total {order.total} {order.currency}."
                )
            # Conditional as well as locked: the status is the rule, whatever path wrote the row.
            claimed = Order.objects.filter(pk=order.pk, status=Order.Status.PENDING_PAYMENT).update(
                status=Order.Status.PAID, payment_status=Order.PaymentStatus.PAID, paid_at=now, updated_at=now
            )
            if claimed != 1:
                raise OrderNotPayable(f"Order {order.pk} changed while it was locked; refusing the payment.")
        payment = _payment_record(
            order=order,
            existing=existing,
            provider=provider,
            provider_reference=provider_reference,
            amount=amount,
            currency=currency,
            needs_refund=needs_refund,
            now=now,
        )
        if not needs_refund:
            return payment
        refusal = PaymentNeedsRefund(_needs_refund_message(order, payment), payment=payment)
    logger.warning(
        "Payment %s:%s of %s %s for order %s recorded with needs_refund: %s",
        provider,
        provider_reference,
        amount,
        currency,
        order.pk,
        refusal,
    )
    raise refusal


def _needs_refund_message(order: Order, payment: PaymentTransaction) -> str:
    return (
        f"Order {order.pk} is {order.status}; a payment applies only to an order pending payment. "
        f"The charge {payment.provider}:{payment.provider_reference} ({payment.amount} {payment.currency}) "
        "is recorded with needs_refund."
    )


def _payment_record(
    *,
    order: Order,
    existing: PaymentTransaction | None,
    provider: str,
    provider_reference: str,
    amount: Decimal,
    currency: str,
    needs_refund: bool,
    now: datetime,
) -> PaymentTransaction:
    """The succeeded transaction with what the provider says it took: the started one updated, or a new one."""
    if existing is not None:
        PaymentTransaction.objects.filter(pk=existing.pk).update(
            status=PaymentTransaction.Status.SUCCEEDED,
            amount=amount,
            currency=currency,
            needs_refund=needs_refund,
            updated_at=now,
        )
        existing.refresh_from_db()
        return existing
    return PaymentTransaction.objects.create(
        order=order,
        provider=provider,
        provider_reference=provider_reference,
        amount=amount,
        currency=currency,
        status=PaymentTransaction.Status.SUCCEEDED,
        needs_refund=needs_refund,
    )


# Cancelling expired orders ----------------------------------------------------------


@dataclass
class _ChunkResult:
    cancelled_ids: list[uuid.UUID] = field(default_factory=list)
    units_restored: int = 0
    transactions_cancelled: int = 0


def _orders_cancel_chunk(
    *, candidates: QuerySet[Order], cutoff: datetime, now: datetime, skip_locked: bool
) -> _ChunkResult:
    """Cancel the still-unpaid, expired orders among `candidates` in one short transaction.

    A constant number of statements whatever the chunk's size: claim (lock and update in
    one), lock the products, one aggregate-and-update of stock, one update of open
    transactions, one read of the claimed ids, one outbox intent. Stock is restored only for
    the orders this transaction moved out of pending_payment (its claim token), so it is
    restored exactly once. The customers are told by one `payments.notify_payment_failed`
    intent for the chunk, recorded in this transaction: the notices commit with the
    cancellation, and writing 2,000 notification rows does not lengthen the locks held here.
    """
    result = _ChunkResult()
    token = uuid.uuid4()
    with transaction.atomic():
        lockable = (
            candidates.filter(status=Order.Status.PENDING_PAYMENT, created_at__lt=cutoff)
            .select_for_update(skip_locked=skip_locked)
            .values("pk")
        )
        claimed = Order.objects.filter(pk__in=lockable, status=Order.Status.PENDING_PAYMENT).update(
            status=Order.Status.CANCELLED,
            payment_status=Order.PaymentStatus.FAILED,
            cancelled_at=now,
            cancel_reason=Order.CancelReason.PAYMENT_TIMEOUT.label,
            claim_token=token,
            updated_at=now,
        )
        if not claimed:
            return result
        # Lock the products first, in primary-key order, so two chunks (or a chunk and an
        # order_place) that share products queue up instead of deadlocking.
        list(
            Product.objects.select_for_update()
            .filter(pk__in=OrderItem.objects.filter(order__claim_token=token).values("product_id"))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        result.units_restored = _stock_restore(claim_token=token, now=now)
        result.transactions_cancelled = PaymentTransaction.objects.filter(
            order__claim_token=token, status__in=PaymentTransaction.NON_TERMINAL
        ).update(status=PaymentTransaction.Status.CANCELLED, updated_at=now)
        result.cancelled_ids = list(Order.objects.filter(claim_token=token).values_list("pk", flat=True))
        outbox_add(
            task="payments.notify_payment_failed",
            kwargs={"order_ids": [str(pk) for pk in result.cancelled_ids]},
            dedupe_key=f"payment-failed:{token}",
        )
    return result


def _stock_restore(*, claim_token: uuid.UUID, now: datetime) -> int:
    """Give back the units these orders hold: one UPDATE of every product touched, joined to their aggregate.

    SQL rather than bulk_update(): building a CASE of 1,000 F() expressions in Python cost
    about 0.6 s a chunk (measured), the statement itself about 20 ms.
    """
    product, item, order = Product._meta.db_table, OrderItem._meta.db_table, Order._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {product} AS p SET stock = p.stock + held.units, updated_at = %s
            FROM (
                SELECT i.product_id, SUM(i.quantity) AS units
                FROM {item} AS i JOIN {order} AS o ON o.id = i.order_id
                WHERE o.claim_token = %s
                GROUP BY i.product_id
            ) AS held
            WHERE p.id = held.product_id
            """,  # noqa: S608 - table names come from the models, values are parameters
            [now, Order._meta.get_field("claim_token").get_db_prep_value(claim_token, connection)],
        )
    held = OrderItem.objects.filter(order__claim_token=claim_token).aggregate(units=Sum("quantity"))["units"]
    return int(held or 0)


def _timeout_days(older_than_days: int | None) -> int:
    days = settings.PAYMENT_TIMEOUT_DAYS if older_than_days is None else int(older_than_days)
    if not MIN_TIMEOUT_DAYS <= days <= MAX_TIMEOUT_DAYS:
        raise Invalid({"older_than_days": [f"Must be between {MIN_TIMEOUT_DAYS} and {MAX_TIMEOUT_DAYS}, got {days}."]})
    return days


def orders_cancel_expired(*, older_than_days: int | None = None, chunk_size: int = SWEEP_CHUNK_SIZE) -> dict[str, Any]:
    """Cancel every order still pending payment `older_than_days` after it was placed.

    Safe to run on several workers at once: each chunk locks its orders with SKIP
    LOCKED, so an order another worker (or a payment) holds is left to it.
    """
    days = _timeout_days(older_than_days)
    now = timezone.now()
    cutoff = now - timedelta(days=days)
    summary: dict[str, Any] = {
        "older_than_days": days,
        "cutoff": cutoff.isoformat(),
        "orders_cancelled": 0,
        "units_restored": 0,
        "transactions_cancelled": 0,
        "orders_skipped": 0,
        "chunks": 0,
    }
    after = None
    progress = Progress(total=selectors.orders_expired_count(cutoff=cutoff))
    while True:
        page = selectors.orders_expired_page(cutoff=cutoff, after=after, limit=chunk_size)
        if not page:
            break
        candidates = selectors.orders_in_key_range(after=after, last=page[-1])
        after = page[-1]
        chunk = _orders_cancel_chunk(candidates=candidates, cutoff=cutoff, now=now, skip_locked=True)
        summary["chunks"] += 1
        summary["orders_cancelled"] += len(chunk.cancelled_ids)
        summary["units_restored"] += chunk.units_restored
        summary["transactions_cancelled"] += chunk.transactions_cancelled
        # Locked by another worker or a payment, or paid since the page was read.
        summary["orders_skipped"] += len(page) - len(chunk.cancelled_ids)
        progress.advance(len(page))
    return summary


def order_cancel_expired(*, order_id: str, older_than_days: int | None = None) -> dict[str, Any]:
    """Cancel one order if it is still unpaid past its deadline; otherwise say why not and change nothing."""
    days = _timeout_days(older_than_days)
    summary: dict[str, Any] = {
        "order_id": str(order_id),
        "outcome": "cancelled",
        "orders_cancelled": 0,
        "units_restored": 0,
        "transactions_cancelled": 0,
    }
    order = selectors.order_get(order_id=order_id)
    if order is None:
        return {**summary, "outcome": "not_found", "detail": f"No order with id {order_id!r}."}
    if order.status != Order.Status.PENDING_PAYMENT:
        return {**summary, "outcome": "not_pending", "detail": f"Order is {order.status}, not pending payment."}
    now = timezone.now()
    cutoff = now - timedelta(days=days)
    if order.created_at >= cutoff:
        deadline = order.created_at + timedelta(days=days)
        return {**summary, "outcome": "not_expired", "detail": f"Payment is due until {deadline.isoformat()}."}
    # Wait for the row rather than skip it: a payment in flight decides, then we re-check.
    chunk = _orders_cancel_chunk(
        candidates=Order.objects.filter(pk=order.pk), cutoff=cutoff, now=now, skip_locked=False
    )
    if not chunk.cancelled_ids:
        order.refresh_from_db(fields=["status"])
        return {**summary, "outcome": "not_pending", "detail": f"Order is {order.status}, not pending payment."}
    return {
        **summary,
        "orders_cancelled": 1,
        "units_restored": chunk.units_restored,
        "transactions_cancelled": chunk.transactions_cancelled,
    }


# Telling the customers ---------------------------------------------------------------


def orders_notify_payment_failed(*, order_ids: Sequence[uuid.UUID | str]) -> dict[str, int]:
    """Write the payment_failed notifications (email and SMS) of these cancelled orders, each once.

    The consumer of the sweep's outbox intents: idempotent through the notifications'
    dedupe key (`payment_failed:<order id>`), so a relay that publishes an intent twice, or
    two workers running it at once, write each order's messages once. A constant number of
    queries per call. Summary: `orders` (distinct ids given), `notified` (cancelled orders
    found), `skipped` (unknown or not cancelled), `notifications_written`.
    """
    given = list(dict.fromkeys(str(pk) for pk in order_ids))
    wanted = [pk for pk in map(_uuid_or_none, given) if pk is not None]
    with transaction.atomic():
        orders = list(
            # In key order, so two workers on the same ids insert in the same order and queue
            # behind each other on the unique keys instead of deadlocking.
            Order.objects.filter(pk__in=wanted, status=Order.Status.CANCELLED)
            .order_by("pk")
            .select_related("customer")
            .prefetch_related(Prefetch("items", queryset=OrderItem.objects.select_related("product").order_by("pk")))
        )
        written = notify_many(
            NotifyRequest(
                template="payment_failed",
                user=order.customer,
                context=order_notice_context(order),
                channels=[Channel.EMAIL, Channel.SMS],
                dedupe_key=f"payment_failed:{order.pk}",
            )
            for order in orders
        )
    if len(orders) < len(given):
        logger.warning(
            "payment_failed: %d of %d orders unknown or not cancelled; skipped", len(given) - len(orders), len(given)
        )
    return {
        "orders": len(given),
        "notified": len(orders),
        "skipped": len(given) - len(orders),
        "notifications_written": written,
    }


ORDER_EVENTS = ("order_confirmation", "order_shipped", "payment_failed")


def order_event_notify(*, event: str, order_id: str) -> dict[str, Any]:
    """One event (`order_confirmation`, `order_shipped`, `payment_failed`) to the order's customer, once per order."""
    if event not in ORDER_EVENTS:
        raise Invalid({"event": [f"Unknown order event {event!r}; one of {', '.join(ORDER_EVENTS)}."]})
    order = selectors.order_get(order_id=order_id)
    if order is None:
        logger.warning("%s: order %s does not exist", event, order_id)
        return {"order_id": str(order_id), "outcome": "not_found"}
    rows = notify(
        template=event,
        user=order.customer,
        context=order_notice_context(order),
        channels=[Channel.EMAIL, Channel.SMS],
        dedupe_key=f"{event}:{order.pk}",
    )
    return summary_of(rows, order_id=str(order.pk), outcome="notified")


def order_notice_context(order: Order) -> dict[str, Any]:
    """What the order templates show: built here, so notifications never reads payments' tables."""
    customer = order.customer
    items = [
        {"product": item.product.name, "quantity": item.quantity, "unit_price": str(item.unit_price)}
        for item in sorted(order.items.all(), key=lambda i: i.pk)
    ]
    return {
        "order_id": str(order.pk),
        # The whole id: its first 8 hex digits collide from about 77,000 orders on.
        "order_number": str(order.pk).upper(),
        "customer_name": customer.get_full_name() or customer.get_username(),
        "total": str(order.total),
        "currency": order.currency,
        "status": order.status,
        "payment_status": order.payment_status,
        "cancel_reason": order.cancel_reason or "",
        "created_at": order.created_at.date().isoformat() if order.created_at else "",
        "tracking_number": "",
        "items": items,
    }


def _uuid_or_none(value: str) -> uuid.UUID | None:
    # A malformed id would make the whole IN query fail; it is simply an order that does not exist.
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
