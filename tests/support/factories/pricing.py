"""Pricing test data: factory_boy factories for batches and policies, set-based seeding, and probes."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import factory
from django.db import connection
from django.utils import timezone
from factory.django import DjangoModelFactory

from payments.models import Batch, Discount, DiscountPolicy, Product
from payments.models.pricing import BUILTIN_DEFAULT_POLICY


def days_from_today(days: int) -> date:
    return timezone.localdate() + timedelta(days=days)


class ProductFactory(DjangoModelFactory[Product]):
    class Meta:
        model = Product

    sku = factory.Sequence(lambda n: f"PRC-{n:06d}")
    name = factory.Sequence(lambda n: f"Priced product {n}")
    price = Decimal("10.00")
    currency = "EUR"
    stock = 100


class BatchFactory(DjangoModelFactory[Batch]):
    """A batch `days` days from expiry (10 by default), cost 4.00 and base price 10.00 in its product's currency."""

    class Meta:
        model = Batch

    class Params:
        days = 10

    product = factory.SubFactory(ProductFactory)
    lot_code = factory.Sequence(lambda n: f"LOT-{n:06d}")
    quantity = 10
    expiry_date = factory.LazyAttribute(lambda o: days_from_today(o.days))
    cost = Decimal("4.00")
    base_price = Decimal("10.00")
    currency = factory.LazyAttribute(lambda o: o.product.currency)


class DiscountPolicyFactory(DjangoModelFactory[DiscountPolicy]):
    """A product's own policy; `DiscountPolicyFactory(default=True)` for the default one."""

    class Meta:
        model = DiscountPolicy

    class Params:
        default = factory.Trait(is_default=True, product=None, name="Default")

    name = factory.Sequence(lambda n: f"Policy {n}")
    product = factory.SubFactory(ProductFactory)
    is_default = False
    tiers = factory.LazyFunction(lambda: [dict(t) for t in BUILTIN_DEFAULT_POLICY["tiers"]])
    max_percentage = BUILTIN_DEFAULT_POLICY["max_percentage"]
    min_margin_percentage = BUILTIN_DEFAULT_POLICY["min_margin_percentage"]


def default_policy(**changes: Any) -> DiscountPolicy:
    """The default policy row with `changes` applied (the migration creates it; a transactional test's flush does not)."""
    policy = DiscountPolicy.objects.filter(is_default=True).first()
    if policy is None:
        policy = DiscountPolicyFactory(default=True)
    for name, value in changes.items():
        setattr(policy, name, value)
    if changes:
        policy.full_clean()
        policy.save()
    return policy


def seed_batches(
    *, count: int, products: int = 100, expiring_within: int = 30, out_of_window_share: float = 0.3
) -> int:
    """`count` batches over `products` new products, set-based; most expire within `expiring_within` days.

    Days to expiry cycle through 0..expiring_within; `out_of_window_share` of them expire
    later. Base prices vary (5.00 to 54.75), cost is 40 % of it. Returns the in-window count.
    """
    made = ProductFactory.create_batch(products)
    today = timezone.localdate()
    rows = []
    in_window = 0
    for i in range(count):
        product = made[i % len(made)]
        out = (i % 10) < int(out_of_window_share * 10)
        days = expiring_within + 1 + i % 60 if out else i % (expiring_within + 1)
        in_window += not out
        base = Decimal(5 + i % 50) + Decimal("0.25") * (i % 4)
        rows.append(
            Batch(
                product=product,
                lot_code=f"SEED-{i}",
                quantity=1 + i % 20,
                expiry_date=today + timedelta(days=days),
                cost=(base * Decimal("0.4")).quantize(Decimal("0.01")),
                base_price=base,
                currency="EUR",
            )
        )
    Batch.objects.bulk_create(rows, batch_size=5000)
    return in_window


def active_discounts() -> dict[int, tuple[Any, ...]]:
    """{batch id: (tier days, percentage, discounted price, valid until)} of every active discount."""
    rows = Discount.objects.filter(status=Discount.Status.ACTIVE).values_list(
        "batch_id", "tier_days", "percentage", "discounted_price", "valid_until"
    )
    found: dict[int, tuple[Any, ...]] = {}
    for batch_id, *rest in rows:
        assert batch_id not in found, f"two active discounts for batch {batch_id}"
        found[batch_id] = tuple(rest)
    return found


def discount_versions() -> list[tuple[int, str]]:
    """(id, xmin) of every discount row: unchanged when nothing wrote to the table (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, xmin::text FROM {Discount._meta.db_table} ORDER BY id")
        return [(int(pk), str(xmin)) for pk, xmin in cursor.fetchall()]
