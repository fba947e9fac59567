"""Demo data for `make run`: a small catalogue and a few orders, three of them past their payment deadline.

Trigger `payment_timeouts` afterwards and watch those three get cancelled and their stock come back.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from payments.models import ExchangeRate, Order, Product
from payments.services.orders import order_pay, order_place, payment_initiate
from payments.services.rates import exchange_rates_store

_NS = uuid.UUID("5f0c1d2e-8a7b-4c3d-9e1f-0a1b2c3d4e5f")

PRODUCTS = [
    ("DEMO-TEA-001", "Assam black tea, 250 g", "8.50", 120),
    ("DEMO-TEA-002", "Darjeeling first flush, 100 g", "14.90", 60),
    ("DEMO-HNY-001", "Wildflower honey, 500 g", "11.00", 80),
    ("DEMO-OIL-001", "Cold-pressed mustard oil, 1 l", "9.75", 50),
    ("DEMO-SPC-001", "Garam masala, 100 g", "4.20", 200),
    ("DEMO-RCE-001", "Basmati rice, 5 kg", "21.00", 40),
]

# (name, age in days, items by sku, what happens after placing)
ORDERS = [
    ("fresh-1", 0, {"DEMO-TEA-001": 2, "DEMO-HNY-001": 1}, "pending"),
    ("fresh-2", 1, {"DEMO-RCE-001": 1}, "initiated"),
    ("paid-1", 5, {"DEMO-TEA-002": 1, "DEMO-SPC-001": 3}, "paid"),
    ("expired-1", 4, {"DEMO-TEA-001": 3, "DEMO-OIL-001": 2}, "initiated"),
    ("expired-2", 5, {"DEMO-HNY-001": 2}, "pending"),
    ("expired-3", 10, {"DEMO-SPC-001": 5, "DEMO-RCE-001": 1, "DEMO-TEA-002": 2}, "initiated"),
]

# A few ECB reference rates so conversions work before the first exchange_rates run.
RATES = {"USD": "1.0542", "GBP": "0.83215", "INR": "89.0150", "JPY": "162.83", "CHF": "0.9315"}


def demo_order_id(name: str) -> uuid.UUID:
    return uuid.uuid5(_NS, name)


def load_demo_data() -> dict[str, int]:
    user_model = get_user_model()
    with transaction.atomic():
        customer, _ = user_model.objects.get_or_create(
            username="demo-customer", defaults={"email": "demo-customer@example.com"}
        )
        products_created = 0
        for sku, name, price, stock in PRODUCTS:
            _, created = Product.objects.get_or_create(
                sku=sku, defaults={"name": name, "price": Decimal(price), "currency": "EUR", "stock": stock}
            )
            products_created += created
        by_sku = {p.sku: p.pk for p in Product.objects.filter(sku__in=[p[0] for p in PRODUCTS])}

        orders_created = 0
        now = timezone.now()
        for name, age_days, items, after in ORDERS:
            order_id = demo_order_id(name)
            if Order.objects.filter(pk=order_id).exists():
                continue
            order = order_place(
                customer_id=customer.pk, items={by_sku[sku]: qty for sku, qty in items.items()}, order_id=order_id
            )
            # Back-dated, so some orders are already past their payment deadline.
            Order.objects.filter(pk=order_id).update(created_at=now - timedelta(days=age_days, hours=1))
            if after in ("initiated", "paid"):
                payment_initiate(order_id=order_id, provider="demo", provider_reference=f"demo-{name}")
            if after == "paid":
                order_pay(
                    order_id=order_id,
                    provider="demo",
                    provider_reference=f"demo-{name}",
                    amount=order.total,
                    currency=order.currency,
                )
            orders_created += 1

        rates = exchange_rates_store(
            rates_by_day={date.today() - timedelta(days=1): {q: Decimal(r) for q, r in RATES.items()}}
        )
    expired = Order.objects.filter(
        status=Order.Status.PENDING_PAYMENT, created_at__lt=now - timedelta(days=settings.PAYMENT_TIMEOUT_DAYS)
    ).count()
    return {
        "products_created": products_created,
        "orders_created": orders_created,
        "orders_past_deadline": expired,
        "exchange_rates_created": rates["created"],
        "exchange_rates_total": ExchangeRate.objects.count(),
    }
