from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import User
from payments.models import Order, PaymentTransaction, Product
from payments.services.orders import (
    InsufficientStock,
    OrderError,
    OrderNotPayable,
    UnknownProduct,
    order_cancel_expired,
    order_pay,
    order_place,
    orders_cancel_expired,
    payment_initiate,
)
from tests.payments.factories import BrokerQueue, make_product, place, stock_of

pytestmark = pytest.mark.django_db


# Placing ----------------------------------------------------------------------------


def test_placing_an_order_reserves_its_units_and_prices_it(customer: User) -> None:
    tea, honey = make_product(stock=10, price="8.50"), make_product(stock=5, price="11.00")

    order = place(customer, {tea: 3, honey: 2})

    assert stock_of(tea, honey) == [7, 3]
    assert order.status == Order.Status.PENDING_PAYMENT and order.payment_status == Order.PaymentStatus.PENDING
    assert order.total == Decimal("47.50") and order.currency == "EUR"
    assert sorted(order.items.values_list("quantity", "unit_price")) == [(2, Decimal("11.00")), (3, Decimal("8.50"))]


def test_an_order_larger_than_the_stock_is_refused_naming_the_product_and_changes_nothing(customer: User) -> None:
    tea, honey = make_product(stock=10, sku="TEA"), make_product(stock=1, sku="HONEY")

    with pytest.raises(InsufficientStock, match=r"Not enough stock for HONEY: 2 requested, 1 available"):
        place(customer, {tea: 3, honey: 2})

    assert stock_of(tea, honey) == [10, 1]
    assert not Order.objects.exists()


def test_the_last_units_can_be_ordered_and_then_none_are_left(customer: User) -> None:
    tea = make_product(stock=2)
    place(customer, {tea: 2})

    with pytest.raises(InsufficientStock):
        place(customer, {tea: 1})
    assert stock_of(tea) == [0]


def test_unknown_products_zero_quantities_and_mixed_currencies_are_refused(customer: User) -> None:
    eur, usd = make_product(currency="EUR"), make_product(currency="USD")

    with pytest.raises(UnknownProduct):
        order_place(customer_id=customer.pk, items={999_999: 1})
    with pytest.raises(OrderError, match="at least 1"):
        order_place(customer_id=customer.pk, items={eur.pk: 0})
    with pytest.raises(OrderError, match="one currency"):
        order_place(customer_id=customer.pk, items={eur.pk: 1, usd.pk: 1})
    assert stock_of(eur, usd) == [100, 100]


# Paying -----------------------------------------------------------------------------


def test_paying_an_order_marks_it_paid_and_records_a_succeeded_transaction(customer: User) -> None:
    order = place(customer, {make_product(): 1})
    payment_initiate(order_id=order.pk, provider="acme", provider_reference="ch_1")

    tx = order_pay(order_id=order.pk, provider="acme", provider_reference="ch_1", amount=Decimal("10.00"))

    order.refresh_from_db()
    assert (order.status, order.payment_status) == (Order.Status.PAID, Order.PaymentStatus.PAID)
    assert order.paid_at is not None
    assert tx.status == PaymentTransaction.Status.SUCCEEDED
    assert PaymentTransaction.objects.count() == 1


def test_a_repeated_payment_callback_changes_nothing(customer: User) -> None:
    order = place(customer, {make_product(): 1})
    first = order_pay(order_id=order.pk, provider="acme", provider_reference="ch_1")

    again = order_pay(order_id=order.pk, provider="acme", provider_reference="ch_1")

    assert again.pk == first.pk
    assert PaymentTransaction.objects.count() == 1


def test_a_payment_for_a_cancelled_order_is_refused(customer: User) -> None:
    order = place(customer, {make_product(): 1}, age_days=4)
    orders_cancel_expired()

    with pytest.raises(OrderNotPayable, match="cancelled"):
        order_pay(order_id=order.pk, provider="acme", provider_reference="late")

    order.refresh_from_db()
    assert (order.status, order.payment_status) == (Order.Status.CANCELLED, Order.PaymentStatus.FAILED)
    assert not PaymentTransaction.objects.filter(provider_reference="late").exists()


