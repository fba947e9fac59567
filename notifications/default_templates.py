"""The default text of every template the domain apps use.

Installed by migration 0002 and by `notification_templates_install_defaults()` (which
restores missing ones, e.g. after `manage.py flush` or a test's table truncation); an
operator's edits in the admin are never overwritten.
"""

from __future__ import annotations

EMAIL, SMS, PUSH = "email", "sms", "push"

TEMPLATES = [
    # (key, channel, subject or push title, body, description)
    (
        "payment_failed",
        EMAIL,
        "Payment failed for order {{ order_number }}",
        "Hello {{ customer_name }},\n\n"
        "We could not take the payment of {{ total }} {{ currency }} for your order {{ order_number }}"
        "{% if cancel_reason %} and the order has been cancelled ({{ cancel_reason }}){% endif %}.\n\n"
        "{% for item in items %}- {{ item.quantity }} x {{ item.product }} at {{ item.unit_price }} {{ currency }}\n"
        "{% endfor %}\nYou can place the order again at any time.",
        "Context: order_number, customer_name, total, currency, cancel_reason, items.",
    ),
    (
        "payment_failed",
        SMS,
        "",
        "Payment of {{ total }} {{ currency }} for order {{ order_number }} failed"
        "{% if cancel_reason %}; the order was cancelled{% endif %}.",
        "Context: order_number, total, currency, cancel_reason.",
    ),
    (
        "order_confirmation",
        EMAIL,
        "Order {{ order_number }} confirmed",
        "Hello {{ customer_name }},\n\nThank you for your order {{ order_number }} of {{ created_at }}.\n\n"
        "{% for item in items %}- {{ item.quantity }} x {{ item.product }} at {{ item.unit_price }} {{ currency }}\n"
        "{% endfor %}\nTotal: {{ total }} {{ currency }}",
        "Context: order_number, customer_name, created_at, total, currency, items.",
    ),
    (
        "order_confirmation",
        SMS,
        "",
        "Order {{ order_number }} confirmed: {{ total }} {{ currency }}. Thank you!",
        "Context: order_number, total, currency.",
    ),
    (
        "order_shipped",
        EMAIL,
        "Order {{ order_number }} has shipped",
        "Hello {{ customer_name }},\n\nYour order {{ order_number }} is on its way."
        "{% if tracking_number %}\nTracking number: {{ tracking_number }}{% endif %}",
        "Context: order_number, customer_name, tracking_number.",
    ),
    (
        "order_shipped",
        SMS,
        "",
        "Order {{ order_number }} has shipped.{% if tracking_number %} Tracking: {{ tracking_number }}{% endif %}",
        "Context: order_number, tracking_number.",
    ),
    (
        "subscription_renewal_reminder",
        EMAIL,
        "Your {{ product_name }} subscription renews {% if renewal_date %}on {{ renewal_date }}{% else %}soon{% endif %}",
        "Hello {{ customer_name }},\n\nYour {{ product_name }} subscription renews "
        "{% if renewal_date %}on {{ renewal_date }}{% else %}soon{% endif %}"
        "{% if amount %} and {{ amount }} {{ currency }} will be charged{% endif %}.\n\n"
        "Nothing to do if you wish to continue.",
        "Context: customer_name, product_name, renewal_date, amount, currency.",
    ),
    (
        "subscription_renewal_reminder",
        SMS,
        "",
        "Reminder: your {{ product_name }} subscription renews "
        "{% if renewal_date %}on {{ renewal_date }}{% else %}soon{% endif %}"
        "{% if amount %} ({{ amount }} {{ currency }}){% endif %}.",
        "Context: product_name, renewal_date, amount, currency.",
    ),
    # Subscriptions (payments/services/subscriptions.py builds the context; installed by migration 0004).
    (
        "subscription_charged",
        EMAIL,
        "Your {{ product_name }} subscription: {{ amount }} {{ currency }} charged",
        "Hello {{ customer_name }},\n\nWe charged {{ amount }} {{ currency }} for your {{ product_name }} "
        "subscription ({{ quantity }} x {{ product_name }}, period from {{ period_start }}).\n"
        "Your delivery order is {{ order_number }}.\n\n"
        "{% if next_charge_date %}Your next delivery is charged on {{ next_charge_date }}.{% endif %}",
        "Context: customer_name, product_name, quantity, amount, currency, period_start, order_number, "
        "next_charge_date.",
    ),
    (
        "subscription_charged",
        SMS,
        "",
        "{{ amount }} {{ currency }} charged for your {{ product_name }} subscription; order {{ order_number }}.",
        "Context: product_name, amount, currency, order_number.",
    ),
    (
        "subscription_out_of_stock",
        EMAIL,
        "Your {{ product_name }} delivery is delayed",
        "Hello {{ customer_name }},\n\n{{ product_name }} is out of stock, so your subscription delivery "
        "for {{ period_start }} is delayed.{% if paid %} You have been charged already; we send it as soon as "
        "it is back.{% else %} Nothing was charged; we try again every day and charge you only when it ships."
        "{% endif %}",
        "Context: customer_name, product_name, quantity, period_start, paid (true when already charged).",
    ),
    (
        "subscription_out_of_stock",
        SMS,
        "",
        "Your {{ product_name }} subscription delivery for {{ period_start }} is delayed: out of stock."
        "{% if not paid %} Nothing was charged.{% endif %}",
        "Context: product_name, period_start, paid.",
    ),
    (
        "driver_trip_offer",
        PUSH,
        "New trip offer",
        "Trip to {{ station_name }}: {{ quantity }} units. Accept within {{ seconds_to_accept }} seconds.",
        "Context: station_name, quantity, seconds_to_accept (and stock_request_id in the data payload).",
    ),
    (
        "driver_assignment_expired",
        PUSH,
        "Driver Assignment Expired",
        "{{ driver_name }} did not accept the trip to {{ station_name }}. Please reassign.",
        "To EIC users. Context: driver_name, station_name.",
    ),
    (
        "driver_offer_rejected",
        PUSH,
        "Trip offer rejected",
        "{{ driver_name }} rejected the trip to {{ station_name }}. Please reassign.",
        "To EIC users. Context: driver_name, station_name.",
    ),
    # Escrow (payments/services/escrow_notices.py builds every context; installed by migration 0005).
    (
        "escrow_transaction_created",
        EMAIL,
        "New escrow transaction #{{ transaction_id }}: {{ title }}",
        "Hello {{ recipient_name }},\n\n{{ buyer_name }} opened escrow transaction #{{ transaction_id }} "
        '"{{ title }}" with you for {{ amount }} {{ currency }} in {{ milestone_count }} milestone(s).\n\n'
        "We will tell you when the buyer has funded it; do not start work before that.",
        "To the seller. Context: transaction_id, title, amount, currency, buyer_name, recipient_name, milestone_count.",
    ),
    (
        "escrow_transaction_funded",
        EMAIL,
        "Escrow #{{ transaction_id }} is funded",
        'Hello {{ recipient_name }},\n\n{{ amount }} {{ currency }} for "{{ title }}" is now held in escrow '
        "by {{ buyer_name }}.\n\nYou can start on the first milestone; money is released as the buyer approves them.",
        "To the seller. Context: transaction_id, title, amount, currency, buyer_name, recipient_name.",
    ),
    (
        "escrow_transaction_milestone_submitted",
        EMAIL,
        "Milestone submitted on escrow #{{ transaction_id }}: {{ milestone_title }}",
        "Hello {{ recipient_name }},\n\n{{ seller_name }} submitted milestone {{ milestone_position }} "
        '"{{ milestone_title }}" ({{ milestone_amount }} {{ currency }}) of "{{ title }}".\n\n'
        "Review the evidence, then approve or reject the milestone.",
        "To the buyer. Context: transaction_id, title, currency, seller_name, recipient_name, milestone_title, "
        "milestone_position, milestone_amount.",
    ),
    (
        "escrow_transaction_milestone_approved",
        EMAIL,
        "Milestone approved on escrow #{{ transaction_id }}: {{ milestone_title }}",
        "Hello {{ recipient_name }},\n\n{{ buyer_name }} approved milestone {{ milestone_position }} "
        '"{{ milestone_title }}" ({{ milestone_amount }} {{ currency }}) of "{{ title }}".\n\n'
        "The money is paid out when the buyer releases it.",
        "To the seller. Context: transaction_id, title, currency, buyer_name, recipient_name, milestone_title, "
        "milestone_position, milestone_amount.",
    ),
    (
        "escrow_transaction_milestone_rejected",
        EMAIL,
        "Milestone rejected on escrow #{{ transaction_id }}: {{ milestone_title }}",
        "Hello {{ recipient_name }},\n\n{{ buyer_name }} rejected milestone {{ milestone_position }} "
        '"{{ milestone_title }}" of "{{ title }}"{% if reason %}: {{ reason }}{% else %}.{% endif %}\n\n'
        "You can submit it again with new evidence.",
        "To the seller. Context: transaction_id, title, buyer_name, recipient_name, milestone_title, "
        "milestone_position, reason.",
    ),
    (
        "escrow_transaction_milestone_released",
        EMAIL,
        "{{ milestone_amount }} {{ currency }} released on escrow #{{ transaction_id }}",
        "Hello {{ recipient_name }},\n\n{{ buyer_name }} released {{ milestone_amount }} {{ currency }} for "
        'milestone {{ milestone_position }} "{{ milestone_title }}" of "{{ title }}".',
        "To the seller. Context: transaction_id, title, currency, buyer_name, recipient_name, milestone_title, "
        "milestone_position, milestone_amount.",
    ),
    (
        "escrow_transaction_completed",
        EMAIL,
        "Escrow #{{ transaction_id }} is completed",
        'Hello {{ recipient_name }},\n\nEvery milestone of "{{ title }}" has been released: '
        "{{ amount }} {{ currency }} in all, from {{ buyer_name }} to {{ seller_name }}.",
        "To both parties. Context: transaction_id, title, amount, currency, buyer_name, seller_name, recipient_name.",
    ),
    (
        "escrow_transaction_disputed",
        EMAIL,
        "Escrow #{{ transaction_id }} is disputed",
        'Hello {{ recipient_name }},\n\n{{ actor_name }} opened a dispute on "{{ title }}" '
        "({{ amount }} {{ currency }}){% if reason %}: {{ reason }}{% else %}.{% endif %}\n\n"
        "The money stays in escrow while our staff review it.",
        "To both parties. Context: transaction_id, title, amount, currency, actor_name, recipient_name, reason.",
    ),
    (
        "escrow_transaction_cancelled",
        EMAIL,
        "Escrow #{{ transaction_id }} was cancelled",
        'Hello {{ recipient_name }},\n\n{{ actor_name }} cancelled the escrow transaction "{{ title }}" '
        "({{ amount }} {{ currency }}) before it was funded. Nothing was charged.",
        "To both parties. Context: transaction_id, title, amount, currency, actor_name, recipient_name.",
    ),
    (
        "escrow_verification_pending",
        EMAIL,
        "We received your seller verification",
        "Hello {{ recipient_name }},\n\nWe received your seller verification"
        "{% if document_count %} ({{ document_count }} document(s)){% endif %}. Our staff will review it shortly.",
        "Context: recipient_name, document_count.",
    ),
    (
        "escrow_verification_verified",
        EMAIL,
        "Your seller account is verified",
        "Hello {{ recipient_name }},\n\nYour seller verification was accepted. Buyers can now see you as verified.",
        "Context: recipient_name.",
    ),
    (
        "escrow_verification_rejected",
        EMAIL,
        "Your seller verification was not accepted",
        "Hello {{ recipient_name }},\n\nWe could not verify your seller account"
        "{% if reason %}: {{ reason }}{% else %}.{% endif %}\n\nYou can submit new documents at any time.",
        "Context: recipient_name, reason.",
    ),
    (
        "escrow_daily_summary",
        EMAIL,
        "Your escrow summary for {{ date }}",
        "Hello {{ recipient_name }},\n\nYour active escrow transactions on {{ date }}:\n"
        "{% for line in lines %}- as {{ line.role }}: {{ line.count }} {{ line.status }}, "
        "{{ line.amount }} {{ line.currency }}\n{% endfor %}\n"
        "Waiting on you: {{ to_approve }} milestone(s) to approve, {{ to_release }} to release, "
        "{{ to_deliver }} to deliver.",
        "One a day per user with active transactions. Context: recipient_name, date, lines (role, status, count, "
        "amount, currency), to_approve, to_release, to_deliver.",
    ),
    (
        "escrow_funding_reminder",
        EMAIL,
        "Escrow #{{ transaction_id }} is waiting for your funding",
        'Hello {{ recipient_name }},\n\nYou opened "{{ title }}" with {{ seller_name }} on {{ created_on }} '
        "({{ days_waiting }} days ago) for {{ amount }} {{ currency }}, and it is not funded yet.\n\n"
        "Fund it so the seller can start, or cancel it.",
        "To the buyer, once a day. Context: transaction_id, title, amount, currency, seller_name, recipient_name, "
        "created_on, days_waiting.",
    ),
    (
        "escrow_milestone_overdue",
        EMAIL,
        "Milestone overdue on escrow #{{ transaction_id }}: {{ milestone_title }}",
        'Hello {{ recipient_name }},\n\nMilestone {{ milestone_position }} "{{ milestone_title }}" '
        '({{ milestone_amount }} {{ currency }}) of "{{ title }}" has been waiting for {{ days_pending }} days'
        "{% if due_date %} (due {{ due_date }}){% endif %}.\n\n"
        "Submit it with its evidence, or talk to {{ buyer_name }}.",
        "To the seller, once a week. Context: transaction_id, title, currency, buyer_name, recipient_name, "
        "milestone_title, milestone_position, milestone_amount, days_pending, due_date.",
    ),
    ("raw_email", EMAIL, "{{ subject }}", "{{ body }}", "notifications.send_email: the given subject and body."),
    ("raw_sms", SMS, "", "{{ body }}", "notifications.send_sms: the given text."),
    ("raw_push", PUSH, "{{ title }}", "{{ body }}", "notifications.send_push: the given title and body."),
]
