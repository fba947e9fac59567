"""Importing this package registers every payments task (the job catalog imports `payments.tasks`)."""

from __future__ import annotations

from payments.tasks.notices import send_order_confirmation, send_order_shipped, send_payment_failed
from payments.tasks.orders import cancel_expired_order, check_payment_timeouts, notify_payment_failed
from payments.tasks.rates import update_exchange_rates

__all__ = [
    "cancel_expired_order",
    "check_payment_timeouts",
    "notify_payment_failed",
    "send_order_confirmation",
    "send_order_shipped",
    "send_payment_failed",
    "update_exchange_rates",
]
