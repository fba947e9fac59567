"""Stock conservation under any mix of placing, paying and cancelling (a Hypothesis state machine on PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from core.models import User
from payments.models import Order, OrderItem, PaymentTransaction, Product
from payments.services.orders import (
    InsufficientStock,
    OrderNotPayable,
    PaymentNeedsRefund,
    order_cancel_expired,
    order_place,
    orders_cancel_expired,
)
from tests.support.factories.payments import make_product, pay

pytestmark = pytest.mark.django_db

INITIAL_STOCK = 6


class StockMachine(RuleBasedStateMachine):
    """Model: per product, stock + units held by orders that are not cancelled never changes."""

    customer: User

    def __init__(self) -> None:
        super().__init__()
        self.products = [make_product(stock=INITIAL_STOCK) for _ in range(3)]
        self.pids = [p.pk for p in self.products]
        self.orders: list[Any] = []
        self.model_paid: set[Any] = set()
        self.model_cancelled: set[Any] = set()

    @rule(lines=st.dictionaries(st.integers(0, 2), st.integers(1, 4), min_size=1, max_size=3))
    def place(self, lines: dict[int, int]) -> None:
        items = {self.pids[i]: q for i, q in lines.items()}
        available = dict(Product.objects.filter(pk__in=items).values_list("pk", "stock"))
        enough = all(available[pk] >= q for pk, q in items.items())
        try:
            order = order_place(customer_id=self.customer.pk, items=items)
        except InsufficientStock:
            assert not enough
            return
        assert enough
        self.orders.append(order.pk)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        pk = data.draw(st.sampled_from(self.orders))
        try:
            pay(Order.objects.get(pk=pk), f"ref-{pk}", provider="hyp")
        except OrderNotPayable as refused:
            assert pk in self.model_cancelled
            # The money was taken all the same: it is on record, to be refunded.
            assert isinstance(refused, PaymentNeedsRefund)
            assert PaymentTransaction.objects.get(provider_reference=f"ref-{pk}").needs_refund
            return
        assert pk not in self.model_cancelled
        self.model_paid.add(pk)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def let_an_order_expire(self, data: st.DataObject) -> None:
        pk = data.draw(st.sampled_from(self.orders))
        Order.objects.filter(pk=pk).update(created_at=timezone.now() - timedelta(days=4))

    @rule()
    def sweep(self) -> None:
        expiring = set(
            Order.objects.filter(
                pk__in=self.orders, status="pending_payment", created_at__lt=timezone.now() - timedelta(days=3)
            ).values_list("pk", flat=True)
        )
        summary = orders_cancel_expired(chunk_size=2)
        assert summary["orders_cancelled"] >= len(expiring)
        self.model_cancelled |= expiring

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def cancel_one(self, data: st.DataObject) -> None:
        pk = data.draw(st.sampled_from(self.orders))
        outcome = order_cancel_expired(order_id=str(pk))["outcome"]
        if outcome == "cancelled":
            assert pk not in self.model_paid and pk not in self.model_cancelled
            self.model_cancelled.add(pk)

    @invariant()
    def stock_plus_live_reservations_is_constant(self) -> None:
        stock = dict(Product.objects.filter(pk__in=self.pids).values_list("pk", "stock"))
        held = dict(
            OrderItem.objects.filter(product_id__in=self.pids)
            .exclude(order__status=Order.Status.CANCELLED)
            .values("product_id")
            .annotate(n=Sum("quantity"))
            .values_list("product_id", "n")
        )
        for pk in self.pids:
            assert stock[pk] >= 0
            assert stock[pk] + held.get(pk, 0) == INITIAL_STOCK

    @invariant()
    def no_order_is_both_paid_and_cancelled(self) -> None:
        assert not self.model_paid & self.model_cancelled
        rows = dict(Order.objects.filter(pk__in=self.orders).values_list("pk", "status"))
        for pk in self.model_paid:
            assert rows[pk] == Order.Status.PAID
        for pk in self.model_cancelled:
            assert rows[pk] == Order.Status.CANCELLED


def test_stock_is_conserved_for_any_mix_of_placed_paid_and_cancelled_orders(customer: User) -> None:
    StockMachine.customer = customer
    run_state_machine_as_test(
        StockMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
