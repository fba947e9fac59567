"""Pricing: batches that get cheaper as they near expiry, their discounts, and price history.

The money rule, the one place it is written down (docs/pricing.md repeats it):

- Amounts are `Decimal` in the currency's minor unit (ISO 4217: JPY 0 places, EUR 2,
  KWD and BHD 3). Columns hold 3 decimal places; a value with more places than its
  currency allows is refused by validation.
- A discounted price is `base_price * (100 - percentage) / 100` rounded **half-up** to the
  minor unit (percentage: the tier's, at most the policy's maximum), then held between the
  floor and the base price, and never more than the maximum off.
- The floor is `cost * (100 + min_margin_percentage) / 100` rounded **up** to the minor unit,
  so rounding can never take a price below cost plus the margin; likewise the maximum's
  bound, `base_price * (100 - max_percentage) / 100`, rounds up.
- A price that ends at (or above) the base price is no discount at all.
- The stored percentage is the one the customer really gets, `(base - price) / base * 100`,
  rounded half-up to 0.01.

`price_quote()` is that rule in Python. On PostgreSQL the recompute evaluates the same
rule in SQL (payments/services/pricing.py); tests hold the two to the same results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from itertools import pairwise
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from payments.models.catalog import Product, currency_validator

# ISO 4217 currencies whose minor unit is not 2 decimal places; every other code has 2.
# Currencies with 4 places (CLF, UYW) are not supported: columns hold 3.
CURRENCY_MINOR_UNITS: Mapping[str, int] = {
    **dict.fromkeys(
        ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV"], 0
    ),
    **dict.fromkeys(["XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}
UNSUPPORTED_CURRENCIES = frozenset({"CLF", "UYW"})
MONEY_DECIMAL_PLACES = 3
MONEY_MAX_DIGITS = 14
HUNDRED = Decimal(100)
PERCENT_STEP = Decimal("0.01")
MAX_TIER_DAYS = 365
# Price history: one snapshot per batch per slot of this many hours, slots aligned on UTC midnight.
SLOT_HOURS = 6


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit (JPY 0, EUR 2, KWD 3)."""
    return CURRENCY_MINOR_UNITS.get(currency.upper(), 2)


def money_step(currency: str) -> Decimal:
    """The currency's smallest amount: Decimal('1'), ('0.01') or ('0.001')."""
    return Decimal(1).scaleb(-minor_units(currency))


