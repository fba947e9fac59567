"""Notification providers: which one each channel uses and where it is reached."""

from __future__ import annotations

import environ

env = environ.Env()

EMAIL_PROVIDER = env.str("EMAIL_PROVIDER", default="console")
SMS_PROVIDER = env.str("SMS_PROVIDER", default="console")
PUSH_PROVIDER = env.str("PUSH_PROVIDER", default="console")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="noreply@example.com")
