from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from payments.models import ExchangeRate, Order, OrderItem, PaymentTransaction, Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price", "currency", "stock", "updated_at")
    list_filter = ("currency",)
    search_fields = ("sku", "name")
    ordering = ("sku",)


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0
    raw_id_fields = ("product",)
    readonly_fields = ("product", "quantity", "unit_price")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderItem]:
        return super().get_queryset(request).select_related("product")


class PaymentTransactionInline(admin.TabularInline):
    model = PaymentTransaction
    extra = 0
    fields = ("provider", "provider_reference", "amount", "currency", "status", "needs_refund", "created_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
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


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only: these rows are written by the services, which keep stock and money consistent."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OrderItem)
class OrderItemAdmin(ReadOnlyAdmin):
    list_display = ("order", "product", "quantity", "unit_price")
    list_filter = ("order__status",)
    search_fields = ("order__id", "product__sku", "product__name")
    raw_id_fields = ("order", "product")

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderItem]:
        return super().get_queryset(request).select_related("order", "product")


@admin.register(PaymentTransaction)
class PaymentTransactionAdmin(ReadOnlyAdmin):
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
class ExchangeRateAdmin(admin.ModelAdmin):
    list_display = ("as_of", "base", "quote", "rate", "source", "fetched_at")
    list_filter = ("base", "quote", "source", "as_of")
    search_fields = ("base", "quote")
    date_hierarchy = "as_of"
