"""Pricing API serializers: the effective price, the price history, the discount shortcuts' input."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from rest_framework import ISO_8601, serializers

from payments.jobs import DiscountRecomputeParams
from payments.models.pricing import money_text

DEFAULT_HISTORY_DAYS = 30


class EffectivePriceSerializer(serializers.Serializer[Any]):
    product_id = serializers.IntegerField()
    price = serializers.SerializerMethodField(help_text="What one unit costs now, in the currency's minor units.")
    currency = serializers.CharField()
    base_price = serializers.SerializerMethodField()
    discount_percentage = serializers.DecimalField(source="percentage", max_digits=5, decimal_places=2)
    source = serializers.ChoiceField(  # type: ignore[assignment]  # the field is named "source", like Field.source
        choices=["discount", "batch", "product"],
        help_text="discount: the first-shipping batch's discount; batch: its base price; product: no batch in stock.",
    )
    batch_id = serializers.IntegerField(allow_null=True)
    lot_code = serializers.CharField(allow_null=True)
    expiry_date = serializers.DateField(allow_null=True)
    discount_id = serializers.IntegerField(allow_null=True)
    valid_until = serializers.DateTimeField(allow_null=True)

    def get_price(self, obj: Any) -> str:
        return money_text(obj.price, obj.currency)

    def get_base_price(self, obj: Any) -> str:
        return money_text(obj.base_price, obj.currency)


class PriceHistoryQuerySerializer(serializers.Serializer[dict[str, Any]]):
    # Both ISO 8601 date-times and plain dates (a date means its midnight, UTC).
    _formats = [ISO_8601, "%Y-%m-%d"]

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        # `from` is a Python keyword, so neither field can be a class attribute.
        fields["from"] = serializers.DateTimeField(
            required=False, input_formats=self._formats, help_text="Start (default: 30 days before `to`)."
        )
        fields["to"] = serializers.DateTimeField(
            required=False, input_formats=self._formats, help_text="End, inclusive (default: now)."
        )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        end: datetime = attrs.get("to") or timezone.now()
        start: datetime = attrs.get("from") or end - timedelta(days=DEFAULT_HISTORY_DAYS)
        return {"from": start, "to": end}


class PriceHistoryPointSerializer(serializers.Serializer[Any]):
    slot = serializers.DateTimeField()
    batch_id = serializers.IntegerField(allow_null=True)
    lot_code = serializers.SerializerMethodField()
    price = serializers.SerializerMethodField()
    base_price = serializers.SerializerMethodField()
    percentage = serializers.DecimalField(max_digits=5, decimal_places=2)
    currency = serializers.CharField()

    def get_lot_code(self, obj: Any) -> str | None:
        return obj.batch.lot_code if obj.batch is not None else None

    def get_price(self, obj: Any) -> str:
        return money_text(obj.price, obj.currency)

    def get_base_price(self, obj: Any) -> str:
        return money_text(obj.base_price, obj.currency)


class PriceHistorySerializer(serializers.Serializer[Any]):
    product_id = serializers.IntegerField()
    points = PriceHistoryPointSerializer(many=True)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField()
        fields["to"] = serializers.DateTimeField()
        return fields


class DiscountRecomputeQuerySerializer(DiscountRecomputeParams):
    """The shortcut's query string: the job's own parameters (same serializer, same rules) plus `async_task`."""

    async_task = serializers.BooleanField(
        required=False, default=True, help_text="false runs the recompute inline and answers 200 with its summary."
    )

    ACCEPTED = ("days_threshold", "async_task")
