"""The escrow models in the admin (imported by payments/admin.py, which Django autodiscovers).

Money and state move through the services (payments/services/escrow*.py), which check
the state machine and queue the notifications; the admin shows the rows and offers
the seller-verification review as bulk actions, one UPDATE each.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from core.admin_audit import AuditedModelAdmin, ViewOnlyModelAdmin
from core.errors import AppError, admin_message
from payments.models import EscrowFunding, EscrowTransaction, Milestone, MilestoneEvidence, SellerVerification
from payments.services.escrow_verification import verifications_review

ADMIN_REJECTION_REASON = "Your documents could not be verified. Please submit clearer copies, or contact support."


class _ViewOnly:
    """Inlines of rows written by the services only: no add, change or delete (ViewOnlyModelAdmin for pages)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MilestoneInline(_ViewOnly, admin.TabularInline[Milestone, EscrowTransaction]):
    model = Milestone
    extra = 0
    fields = ("position", "title", "amount", "status", "due_date", "submitted_at", "approved_at", "released_at")
    readonly_fields = fields
    ordering = ("position",)


class EscrowFundingInline(_ViewOnly, admin.TabularInline[EscrowFunding, EscrowTransaction]):
    model = EscrowFunding
    extra = 0
    fields = ("idempotency_key", "status", "amount", "currency", "gateway_reference", "needs_refund", "created_at")
    readonly_fields = fields


@admin.register(EscrowTransaction)
class EscrowTransactionAdmin(AuditedModelAdmin[EscrowTransaction]):
    list_display = ("id", "title", "buyer", "seller", "amount", "currency", "status", "created_at", "funded_at")
    list_filter = ("status", "currency")
    search_fields = ("=id", "title", "buyer__username", "buyer__email", "seller__username", "seller__email")
    date_hierarchy = "created_at"
    raw_id_fields = ("buyer", "seller", "cancelled_by", "disputed_by")
    # Amounts and statuses move through the services (the sums are checked, the parties told).
    readonly_fields = (
        "buyer",
        "seller",
        "amount",
        "currency",
        "status",
        "created_at",
        "funded_at",
        "completed_at",
        "cancelled_at",
        "cancelled_by",
        "disputed_at",
        "disputed_by",
        "dispute_reason",
    )
    inlines = (MilestoneInline, EscrowFundingInline)

    def get_queryset(self, request: HttpRequest) -> QuerySet[EscrowTransaction]:
        return super().get_queryset(request).select_related("buyer", "seller")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EvidenceInline(_ViewOnly, admin.TabularInline[MilestoneEvidence, Milestone]):
    model = MilestoneEvidence
    extra = 0
    fields = ("original_name", "file", "status", "rejection_reason", "content_type", "size", "sha256")
    readonly_fields = fields


@admin.register(Milestone)
class MilestoneAdmin(ViewOnlyModelAdmin[Milestone]):
    list_display = ("id", "transaction", "position", "title", "amount", "status", "due_date", "submitted_at")
    list_filter = ("status",)
    search_fields = ("title", "transaction__title", "=transaction__id")
    raw_id_fields = ("transaction",)
    inlines = (EvidenceInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Milestone]:
        return super().get_queryset(request).select_related("transaction")


@admin.register(MilestoneEvidence)
class MilestoneEvidenceAdmin(ViewOnlyModelAdmin[MilestoneEvidence]):
    list_display = ("id", "milestone", "original_name", "status", "content_type", "size", "created_at", "processed_at")
    list_filter = ("status", "content_type")
    search_fields = ("original_name", "sha256", "=milestone__id")
    raw_id_fields = ("milestone", "uploaded_by")

    def get_queryset(self, request: HttpRequest) -> QuerySet[MilestoneEvidence]:
        return super().get_queryset(request).select_related("milestone")


@admin.register(EscrowFunding)
class EscrowFundingAdmin(ViewOnlyModelAdmin[EscrowFunding]):
    list_display = ("idempotency_key", "transaction", "amount", "currency", "status", "needs_refund", "created_at")
    list_filter = ("status", "needs_refund", "gateway")
    search_fields = ("idempotency_key", "gateway_reference", "=transaction__id")
    raw_id_fields = ("transaction",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[EscrowFunding]:
        return super().get_queryset(request).select_related("transaction")


@admin.register(SellerVerification)
class SellerVerificationAdmin(AuditedModelAdmin[SellerVerification]):
    list_display = ("user", "status", "submitted_at", "reviewer", "reviewed_at")
    list_filter = ("status",)
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user", "reviewer")
    # The status changes through the review actions, which tell the seller.
    readonly_fields = ("user", "status", "documents", "reviewer", "reason", "submitted_at", "reviewed_at")
    actions = ("mark_verified", "mark_rejected")

    def get_queryset(self, request: HttpRequest) -> QuerySet[SellerVerification]:
        return super().get_queryset(request).select_related("user", "reviewer")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Verify selected sellers (pending ones)", permissions=["change"])
    def mark_verified(self, request: HttpRequest, queryset: QuerySet[SellerVerification]) -> None:
        self._review(request, queryset, SellerVerification.Status.VERIFIED, "")

    @admin.action(
        description="Reject selected verifications (pending ones; the seller is told to resubmit)",
        permissions=["change"],
    )
    def mark_rejected(self, request: HttpRequest, queryset: QuerySet[SellerVerification]) -> None:
        self._review(request, queryset, SellerVerification.Status.REJECTED, ADMIN_REJECTION_REASON)

    def _review(self, request: HttpRequest, queryset: QuerySet[SellerVerification], status: str, reason: str) -> None:
        try:
            outcome = verifications_review(
                verification_ids=list(queryset.values_list("pk", flat=True)),
                reviewer_id=int(request.user.pk or 0),
                status=status,
                reason=reason,
            )
        except AppError as exc:
            admin_message(request, exc)
            return
        done, left = outcome["reviewed"], outcome["unchanged"]
        text = ngettext(
            "%(n)d seller verification is now %(s)s.", "%(n)d seller verifications are now %(s)s.", done
        ) % {"n": done, "s": status}
        if left:
            text += " " + ngettext(
                "%(n)d was left unchanged (not pending).", "%(n)d were left unchanged (not pending).", left
            ) % {"n": left}
        messages.info(request, text)
