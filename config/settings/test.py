"""The test suite: PostgreSQL and Redis, both from the environment (see Makefile)."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="test-only-key-not-secret-0123456789abcdef")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ALLOWED_HOSTS = ["*"]
# Static files are not collected for tests.
MIDDLEWARE = [m for m in MIDDLEWARE if "whitenoise" not in m]
