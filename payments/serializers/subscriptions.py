"""Subscription API serializers: what the gateway webhook answers."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class WebhookOutcomeSerializer(serializers.Serializer[Any]):
    event = serializers.CharField(required=False)
    payment_id = serializers.CharField(required=False)
    charge_id = serializers.IntegerField(required=False)
    outcome = serializers.CharField(
        help_text="charged, declined, past_due, paid_awaiting_stock, duplicate (a replay) or ignored."
    )
    detail = serializers.CharField(required=False)
