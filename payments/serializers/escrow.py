"""Escrow API serializers: the inputs of each operation, and the transaction, milestone and verification views."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from payments.models import EscrowTransaction, Milestone, MilestoneEvidence, SellerVerification
from payments.models.escrow import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS
from payments.services.escrow import MAX_EVIDENCE_FILES, MAX_MILESTONES
from payments.services.escrow_verification import DOCUMENT_KINDS, MAX_DOCUMENTS


def _money() -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, min_value=Decimal("0.01")
    )


# Inputs ------------------------------------------------------------------------------------------


class MilestoneInputSerializer(serializers.Serializer[dict[str, Any]]):
    title = serializers.CharField(max_length=200)
    amount = _money()
    due_date = serializers.DateField(required=False, allow_null=True, default=None)


class EscrowCreateInputSerializer(serializers.Serializer[dict[str, Any]]):
    seller = serializers.IntegerField(help_text="The seller's user id.")
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    amount = _money()
    currency = serializers.RegexField(r"^[A-Z]{3}$", help_text="ISO 4217 code, such as EUR.")
    milestones = serializers.ListField(
        child=MilestoneInputSerializer(),
        min_length=1,
        max_length=MAX_MILESTONES,
        help_text="Their amounts must sum to `amount`.",
    )


class FundInputSerializer(serializers.Serializer[dict[str, Any]]):
    idempotency_key = serializers.CharField(
        required=False,
        max_length=255,
        help_text="Prefer the `Idempotency-Key` header; this field is read when the header is absent.",
    )


class ReasonInputSerializer(serializers.Serializer[dict[str, Any]]):
    reason = serializers.CharField(max_length=2000)


class ReleaseInputSerializer(serializers.Serializer[dict[str, Any]]):
    milestone = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Release only this milestone (default: every approved one).",
    )


class MilestoneSubmitInputSerializer(serializers.Serializer[dict[str, Any]]):
    evidence = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        max_length=MAX_EVIDENCE_FILES,
        help_text="1 to 5 files (multipart, the field repeated): PDF, PNG or JPEG, checked after upload.",
    )


class DocumentSerializer(serializers.Serializer[dict[str, Any]]):
    kind = serializers.ChoiceField(choices=DOCUMENT_KINDS)
    reference = serializers.CharField(max_length=200)


class VerificationSubmitInputSerializer(serializers.Serializer[dict[str, Any]]):
    documents = serializers.ListField(child=DocumentSerializer(), min_length=1, max_length=MAX_DOCUMENTS)


class VerificationReviewInputSerializer(serializers.Serializer[dict[str, Any]]):
    status = serializers.ChoiceField(choices=[SellerVerification.Status.VERIFIED, SellerVerification.Status.REJECTED])
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


# Outputs -----------------------------------------------------------------------------------------


class PartySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    username = serializers.CharField()


class EvidenceSerializer(serializers.ModelSerializer[MilestoneEvidence]):
    class Meta:
        model = MilestoneEvidence
        fields = [
            "id",
            "original_name",
            "status",
            "rejection_reason",
            "size",
            "content_type",
            "sha256",
            "created_at",
            "processed_at",
        ]


class MilestoneSerializer(serializers.ModelSerializer[Milestone]):
    evidence = EvidenceSerializer(many=True, read_only=True)

    class Meta:
        model = Milestone
        fields = [
            "id",
            "position",
            "title",
            "amount",
            "status",
            "due_date",
            "submission_count",
            "submitted_at",
            "approved_at",
            "rejected_at",
            "rejection_reason",
            "released_at",
            "evidence",
        ]


class EscrowListSerializer(serializers.ModelSerializer[EscrowTransaction]):
    buyer = PartySerializer()
    seller = PartySerializer()

    class Meta:
        model = EscrowTransaction
        fields = ["id", "title", "amount", "currency", "status", "buyer", "seller", "created_at", "funded_at"]


class EscrowDetailSerializer(EscrowListSerializer):
    milestones = MilestoneSerializer(many=True, read_only=True)

    class Meta(EscrowListSerializer.Meta):
        fields = [
            *EscrowListSerializer.Meta.fields,
            "description",
            "completed_at",
            "cancelled_at",
            "disputed_at",
            "dispute_reason",
            "milestones",
        ]


class VerificationSerializer(serializers.ModelSerializer[SellerVerification]):
    class Meta:
        model = SellerVerification
        fields = ["id", "user", "status", "documents", "reason", "reviewer", "submitted_at", "reviewed_at"]
