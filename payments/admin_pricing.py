"""Admin for pricing: batches, discount policies (tiers edited as text), discounts, price history, and the
price-over-time chart on the product page (`ProductPricingMixin`, used by payments.admin.ProductAdmin)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString

from core.admin_audit import AuditedModelAdmin, ViewOnlyModelAdmin
from payments.models import Batch, Discount, DiscountPolicy, PriceSnapshot, Product
from payments.models.pricing import SLOT_HOURS, money_text

CHART_DAYS = 30
CHART_MAX_BATCHES = 8
_TIER_LINE = re.compile(r"^\s*(?:<=\s*)?(\d+)\s*(?:days?)?\s*:\s*(\d+(?:\.\d+)?)\s*%?\s*$")


def tiers_as_text(tiers: object) -> str:
    """A policy's tiers as the form shows them: one `days: percentage` per line, nearest expiry first."""
    if not isinstance(tiers, list):
        return ""
    lines = [f"{t.get('days')}: {t.get('percentage')}" for t in tiers if isinstance(t, dict)]
    return "\n".join(lines)


class TiersField(forms.CharField):
    """Tiers typed as lines of `days: percentage` ("7: 35" = at most 7 days to expiry, 35 % off)."""

    widget = forms.Textarea(attrs={"rows": 6, "cols": 30})

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        tiers: list[dict[str, Any]] = []
        errors: list[str] = []
        for number, line in enumerate(str(text).splitlines(), start=1):
            if not line.strip():
                continue
            match = _TIER_LINE.match(line)
            if match is None:
                errors.append(f"Line {number}: write `days: percentage`, such as `7: 35`; got {line.strip()!r}.")
                continue
            try:
                percentage = Decimal(match.group(2))
            except InvalidOperation:
                errors.append(f"Line {number}: {match.group(2)!r} is not a number.")
                continue
            tiers.append({"days": int(match.group(1)), "percentage": str(percentage)})
        if errors:
            raise forms.ValidationError(errors)
        return tiers


