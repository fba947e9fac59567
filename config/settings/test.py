"""The test suite: PostgreSQL and Redis, both from the environment (see Makefile)."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import env

# Defaults that match `make test`, so a bare `pytest` (an IDE) uses the same isolated stores.
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/marketplace")}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/14")
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/15")
CACHES["default"]["LOCATION"] = REDIS_URL

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="test-only-key-not-secret-0123456789abcdef")
HEALTH_CACHE_SECONDS = 0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ALLOWED_HOSTS = ["*"]
# Static files are not collected for tests.
MIDDLEWARE = [m for m in MIDDLEWARE if "whitenoise" not in m]