def test_a_payment_of_the_wrong_amount_is_refused(customer: User) -> None:
    order = place(customer, {make_product(price="10.00"): 2})

    with pytest.raises(OrderNotPayable, match="does not match"):
        order_pay(order_id=order.pk, provider="acme", provider_reference="x", amount=Decimal("10.00"))
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING_PAYMENT


# The sweep --------------------------------------------------------------------------


def test_the_sweep_cancels_only_unpaid_orders_older_than_the_timeout(
    customer: User, notifications_queue: BrokerQueue, django_capture_on_commit_callbacks: Any
) -> None:
    tea, honey = make_product(stock=100), make_product(stock=100)
    expired = place(customer, {tea: 3, honey: 1}, age_days=3.1)
    fresh = place(customer, {tea: 2}, age_days=2.9)
    paid_long_ago = place(customer, {honey: 4}, age_days=10)
    order_pay(order_id=paid_long_ago.pk, provider="acme", provider_reference="paid")
    open_tx = payment_initiate(order_id=expired.pk, provider="acme", provider_reference="open")
    failed_tx = PaymentTransaction.objects.create(
        order=expired, provider="acme", provider_reference="failed", amount=1, currency="EUR", status="failed"
    )

    with django_capture_on_commit_callbacks(execute=True):
        summary = orders_cancel_expired()

    assert summary["orders_cancelled"] == 1
    assert summary["units_restored"] == 4
    assert summary["transactions_cancelled"] == 1
    expired.refresh_from_db()
    assert expired.status == Order.Status.CANCELLED and expired.payment_status == Order.PaymentStatus.FAILED
    assert expired.cancelled_at is not None and expired.cancel_reason == "Not paid in time"
    assert Order.objects.get(pk=fresh.pk).status == Order.Status.PENDING_PAYMENT
    assert Order.objects.get(pk=paid_long_ago.pk).status == Order.Status.PAID
    assert stock_of(tea, honey) == [100 - 2, 100 - 4]
    open_tx.refresh_from_db()
    failed_tx.refresh_from_db()
    assert open_tx.status == PaymentTransaction.Status.CANCELLED
    assert failed_tx.status == PaymentTransaction.Status.FAILED  # terminal: left alone
    assert notifications_queue.tasks("notifications.send_payment_failed_many") == [
        {"task": "notifications.send_payment_failed_many", "args": [[str(expired.pk)]], "kwargs": {}}
    ]


def test_running_the_sweep_again_changes_nothing(customer: User) -> None:
    tea = make_product(stock=50)
    for _ in range(3):
        place(customer, {tea: 5}, age_days=5)
    first = orders_cancel_expired()

    second = orders_cancel_expired()

    assert first["orders_cancelled"] == 3 and first["units_restored"] == 15
    assert (second["orders_cancelled"], second["units_restored"], second["chunks"]) == (0, 0, 0)
    assert stock_of(tea) == [50]


def test_an_order_becomes_due_exactly_when_its_timeout_passes(customer: User, settings: Any) -> None:
    settings.PAYMENT_TIMEOUT_DAYS = 3
    placed_at = timezone.now()
    order = place(customer, {make_product(): 1})

    with time_machine.travel(placed_at + timedelta(days=3, seconds=-60)):
        assert orders_cancel_expired()["orders_cancelled"] == 0
    with time_machine.travel(placed_at + timedelta(days=3, seconds=60)):
        assert orders_cancel_expired()["orders_cancelled"] == 1
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


def test_older_than_days_overrides_the_setting(customer: User) -> None:
    place(customer, {make_product(): 1}, age_days=2)

    assert orders_cancel_expired(older_than_days=3)["orders_cancelled"] == 0
    assert orders_cancel_expired(older_than_days=1)["orders_cancelled"] == 1


