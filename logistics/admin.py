from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from core.admin_audit import AuditedModelAdmin
from logistics.models import AssignmentOffer, Driver, Station, StockRequest


@admin.register(Station)
class StationAdmin(AuditedModelAdmin[Station]):
    list_display = ("code", "name", "kind", "created_at")
    list_filter = ("kind",)
    search_fields = ("code", "name")


@admin.register(Driver)
class DriverAdmin(AuditedModelAdmin[Driver]):
    list_display = ("name", "phone", "user", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "phone", "user__username", "user__email")
    raw_id_fields = ("user",)
    actions = ["deactivate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Driver]:
        return super().get_queryset(request).select_related("user")

    @admin.action(description="Deactivate the selected drivers (no new offers)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Driver]) -> None:
        n = queryset.filter(active=True).update(active=False)
        self.message_user(
            request, ngettext("%d driver deactivated.", "%d drivers deactivated.", n) % n, messages.SUCCESS
        )


class AssignmentOfferInline(admin.TabularInline[AssignmentOffer, StockRequest]):
    """The request's history: every offer and how it ended."""

    model = AssignmentOffer
    extra = 0
    can_delete = False
    fields = ("driver", "mode", "offered_by", "offered_at", "expires_at", "outcome", "resolved_at")
    readonly_fields = fields
    ordering = ("-offered_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[AssignmentOffer]:
        return super().get_queryset(request).select_related("driver", "offered_by")


@admin.register(StockRequest)
class StockRequestAdmin(AuditedModelAdmin[StockRequest]):
    list_display = (
        "id",
        "station",
        "quantity",
        "status",
        "target_driver",
        "assignment_started_at",
        "assignment_mode",
        "driver",
        "created_at",
    )
    list_filter = ("status", "assignment_mode", "station__kind", "station")
    search_fields = ("=id", "station__name", "station__code", "driver__name", "target_driver__name")
    date_hierarchy = "created_at"
    raw_id_fields = ("station", "target_driver", "driver")
    # State changes go through the API and its services (locks, offers, notifications), not this form.
    readonly_fields = (
        "status",
        "target_driver",
        "assignment_started_at",
        "assignment_mode",
        "driver",
        "assigned_at",
        "cancelled_at",
        "updated_at",
    )
    inlines = [AssignmentOfferInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[StockRequest]:
        return super().get_queryset(request).select_related("station", "target_driver", "driver")


@admin.register(AssignmentOffer)
class AssignmentOfferAdmin(AuditedModelAdmin[AssignmentOffer]):
    list_display = (
        "id",
        "stock_request",
        "driver",
        "mode",
        "offered_at",
        "expires_at",
        "outcome",
        "resolved_at",
    )
    list_filter = ("outcome", "mode")
    search_fields = ("=stock_request__id", "driver__name", "stock_request__station__name")
    date_hierarchy = "offered_at"
    readonly_fields = [f.name for f in AssignmentOffer._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AssignmentOffer]:
        return super().get_queryset(request).select_related("stock_request__station", "driver", "offered_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
