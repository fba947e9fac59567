"""Races on PostgreSQL: threads with their own database connections, committing for real."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from django.db.models import Sum

from core.models import User
from payments.models import Order, OrderItem, PaymentTransaction, Product
from payments.services.orders import (
    PaymentNeedsRefund,
    order_cancel_expired,
    order_pay,
    orders_cancel_expired,
    orders_notify_payment_failed,
)
from tests.support.broker import BrokerProbe
from tests.support.concurrency import run_together
from tests.support.factories.payments import (
    make_product,
    notice_ids,
    payment_failed_rows,
    pending_payment_failed_ids,
    seed_orders,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_sweeps_at_once_cancel_each_of_2000_orders_once_and_restore_stock_once(
    customer: User, broker: BrokerProbe
) -> None:
    products = [make_product(stock=10_000) for _ in range(20)]
    orders = seed_orders(customer, products, count=2000, age_days=4)
    assert sum(Product.objects.values_list("stock", flat=True)) == 20 * 10_000 - 2000 * 6

    first, second = run_together(
        lambda: orders_cancel_expired(chunk_size=50), lambda: orders_cancel_expired(chunk_size=50)
    )

    # Both really ran at once: each cancelled part and skipped the chunks the other held.
    assert first["orders_cancelled"] > 0 and second["orders_cancelled"] > 0
    assert first["orders_cancelled"] + second["orders_cancelled"] == 2000
    assert first["units_restored"] + second["units_restored"] == 2000 * 6
    assert first["transactions_cancelled"] + second["transactions_cancelled"] == 2000
    assert Order.objects.filter(status=Order.Status.CANCELLED, payment_status="failed").count() == 2000
    assert set(Product.objects.values_list("stock", flat=True)) == {10_000}
    assert not PaymentTransaction.objects.exclude(status=PaymentTransaction.Status.CANCELLED).exists()
    # Each committed chunk published one notify message: every order is in exactly one of them.
    announced = Counter(i for ids in notice_ids() for i in ids)
    assert sorted(announced) == sorted(str(o.pk) for o in orders) and set(announced.values()) == {1}
    # (A chunk whose orders the other sweep held claims nothing and records nothing.)
    assert all(0 < len(ids) <= 50 for ids in notice_ids())


def test_two_workers_notifying_the_same_2000_orders_at_once_write_each_notice_once(
    customer: User, broker: BrokerProbe
) -> None:
    # Given 2,000 cancelled orders, and the same ids delivered to two workers (a redelivery
    # racing the original, or a relay publishing an intent twice after a crash)
    orders = seed_orders(customer, [make_product(stock=10_000) for _ in range(10)], count=2000, age_days=4)
    orders_cancel_expired()
    broker.flush()
    ids = [str(o.pk) for o in orders]
    messages = [ids[i : i + 100] for i in range(0, len(ids), 100)]

    # When both process every message, in opposite orders
    first, second = run_together(
        lambda: [orders_notify_payment_failed(order_ids=m) for m in messages],
        lambda: [orders_notify_payment_failed(order_ids=m) for m in reversed(messages)],
    )

    # Then each order's rows were written by exactly one of them (payment_failed_rows refuses
    # duplicates), and each email row was published for delivery once
    # (each row counted by the worker whose INSERT wrote it)
    assert sum(r["notifications_written"] for r in first + second) == 2000 * 2
    assert all(r["notified"] == 100 for r in first + second)
    assert payment_failed_rows() == {
        **{(pk, "email"): "pending" for pk in ids},
        **{(pk, "sms"): "cancelled" for pk in ids},
    }
    announced = Counter(broker.delivery_ids())
    assert sorted(announced) == pending_payment_failed_ids() and set(announced.values()) == {1}


@pytest.mark.parametrize("canceller", ["sweep", "one_by_one"])
def test_a_payment_racing_the_cancellation_ends_paid_or_cancelled_never_both(customer: User, canceller: str) -> None:
    products = [make_product(stock=10_000) for _ in range(5)]
    orders = seed_orders(customer, products, count=300, age_days=4, units=(2, 1))
    ids = [o.pk for o in orders]
    totals = {o.pk: o.total for o in orders}
    paid_ok: set[Any] = set()
    refused: set[Any] = set()

    def pay_all() -> None:
        for pk in random.sample(ids, len(ids)):
            try:
                order_pay(
                    order_id=pk, provider="seed", provider_reference=f"seed-{pk}", amount=totals[pk], currency="EUR"
                )
                paid_ok.add(pk)
            except PaymentNeedsRefund:
                refused.add(pk)

    def cancel_all() -> dict[str, int]:
        if canceller == "sweep":
            return orders_cancel_expired(chunk_size=10)
        outcomes = [order_cancel_expired(order_id=str(pk)) for pk in ids]
        return {"orders_cancelled": sum(o["orders_cancelled"] for o in outcomes)}

    _, cancelled_summary = run_together(pay_all, cancel_all)

    paid = set(Order.objects.filter(status=Order.Status.PAID, payment_status="paid").values_list("pk", flat=True))
    cancelled = set(
        Order.objects.filter(status=Order.Status.CANCELLED, payment_status="failed").values_list("pk", flat=True)
    )
    assert paid | cancelled == set(ids) and not paid & cancelled
    assert paid == paid_ok and cancelled == refused
    assert cancelled_summary["orders_cancelled"] == len(cancelled)
    assert not Order.objects.filter(paid_at__isnull=False, cancelled_at__isnull=False).exists()
    # Stock given back for exactly the cancelled orders, never for a paid one.
    held_by_paid = dict(
        OrderItem.objects.filter(order_id__in=paid)
        .values("product_id")
        .annotate(n=Sum("quantity"))
        .values_list("product_id", "n")
    )
    for product in Product.objects.all():
        assert product.stock == 10_000 - held_by_paid.get(product.pk, 0)
    # The charge for a cancelled order is still money taken: recorded succeeded, to refund.
    tx = {
        pk: (status, refund)
        for pk, status, refund in PaymentTransaction.objects.values_list("order_id", "status", "needs_refund")
    }
    assert {tx[pk] for pk in paid} == {("succeeded", False)}
    assert {tx[pk] for pk in cancelled} <= {("succeeded", True)}
