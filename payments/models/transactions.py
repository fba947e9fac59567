from __future__ import annotations

from django.db import models

from payments.models.catalog import currency_validator
from payments.models.orders import Order


class PaymentTransaction(models.Model):
    class Status(models.TextChoices):
        INITIATED = "initiated", "Initiated"
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        REFUNDED = "refunded", "Refunded"

    NON_TERMINAL = (Status.INITIATED, Status.PENDING, Status.PROCESSING)

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="transactions")
    provider = models.CharField(max_length=50)
    provider_reference = models.CharField(max_length=200)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, validators=[currency_validator])
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.INITIATED, db_index=True)
    needs_refund = models.BooleanField(
        default=False,
        help_text="Money the provider took for an order that was no longer pending payment (cancelled or paid).",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A provider's callback for the same charge is recorded once, however often it arrives.
            models.UniqueConstraint(fields=["provider", "provider_reference"], name="payment_tx_provider_ref_unique"),
        ]
        indexes = [
            # The sweep cancels an order chunk's open transactions by order id.
            models.Index(
                fields=["order"],
                name="payment_tx_open_by_order",
                condition=models.Q(status__in=["initiated", "pending", "processing"]),
            ),
            # The refunds to do: a handful of rows among millions, listed by the admin filter.
            models.Index(fields=["created_at"], name="payment_tx_needs_refund", condition=models.Q(needs_refund=True)),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.provider_reference} {self.amount} {self.currency} ({self.status})"
