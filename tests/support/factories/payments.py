"""Payments test data: products, orders placed through the service, thousands of orders set-based."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path

from django.utils import timezone

from core.models import User
from payments.models import Order, PaymentTransaction, Product
from payments.services.orders import order_pay, order_place

FIXTURES = Path(__file__).resolve().parents[2] / "payments" / "fixtures"
_skus = count(1)


def make_product(*, stock: int = 100, price: str = "10.00", currency: str = "EUR", sku: str | None = None) -> Product:
    n = next(_skus)
    return Product.objects.create(
        sku=sku or f"SKU-{uuid.uuid4().hex[:8]}-{n}",
        name=f"Product {n}",
        price=Decimal(price),
        currency=currency,
        stock=stock,
    )


def place(customer: User, items: dict[Product, int], *, age_days: float = 0) -> Order:
    order = order_place(customer_id=customer.pk, items={p.pk: q for p, q in items.items()})
    if age_days:
        Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(days=age_days))
        order.refresh_from_db()
    return order


def pay(order: Order, reference: str, *, provider: str = "acme") -> PaymentTransaction:
    """The provider's success callback for exactly the order's total."""
    return order_pay(
        order_id=order.pk, provider=provider, provider_reference=reference, amount=order.total, currency=order.currency
    )


def payment_failed_rows() -> dict[tuple[str, str], str]:
    """{(order id, channel): status} of the payment_failed outbox rows."""
    from notifications.models import Notification

    rows = Notification.objects.filter(template_key="payment_failed").values_list("dedupe_group", "channel", "status")
    found: dict[tuple[str, str], str] = {}
    for group, channel, status in rows:
        key = (group.removeprefix("payment_failed:"), channel)
        assert key not in found, f"two payment_failed rows for {key}"
        found[key] = status
    return found


def pending_payment_failed_ids() -> list[int]:
    from notifications.models import Notification

    return sorted(
        Notification.objects.filter(template_key="payment_failed", status="pending").values_list("pk", flat=True)
    )


def notice_ids() -> list[list[str]]:
    """The order ids of each `payments.notify_payment_failed` message on the test broker, in sending order."""
    from tests.support.broker import sent_tasks

    return [t.kwargs["order_ids"] for t in sent_tasks("payments", "payments.notify_payment_failed")]


def stock_of(*products: Product) -> list[int]:
    return list(Product.objects.filter(pk__in=[p.pk for p in products]).order_by("pk").values_list("stock", flat=True))


def seed_orders(
    customer: User, products: list[Product], *, count: int, age_days: float, units: tuple[int, ...] = (1, 2, 3)
) -> list[Order]:
    """`count` pending orders with one line per entry of `units`, stock already taken, one open transaction each.

    Set-based, for the concurrency tests that need thousands of orders quickly; the
    result is what `order_place` would have left behind.
    """
    from django.db import transaction
    from django.db.models import F

    from payments.models import OrderItem, PaymentTransaction

    created_at = timezone.now() - timedelta(days=age_days)
    taken: dict[int, int] = {}
    orders, items, txs = [], [], []
    for i in range(count):
        order = Order(customer=customer, currency="EUR", total=Decimal("0"), created_at=created_at)
        total = Decimal("0")
        for j, qty in enumerate(units):
            product = products[(i + j) % len(products)]
            items.append(OrderItem(order=order, product=product, quantity=qty, unit_price=product.price))
            taken[product.pk] = taken.get(product.pk, 0) + qty
            total += product.price * qty
        order.total = total
        orders.append(order)
        txs.append(
            PaymentTransaction(
                order=order, provider="seed", provider_reference=f"seed-{order.pk}", amount=total, currency="EUR"
            )
        )
    with transaction.atomic():
        Order.objects.bulk_create(orders, batch_size=1000)
        OrderItem.objects.bulk_create(items, batch_size=3000)
        PaymentTransaction.objects.bulk_create(txs, batch_size=1000)
        for pk, qty in taken.items():
            Product.objects.filter(pk=pk).update(stock=F("stock") - qty)
    return orders
