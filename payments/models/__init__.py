from __future__ import annotations

from payments.models.catalog import Product
from payments.models.orders import Order, OrderItem
from payments.models.rates import ExchangeRate
from payments.models.transactions import PaymentTransaction

__all__ = ["ExchangeRate", "Order", "OrderItem", "PaymentTransaction", "Product"]
