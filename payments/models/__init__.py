from __future__ import annotations

from payments.models.carts import Cart, CartItem
from payments.models.catalog import Product
from payments.models.escrow import (
    EscrowFunding,
    EscrowTransaction,
    Milestone,
    MilestoneEvidence,
    SellerVerification,
)
from payments.models.orders import Order, OrderItem
from payments.models.pricing import Batch, Discount, DiscountPolicy, PriceSnapshot
from payments.models.rates import ExchangeRate
from payments.models.subscriptions import Plan, Subscription, SubscriptionCharge, SubscriptionReminder
from payments.models.transactions import PaymentTransaction

__all__ = [
    "Batch",
    "Cart",
    "CartItem",
    "Discount",
    "DiscountPolicy",
    "EscrowFunding",
    "EscrowTransaction",
    "ExchangeRate",
    "Milestone",
    "MilestoneEvidence",
    "Order",
    "OrderItem",
    "PaymentTransaction",
    "Plan",
    "PriceSnapshot",
    "Product",
    "SellerVerification",
    "Subscription",
    "SubscriptionCharge",
    "SubscriptionReminder",
]
