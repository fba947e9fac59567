"""The price rule in Python: tiers, boundaries, rounding, the floor, minor units (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from payments.models.pricing import (
    Tier,
    minor_units,
    money_errors,
    money_text,
    price_quote,
    price_slot_start,
    tier_for,
    tiers_from_json,
)

TIERS = tiers_from_json(
    [
        {"days": 30, "percentage": "10"},
        {"days": 14, "percentage": "20"},
        {"days": 7, "percentage": "35"},
        {"days": 3, "percentage": "50"},
    ]
)


def quote(
    *,
    base: str = "10.00",
    cost: str = "1.00",
    currency: str = "EUR",
    days: int = 7,
    tiers: list[Tier] = TIERS,
    max_percentage: str = "60",
    margin: str = "10",
) -> tuple[int, Decimal, Decimal] | None:
    result = price_quote(
        tiers=tiers,
        max_percentage=Decimal(max_percentage),
        min_margin_percentage=Decimal(margin),
        base_price=Decimal(base),
        cost=Decimal(cost),
        currency=currency,
        days_to_expiry=days,
    )
    return None if result is None else (result.tier.days, result.percentage, result.price)


@pytest.mark.parametrize(
    ("days", "tier"),
    [(0, 3), (3, 3), (4, 7), (7, 7), (8, 14), (14, 14), (15, 30), (30, 30), (31, None), (-1, None)],
)
def test_a_batch_exactly_n_days_out_is_in_the_n_tier_and_one_day_more_is_in_the_next(
    days: int, tier: int | None
) -> None:
    found = tier_for(TIERS, days)

    assert (found.days if found else None) == tier


def test_the_tiers_price_a_ten_euro_batch_as_the_table_says() -> None:
    assert quote(days=30) == (30, Decimal("10.00"), Decimal("9.00"))
    assert quote(days=14) == (14, Decimal("20.00"), Decimal("8.00"))
    assert quote(days=7) == (7, Decimal("35.00"), Decimal("6.50"))
    assert quote(days=3) == (3, Decimal("50.00"), Decimal("5.00"))
    assert quote(days=31) is None


def test_a_batch_past_its_expiry_is_never_discounted() -> None:
    assert quote(days=-1) is None
    assert quote(days=-30) is None


def test_prices_round_half_up_to_the_cent() -> None:
    # 9.99 * 0.65 = 6.4935 -> 6.49; 0.15 * 0.9 = 0.135 -> 0.14.
    assert quote(base="9.99", days=7) == (7, Decimal("35.04"), Decimal("6.49"))
    assert quote(base="0.15", cost="0.01", days=30) == (30, Decimal("6.67"), Decimal("0.14"))
    # 0.25 * 0.9 = 0.225: half-up gives 0.23 where half-even would give 0.22.
    assert quote(base="0.25", cost="0.01", days=30) == (30, Decimal("8.00"), Decimal("0.23"))


def test_the_percentage_stored_is_what_the_customer_really_gets_after_rounding() -> None:
    # 1.00 * 0.65 = 0.65 exactly; 0.99 * 0.65 = 0.6435 -> 0.64, which is 35.35 % off.
    assert quote(base="0.99", cost="0.01", days=7) == (7, Decimal("35.35"), Decimal("0.64"))


def test_the_floor_is_cost_plus_the_margin_rounded_up_and_holds_the_price() -> None:
    # Floor 6.00 * 1.10 = 6.60; 35 % off 10.00 would be 6.50.
    assert quote(cost="6.00", days=7) == (7, Decimal("34.00"), Decimal("6.60"))
    # Floor 5.95 * 1.10 = 6.545 -> rounded up to 6.55 (half-up or half-even would give 6.54 or 6.55 by luck).
    assert quote(cost="5.95", days=7) == (7, Decimal("34.50"), Decimal("6.55"))
    # Floor 5.91 * 1.10 = 6.501 -> 6.51, never down to 6.50.
    assert quote(cost="5.91", days=7) == (7, Decimal("34.90"), Decimal("6.51"))


def test_no_discount_when_the_floor_reaches_the_base_price() -> None:
    assert quote(cost="9.10", days=3) is None  # floor 10.01 > 10.00
    assert quote(cost="9.0909", days=3) is None  # floor exactly 10.00: nothing off


def test_the_maximum_caps_a_tier() -> None:
    assert quote(days=3, max_percentage="40") == (3, Decimal("40.00"), Decimal("6.00"))


def test_rounding_never_takes_more_than_the_maximum_off() -> None:
    # 101 yen at 60 %: 40.4 rounds to 40, which would be 60.4 % off; the price stays at 41.
    sixty = [Tier(days=3, percentage=Decimal(60))]
    assert quote(currency="JPY", base="101", cost="1", days=3, tiers=sixty, max_percentage="60") == (
        3,
        Decimal("59.41"),
        Decimal("41"),
    )


@pytest.mark.parametrize(
    ("currency", "base", "cost", "days", "expected"),
    [
        # JPY has no minor unit: 1,999 * 0.65 = 1,299.35 -> 1,299.
        ("JPY", "1999", "100", 7, (7, Decimal("35.02"), Decimal("1299"))),
        # 0.5 rounds up: 1,001 * 0.5 = 500.5 -> 501.
        ("JPY", "1001", "100", 3, (3, Decimal("49.95"), Decimal("501"))),
        # KWD and BHD have 3 decimals (fils): 1.235 * 0.65 = 0.80275 -> 0.803.
        ("KWD", "1.235", "0.100", 7, (7, Decimal("34.98"), Decimal("0.803"))),
        ("BHD", "2.001", "0.500", 3, (3, Decimal("49.98"), Decimal("1.001"))),
        # The floor rounds up to the fils: 0.921 * 1.1 = 1.0131 -> 1.014, above half of 2.000.
        ("KWD", "2.000", "0.921", 3, (3, Decimal("49.30"), Decimal("1.014"))),
    ],
)
def test_currencies_with_zero_and_three_decimals_round_to_their_own_minor_unit(
    currency: str, base: str, cost: str, days: int, expected: tuple[int, Decimal, Decimal]
) -> None:
    assert quote(currency=currency, base=base, cost=cost, days=days) == expected


def test_minor_units_and_their_text() -> None:
    assert (minor_units("JPY"), minor_units("EUR"), minor_units("KWD"), minor_units("bhd")) == (0, 2, 3, 3)
    assert money_text(Decimal("5.000"), "EUR") == "5.00"
    assert money_text(Decimal("500.000"), "JPY") == "500"
    assert money_text(Decimal("1.25"), "KWD") == "1.250"
    assert money_errors(Decimal("10.5"), "JPY") == ["JPY amounts have 0 decimal places; got 10.5."]
    assert money_errors(Decimal("1.234"), "EUR") != []
    assert money_errors(Decimal("1.234"), "KWD") == []


@pytest.mark.parametrize(
    ("tiers", "reason"),
    [
        ([{"days": 7, "percentage": "35"}, {"days": 7, "percentage": "40"}], "overlap"),
        ([{"days": 7, "percentage": "101"}], "at most 100"),
        ([{"days": 7, "percentage": "0"}], "above 0"),
        ([{"days": 366, "percentage": "10"}], "0 to 365"),
        ([{"days": 3, "percentage": "10"}, {"days": 7, "percentage": "35"}], "must not cost more"),
        ([{"days": 7, "percentage": "12.345"}], "two decimals"),
        ([{"days": "7", "percentage": "10"}], "whole number"),
        ([{"days": 7}], "exactly the keys"),
        ([], "at least one tier"),
        ({"days": 7}, "at least one tier"),
    ],
)
def test_tiers_that_overlap_exceed_100_percent_or_are_malformed_are_refused(tiers: object, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        tiers_from_json(tiers)

    assert any(reason in message for message in refused.value.messages), refused.value.messages


def test_tiers_are_sorted_by_days_whatever_order_they_are_given_in() -> None:
    assert [t.days for t in tiers_from_json([{"days": 30, "percentage": 10}, {"days": 3, "percentage": 50}])] == [3, 30]


def test_price_history_slots_are_six_hours_aligned_on_utc_midnight() -> None:
    assert price_slot_start(datetime(2025, 3, 1, 5, 59, 59, tzinfo=UTC)) == datetime(2025, 3, 1, 0, tzinfo=UTC)
    assert price_slot_start(datetime(2025, 3, 1, 6, 0, tzinfo=UTC)) == datetime(2025, 3, 1, 6, tzinfo=UTC)
    assert price_slot_start(datetime(2025, 3, 1, 23, 30, tzinfo=UTC)) == datetime(2025, 3, 1, 18, tzinfo=UTC)


# Properties -----------------------------------------------------------------------------------

CURRENCIES = st.sampled_from(["EUR", "JPY", "KWD", "BHD", "USD"])


@st.composite
def batches(draw: st.DrawFn) -> dict[str, object]:
    currency = draw(CURRENCIES)
    places = minor_units(currency)
    step = Decimal(1).scaleb(-places)
    base = draw(st.integers(min_value=0, max_value=10**9)) * step
    cost = draw(st.integers(min_value=0, max_value=10**9)) * step
    return {"currency": currency, "base_price": base, "cost": cost, "days_to_expiry": draw(st.integers(-5, 400))}


@st.composite
def policies(draw: st.DrawFn) -> dict[str, object]:
    days = sorted(draw(st.sets(st.integers(0, 365), min_size=1, max_size=6)))
    percentages = sorted(
        (draw(st.integers(1, 10000)) for _ in days), reverse=True
    )  # nearer expiry, at least as much off
    tiers = [Tier(days=d, percentage=Decimal(p).scaleb(-2)) for d, p in zip(days, percentages, strict=True)]
    return {
        "tiers": tiers,
        "max_percentage": Decimal(draw(st.integers(1, 10000))).scaleb(-2),
        "min_margin_percentage": Decimal(draw(st.integers(0, 50000))).scaleb(-2),
    }


@given(batch=batches(), policy=policies())
def test_a_discounted_price_is_never_below_the_floor_nor_above_the_base_price(
    batch: dict[str, object], policy: dict[str, object]
) -> None:
    result = price_quote(**policy, **batch)  # type: ignore[arg-type]

    if result is None:
        return
    base, cost = batch["base_price"], batch["cost"]
    assert isinstance(base, Decimal) and isinstance(cost, Decimal)
    margin = policy["min_margin_percentage"]
    assert isinstance(margin, Decimal)
    assert result.price >= cost * (100 + margin) / 100, "below cost plus the margin"
    assert result.price >= result.floor
    assert result.price < base, "a discount that takes nothing off"
    assert result.price == result.price.quantize(Decimal(1).scaleb(-minor_units(str(batch["currency"]))))
    maximum = policy["max_percentage"]
    assert isinstance(maximum, Decimal)
    assert result.price >= base * (100 - maximum) / 100, "more than the maximum off"
    assert Decimal(0) <= result.percentage <= maximum


@given(batch=batches(), policy=policies())
def test_a_batch_nearer_expiry_never_costs_more(batch: dict[str, object], policy: dict[str, object]) -> None:
    days = batch["days_to_expiry"]
    assert isinstance(days, int)
    nearer = price_quote(**policy, **{**batch, "days_to_expiry": max(days - 1, 0)})  # type: ignore[arg-type]
    further = price_quote(**policy, **batch)  # type: ignore[arg-type]

    base = batch["base_price"]
    if days >= 1:
        assert (nearer.price if nearer else base) <= (further.price if further else base)
