"""The signed-in user's cart: `GET|POST /api/v1/cart/`, `POST /api/v1/cart/items/`, `PATCH|DELETE .../items/{product_id}/`.

Stock is checked (a quantity above it is refused, naming the field), not reserved:
ordering reserves it.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import ErrorSerializer
from payments.models import Cart
from payments.serializers.carts import CartItemAddSerializer, CartItemQuantitySerializer, CartSerializer
from payments.services.carts import cart_get, cart_item_add, cart_item_remove, cart_item_set_quantity, cart_lines

_BAD_INPUT = OpenApiResponse(
    ErrorSerializer, description="A quantity below 1 or above the stock, or an unknown product"
)
_NOT_IN_CART = OpenApiResponse(ErrorSerializer, description="The product is not in the cart")


def _user_id(request: Request) -> int:
    # IsAuthenticated (the API's default permission) ran first: the user is a saved one.
    pk = request.user.pk
    assert isinstance(pk, int)
    return pk


def _cart_body(cart: Cart) -> dict[str, Any]:
    lines = cart_lines(cart)
    totals: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for line in lines:
        totals[line["currency"]] += line["line_total"]
    return dict(CartSerializer({"id": cart.pk, "updated_at": cart.updated_at, "items": lines, "totals": totals}).data)


class CartApi(APIView):
    @extend_schema(responses={200: CartSerializer}, summary="Your cart, with each line's current price and stock")
    def get(self, request: Request) -> Response:
        return Response(_cart_body(cart_get(user_id=_user_id(request))))

    @extend_schema(
        request=CartItemAddSerializer,
        responses={201: CartSerializer, 400: _BAD_INPUT},
        summary="Add units of a product to your cart (same as POST cart/items/)",
    )
    def post(self, request: Request) -> Response:
        return _add(request)


class CartItemsApi(APIView):
    @extend_schema(
        request=CartItemAddSerializer,
        responses={201: CartSerializer, 400: _BAD_INPUT},
        summary="Add units of a product to your cart",
    )
    def post(self, request: Request) -> Response:
        return _add(request)


def _add(request: Request) -> Response:
    data = CartItemAddSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    cart = cart_item_add(
        user_id=_user_id(request),
        product_id=data.validated_data["product_id"],
        quantity=data.validated_data["quantity"],
    )
    return Response(_cart_body(cart), status=status.HTTP_201_CREATED)


class CartItemApi(APIView):
    @extend_schema(
        request=CartItemQuantitySerializer,
        responses={200: CartSerializer, 400: _BAD_INPUT, 404: _NOT_IN_CART},
        summary="Change the quantity of a product in your cart",
    )
    def patch(self, request: Request, product_id: int) -> Response:
        data = CartItemQuantitySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cart = cart_item_set_quantity(
            user_id=_user_id(request), product_id=product_id, quantity=data.validated_data["quantity"]
        )
        return Response(_cart_body(cart))

    @extend_schema(
        request=None, responses={200: CartSerializer, 404: _NOT_IN_CART}, summary="Remove a product from your cart"
    )
    def delete(self, request: Request, product_id: int) -> Response:
        return Response(_cart_body(cart_item_remove(user_id=_user_id(request), product_id=product_id)))
