"""Notifications: which provider each channel uses, where it is reached, and how fast.

Every value comes from the environment; .env.example lists them under "# Notifications".
"""

from __future__ import annotations

import re

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = str(env.str(name, default=default)).strip().lower()
    if value not in allowed:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _positive_float(name: str, default: float) -> float:
    raw = env.str(name, default=str(default))
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be positive, got {value}")
    return value


def _rate(name: str, default: str) -> str:
    """`N/s`, `N/m` or `N/h`; empty or `0` turns the limit off."""
    value = str(env.str(name, default=default)).strip()
    if value in ("", "0") or re.fullmatch(r"[1-9]\d*/[smh]", value):
        return value
    raise ImproperlyConfigured(f"{name} must look like 10/s, 600/m or 1000/h (or be empty), got {value!r}")


# PROVIDERS
# ------------------------------------------------------------------------------
EMAIL_PROVIDER = _choice("EMAIL_PROVIDER", "console", ("smtp", "sendgrid", "ses", "console", "locmem"))
SMS_PROVIDER = _choice("SMS_PROVIDER", "console", ("twilio", "msg91", "console"))
PUSH_PROVIDER = _choice("PUSH_PROVIDER", "console", ("fcm", "console"))
# SENDGRID_FROM_EMAIL (seed 003's name) is read when DEFAULT_FROM_EMAIL is unset or empty.
DEFAULT_FROM_EMAIL = (
    env.str("DEFAULT_FROM_EMAIL", default="") or env.str("SENDGRID_FROM_EMAIL", default="") or "noreply@example.com"
)

# EMAIL: Django's backends; SendGrid and SES through django-anymail
# ------------------------------------------------------------------------------
EMAIL_BACKEND = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "sendgrid": "anymail.backends.sendgrid.EmailBackend",
    "ses": "anymail.backends.amazon_ses.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
    "locmem": "django.core.mail.backends.locmem.EmailBackend",
}[EMAIL_PROVIDER]
EMAIL_TIMEOUT = _positive_float("EMAIL_TIMEOUT_SECONDS", 10)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
SENDGRID_API_URL = env.str("SENDGRID_API_URL", default="https://api.sendgrid.com/v3/")
# An SES stored template with subject "{{subject}}" and text "{{body}}": when set, a batch of
# emails goes out in one SendBulkEmail call instead of one SendEmail call per message.
NOTIFICATIONS_SES_TEMPLATE = env.str("NOTIFICATIONS_SES_TEMPLATE", default="")
ANYMAIL = {
    "SENDGRID_API_KEY": env.str("SENDGRID_API_KEY", default=""),
    "SENDGRID_API_URL": SENDGRID_API_URL,
    "AMAZON_SES_CLIENT_PARAMS": {
        "region_name": env.str("AWS_SES_REGION", default="us-east-1"),
        "aws_access_key_id": env.str("AWS_SES_ACCESS_KEY_ID", default="") or None,
        "aws_secret_access_key": env.str("AWS_SES_SECRET_ACCESS_KEY", default="") or None,
        # One attempt: the deliver task's retries are the policy, and a send must stay within
        # the timeouts NOTIFICATIONS_STUCK_AFTER_SECONDS is measured against.
        "config": {
            "connect_timeout": EMAIL_TIMEOUT,
            "read_timeout": EMAIL_TIMEOUT,
            "retries": {"mode": "standard", "total_max_attempts": 1},
        },
    },
    # anymail's HTTP timeout: (connect, read) seconds
    "REQUESTS_TIMEOUT": (EMAIL_TIMEOUT, EMAIL_TIMEOUT),
}
if EMAIL_PROVIDER == "sendgrid":
    # anymail's SendGrid backend builds its URL as api_url + "mail/send".
    ANYMAIL["SENDGRID_API_URL"] = SENDGRID_API_URL.rstrip("/") + "/"

