"""Escrow: a buyer funds a transaction, the seller delivers in milestones, money is released as they are approved.

The allowed transitions of both state machines are written once, here (`TRANSITIONS`);
payments/services/escrow.py moves rows only along them, with conditional updates.

    EscrowTransaction   created ──fund──► funded ──first submit──► in_progress ──last release──► completed
                          │                 │                          │
                          └──cancel──► cancelled   └──dispute──► disputed ◄──┘   (staff: → refunded | completed)

    Milestone           pending ──submit──► submitted ──approve──► approved ──release──► released
                                              │   ▲
                                       reject ▼   │ submit again
                                            rejected
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from payments.models.catalog import currency_validator

AMOUNT_MAX_DIGITS = 14
AMOUNT_DECIMAL_PLACES = 2


class EscrowTransaction(models.Model):
    class Status(models.TextChoices):
        CREATED = "created", "Created (awaiting funding)"
        FUNDED = "funded", "Funded"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        DISPUTED = "disputed", "Disputed"
        REFUNDED = "refunded", "Refunded"

    # The one place the transaction's state machine is written down.
    TRANSITIONS: Mapping[str, frozenset[str]] = {
        Status.CREATED: frozenset({Status.FUNDED, Status.CANCELLED}),
        Status.FUNDED: frozenset({Status.IN_PROGRESS, Status.DISPUTED}),
        Status.IN_PROGRESS: frozenset({Status.COMPLETED, Status.DISPUTED}),
        # A dispute is settled by staff: back to work, paid out, or refunded.
        Status.DISPUTED: frozenset({Status.IN_PROGRESS, Status.COMPLETED, Status.REFUNDED}),
        Status.COMPLETED: frozenset(),
        Status.CANCELLED: frozenset(),
        Status.REFUNDED: frozenset(),
    }
    # Transactions the daily summary reports and the parties still act on.
    ACTIVE = (Status.CREATED, Status.FUNDED, Status.IN_PROGRESS, Status.DISPUTED)
    # Where the seller works on milestones and the buyer approves and releases them.
    WORKING = (Status.FUNDED, Status.IN_PROGRESS)

    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="escrow_purchases")
    seller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="escrow_sales")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    amount = models.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS,
        decimal_places=AMOUNT_DECIMAL_PLACES,
        validators=[MinValueValidator(Decimal("0.01"))],
    )
    currency = models.CharField(max_length=3, validators=[currency_validator])
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CREATED, db_index=True)
    # A default rather than auto_now_add: demo data, tests and benchmarks back-date it.
    created_at = models.DateTimeField(default=timezone.now)
    funded_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    disputed_at = models.DateTimeField(null=True, blank=True)
    disputed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dispute_reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="escrow_amount_positive"),
            models.CheckConstraint(condition=~models.Q(buyer=models.F("seller")), name="escrow_buyer_is_not_seller"),
        ]
        indexes = [
            # The funding-reminder sweep walks the unfunded transactions by age; small in steady state.
            models.Index(
                fields=["created_at", "id"], name="escrow_unfunded_by_age", condition=models.Q(status="created")
            ),
            # The daily summary pages through the users with active transactions, on both sides,
            # and "my transactions" lists filter by party.
            models.Index(
                fields=["buyer", "status"],
                name="escrow_active_by_buyer",
                condition=models.Q(status__in=["created", "funded", "in_progress", "disputed"]),
            ),
            models.Index(
                fields=["seller", "status"],
                name="escrow_active_by_seller",
                condition=models.Q(status__in=["created", "funded", "in_progress", "disputed"]),
            ),
            models.Index(fields=["buyer", "-created_at"], name="escrow_buyer_recent"),
            models.Index(fields=["seller", "-created_at"], name="escrow_seller_recent"),
        ]

    def __str__(self) -> str:
        return f"Escrow {self.pk} {self.title!r} {self.amount} {self.currency} ({self.status})"

    @classmethod
    def can_move(cls, source: str, target: str) -> bool:
        return target in cls.TRANSITIONS.get(source, frozenset())

    @classmethod
    def sources_of(cls, target: str) -> list[str]:
        """The statuses a transaction may be in to move to `target` (for conditional updates)."""
        return sorted(source for source, targets in cls.TRANSITIONS.items() if target in targets)


class EscrowFunding(models.Model):
    """One funding attempt through the gateway, recorded before the call and completed after it.

    `idempotency_key` is the client's (the `Idempotency-Key` header): a retried request with
    the same key finds this row and never charges twice.
    """

    class Status(models.TextChoices):
        INITIATED = "initiated", "Initiated"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    transaction = models.ForeignKey(EscrowTransaction, on_delete=models.PROTECT, related_name="fundings")
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount = models.DecimalField(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES)
    currency = models.CharField(max_length=3, validators=[currency_validator])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.INITIATED, db_index=True)
    gateway = models.CharField(max_length=50)
    gateway_reference = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    needs_refund = models.BooleanField(
        default=False, help_text="The gateway took money for a transaction that was no longer awaiting funding."
    )
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Funding {self.idempotency_key} of escrow {self.transaction_id} ({self.status})"


class Milestone(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUBMITTED = "submitted", "Submitted"
        APPROVED = "approved", "Approved"
        RELEASED = "released", "Released"
        REJECTED = "rejected", "Rejected"

    TRANSITIONS: Mapping[str, frozenset[str]] = {
        Status.PENDING: frozenset({Status.SUBMITTED}),
        Status.SUBMITTED: frozenset({Status.APPROVED, Status.REJECTED}),
        # A rejected milestone goes back to the seller, who submits it again.
        Status.REJECTED: frozenset({Status.SUBMITTED}),
        Status.APPROVED: frozenset({Status.RELEASED}),
        Status.RELEASED: frozenset(),
    }

    transaction = models.ForeignKey(EscrowTransaction, on_delete=models.CASCADE, related_name="milestones")
    title = models.CharField(max_length=200)
    amount = models.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS,
        decimal_places=AMOUNT_DECIMAL_PLACES,
        validators=[MinValueValidator(Decimal("0.01"))],
    )
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    due_date = models.DateField(null=True, blank=True)
    # Counts submissions, so each one (after a rejection) is announced once.
    submission_count = models.PositiveIntegerField(default=0)
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["transaction", "position"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "position"], name="milestone_position_unique"),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="milestone_amount_positive"),
        ]
        indexes = [
            # The overdue-milestone sweep pages through the pending milestones by id.
            models.Index(fields=["id"], name="milestone_pending", condition=models.Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"Milestone {self.position} of escrow {self.transaction_id}: {self.title} ({self.status})"

    @classmethod
    def can_move(cls, source: str, target: str) -> bool:
        return target in cls.TRANSITIONS.get(source, frozenset())

    @classmethod
    def sources_of(cls, target: str) -> list[str]:
        return sorted(source for source, targets in cls.TRANSITIONS.items() if target in targets)


def evidence_name(milestone_id: int) -> str:
    """Where a milestone's evidence file is stored. The client's file name is kept in `original_name`
    only: a stored name never comes from it (no path tricks, no guessing the type from it)."""
    return f"escrow/evidence/{milestone_id}/{timezone.now():%Y%m%d%H%M%S%f}"


def evidence_upload_to(instance: MilestoneEvidence, filename: str) -> str:
    return evidence_name(instance.milestone_id)


class MilestoneEvidence(models.Model):
    """A file the seller uploaded with a milestone; checked by `payments.process_milestone_evidence`."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (being checked)"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    milestone = models.ForeignKey(Milestone, on_delete=models.CASCADE, related_name="evidence")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    file = models.FileField(upload_to=evidence_upload_to, max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    # Sniffed from the bytes (magic numbers), never taken from the name or the client's header.
    content_type = models.CharField(max_length=100, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    rejection_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["milestone", "id"]
        verbose_name_plural = "milestone evidence"

    def __str__(self) -> str:
        return f"Evidence {self.pk} for milestone {self.milestone_id} ({self.status})"


class SellerVerification(models.Model):
    """A seller's identity check: submitted by the seller, reviewed by staff. One per user."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending review"
        VERIFIED = "VERIFIED", "Verified"
        REJECTED = "REJECTED", "Rejected"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="seller_verification")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    documents = models.JSONField(
        default=list, blank=True, help_text='What the seller submitted: [{"kind": "passport", "reference": "..."}].'
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True, help_text="Why it was last rejected (shown to the seller).")
    submitted_at = models.DateTimeField(default=timezone.now)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-submitted_at", "-id"]

    def __str__(self) -> str:
        return f"Verification of user {self.user_id} ({self.status})"
