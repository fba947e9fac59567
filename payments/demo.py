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

from payments.demo_escrow import load_escrow_demo
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
    subscriptions = load_subscription_demo(customer_id=customer.pk)
    return {
        **subscriptions,
        **load_escrow_demo(),
        **load_pricing_demo(),
        "products_created": products_created,
        "orders_created": orders_created,
        "orders_past_deadline": expired,
        "exchange_rates_created": rates["created"],
        "exchange_rates_total": ExchangeRate.objects.count(),
    }


# (name, plan key, days until the next charge, status)
SUBSCRIPTIONS = [
    ("due-today", "tea-weekly", 0, "active"),
    ("due-tomorrow", "tea-weekly", 1, "active"),
    ("next-week", "honey-monthly", 7, "active"),
    ("paused", "honey-monthly", 3, "paused"),
]


def load_subscription_demo(*, customer_id: int) -> dict[str, int]:
    """Two plans, four subscriptions (one due today, one due tomorrow) and a cart untouched for 40 days.

    Trigger `due_subscriptions` to charge the one due today (against RAZORPAY_BASE_URL), and
    `subscription_reminders` to remind the one due tomorrow; `expired_carts_cleanup` deletes
    the old cart. Idempotent: rows are found by name, never duplicated.
    """
    from payments.models import Cart, CartItem, Plan, Subscription
    from payments.models.subscriptions import utc_today

    user_model = get_user_model()
    today = utc_today()
    with transaction.atomic():
        tea = Product.objects.get(sku="DEMO-TEA-001")
        honey = Product.objects.get(sku="DEMO-HNY-001")
        plans = {
            "tea-weekly": Plan.objects.get_or_create(
                name="Demo: Assam tea every week",
                defaults={
                    "product": tea,
                    "quantity": 1,
                    "price": Decimal("7.99"),
                    "currency": tea.currency,
                    "interval": Plan.Interval.WEEKLY,
                },
            ),
            "honey-monthly": Plan.objects.get_or_create(
                name="Demo: honey every month",
                defaults={
                    "product": honey,
                    "quantity": 2,
                    "price": Decimal("19.90"),
                    "currency": honey.currency,
                    "interval": Plan.Interval.MONTHLY,
                },
            ),
        }
        created = 0
        for name, plan_key, days, status in SUBSCRIPTIONS:
            user, _ = user_model.objects.get_or_create(
                username=f"demo-subscriber-{name}", defaults={"email": f"demo-subscriber-{name}@example.com"}
            )
            if Subscription.objects.filter(user=user).exists():
                continue
            Subscription.objects.create(
                user=user,
                plan=plans[plan_key][0],
                status=status,
                next_charge_date=today + timedelta(days=days),
                gateway_customer_id=f"cust_demo_{name.replace('-', '_')}",
                gateway_token_id=f"token_demo_{name.replace('-', '_')}",
            )
            created += 1
        cart, cart_created = Cart.objects.get_or_create(user_id=customer_id)
        if cart_created:
            CartItem.objects.create(cart=cart, product=tea, quantity=2)
            Cart.objects.filter(pk=cart.pk).update(updated_at=timezone.now() - timedelta(days=40))
    return {
        "plans_created": sum(c for _, c in plans.values()),
        "subscriptions_created": created,
        "old_carts_created": int(cart_created),
    }


# Pricing: (sku, name, base price, cost) with one batch at each of PRICING_BATCH_DAYS days from
# expiry, so a recompute shows the tiers (30 days: 10 %, 7: 35 %, 3: 50 %; 40 days is outside
# the window). The bread has its own, steeper policy that only starts 3 days out.
PRICING_PRODUCTS = [
    ("DEMO-YOG-001", "Greek yoghurt, 500 g", "3.40", "1.50"),
    ("DEMO-CHS-001", "Aged gouda, 200 g", "6.90", "3.10"),
    ("DEMO-BRD-001", "Sourdough loaf, 800 g", "4.50", "1.80"),
]
PRICING_BATCH_DAYS = (40, 20, 7, 1)
PRICING_BATCH_UNITS = 30
BREAD_POLICY = {
    "name": "Fresh bread",
    "tiers": [{"days": 1, "percentage": "50.00"}, {"days": 3, "percentage": "30.00"}],
    "max_percentage": Decimal("70.00"),
    "min_margin_percentage": Decimal("5.00"),
}


def load_pricing_demo() -> dict[str, int]:
    """Products with batches 40, 20, 7 and 1 days from expiry (dated from the first load), and the policies."""
    from payments.models import Batch, DiscountPolicy
    from payments.models.pricing import BUILTIN_DEFAULT_POLICY

    today = timezone.localdate()
    with transaction.atomic():
        _, default_created = DiscountPolicy.objects.get_or_create(
            is_default=True, defaults={"name": "Default", **BUILTIN_DEFAULT_POLICY}
        )
        products_created = batches_created = 0
        for sku, name, price, cost in PRICING_PRODUCTS:
            product, created = Product.objects.get_or_create(
                sku=sku,
                defaults={
                    "name": name,
                    "price": Decimal(price),
                    "currency": "EUR",
                    "stock": PRICING_BATCH_UNITS * len(PRICING_BATCH_DAYS),
                },
            )
            products_created += created
            for days in PRICING_BATCH_DAYS:
                _, created = Batch.objects.get_or_create(
                    product=product,
                    lot_code=f"{sku}-D{days}",
                    defaults={
                        "quantity": PRICING_BATCH_UNITS,
                        "expiry_date": today + timedelta(days=days),
                        "cost": Decimal(cost),
                        "base_price": Decimal(price),
                        "currency": "EUR",
                    },
                )
                batches_created += created
        bread = Product.objects.get(sku="DEMO-BRD-001")
        _, bread_created = DiscountPolicy.objects.get_or_create(product=bread, defaults=BREAD_POLICY)
    return {
        "pricing_products_created": products_created,
        "batches_created": batches_created,
        "discount_policies_created": int(default_created) + int(bread_created),
    }