def money_round(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up to the currency's minor unit: the one rounding rule for prices."""
    return amount.quantize(money_step(currency), rounding=ROUND_HALF_UP)


def money_text(amount: Decimal, currency: str) -> str:
    """An amount with exactly its currency's minor-unit places: "5.00" EUR, "500" JPY, "1.250" KWD."""
    return str(amount.quantize(money_step(currency)))


def money_errors(amount: Decimal | None, currency: str) -> list[str]:
    """Why `amount` is not a valid amount of `currency` (empty when it is)."""
    if amount is None:
        return []
    if currency.upper() in UNSUPPORTED_CURRENCIES:
        return [f"{currency} has 4 decimal places; prices support at most {MONEY_DECIMAL_PLACES}."]
    if amount != amount.quantize(money_step(currency)):
        places = minor_units(currency)
        return [f"{currency} amounts have {places} decimal place{'s' if places != 1 else ''}; got {amount}."]
    return []


def price_slot_start(moment: datetime) -> datetime:
    """The start of the price-history slot that holds `moment` (00:00, 06:00, 12:00, 18:00 UTC)."""
    utc = moment.astimezone(UTC)
    return utc.replace(hour=utc.hour - utc.hour % SLOT_HOURS, minute=0, second=0, microsecond=0)


# Tiers and the price rule ----------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    """Batches with at most `days` days to expiry get `percentage` off."""

    days: int
    percentage: Decimal

    def as_json(self) -> dict[str, Any]:
        return {"days": self.days, "percentage": str(self.percentage.quantize(PERCENT_STEP))}


@dataclass(frozen=True)
class PriceQuote:
    """What a batch costs under a policy today: its tier, the real percentage off, the price and the floor."""

    tier: Tier
    percentage: Decimal
    price: Decimal
    floor: Decimal


def tiers_from_json(raw: object) -> list[Tier]:
    """Parse and validate a policy's tiers; raises ValidationError naming what is wrong.

    Rules: each tier is `{"days": N, "percentage": P}` with N a whole number 0-365 and
    0 < P <= 100 (two decimals at most); no two tiers share N (they would overlap: each
    tier covers the days after the next smaller N up to its own N); and a tier nearer
    expiry never takes less off than a tier further from it.
    """
    if not isinstance(raw, list) or not raw:
        raise ValidationError('Give at least one tier, as a list of {"days": N, "percentage": P}.')
    tiers: list[Tier] = []
    errors: list[str] = []
    for position, item in enumerate(raw, start=1):
        if not isinstance(item, dict) or set(item) != {"days", "percentage"}:
            errors.append(f"Tier {position}: needs exactly the keys days and percentage.")
            continue
        days, percentage = item["days"], _decimal_or_none(item["percentage"])
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_TIER_DAYS:
            errors.append(f"Tier {position}: days must be a whole number from 0 to {MAX_TIER_DAYS}, got {days!r}.")
            continue
        if percentage is None or not 0 < percentage <= HUNDRED or percentage != percentage.quantize(PERCENT_STEP):
            errors.append(
                f"Tier {position} (<= {days} days): percentage must be above 0 and at most 100, "
                f"with at most two decimals; got {item['percentage']!r}."
            )
            continue
        tiers.append(Tier(days=days, percentage=percentage))
    if errors:
        raise ValidationError(errors)
    tiers.sort(key=lambda t: t.days)
    for nearer, further in pairwise(tiers):
        if nearer.days == further.days:
            errors.append(f"Two tiers for <= {nearer.days} days overlap; give each number of days once.")
        elif nearer.percentage < further.percentage:
            errors.append(
                f"The tier for <= {nearer.days} days takes {nearer.percentage}% off, less than the "
                f"{further.percentage}% of the tier for <= {further.days} days: a batch nearer expiry "
                "must not cost more."
            )
    if errors:
        raise ValidationError(errors)
    return tiers


def _decimal_or_none(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def tier_for(tiers: Sequence[Tier], days_to_expiry: int) -> Tier | None:
    """The tier of a batch `days_to_expiry` days from expiry: the smallest N with days <= N; None past expiry or beyond every N."""
    if days_to_expiry < 0:
        return None
    return next((t for t in tiers if days_to_expiry <= t.days), None)


def price_quote(
    *,
    tiers: Sequence[Tier],
    max_percentage: Decimal,
    min_margin_percentage: Decimal,
    base_price: Decimal,
    cost: Decimal,
    currency: str,
    days_to_expiry: int,
) -> PriceQuote | None:
    """The discount a batch gets, or None: past expiry, no tier reaches it, or the floor leaves nothing off.

    `tiers` sorted by days, ascending (as `tiers_from_json` returns them); see `tier_for`.
    """
    tier = tier_for(tiers, days_to_expiry)
    if tier is None:
        return None
    percentage = min(tier.percentage, max_percentage)
    step = money_step(currency)
    discounted = (base_price * (HUNDRED - percentage) / HUNDRED).quantize(step, rounding=ROUND_HALF_UP)
    floor = (cost * (HUNDRED + min_margin_percentage) / HUNDRED).quantize(step, rounding=ROUND_CEILING)
    # Rounding half-up may take a little more off than the maximum (JPY 101 at 60 %: 40.4 -> 40);
    # the maximum is a promise, so its bound rounds up.
    capped = (base_price * (HUNDRED - max_percentage) / HUNDRED).quantize(step, rounding=ROUND_CEILING)
    price = min(max(discounted, floor, capped), base_price)
    if price >= base_price:
        return None
    real = ((base_price - price) * HUNDRED / base_price).quantize(PERCENT_STEP, rounding=ROUND_HALF_UP)
    return PriceQuote(tier=tier, percentage=real, price=price, floor=floor)


# Models -----------------------------------------------------------------------------------


def _money_field(**kwargs: Any) -> models.DecimalField[Decimal, Decimal]:
    return models.DecimalField(
        max_digits=MONEY_MAX_DIGITS,
        decimal_places=MONEY_DECIMAL_PLACES,
        validators=[MinValueValidator(Decimal(0))],
        **kwargs,
    )


def _percentage_field(**kwargs: Any) -> models.DecimalField[Decimal, Decimal]:
    return models.DecimalField(
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(HUNDRED)],
        **kwargs,
    )


class Batch(models.Model):
    """A lot of a product with one expiry date; the nearer the expiry, the cheaper (see DiscountPolicy)."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="batches")
    lot_code = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField(default=0, help_text="Units of this lot left to sell.")
    expiry_date = models.DateField()
    cost = _money_field(help_text="What one unit cost us; the discount floor is this plus the policy's margin.")
    base_price = _money_field(help_text="The undiscounted price of one unit.")
    currency = models.CharField(max_length=3, validators=[currency_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["expiry_date", "id"]
        verbose_name_plural = "batches"
        constraints = [
            models.UniqueConstraint(fields=["product", "lot_code"], name="batch_one_lot_code_per_product"),
            models.CheckConstraint(condition=models.Q(cost__gte=0), name="batch_cost_not_negative"),
            models.CheckConstraint(condition=models.Q(base_price__gte=0), name="batch_base_price_not_negative"),
        ]
        indexes = [
            # The recompute's and the price history's keyset walk: batches with stock in id
            # order (their physical order, so a chunk reads neighbouring pages), the expiry
            # in the index so the window filter needs no heap visit.
            models.Index(fields=["id", "expiry_date"], name="batch_in_stock_by_id", condition=models.Q(quantity__gt=0)),
            # "Batches with stock past their expiry" (the recompute's report) and date ranges.
            models.Index(
                fields=["expiry_date", "id"], name="batch_in_stock_by_expiry", condition=models.Q(quantity__gt=0)
            ),
            # "The batch that ships first" of a product: its first entry on or after today.
            models.Index(
                fields=["product", "expiry_date", "id"],
                name="batch_product_ships_first",
                condition=models.Q(quantity__gt=0),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.lot_code} ({self.product_id}, expires {self.expiry_date})"

    def days_to_expiry(self, today: date) -> int:
        return (self.expiry_date - today).days

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        currency = (self.currency or "").upper()
        if currency:
            for name in ("cost", "base_price"):
                reasons = money_errors(getattr(self, name), currency)
                if reasons:
                    errors[name] = reasons
            if self.product_id is not None and self.product.currency != currency:
                errors["currency"] = [f"The product is priced in {self.product.currency}; a batch of it must be too."]
        if errors:
            raise ValidationError(errors)


class DiscountPolicy(models.Model):
    """How much a batch gets off as it nears expiry: one default policy, optionally one per product."""

    name = models.CharField(max_length=100)
    product = models.OneToOneField(
        Product,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="discount_policy",
        help_text="Leave empty for the default policy; set it to give one product its own policy.",
    )
    is_default = models.BooleanField(default=False, help_text="The policy of every product without its own.")
    tiers = models.JSONField(
        default=list,
        help_text='A list of {"days": N, "percentage": P}: batches with at most N days to expiry get P% off.',
    )
    max_percentage = _percentage_field(default=Decimal("50.00"), help_text="Never more than this much off.")
    min_margin_percentage = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        default=Decimal("10.00"),
        validators=[MinValueValidator(Decimal(0))],
        help_text="The floor: never below cost plus this percentage of cost.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        verbose_name_plural = "discount policies"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="discount_policy_one_default",
                violation_error_message="There is already a default policy; edit that one instead.",
            ),
            models.CheckConstraint(
                condition=models.Q(is_default=True, product__isnull=True)
                | models.Q(is_default=False, product__isnull=False),
                name="discount_policy_default_xor_product",
                violation_error_message="A policy is either the default (no product) or one product's.",
            ),
            models.CheckConstraint(
                condition=models.Q(max_percentage__gt=0, max_percentage__lte=100),
                name="discount_policy_max_percentage_range",
            ),
            models.CheckConstraint(
                condition=models.Q(min_margin_percentage__gte=0), name="discount_policy_margin_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (default)" if self.is_default else self.name

    @classmethod
    def builtin_default(cls) -> DiscountPolicy:
        """The policy used while no default row exists (an unsaved instance; the migration creates the row)."""
        return cls(name="Default", is_default=True, **BUILTIN_DEFAULT_POLICY)

    def tier_list(self) -> list[Tier]:
        return tiers_from_json(self.tiers)

    def quote(self, *, base_price: Decimal, cost: Decimal, currency: str, days_to_expiry: int) -> PriceQuote | None:
        return price_quote(
            tiers=self.tier_list(),
            max_percentage=self.max_percentage,
            min_margin_percentage=self.min_margin_percentage,
            base_price=base_price,
            cost=cost,
            currency=currency,
            days_to_expiry=days_to_expiry,
        )

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        try:
            self.tiers = [t.as_json() for t in tiers_from_json(self.tiers)]
        except ValidationError as exc:
            errors["tiers"] = list(exc.messages)
        if self.max_percentage is not None and not Decimal(0) < self.max_percentage <= HUNDRED:
            errors["max_percentage"] = ["The maximum must be above 0 and at most 100 percent."]
        if self.is_default and self.product_id is not None:
            errors["product"] = ["The default policy applies to every product; leave the product empty."]
        if not self.is_default and self.product_id is None:
            errors["product"] = ["Choose the product this policy is for, or make it the default policy."]
        if errors:
            raise ValidationError(errors)


BUILTIN_DEFAULT_POLICY: dict[str, Any] = {
    "tiers": [
        {"days": 3, "percentage": "50.00"},
        {"days": 7, "percentage": "35.00"},
        {"days": 14, "percentage": "20.00"},
        {"days": 30, "percentage": "10.00"},
    ],
    "max_percentage": Decimal("60.00"),
    "min_margin_percentage": Decimal("10.00"),
}


class Discount(models.Model):
    """A batch's price cut, written by the recompute; at most one active per batch (a database constraint)."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"

    # SET_NULL, not CASCADE: a discount outlives its batch as a record, and the cleanup
    # marks it expired ("whose batch is gone").
    batch = models.ForeignKey(Batch, on_delete=models.SET_NULL, null=True, blank=True, related_name="discounts")
    policy = models.ForeignKey(
        DiscountPolicy,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: the built-in default policy.",
    )
    # Every input of the price rule, as used: a recompute whose inputs all match the batch
    # and its policy today leaves the row alone without doing the arithmetic, and the
    # admin can show how each price came about.
    tier_days = models.PositiveSmallIntegerField(help_text='The tier: "at most this many days to expiry".')
    tier_percentage = _percentage_field(help_text="The tier's percentage, before the maximum and the floor.")
    max_percentage = _percentage_field(help_text="The policy's maximum when computed.")
    min_margin_percentage = models.DecimalField(
        max_digits=6, decimal_places=2, help_text="The policy's floor margin over cost when computed."
    )
    base_price = _money_field(help_text="The batch's base price when computed.")
    cost = _money_field(help_text="The batch's cost when computed.")
    percentage = _percentage_field(help_text="What the customer really gets off, after the maximum and the floor.")
    discounted_price = _money_field()
    currency = models.CharField(max_length=3, validators=[currency_validator])
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField(help_text="The end of the batch's expiry day.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="When it stopped being active.")
    # Defaults rather than auto_now: the recompute writes these rows with SQL and sets them itself.
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-valid_from"]
        constraints = [
            # Also the index of "the active discount of these batches", and what makes two
            # recomputes at once create one discount per batch (INSERT ... ON CONFLICT DO NOTHING).
            models.UniqueConstraint(
                fields=["batch"], condition=models.Q(status="active"), name="discount_one_active_per_batch"
            ),
            models.CheckConstraint(
                condition=models.Q(percentage__gte=0, percentage__lte=100), name="discount_percentage_range"
            ),
        ]
        indexes = [
            # The cleanup's "active and past its validity": small, only active rows.
            models.Index(
                fields=["valid_until"], name="discount_active_by_validity", condition=models.Q(status="active")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.percentage}% off batch {self.batch_id} ({self.status})"


class PriceSnapshot(models.Model):
    """The effective price of one batch in one 6-hour slot (price history)."""

    batch = models.ForeignKey(Batch, on_delete=models.SET_NULL, null=True, blank=True, related_name="snapshots")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="price_snapshots")
    slot = models.DateTimeField(help_text="Start of the 6-hour slot (UTC).")
    price = _money_field(help_text="The effective price: the discounted price, or the base price.")
    base_price = _money_field()
    percentage = _percentage_field(default=Decimal(0))
    currency = models.CharField(max_length=3, validators=[currency_validator])
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slot", "batch_id"]
        constraints = [
            # What makes a second run in the same slot add nothing (ON CONFLICT DO NOTHING).
            models.UniqueConstraint(fields=["batch", "slot"], name="price_snapshot_one_per_batch_slot"),
        ]
        indexes = [models.Index(fields=["product", "slot"], name="price_snapshot_product_slot")]

    def __str__(self) -> str:
        return f"{self.price} {self.currency} for batch {self.batch_id} at {self.slot:%Y-%m-%d %H:%M}"
