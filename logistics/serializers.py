from __future__ import annotations

from typing import Any

from rest_framework import serializers

from logistics.models import AssignmentOffer, Station, StockRequest


class StationSerializer(serializers.ModelSerializer[Station]):
    class Meta:
        model = Station
        fields = ["id", "name", "code", "kind"]


class StockRequestSerializer(serializers.ModelSerializer[StockRequest]):
    station = StationSerializer(read_only=True)

    class Meta:
        model = StockRequest
        fields = [
            "id",
            "station",
            "quantity",
            "status",
            "target_driver",
            "assignment_started_at",
            "assignment_mode",
            "driver",
            "assigned_at",
            "cancelled_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class StockRequestStatusInputSerializer(serializers.Serializer[dict[str, Any]]):
    status = serializers.ChoiceField(
        choices=[StockRequest.Status.ASSIGNING, StockRequest.Status.CANCELLED],
        help_text="ASSIGNING offers the trip to `target_driver`; CANCELLED cancels the request.",
    )
    target_driver = serializers.IntegerField(
        required=False, min_value=1, help_text="Driver id; required for ASSIGNING."
    )
    assignment_mode = serializers.ChoiceField(
        choices=StockRequest.AssignmentMode.choices, default=StockRequest.AssignmentMode.MANUAL
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["status"] == StockRequest.Status.ASSIGNING and "target_driver" not in attrs:
            raise serializers.ValidationError({"target_driver": ["Required when status is ASSIGNING."]})
        return attrs


class DriverTripInputSerializer(serializers.Serializer[dict[str, Any]]):
    stock_request_id = serializers.IntegerField(min_value=1)


class PendingOfferSerializer(serializers.ModelSerializer[AssignmentOffer]):
    offer_id = serializers.IntegerField(source="pk", read_only=True)
    stock_request_id = serializers.IntegerField(read_only=True)
    station = StationSerializer(source="stock_request.station", read_only=True)
    quantity = serializers.IntegerField(source="stock_request.quantity", read_only=True)
    seconds_left = serializers.SerializerMethodField()

    class Meta:
        model = AssignmentOffer
        fields = [
            "offer_id",
            "stock_request_id",
            "station",
            "quantity",
            "mode",
            "offered_at",
            "expires_at",
            "seconds_left",
        ]
        read_only_fields = fields

    def get_seconds_left(self, offer: AssignmentOffer) -> int:
        return offer.seconds_left(self.context["now"])
