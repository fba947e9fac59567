"""Importing this package registers every payments task (the job catalog imports `payments.tasks`)."""

from __future__ import annotations

from payments.tasks.escrow import (
    check_overdue_milestones,
    cleanup_old_pending_transactions,
    process_milestone_evidence,
    send_daily_transaction_summary,
    send_email_notification,
    send_transaction_notification,
    send_verification_notification,
)
from payments.tasks.notices import send_order_confirmation, send_order_shipped, send_payment_failed
from payments.tasks.orders import cancel_expired_order, check_payment_timeouts, notify_payment_failed
from payments.tasks.pricing import recompute_all_discounts, update_price_history
from payments.tasks.rates import update_exchange_rates
from payments.tasks.subscriptions import (
    charge_subscriptions_now,
    process_due_subscriptions,
    process_single_subscription,
    send_subscription_renewal_reminders,
)

__all__ = [
    "cancel_expired_order",
    "charge_subscriptions_now",
    "check_overdue_milestones",
    "check_payment_timeouts",
    "cleanup_old_pending_transactions",
    "notify_payment_failed",
    "process_due_subscriptions",
    "process_milestone_evidence",
    "process_single_subscription",
    "recompute_all_discounts",
    "send_daily_transaction_summary",
    "send_email_notification",
    "send_order_confirmation",
    "send_order_shipped",
    "send_payment_failed",
    "send_subscription_renewal_reminders",
    "send_transaction_notification",
    "send_verification_notification",
    "update_exchange_rates",
    "update_price_history",
]
