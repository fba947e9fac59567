from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from core.admin_audit import AuditedModelAdmin
from notifications.models import DeadLetter, Notification, NotificationTemplate, PushDevice
from notifications.services import notification_retry


@admin.register(NotificationTemplate)
class NotificationTemplateAdmin(AuditedModelAdmin[NotificationTemplate]):
    list_display = ("key", "channel", "subject", "is_active", "updated_at")
    list_filter = ("channel", "is_active")
    search_fields = ("key", "subject", "body", "description")


@admin.register(PushDevice)
class PushDeviceAdmin(AuditedModelAdmin[PushDevice]):
    list_display = ("user", "platform", "active", "deactivated_reason", "created_at")
    list_filter = ("platform", "active")
    search_fields = ("user__username", "user__email", "token")
    raw_id_fields = ("user",)
    actions = ["deactivate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PushDevice]:
        return super().get_queryset(request).select_related("user")

    @admin.action(description="Deactivate selected devices")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[PushDevice]) -> None:
        n = queryset.filter(active=True).update(active=False, deactivated_reason="deactivated in the admin")
        self.message_user(request, ngettext("%d device deactivated.", "%d devices deactivated.", n) % n)


@admin.register(Notification)
class NotificationAdmin(AuditedModelAdmin[Notification]):
    """The outbox; filter on status "Failed" for the dead-letter view and use the Retry action."""

    list_display = (
        "id",
        "template_key",
        "channel",
        "to_address_short",
        "status",
        "attempts",
        "last_error_short",
        "provider",
        "created_at",
        "sent_at",
    )
    list_filter = ("status", "channel", "template_key", "provider")
    search_fields = ("to_address", "dedupe_key", "template_key", "last_error", "provider_message_id", "user__email")
    date_hierarchy = "created_at"
    actions = ["retry"]
    audit_action_names = {"retry": "deadletter.retry"}  # only failed rows are retried: dead letters
    readonly_fields = [f.name for f in Notification._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        return super().get_queryset(request).select_related("user", "device")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="to")
    def to_address_short(self, obj: Notification) -> str:
        return obj.to_address if len(obj.to_address) <= 40 else obj.to_address[:37] + "..."

    @admin.display(description="last error")
    def last_error_short(self, obj: Notification) -> str:
        return obj.last_error[:80]

    @admin.action(description="Retry selected failed notifications")
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        result = notification_retry(notification_ids=ids)
        n = result["retried"]
        self.message_user(request, ngettext("%d notification queued again.", "%d notifications queued again.", n) % n)
        skipped = result["requested"] - n
        if skipped:
            self.message_user(
                request,
                ngettext("%d was not failed and was left alone.", "%d were not failed and were left alone.", skipped)
                % skipped,
                level=messages.WARNING,
            )


@admin.register(DeadLetter)
class DeadLetterAdmin(NotificationAdmin):
    """Only `failed` rows: retries spent, a permanent provider error, or bad input."""

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        return ("id", "template_key", "channel", "to_address_short", "attempts", "last_error", "updated_at")

    def get_list_filter(self, request: HttpRequest) -> tuple[str, ...]:
        return ("channel", "template_key", "provider")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        return super().get_queryset(request).filter(status=Notification.Status.FAILED)
