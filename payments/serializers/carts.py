"""Cart API serializers: the cart as the user sees it, and the input of each change."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class CartLineSerializer(serializers.Serializer[Any]):
    product_id = serializers.IntegerField()
    sku = serializers.CharField()
    name = serializers.CharField()
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    quantity = serializers.IntegerField()
    line_total = serializers.DecimalField(max_digits=14, decimal_places=2)
    in_stock = serializers.BooleanField(help_text="False when the product has fewer units now than the line asks.")


class CartSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    updated_at = serializers.DateTimeField()
    items = CartLineSerializer(many=True)
    totals = serializers.DictField(
        child=serializers.DecimalField(max_digits=14, decimal_places=2), help_text="Sum of the lines per currency."
    )


class CartItemAddSerializer(serializers.Serializer[dict[str, Any]]):
    product_id = serializers.IntegerField(min_value=1)
    quantity = serializers.IntegerField(
        min_value=1, default=1, help_text="Units to add (the line's total must be in stock)."
    )


class CartItemQuantitySerializer(serializers.Serializer[dict[str, Any]]):
    quantity = serializers.IntegerField(min_value=1, help_text="The line's new quantity, 1 to the product's stock.")
