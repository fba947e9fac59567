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
    ("raw_email", EMAIL, "{{ subject }}", "{{ body }}", "notifications.send_email: the given subject and body."),
    ("raw_sms", SMS, "", "{{ body }}", "notifications.send_sms: the given text."),
    ("raw_push", PUSH, "{{ title }}", "{{ body }}", "notifications.send_push: the given title and body."),
]
