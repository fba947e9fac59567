"""Carts: the signed-in user's cart (stock checked, not reserved) and the cleanup of abandoned ones.

Every change locks the user's cart row first and writes its `updated_at`, so the cleanup
(which locks the carts it deletes, skipping locked ones) never deletes a cart while an
item is being added to it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import Invalid, NotFound
from core.progress import Progress
from payments.models import Cart, CartItem, Product

MIN_DAYS_OLD = 1
MAX_DAYS_OLD = 3650
# Carts per transaction: 1,000 carts and their items (a few thousand rows) are two DELETEs of
# a few tens of milliseconds, so a chunk holds its cart locks only briefly.
CLEANUP_CHUNK_SIZE = 1000


class CartItemNotFound(NotFound):
    pass


def cart_get(*, user_id: int) -> Cart:
    """The user's cart (an empty one is created on first use), its items and products prefetched."""
    cart, _ = Cart.objects.get_or_create(user_id=user_id)
    return Cart.objects.prefetch_related("items__product").get(pk=cart.pk)


def _locked_cart(user_id: int) -> Cart:
    cart, _ = Cart.objects.get_or_create(user_id=user_id)
    return Cart.objects.select_for_update().get(pk=cart.pk)


def _product_with_stock(product_id: int, quantity: int, *, field: str = "quantity") -> Product:
    if quantity < 1:
        raise Invalid({field: ["Must be at least 1."]})
    product = Product.objects.filter(pk=product_id).first()
    if product is None:
        raise Invalid({"product_id": [f"No product with id {product_id}."]})
    if quantity > product.stock:
        raise Invalid({field: [f"Only {product.stock} of {product.sku} in stock; asked for {quantity}."]})
    return product


def cart_item_add(*, user_id: int, product_id: int, quantity: int) -> Cart:
    """Add `quantity` units of a product (to the line already there, if any); the total must be in stock."""
    with transaction.atomic():
        if quantity < 1:
            raise Invalid({"quantity": ["Must be at least 1."]})
        cart = _locked_cart(user_id)
        line = CartItem.objects.filter(cart=cart, product_id=product_id).first()
        total = quantity + (line.quantity if line else 0)
        _product_with_stock(product_id, total)
        now = timezone.now()
        if line is None:
            CartItem.objects.create(cart=cart, product_id=product_id, quantity=total, added_at=now)
        else:
            CartItem.objects.filter(pk=line.pk).update(quantity=total)
        Cart.objects.filter(pk=cart.pk).update(updated_at=now)
    return cart_get(user_id=user_id)


def cart_item_set_quantity(*, user_id: int, product_id: int, quantity: int) -> Cart:
    """Set a line's quantity (1 to the product's stock); the product must be in the cart."""
    with transaction.atomic():
        cart = _locked_cart(user_id)
        if not CartItem.objects.filter(cart=cart, product_id=product_id).exists():
            raise CartItemNotFound(f"Product {product_id} is not in your cart.")
        _product_with_stock(product_id, quantity)
        CartItem.objects.filter(cart=cart, product_id=product_id).update(quantity=quantity)
        Cart.objects.filter(pk=cart.pk).update(updated_at=timezone.now())
    return cart_get(user_id=user_id)


def cart_item_remove(*, user_id: int, product_id: int) -> Cart:
    with transaction.atomic():
        cart = _locked_cart(user_id)
        deleted, _ = CartItem.objects.filter(cart=cart, product_id=product_id).delete()
        if not deleted:
            raise CartItemNotFound(f"Product {product_id} is not in your cart.")
        Cart.objects.filter(pk=cart.pk).update(updated_at=timezone.now())
    return cart_get(user_id=user_id)


def cart_lines(cart: Cart) -> list[dict[str, Any]]:
    """The cart's lines with their current catalogue price; stock says whether the quantity is still there."""
    return [
        {
            "product_id": item.product_id,
            "sku": item.product.sku,
            "name": item.product.name,
            "unit_price": item.product.price,
            "currency": item.product.currency,
            "quantity": item.quantity,
            "line_total": item.product.price * item.quantity,
            "in_stock": item.quantity <= item.product.stock,
        }
        for item in cart.items.all()
    ]


def days_old_check(days_old: object) -> int:
    """`days_old` as an int from 1 to 3650, or Invalid naming the field (the job serializer says the same)."""
    if isinstance(days_old, bool) or not isinstance(days_old, int):
        raise Invalid({"days_old": [f"Must be a whole number of days, got {days_old!r}."]})
    if not MIN_DAYS_OLD <= days_old <= MAX_DAYS_OLD:
        raise Invalid({"days_old": [f"Must be between {MIN_DAYS_OLD} and {MAX_DAYS_OLD}, got {days_old}."]})
    return days_old


def carts_delete_expired(*, days_old: int | None = None, chunk_size: int = CLEANUP_CHUNK_SIZE) -> dict[str, Any]:
    """Delete the carts not updated for `days_old` days (CART_EXPIRY_DAYS), with their items, a chunk per transaction.

    Each chunk locks its carts with SKIP LOCKED and re-checks their age under the lock, so a
    cart a user is changing right now is left alone (core's `delete_in_chunks` re-selects by
    primary key only, which could delete a cart touched between the read and the delete).
    Two runs at once split the carts between them; each counts only what it deleted.
    """
    days = days_old_check(settings.CART_EXPIRY_DAYS if days_old is None else days_old)
    cutoff = timezone.now() - timedelta(days=days)
    carts = items = chunks = 0
    progress = Progress(total=Cart.objects.filter(updated_at__lt=cutoff).count())
    while True:
        with transaction.atomic():
            ids = list(
                Cart.objects.filter(updated_at__lt=cutoff)
                .order_by("updated_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:chunk_size]
            )
            if not ids:
                break
            items += CartItem.objects.filter(cart_id__in=ids).delete()[0]
            carts += Cart.objects.filter(pk__in=ids).delete()[0]
            chunks += 1
        progress.advance(len(ids))
    return {
        "days_old": days,
        "cutoff": cutoff.isoformat(),
        "carts_deleted": carts,
        "items_deleted": items,
        "chunks": chunks,
    }
