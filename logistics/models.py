"""Stations, drivers, stock requests and the offers of a request's trip to a driver."""

from __future__ import annotations

import math
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

EIC_GROUP = "eic"


class Station(models.Model):
    class Kind(models.TextChoices):
        MS = "MS", "Mother station"
        DBS = "DBS", "Daughter booster station"

    name = models.CharField(max_length=200)
    code = models.CharField(max_length=32, unique=True)
    kind = models.CharField(max_length=3, choices=Kind.choices, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class Driver(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="driver")
    name = models.CharField(max_length=200)
    phone = models.CharField(max_length=16, blank=True)
    active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class StockRequest(models.Model):
    """A daughter booster station's request for stock, and where its trip stands."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        ASSIGNING = "ASSIGNING", "Assigning (offered to a driver)"
        ASSIGNED = "ASSIGNED", "Assigned"
        IN_TRANSIT = "IN_TRANSIT", "In transit"
        DELIVERED = "DELIVERED", "Delivered"
        CANCELLED = "CANCELLED", "Cancelled"

    class AssignmentMode(models.TextChoices):
        MANUAL = "MANUAL", "Manual"
        AUTO = "AUTO", "Automatic"

    CANCELLABLE = (Status.PENDING, Status.ASSIGNING, Status.ASSIGNED)

    # Only a daughter booster station asks for stock; the offer service refuses any other (409).
    station = models.ForeignKey(
        Station,
        on_delete=models.PROTECT,
        related_name="stock_requests",
        limit_choices_to={"kind": Station.Kind.DBS},
    )
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    target_driver = models.ForeignKey(
        Driver, null=True, blank=True, on_delete=models.PROTECT, related_name="targeted_requests"
    )
    assignment_started_at = models.DateTimeField(null=True, blank=True)
    assignment_mode = models.CharField(max_length=6, choices=AssignmentMode.choices, blank=True)
    driver = models.ForeignKey(
        Driver, null=True, blank=True, on_delete=models.PROTECT, related_name="assigned_requests"
    )
    assigned_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The expiry sweep reads only ASSIGNING rows by start time; a partial index
            # stays as small as the number of live offers whatever the table's size.
            models.Index(
                fields=["assignment_started_at"],
                condition=Q(status="ASSIGNING"),
                name="logistics_sr_assigning_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="ASSIGNING")
                | (Q(target_driver__isnull=False) & Q(assignment_started_at__isnull=False)),
                name="logistics_sr_assigning_has_target",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.quantity} to {self.station_id} ({self.status})"


class AssignmentOffer(models.Model):
    """One offer of a request's trip to one driver, and how it ended: the request's history."""

    class Outcome(models.TextChoices):
        OPEN = "OPEN", "Open"
        ACCEPTED = "ACCEPTED", "Accepted"
        REJECTED = "REJECTED", "Rejected"
        EXPIRED = "EXPIRED", "Expired"
        CANCELLED = "CANCELLED", "Cancelled (request cancelled)"

    stock_request = models.ForeignKey(StockRequest, on_delete=models.CASCADE, related_name="offers")
    driver = models.ForeignKey(Driver, on_delete=models.PROTECT, related_name="offers")
    offered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    mode = models.CharField(max_length=6, choices=StockRequest.AssignmentMode.choices)
    offered_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    outcome = models.CharField(max_length=9, choices=Outcome.choices, default=Outcome.OPEN, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-offered_at", "-pk"]
        indexes = [
            # A driver's live offers (GET /api/driver/pending-offers).
            models.Index(fields=["driver", "expires_at"], condition=Q(outcome="OPEN"), name="logistics_offer_open_idx"),
            # The sweep: open offers past their deadline. Only live offers are in it.
            models.Index(fields=["expires_at"], condition=Q(outcome="OPEN"), name="logistics_offer_due_idx"),
            models.Index(fields=["stock_request", "driver", "-offered_at"], name="logistics_offer_history_idx"),
        ]
        constraints = [
            # At most one live offer per request: two EIC users offering at once cannot both win.
            models.UniqueConstraint(
                fields=["stock_request"], condition=Q(outcome="OPEN"), name="logistics_one_open_offer"
            ),
        ]

    def __str__(self) -> str:
        return f"offer #{self.pk} of request #{self.stock_request_id} to {self.driver_id}: {self.outcome}"

    def seconds_left(self, now: datetime) -> int:
        # Rounded up, so 0 means the deadline has passed and accepting will be refused.
        # `now` is the database's clock, the one every deadline is checked against.
        return max(0, math.ceil((self.expires_at - now).total_seconds()))