@pytest.mark.parametrize("days", [0, -1, 366])
def test_the_sweep_refuses_an_out_of_range_timeout(days: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 365"):
        orders_cancel_expired(older_than_days=days)


def test_the_sweep_runs_a_constant_number_of_queries_per_chunk_and_one_notification_per_chunk(
    customer: User, notifications_queue: BrokerQueue, django_capture_on_commit_callbacks: Any
) -> None:
    products = [make_product(stock=1000) for _ in range(6)]
    for i in range(40):
        place(customer, {products[i % 6]: 1, products[(i + 1) % 6]: 2, products[(i + 2) % 6]: 3}, age_days=4)

    with CaptureQueriesContext(connection) as small_chunks, django_capture_on_commit_callbacks(execute=True):
        many = orders_cancel_expired(chunk_size=10)

    assert many["chunks"] == 4 and many["orders_cancelled"] == 40 and many["units_restored"] == 240
    queries_per_chunk = (len(small_chunks) - 1) / many["chunks"]  # the last, empty page read is the 1
    assert queries_per_chunk <= 9, [q["sql"][:80] for q in small_chunks.captured_queries]
    assert len(small_chunks) == 1 + 4 * queries_per_chunk
    sent = notifications_queue.tasks("notifications.send_payment_failed_many")
    assert [len(m["args"][0]) for m in sent] == [10, 10, 10, 10]
    assert stock_of(*products) == [1000] * 6


def test_the_query_count_does_not_grow_with_the_chunk(customer: User) -> None:
    products = [make_product(stock=1000) for _ in range(5)]
    for i in range(30):
        place(customer, {products[i % 5]: 1, products[(i + 3) % 5]: 1}, age_days=4)
    Order.objects.filter(pk__in=list(Order.objects.values_list("pk", flat=True)[:10])).update(
        created_at=timezone.now() - timedelta(days=30)
    )

    with CaptureQueriesContext(connection) as ten:
        orders_cancel_expired(older_than_days=20, chunk_size=100)
    with CaptureQueriesContext(connection) as twenty:
        orders_cancel_expired(older_than_days=3, chunk_size=100)

    assert len(ten) == len(twenty)


# One order --------------------------------------------------------------------------


def test_cancelling_one_expired_order_restores_its_stock_and_notifies_once(
    customer: User, notifications_queue: BrokerQueue, django_capture_on_commit_callbacks: Any
) -> None:
    tea = make_product(stock=10)
    order = place(customer, {tea: 4}, age_days=4)
    other = place(customer, {tea: 1}, age_days=4)

    with django_capture_on_commit_callbacks(execute=True):
        summary = order_cancel_expired(order_id=str(order.pk))

    assert summary["outcome"] == "cancelled" and summary["orders_cancelled"] == 1 and summary["units_restored"] == 4
    assert stock_of(tea) == [10 - 1]
    assert Order.objects.get(pk=other.pk).status == Order.Status.PENDING_PAYMENT
    assert notifications_queue.tasks("notifications.send_payment_failed") == [
        {"task": "notifications.send_payment_failed", "args": [str(order.pk)], "kwargs": {}}
    ]


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_cancelling_an_unknown_order_says_so_and_changes_nothing(order_id: str) -> None:
    summary = order_cancel_expired(order_id=order_id)

    assert summary["outcome"] == "not_found" and summary["orders_cancelled"] == 0
    assert order_id in summary["detail"]


def test_cancelling_a_paid_or_fresh_order_says_why_and_changes_nothing(customer: User) -> None:
    tea = make_product(stock=10)
    paid = place(customer, {tea: 1}, age_days=5)
    order_pay(order_id=paid.pk, provider="acme", provider_reference="p")
    fresh = place(customer, {tea: 1}, age_days=1)

    assert order_cancel_expired(order_id=str(paid.pk))["outcome"] == "not_pending"
    assert order_cancel_expired(order_id=str(fresh.pk))["outcome"] == "not_expired"
    assert stock_of(tea) == [8]
    assert set(Order.objects.values_list("status", flat=True)) == {"paid", "pending_payment"}


def test_cancelling_the_same_order_twice_restores_stock_once(customer: User) -> None:
    tea = make_product(stock=10)
    order = place(customer, {tea: 3}, age_days=4)

    first = order_cancel_expired(order_id=str(order.pk))
    second = order_cancel_expired(order_id=str(order.pk))

    assert (first["outcome"], second["outcome"]) == ("cancelled", "not_pending")
    assert stock_of(tea) == [10]


def test_products_never_go_negative_even_when_written_directly() -> None:
    from django.db import IntegrityError, transaction

    tea = make_product(stock=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=tea.pk).update(stock=-1)
