"""Pricing services on PostgreSQL: recompute, cleanup, price history, effective price, orders at that price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import Invalid, NotFound
from core.models import User
from payments.models import Batch, Discount, OrderItem, PriceSnapshot
from payments.models.pricing import minor_units
from payments.services.orders import order_place
from payments.services.pricing import (
    discounts_expire_stale,
    discounts_recompute,
    price_history_snapshot,
    product_price_effective,
    products_price_effective,
)
from tests.support.factories.pricing import (
    BatchFactory,
    DiscountPolicyFactory,
    ProductFactory,
    active_discounts,
    default_policy,
    discount_versions,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def policy() -> Any:
    """The default policy (<= 30 d: 10 %, 14: 20 %, 7: 35 %, 3: 50 %; at most 60 %; floor cost + 10 %)."""
    return default_policy()


def discount_of(batch: Batch) -> Discount:
    return Discount.objects.get(batch=batch, status=Discount.Status.ACTIVE)


# Recompute -------------------------------------------------------------------------------------


def test_each_batch_in_the_window_gets_its_tier_and_the_summary_counts_them() -> None:
    batches = {days: BatchFactory(days=days) for days in (40, 30, 20, 14, 7, 3, 1, 0)}
    BatchFactory(days=5, quantity=0)  # sold out
    BatchFactory(days=-2)  # past expiry, still in stock

    summary = discounts_recompute(days_threshold=30)

    assert {days: discount_of(b).percentage for days, b in batches.items() if days <= 30} == {
        30: Decimal("10.00"),
        20: Decimal("10.00"),
        14: Decimal("20.00"),
        7: Decimal("35.00"),
        3: Decimal("50.00"),
        1: Decimal("50.00"),
        0: Decimal("50.00"),
    }
    assert not Discount.objects.filter(batch=batches[40]).exists()
    assert summary["batches_considered"] == 7
    assert (summary["discounts_created"], summary["discounts_changed"], summary["discounts_unchanged"]) == (7, 0, 0)
    assert (summary["discounts_removed"], summary["batches_past_expiry"]) == (0, 1)


def test_a_discount_records_how_its_price_came_about_and_is_valid_until_the_end_of_the_expiry_day() -> None:
    batch = BatchFactory(days=7, cost=Decimal("4.00"), base_price=Decimal("10.00"))

    discounts_recompute()

    discount = discount_of(batch)
    assert (discount.tier_days, discount.tier_percentage, discount.percentage) == (
        7,
        Decimal("35.00"),
        Decimal("35.00"),
    )
    assert (discount.base_price, discount.cost, discount.discounted_price) == (
        Decimal("10.000"),
        Decimal("4.000"),
        Decimal("6.500"),
    )
    expected_end = timezone.localdate() + timedelta(days=8)
    assert discount.valid_until == datetime(expected_end.year, expected_end.month, expected_end.day, tzinfo=UTC)


def test_a_second_run_with_nothing_to_change_writes_no_row() -> None:
    for days in (25, 12, 6, 2):
        BatchFactory(days=days)
    discounts_recompute()
    before = discount_versions()

    again = discounts_recompute()

    assert discount_versions() == before  # not even rewritten with the same values (xmin unchanged)
    assert (again["discounts_created"], again["discounts_changed"], again["discounts_removed"]) == (0, 0, 0)
    assert again["discounts_unchanged"] == 4


def test_a_new_base_price_changes_the_discount_and_nothing_else() -> None:
    edited, untouched = BatchFactory(days=7), BatchFactory(days=7)
    discounts_recompute()
    untouched_version = dict(discount_versions())[discount_of(untouched).pk]
    Batch.objects.filter(pk=edited.pk).update(base_price=Decimal("20.00"))

    summary = discounts_recompute()

    assert discount_of(edited).discounted_price == Decimal("13.000")
    assert (summary["discounts_changed"], summary["discounts_unchanged"]) == (1, 1)
    assert dict(discount_versions())[discount_of(untouched).pk] == untouched_version


def test_batches_that_sell_out_or_leave_the_window_lose_their_discount() -> None:
    sold_out, moved, stays = BatchFactory(days=5), BatchFactory(days=5), BatchFactory(days=5)
    deleted = BatchFactory(days=5)
    discounts_recompute()
    Batch.objects.filter(pk=sold_out.pk).update(quantity=0)
    Batch.objects.filter(pk=moved.pk).update(expiry_date=timezone.localdate() + timedelta(days=90))
    deleted_discount = discount_of(deleted)
    deleted.delete()

    summary = discounts_recompute()

    assert set(active_discounts()) == {stays.pk}
    assert summary["discounts_removed"] == 3
    ended = Discount.objects.get(pk=deleted_discount.pk)
    assert (ended.status, ended.batch_id, ended.ended_at is not None) == ("expired", None, True)


@pytest.mark.parametrize("engine", ["sql", "python"])
def test_a_smaller_threshold_ends_the_discounts_beyond_it_and_the_next_hourly_run_restores_them(engine: str) -> None:
    # The far batches come last by id, after the window's last batch, and in between.
    near, far, nearer, farther = (
        BatchFactory(days=3),
        BatchFactory(days=20),
        BatchFactory(days=1),
        BatchFactory(days=25),
    )
    discounts_recompute(days_threshold=30, engine=engine)

    narrow = discounts_recompute(days_threshold=7, engine=engine)
    assert set(active_discounts()) == {near.pk, nearer.pk} and narrow["discounts_removed"] == 2

    only_today = discounts_recompute(days_threshold=1, engine=engine)
    assert set(active_discounts()) == {nearer.pk} and only_today["discounts_removed"] == 1

    discounts_recompute(engine=engine)
    assert set(active_discounts()) == {near.pk, far.pk, nearer.pk, farther.pk}


@pytest.mark.parametrize("engine", ["sql", "python"])
def test_an_empty_window_still_ends_every_discount_outside_it(engine: str) -> None:
    BatchFactory(days=20)
    BatchFactory(days=25)
    discounts_recompute(engine=engine)

    summary = discounts_recompute(days_threshold=2, engine=engine)

    assert (summary["batches_considered"], summary["discounts_removed"]) == (0, 2)
    assert active_discounts() == {}


def test_a_batch_past_its_expiry_is_never_discounted_and_is_reported() -> None:
    BatchFactory(days=-1)
    BatchFactory(days=-10)

    summary = discounts_recompute()

    assert not Discount.objects.exists()
    assert summary["batches_past_expiry"] == 2


def test_a_product_with_its_own_policy_uses_it_and_editing_a_policy_reprices_its_batches() -> None:
    bread = ProductFactory()
    own = DiscountPolicyFactory(product=bread, tiers=[{"days": 2, "percentage": "70"}], max_percentage=80)
    fresh, older = BatchFactory(product=bread, days=1), BatchFactory(product=bread, days=5)
    other = BatchFactory(days=5)
    discounts_recompute()
    # 70 % off 10.00 is 3.00, below the floor 4.00 + 10 % = 4.40: 56 % off.
    assert (discount_of(fresh).discounted_price, discount_of(fresh).percentage) == (Decimal("4.400"), Decimal("56.00"))
    assert not Discount.objects.filter(batch=older).exists()  # no tier of its own reaches 5 days
    assert discount_of(other).percentage == Decimal("35.00")

    own.tiers = [{"days": 7, "percentage": "25"}]
    own.save()
    summary = discounts_recompute()

    assert discount_of(fresh).percentage == discount_of(older).percentage == Decimal("25.00")
    assert (summary["discounts_changed"], summary["discounts_created"]) == (1, 1)


def test_the_floor_can_leave_a_batch_without_a_discount() -> None:
    batch = BatchFactory(days=2, cost=Decimal("9.50"), base_price=Decimal("10.00"))

    summary = discounts_recompute()

    assert not Discount.objects.filter(batch=batch).exists()
    assert summary["batches_without_discount"] == 1


def test_renaming_a_policy_rewrites_nothing(policy: Any) -> None:
    BatchFactory(days=4)
    discounts_recompute()
    before = discount_versions()
    policy.name = "Renamed"
    policy.save()

    discounts_recompute()

    assert discount_versions() == before


@pytest.mark.parametrize("threshold", [0, 366, -1, "30", 2.5, True, None])
def test_the_threshold_must_be_a_whole_number_of_days_from_1_to_365(threshold: Any) -> None:
    if threshold is None:
        assert discounts_recompute(days_threshold=None)["days_threshold"] == 30
        return
    with pytest.raises(Invalid) as refused:
        discounts_recompute(days_threshold=threshold)
    assert "days_threshold" in refused.value.errors


def test_small_chunks_give_the_same_result_as_one() -> None:
    for i in range(40):
        BatchFactory(days=i % 35)
    discounts_recompute(chunk_size=1000)
    expected = active_discounts()
    Discount.objects.all().delete()

    summary = discounts_recompute(chunk_size=3)

    assert active_discounts() == expected
    assert summary["chunks"] > 5


@pytest.mark.parametrize("currency", ["JPY", "KWD", "BHD", "EUR"])
def test_the_sql_and_python_engines_give_the_same_discounts_in_each_minor_unit(currency: str) -> None:
    product = ProductFactory(currency=currency)
    for days in range(0, 32):
        base = {"JPY": Decimal(1000 + days * 37), "KWD": Decimal("1.235") + days, "BHD": Decimal("2.001")}.get(
            currency, Decimal("9.99")
        )
        BatchFactory(
            product=product, days=days, base_price=base, cost=(base * Decimal("0.45")).quantize(Decimal(1).scaleb(-3))
        )
    discounts_recompute(engine="python")
    by_python = active_discounts()
    Discount.objects.all().delete()

    discounts_recompute(engine="sql")

    assert active_discounts() == by_python


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-3, 40),  # days to expiry
            st.integers(0, 3),  # quantity
            st.integers(0, 500_000),  # base price in minor units
            st.integers(0, 500_000),  # cost in minor units
        ),
        min_size=1,
        max_size=25,
    ),
    threshold=st.integers(1, 45),
    currency=st.sampled_from(["EUR", "JPY", "KWD"]),
    maximum=st.integers(1, 100),
)
def test_both_engines_agree_on_random_batches_and_runs(
    rows: list[tuple[int, int, int, int]], threshold: int, currency: str, maximum: int
) -> None:
    Discount.objects.all().delete()
    Batch.objects.all().delete()
    default_policy(max_percentage=Decimal(maximum))
    product = ProductFactory(currency=currency)
    unit = Decimal(1).scaleb(-minor_units(currency))
    for days, quantity, base, cost in rows:
        BatchFactory(product=product, days=days, quantity=quantity, base_price=base * unit, cost=cost * unit)

    results = []
    for engine in ("python", "sql"):
        for start_from_a_wider_window in (False, True):
            Discount.objects.all().delete()
            if start_from_a_wider_window:  # discounts to end, keep and change
                discounts_recompute(days_threshold=45, engine="sql")
            summary = discounts_recompute(days_threshold=threshold, engine=engine)
            again = discounts_recompute(days_threshold=threshold, engine=engine)
            counts = {k: v for k, v in summary.items() if k not in ("engine", "chunks")}
            results.append((start_from_a_wider_window, active_discounts(), counts))
            assert again["discounts_created"] == again["discounts_changed"] == again["discounts_removed"] == 0
    assert results[0] == results[2] and results[1] == results[3]


# Cleanup ---------------------------------------------------------------------------------------


def test_the_cleanup_ends_discounts_past_their_validity_or_whose_batch_is_gone_once() -> None:
    lapsed, sold_out, deleted, live = (BatchFactory(days=d) for d in (1, 4, 4, 4))
    discounts_recompute()
    Batch.objects.filter(pk=sold_out.pk).update(quantity=0)
    deleted.delete()

    with time_machine.travel(timezone.now() + timedelta(days=2, hours=1)):
        first = discounts_expire_stale(chunk_size=1)
        second = discounts_expire_stale()

    assert (first["expired_past_validity"], first["expired_batch_gone"]) == (1, 2)
    assert (second["expired_past_validity"], second["expired_batch_gone"]) == (0, 0)
    assert set(active_discounts()) == {live.pk}
    assert Discount.objects.get(batch=lapsed).status == "expired"


# Price history ---------------------------------------------------------------------------------


def test_one_snapshot_per_active_batch_per_slot_and_a_second_run_in_the_slot_adds_nothing() -> None:
    discounted, plain = BatchFactory(days=3), BatchFactory(days=100)
    BatchFactory(days=3, quantity=0)
    BatchFactory(days=-1)
    discounts_recompute()

    with time_machine.travel(datetime(2030, 1, 1, 7, 30, tzinfo=UTC), tick=False):
        Batch.objects.update(expiry_date=timezone.localdate())  # keep them active at the travelled date
        Batch.objects.filter(pk=plain.pk).update(expiry_date=timezone.localdate() + timedelta(days=100))
        Discount.objects.update(valid_until=datetime(2030, 1, 2, tzinfo=UTC))
        first = price_history_snapshot()
        second = price_history_snapshot()
    with time_machine.travel(datetime(2030, 1, 1, 12, 0, tzinfo=UTC), tick=False):
        next_slot = price_history_snapshot()

    assert (first["snapshots_created"], second["snapshots_created"], next_slot["snapshots_created"]) == (3, 0, 3)
    assert first["slot"] == "2030-01-01T06:00:00+00:00"
    points = {(s.batch_id, s.slot.hour): (s.price, s.percentage) for s in PriceSnapshot.objects.all()}
    assert points[(discounted.pk, 6)] == (Decimal("5.000"), Decimal("50.00"))
    assert points[(plain.pk, 12)] == (Decimal("10.000"), Decimal("0.00"))


# Effective price and orders ----------------------------------------------------------------------


def test_the_effective_price_is_the_discounted_price_of_the_batch_that_ships_first() -> None:
    product = ProductFactory(price=Decimal("12.00"))
    BatchFactory(product=product, days=20)
    first = BatchFactory(product=product, days=3)
    BatchFactory(product=product, days=1, quantity=0)  # sold out: does not ship
    BatchFactory(product=product, days=-1)  # expired: does not ship
    discounts_recompute()

    price = product_price_effective(product_id=product.pk)

    assert (price.source, price.batch_id, price.price, price.percentage) == (
        "discount",
        first.pk,
        Decimal("5.000"),
        Decimal("50.00"),
    )


def test_without_a_discount_the_effective_price_is_the_base_price_and_without_batches_the_products() -> None:
    undiscounted, bare = ProductFactory(price=Decimal("12.00")), ProductFactory(price=Decimal("7.50"))
    BatchFactory(product=undiscounted, days=100, base_price=Decimal("11.00"))

    prices = products_price_effective(product_ids=[undiscounted.pk, bare.pk, 999_999])

    assert (prices[undiscounted.pk].source, prices[undiscounted.pk].price) == ("batch", Decimal("11.000"))
    assert (prices[bare.pk].source, prices[bare.pk].price) == ("product", Decimal("7.50"))
    assert 999_999 not in prices
    with pytest.raises(NotFound):
        product_price_effective(product_id=999_999)


def test_a_discount_past_its_validity_no_longer_prices_the_product_even_before_the_cleanup() -> None:
    product = ProductFactory()
    BatchFactory(product=product, days=2)
    discounts_recompute()
    Discount.objects.update(valid_until=timezone.now() - timedelta(minutes=1))

    assert product_price_effective(product_id=product.pk).source == "batch"


def test_an_order_placed_on_a_discounted_product_pays_the_discounted_price(customer: User) -> None:
    yoghurt, tea = ProductFactory(price=Decimal("10.00")), ProductFactory(price=Decimal("4.00"))
    BatchFactory(product=yoghurt, days=7)  # 35 % off 10.00
    discounts_recompute()

    order = order_place(customer_id=customer.pk, items={yoghurt.pk: 2, tea.pk: 1})

    lines = dict(OrderItem.objects.filter(order=order).values_list("product_id", "unit_price"))
    assert lines == {yoghurt.pk: Decimal("6.50"), tea.pk: Decimal("4.00")}
    assert order.total == Decimal("17.00")
