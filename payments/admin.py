from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

import payments.admin_escrow  # noqa: F401  (registers the escrow models' admin)
from core.admin_audit import AuditedModelAdmin, ViewOnlyModelAdmin
from payments.admin_pricing import ProductPricingMixin  # also registers the pricing models' admin
from payments.models import (
    Cart,
    CartItem,
    ExchangeRate,
    Order,
    OrderItem,
    PaymentTransaction,
    Plan,
    Product,
    Subscription,
    SubscriptionCharge,
    SubscriptionReminder,
)


@admin.register(Product)
class ProductAdmin(ProductPricingMixin, AuditedModelAdmin[Product]):
    list_display = ("sku", "name", "price", "currency", "stock", "updated_at")
    list_filter = ("currency",)
    search_fields = ("sku", "name")
    ordering = ("sku",)


class OrderItemInline(admin.TabularInline[OrderItem, Order]):
    model = OrderItem
    extra = 0
    raw_id_fields = ("product",)
    readonly_fields = ("product", "quantity", "unit_price")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderItem]:
        return super().get_queryset(request).select_related("product")


class PaymentTransactionInline(admin.TabularInline[PaymentTransaction, Order]):
    model = PaymentTransaction
    extra = 0
    fields = ("provider", "provider_reference", "amount", "currency", "status", "needs_refund", "created_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(AuditedModelAdmin[Order]):
    list_display = ("id", "customer", "status", "payment_status", "total", "currency", "created_at", "cancelled_at")
    list_filter = ("status", "payment_status", "currency", "cancel_reason")
    search_fields = ("id", "customer__username", "customer__email")
    date_hierarchy = "created_at"
    raw_id_fields = ("customer",)
    # Status changes go through the services (stock and transactions move with them), not this form.
    readonly_fields = (
        "status",
        "payment_status",
        "currency",
        "total",
        "created_at",
        "paid_at",
        "cancelled_at",
        "cancel_reason",
    )
    inlines = (OrderItemInline, PaymentTransactionInline)
    actions = ("cancel_if_expired",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).select_related("customer")

    # Orders come from order_place (which reserves stock) and never go away: deleting one
    # would drop the units it holds, adding one would hold none.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Cancel selected orders if past their payment deadline")
    def cancel_if_expired(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        from payments.services.orders import order_cancel_expired

        outcomes = [order_cancel_expired(order_id=str(pk)) for pk in queryset.values_list("pk", flat=True)]
        done = sum(o["orders_cancelled"] for o in outcomes)
        messages.info(
            request,
            ngettext("Cancelled %(n)d order", "Cancelled %(n)d orders", done) % {"n": done}
            + f"; {len(outcomes) - done} left unchanged (paid, already cancelled or not yet due).",
        )


_M = TypeVar("_M", bound=Model)


class ReadOnlyAdmin(ViewOnlyModelAdmin[_M]):
    """View only: these rows are written by the services, which keep stock and money consistent."""


@admin.register(OrderItem)
class OrderItemAdmin(ReadOnlyAdmin[OrderItem]):
    list_display = ("order", "product", "quantity", "unit_price")
    list_filter = ("order__status",)
    search_fields = ("order__id", "product__sku", "product__name")
    raw_id_fields = ("order", "product")

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderItem]:
        return super().get_queryset(request).select_related("order", "product")


@admin.register(PaymentTransaction)
class PaymentTransactionAdmin(ReadOnlyAdmin[PaymentTransaction]):
    list_display = (
        "provider",
        "provider_reference",
        "order",
        "amount",
        "currency",
        "status",
        "needs_refund",
        "created_at",
    )
    list_filter = ("needs_refund", "status", "provider", "currency")
    search_fields = ("provider_reference", "order__id", "order__customer__username")
    date_hierarchy = "created_at"
    raw_id_fields = ("order",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PaymentTransaction]:
        return super().get_queryset(request).select_related("order", "order__customer")


@admin.register(ExchangeRate)
class ExchangeRateAdmin(AuditedModelAdmin[ExchangeRate]):
    list_display = ("as_of", "base", "quote", "rate", "source", "fetched_at")
    list_filter = ("base", "quote", "source", "as_of")
    search_fields = ("base", "quote")
    date_hierarchy = "as_of"


# Subscriptions and carts (docs/subscriptions.md) ---------------------------------------------


@admin.register(Plan)
class PlanAdmin(AuditedModelAdmin[Plan]):
    list_display = ("name", "product", "quantity", "price", "currency", "interval", "interval_days", "is_active")
    list_filter = ("is_active", "interval", "currency")
    search_fields = ("name", "product__sku", "product__name")
    raw_id_fields = ("product",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Plan]:
        return super().get_queryset(request).select_related("product")


class SubscriptionChargeInline(admin.TabularInline[SubscriptionCharge, Subscription]):
    model = SubscriptionCharge
    extra = 0
    fields = (
        "period_start",
        "amount",
        "currency",
        "status",
        "gateway_payment_id",
        "attempts",
        "order",
        "charged_at",
        "last_error",
    )
    readonly_fields = fields
    can_delete = False
    ordering = ("-period_start",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(AuditedModelAdmin[Subscription]):
    list_display = (
        "id",
        "user",
        "plan",
        "status",
        "next_charge_date",
        "current_period_start",
        "failed_attempts",
        "cancelled_at",
    )
    list_filter = ("status", "plan", "next_charge_date")
    search_fields = ("id", "user__username", "user__email", "plan__name")
    date_hierarchy = "next_charge_date"
    raw_id_fields = ("user", "plan")
    # Charging moves these (with the charge rows and orders), not this form.
    readonly_fields = ("current_period_start", "failed_attempts", "cancelled_at")
    inlines = (SubscriptionChargeInline,)
    actions = ("charge_now", "pause", "resume", "cancel")
    audit_skip_actions = frozenset({"delete_selected", "charge_now"})  # a job trigger, audited as job.trigger

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subscription]:
        return super().get_queryset(request).select_related("user", "plan")

    @admin.action(description="Charge now (next period, through the job platform)", permissions=["change"])
    def charge_now(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        from core.errors import AppError, admin_message
        from core.scheduler import SchedulerService

        ids = sorted(queryset.values_list("pk", flat=True))
        try:
            run = SchedulerService.trigger_manual_update(
                "subscription_charge_now", {"subscription_ids": ids}, source="admin", user_id=request.user.pk
            )
        except AppError as exc:  # too many, broker down: said, not a 500 page
            admin_message(request, exc)
            return
        messages.success(
            request,
            ngettext(
                "Queued the charge of %(n)d subscription (job run %(run)s); active ones only, each period once.",
                "Queued the charges of %(n)d subscriptions (job run %(run)s); active ones only, each period once.",
                len(ids),
            )
            % {"n": len(ids), "run": run.pk},
        )

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Subscription], *, to: str, **extra: Any) -> None:
        from django.utils import timezone

        changed = queryset.exclude(status__in=[to, Subscription.Status.CANCELLED]).update(
            status=to, updated_at=timezone.now(), **extra
        )
        label = Subscription.Status(to).label.lower()
        messages.info(
            request,
            ngettext("%(n)d subscription is now %(s)s.", "%(n)d subscriptions are now %(s)s.", changed)
            % {"n": changed, "s": label},
        )

    @admin.action(description="Pause selected subscriptions", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        self._set_status(request, queryset, to=Subscription.Status.PAUSED)

    @admin.action(description="Resume selected subscriptions (active, failed days reset)", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        self._set_status(request, queryset, to=Subscription.Status.ACTIVE, failed_attempts=0)

    @admin.action(description="Cancel selected subscriptions", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        from django.utils import timezone

        self._set_status(request, queryset, to=Subscription.Status.CANCELLED, cancelled_at=timezone.now())


@admin.register(SubscriptionCharge)
class SubscriptionChargeAdmin(ReadOnlyAdmin[SubscriptionCharge]):
    list_display = (
        "subscription",
        "period_start",
        "amount",
        "currency",
        "status",
        "gateway_payment_id",
        "attempts",
        "order",
        "charged_at",
    )
    list_filter = ("status", "gateway", "currency", "period_start")
    search_fields = ("subscription__id", "subscription__user__username", "gateway_payment_id", "idempotency_key")
    date_hierarchy = "period_start"
    raw_id_fields = ("subscription", "order")

    def get_queryset(self, request: HttpRequest) -> QuerySet[SubscriptionCharge]:
        return super().get_queryset(request).select_related("subscription", "order")


@admin.register(SubscriptionReminder)
class SubscriptionReminderAdmin(ReadOnlyAdmin[SubscriptionReminder]):
    list_display = ("subscription", "period_start", "sent_at")
    list_filter = ("period_start",)
    search_fields = ("subscription__id", "subscription__user__username")
    raw_id_fields = ("subscription",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[SubscriptionReminder]:
        return super().get_queryset(request).select_related("subscription")


class CartItemInline(admin.TabularInline[CartItem, Cart]):
    model = CartItem
    extra = 0
    raw_id_fields = ("product",)
    fields = ("product", "quantity", "added_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[CartItem]:
        return super().get_queryset(request).select_related("product")


@admin.register(Cart)
class CartAdmin(AuditedModelAdmin[Cart]):
    list_display = ("id", "user", "item_count", "created_at", "updated_at")
    date_hierarchy = "updated_at"
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)
    inlines = (CartItemInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Cart]:
        from django.db.models import Count

        return super().get_queryset(request).select_related("user").annotate(item_count=Count("items"))

    @admin.display(description="items", ordering="item_count")
    def item_count(self, obj: Cart) -> int:
        return int(getattr(obj, "item_count", 0))


@admin.register(CartItem)
class CartItemAdmin(AuditedModelAdmin[CartItem]):
    list_display = ("cart", "product", "quantity", "added_at")
    search_fields = ("cart__user__username", "product__sku", "product__name")
    raw_id_fields = ("cart", "product")

    def get_queryset(self, request: HttpRequest) -> QuerySet[CartItem]:
        return super().get_queryset(request).select_related("cart__user", "product")