# SMS: Twilio, MSG91
# ------------------------------------------------------------------------------
SMS_TIMEOUT_SECONDS = _positive_float("SMS_TIMEOUT_SECONDS", 10)
TWILIO_BASE_URL = env.str("TWILIO_BASE_URL", default="https://api.twilio.com")
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
# TWILIO_PHONE_NUMBER (seed 003's name) is read when TWILIO_FROM_NUMBER is unset or empty.
TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="") or env.str("TWILIO_PHONE_NUMBER", default="")
TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
MSG91_BASE_URL = env.str("MSG91_BASE_URL", default="https://api.msg91.com")
MSG91_AUTH_KEY = env.str("MSG91_AUTH_KEY", default="")
MSG91_SENDER_ID = env.str("MSG91_SENDER_ID", default="")
MSG91_ROUTE = env.str("MSG91_ROUTE", default="4")
MSG91_DLT_TE_ID = env.str("MSG91_DLT_TE_ID", default="")

# PUSH: FCM HTTP v1
# ------------------------------------------------------------------------------
PUSH_TIMEOUT_SECONDS = _positive_float("PUSH_TIMEOUT_SECONDS", 10)
FCM_BASE_URL = env.str("FCM_BASE_URL", default="https://fcm.googleapis.com")
FCM_PROJECT_ID = env.str("FCM_PROJECT_ID", default="")
FCM_SERVICE_ACCOUNT_FILE = env.str("FCM_SERVICE_ACCOUNT_FILE", default="")
FCM_ACCESS_TOKEN = env.str("FCM_ACCESS_TOKEN", default="")
FCM_TOKEN_URL = env.str("FCM_TOKEN_URL", default="")

# DELIVERY: rate limits across all workers, recovery of stuck rows
# ------------------------------------------------------------------------------
NOTIFICATIONS_RATE_LIMITS = {
    "email": _rate("NOTIFICATIONS_EMAIL_RATE_LIMIT", "20/s"),
    "sms": _rate("NOTIFICATIONS_SMS_RATE_LIMIT", "10/s"),
    "push": _rate("NOTIFICATIONS_PUSH_RATE_LIMIT", "50/s"),
}
# Rows pending or sending for longer than this are re-enqueued by notification_outbox_recovery.
# It must exceed the slowest provider call (the timeouts above) so a live send is never doubled.
NOTIFICATIONS_STUCK_AFTER_SECONDS = env.int("NOTIFICATIONS_STUCK_AFTER_SECONDS", default=300)
if 3 * max(EMAIL_TIMEOUT, SMS_TIMEOUT_SECONDS, PUSH_TIMEOUT_SECONDS) > NOTIFICATIONS_STUCK_AFTER_SECONDS:
    raise ImproperlyConfigured("NOTIFICATIONS_STUCK_AFTER_SECONDS must be at least three provider timeouts")
# Retries: Celery's exponential backoff with full jitter from this base, 3 retries, 10 minutes at most.
NOTIFICATIONS_RETRY_BACKOFF_SECONDS = env.int("NOTIFICATIONS_RETRY_BACKOFF_SECONDS", default=30)

# BATCHES AND THE I/O POOL (docs/notifications.md, "Throughput")
# ------------------------------------------------------------------------------
# Rows per delivery message: a sweep's rows are grouped by channel into messages of at most
# this many, each claimed in one statement and recorded in one statement per outcome.
NOTIFICATIONS_BATCH_SIZE = env.int("NOTIFICATIONS_BATCH_SIZE", default=50)
# Provider calls in flight per worker process (threads, each with a pooled keep-alive connection).
NOTIFICATIONS_SEND_CONCURRENCY = env.int("NOTIFICATIONS_SEND_CONCURRENCY", default=32)
if NOTIFICATIONS_BATCH_SIZE < 1 or NOTIFICATIONS_SEND_CONCURRENCY < 1:
    raise ImproperlyConfigured("NOTIFICATIONS_BATCH_SIZE and NOTIFICATIONS_SEND_CONCURRENCY must be at least 1")
