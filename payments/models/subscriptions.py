"""Subscriptions: a plan (product, quantity, price, interval), who subscribes, and one charge per period.

A period is named by the date it starts, which is the subscription's `next_charge_date`
when it is charged (at 00:00 UTC that day). `SubscriptionCharge` is unique on
(subscription, period): whatever runs twice, a period has one charge row, and that row's
idempotency key is what the gateway sees, so a retried call never takes money twice.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from payments.models.catalog import Product, currency_validator
from payments.models.orders import Order
from payments.models.pricing import minor_units

# The currencies a plan may be priced in: those the payment gateway (Razorpay) is set up to
# charge here. Adding one is a migration, because a CHECK constraint mirrors the list.
PLAN_CURRENCIES = (
    "AED",
    "AUD",
    "CAD",
    "CHF",
    "DKK",
    "EUR",
    "GBP",
    "HKD",
    "INR",
    "JPY",
    "MYR",
    "NOK",
    "NZD",
    "SAR",
    "SEK",
    "SGD",
    "USD",
    "ZAR",
)


def utc_today() -> date:
    """Today's date in UTC: the day the 00:00 UTC charge run belongs to, whatever TIME_ZONE says."""
    return timezone.now().astimezone(UTC).date()


def add_months(start: date, months: int, *, day: int) -> date:
    """`start` moved `months` calendar months on, on `day` (the month's last day when shorter)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


class Plan(models.Model):
    class Interval(models.TextChoices):
        WEEKLY = "weekly", "Weekly"
        MONTHLY = "monthly", "Monthly"
        DAYS = "days", "Every N days"

    name = models.CharField(max_length=200)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="plans")
    quantity = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    price = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="What one delivery costs the subscriber (charged each period).",
    )
    currency = models.CharField(
        max_length=3, choices=[(c, c) for c in PLAN_CURRENCIES], validators=[currency_validator]
    )
    interval = models.CharField(max_length=10, choices=Interval.choices, default=Interval.MONTHLY)
    interval_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days between deliveries; only (and required) for 'every N days'."
    )
    is_active = models.BooleanField(default=True, help_text="Inactive plans take no new subscribers.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(price__gt=0), name="plan_price_positive"),
            models.CheckConstraint(condition=models.Q(currency__in=PLAN_CURRENCIES), name="plan_currency_known"),
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="plan_quantity_positive"),
            models.CheckConstraint(
                condition=(
                    # isnull=False spelled out: `NULL >= 1` is NULL, which a CHECK lets through.
                    models.Q(interval="days", interval_days__isnull=False, interval_days__gte=1)
                    | (~models.Q(interval="days") & models.Q(interval_days__isnull=True))
                ),
                name="plan_interval_days_only_for_days",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.price} {self.currency} {self.get_interval_display().lower()})"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.price is not None and self.price <= 0:
            errors.setdefault("price", []).append("The price must be above zero.")
        if self.currency and self.currency not in PLAN_CURRENCIES:
            errors.setdefault("currency", []).append(
                f"Unknown currency {self.currency!r}; one of {', '.join(PLAN_CURRENCIES)}."
            )
        elif self.price is not None and self.currency:
            places = minor_units(self.currency)
            if self.price != self.price.quantize(Decimal(1).scaleb(-places)):
                errors.setdefault("price", []).append(f"{self.currency} amounts have {places} decimal places.")
        # The delivery order is in the product's currency; the plan charges in the same one. (A
        # missing product is clean_fields' error, reported with the rest.)
        product_currency = Product.objects.filter(pk=self.product_id).values_list("currency", flat=True).first()
        if product_currency and self.currency and product_currency != self.currency:
            errors.setdefault("currency", []).append(
                f"The plan must be in its product's currency ({product_currency})."
            )
        if self.interval == self.Interval.DAYS and not self.interval_days:
            errors.setdefault("interval_days", []).append("Required for a plan charged every N days.")
        if self.interval != self.Interval.DAYS and self.interval_days is not None:
            errors.setdefault("interval_days", []).append("Only a plan charged every N days has it.")
        if errors:
            raise ValidationError(errors)

    def period_after(self, period_start: date, *, anchor_day: int) -> date:
        """The start of the period after the one starting on `period_start`.

        Monthly periods keep the subscription's anchor day (the 31st becomes the month's
        last day, then the 31st again), so they never drift.
        """
        if self.interval == self.Interval.WEEKLY:
            return period_start + timedelta(days=7)
        if self.interval == self.Interval.DAYS:
            return period_start + timedelta(days=self.interval_days or 1)
        return add_months(period_start, 1, day=anchor_day)


class Subscription(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        PAST_DUE = "past_due", "Past due"
        CANCELLED = "cancelled", "Cancelled"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    started_on = models.DateField(default=utc_today, help_text="Its day of the month anchors monthly periods.")
    current_period_start = models.DateField(
        null=True, blank=True, help_text="Start of the last period charged (empty before the first charge)."
    )
    next_charge_date = models.DateField(help_text="The next period starts, and is charged, on this day (00:00 UTC).")
    failed_attempts = models.PositiveIntegerField(
        default=0, help_text="Days the current period's charge was declined; past due at SUBSCRIPTION_MAX_FAILED_DAYS."
    )
    gateway_customer_id = models.CharField(max_length=64, blank=True, help_text="The gateway's customer (cust_...).")
    gateway_token_id = models.CharField(
        max_length=64, blank=True, help_text="The gateway's saved payment method (token_...)."
    )
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The due sweep and the reminder sweep walk this in (next_charge_date, id) order; it
            # only holds active subscriptions, so paused and cancelled ones cost nothing.
            models.Index(
                fields=["next_charge_date", "id"],
                name="subscription_active_by_date",
                condition=models.Q(status="active"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status="cancelled") | models.Q(cancelled_at__isnull=True),
                name="subscription_cancelled_at_only_when_cancelled",
            ),
        ]

    def __str__(self) -> str:
        return f"Subscription {self.pk} of {self.user_id} to {self.plan_id} ({self.status})"


class SubscriptionCharge(models.Model):
    """The charge of one period: claimed by inserting it, then initiated → succeeded | failed."""

    class Status(models.TextChoices):
        INITIATED = "initiated", "Initiated"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="charges")
    period_start = models.DateField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, validators=[currency_validator])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.INITIATED, db_index=True)
    gateway = models.CharField(max_length=20, default="razorpay")
    gateway_payment_id = models.CharField(max_length=100, blank=True)
    gateway_order_id = models.CharField(
        max_length=100,
        blank=True,
        help_text="The gateway's order for this try: it takes one successful payment at most, however often we call.",
    )
    idempotency_key = models.CharField(
        max_length=100, unique=True, help_text="Sent with every gateway call of this try; a new try after a decline."
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Gateway calls made (retries included).")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    charged_at = models.DateTimeField(null=True, blank=True)
    order = models.OneToOneField(
        Order, on_delete=models.PROTECT, null=True, blank=True, related_name="subscription_charge"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period_start", "-id"]
        constraints = [
            # The claim: whoever inserts a period's row owns its charge; everyone else finds it.
            models.UniqueConstraint(
                fields=["subscription", "period_start"], name="subscription_charge_once_per_period"
            ),
            # The webhook finds a charge by the gateway's payment id.
            models.UniqueConstraint(
                fields=["gateway", "gateway_payment_id"],
                condition=~models.Q(gateway_payment_id=""),
                name="subscription_charge_gateway_payment_unique",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="subscription_charge_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Charge of subscription {self.subscription_id} for {self.period_start} ({self.status})"


class SubscriptionReminder(models.Model):
    """A renewal reminder sent for one period: unique, so the hourly runs remind once."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="reminders")
    period_start = models.DateField(help_text="The charge date the subscriber was reminded of.")
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start"], name="subscription_reminder_once_per_period"
            ),
        ]

    def __str__(self) -> str:
        return f"Reminder of subscription {self.subscription_id} for {self.period_start}"
