"""The fault harness's settings: the test settings, with email through the configured provider (SendGrid).

config.settings.test pins email to Django's in-memory backend; the harness fakes SendGrid at its
HTTP boundary instead, so a lost or duplicated email shows at the provider like an SMS does.
"""

from __future__ import annotations

from config.settings.notifications import EMAIL_BACKEND as PROVIDER_EMAIL_BACKEND
from config.settings.test import *  # noqa: F403

EMAIL_BACKEND = PROVIDER_EMAIL_BACKEND
