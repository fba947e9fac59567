from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from payments.models.catalog import Product, currency_validator


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING_PAYMENT = "pending_payment", "Pending payment"
        PAID = "paid", "Paid"
        PROCESSING = "processing", "Processing"
        SHIPPED = "shipped", "Shipped"
        DELIVERED = "delivered", "Delivered"
        CANCELLED = "cancelled", "Cancelled"

    class PaymentStatus(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"

    class CancelReason(models.TextChoices):
        PAYMENT_TIMEOUT = "payment_timeout", "Not paid in time"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING_PAYMENT, db_index=True)
    payment_status = models.CharField(
        max_length=10, choices=PaymentStatus.choices, default=PaymentStatus.PENDING, db_index=True
    )
    currency = models.CharField(max_length=3, validators=[currency_validator])
    total = models.DecimalField(max_digits=12, decimal_places=2)
    # A default rather than auto_now_add: imports, demo data and benchmarks set it.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)
    # Set by the transaction that cancels the order, so the chunk's later statements find
    # "the orders I just claimed" with a small indexed query instead of a list of ids.
    claim_token = models.UUIDField(null=True, blank=True, editable=False, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The payment-timeout sweep walks this partial index in (created_at, id) order;
            # it only holds unpaid orders, so it stays small however many orders are paid.
            models.Index(
                fields=["created_at", "id"],
                name="order_pending_by_age",
                condition=models.Q(status="pending_payment"),
            ),
            models.Index(fields=["customer", "-created_at"], name="order_customer_recent"),
        ]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.status})"


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_items")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="order_item_quantity_positive"),
            models.UniqueConstraint(fields=["order", "product"], name="order_item_one_line_per_product"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id} in {self.order_id}"