class DiscountPolicyForm(forms.ModelForm[DiscountPolicy]):
    # Replaces the JSON textarea; the model's clean() checks overlaps, 100 % and the order.
    tiers = TiersField(
        help_text=(
            "One tier per line, <code>days: percentage</code>: <code>7: 35</code> gives batches with at most 7 days "
            "to expiry 35 % off. The tier of a batch is the smallest number of days it is within."
        )
    )

    class Meta:
        model = DiscountPolicy
        fields = ["name", "is_default", "product", "tiers", "max_percentage", "min_margin_percentage"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None or self.instance.tiers:
            self.initial["tiers"] = tiers_as_text(self.instance.tiers)


@admin.register(DiscountPolicy)
class DiscountPolicyAdmin(AuditedModelAdmin[DiscountPolicy]):
    form = DiscountPolicyForm
    list_display = ("name", "is_default", "product", "tiers_summary", "max_percentage", "min_margin_percentage")
    list_filter = ("is_default",)
    search_fields = ("name", "product__sku", "product__name")
    raw_id_fields = ("product",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[DiscountPolicy]:
        return super().get_queryset(request).select_related("product")

    @admin.display(description="Tiers")
    def tiers_summary(self, obj: DiscountPolicy) -> str:
        tiers = obj.tiers if isinstance(obj.tiers, list) else []
        return ", ".join(f"<= {t.get('days')} d: {t.get('percentage')} %" for t in tiers if isinstance(t, dict))


@admin.register(Batch)
class BatchAdmin(AuditedModelAdmin[Batch]):
    list_display = (
        "lot_code",
        "product",
        "quantity",
        "expiry_date",
        "days_left",
        "base_price",
        "cost",
        "currency",
        "active_discount",
    )
    list_filter = ("currency", "expiry_date")
    search_fields = ("lot_code", "product__sku", "product__name")
    date_hierarchy = "expiry_date"
    raw_id_fields = ("product",)
    ordering = ("expiry_date", "id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        active = Discount.objects.filter(batch=OuterRef("pk"), status=Discount.Status.ACTIVE)
        return (
            super()
            .get_queryset(request)
            .select_related("product")
            .annotate(
                discount_percentage=Subquery(active.values("percentage")[:1]),
                discount_price=Subquery(active.values("discounted_price")[:1]),
                discount_tier=Subquery(active.values("tier_days")[:1]),
            )
        )

    @admin.display(description="Days to expiry")
    def days_left(self, obj: Batch) -> int:
        return obj.days_to_expiry(timezone.localdate())

    @admin.display(description="Active discount")
    def active_discount(self, obj: Batch) -> str:
        percentage = getattr(obj, "discount_percentage", None)
        if percentage is None:
            return "-"
        price = money_text(getattr(obj, "discount_price", Decimal(0)), obj.currency)
        return f"{percentage} % off: {price} (tier <= {getattr(obj, 'discount_tier', '?')} days)"


class ReadOnlyPricingAdmin(ViewOnlyModelAdmin[Any]):
    """Written by the jobs only: viewing is all an operator may do here."""


@admin.register(Discount)
class DiscountAdmin(ReadOnlyPricingAdmin):
    list_display = (
        "batch",
        "status",
        "tier_days",
        "percentage",
        "base_price",
        "discounted_price",
        "currency",
        "valid_from",
        "valid_until",
        "ended_at",
    )
    list_filter = ("status", "tier_days", "currency")
    search_fields = ("batch__lot_code", "batch__product__sku", "batch__product__name")
    date_hierarchy = "valid_from"
    raw_id_fields = ("batch", "policy")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Discount]:
        return super().get_queryset(request).select_related("batch", "batch__product")


@admin.register(PriceSnapshot)
class PriceSnapshotAdmin(ReadOnlyPricingAdmin):
    list_display = ("slot", "product", "batch", "price", "base_price", "percentage", "currency")
    list_filter = ("currency", "slot")
    search_fields = ("product__sku", "product__name", "batch__lot_code")
    date_hierarchy = "slot"
    raw_id_fields = ("batch", "product")

    def get_queryset(self, request: HttpRequest) -> QuerySet[PriceSnapshot]:
        return super().get_queryset(request).select_related("batch", "product")


# The product page: its batches, and its price over time ------------------------------------------


class BatchInline(admin.TabularInline[Batch, Product]):
    model = Batch
    extra = 0
    fields = ("lot_code", "quantity", "expiry_date", "cost", "base_price", "currency")
    ordering = ("expiry_date", "id")
    show_change_link = True


def price_chart(*, product: Product, end: datetime | None = None, days: int = CHART_DAYS) -> SafeString:
    """An inline SVG of the product's batch prices per 6-hour slot over the last `days` days, rendered here."""
    end = end or timezone.now()
    start = end - timedelta(days=days)
    snapshots = list(
        PriceSnapshot.objects.filter(product=product, slot__gte=start, slot__lte=end)
        .select_related("batch")
        .order_by("slot")
    )
    series: dict[str, list[PriceSnapshot]] = {}
    for snapshot in snapshots:
        label = snapshot.batch.lot_code if snapshot.batch is not None else "(deleted batch)"
        series.setdefault(label, []).append(snapshot)
    # The lots with the latest points are the ones still selling.
    shown = sorted(series.items(), key=lambda item: item[1][-1].slot, reverse=True)[:CHART_MAX_BATCHES]
    width, height, pad = 640, 220, 40
    prices = [s.price for _, points in shown for s in points]
    low, high = (min(prices), max(prices)) if prices else (Decimal(0), Decimal(1))
    if high == low:
        high = low + 1
    span = (end - start).total_seconds()

    def x(moment: datetime) -> float:
        return round(pad + (width - 2 * pad) * (moment - start).total_seconds() / span, 1)

    def y(price: Decimal) -> float:
        return round(height - pad - (height - 2 * pad) * float((price - low) / (high - low)), 1)

    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    lines = [
        {
            "label": label,
            "color": palette[i % len(palette)],
            "points": " ".join(f"{x(s.slot)},{y(s.price)}" for s in points),
            "last": points[-1],
        }
        for i, (label, points) in enumerate(shown)
    ]
    currency = shown[0][1][-1].currency if shown else product.currency
    return render_to_string(
        "admin/payments/price_chart.html",
        {
            "lines": lines,
            "width": width,
            "height": height,
            "pad": pad,
            "low": low,
            "high": high,
            "currency": currency,
            "start": start,
            "end": end,
            "days": days,
            "slot_hours": SLOT_HOURS,
            "y_low": y(low),
            "y_high": y(high),
            "x_end": width - pad,
            "hidden": max(len(series) - len(shown), 0),
        },
    )


class ProductPricingMixin:
    """For ProductAdmin: the product's batches inline, and a read-only price chart on its page."""

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return [*super().get_inlines(request, obj), BatchInline]  # type: ignore[misc]  # a ModelAdmin mixin

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_readonly_fields(request, obj)  # type: ignore[misc]  # a ModelAdmin mixin
        return (*fields, "price_history_chart") if obj is not None else fields

    @admin.display(description="Price over time (last 30 days)")
    def price_history_chart(self, obj: Product) -> SafeString:
        return price_chart(product=obj)
