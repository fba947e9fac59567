"""The SQLite smoke suite (tests/smoke, the second half of `make test`): `make run`'s local settings.

Everything comes from config.settings.local, as `make run` has it. What differs, and why:

- The module name ends in ".test", so no developer's .env is read (base.py) and the suite's
  guards (tests/conftest.py, tests/support/broker.py) let it flush its own Redis databases.
- Redis defaults to databases 12 (broker) and 13 (cache, leases, tokens) instead of 0 and 1,
  so the suite never flushes what a running `make run` uses.
- DATABASE_URL must be SQLite (`make run`'s default); pytest-django then runs on an
  in-memory SQLite database with local's options (lock timeout, BEGIN IMMEDIATE).
- /metrics has basic-auth credentials, as the .env `make run` generates gives it.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from ..base import CACHES, DATABASES, env
from ..local import *  # noqa: F403

if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    raise ImproperlyConfigured(
        "config.settings.smoke.test runs make run's SQLite configuration: set DATABASE_URL=sqlite:///... "
        f"(got the {DATABASES['default']['ENGINE']} engine; the PostgreSQL suite uses config.settings.test)."
    )

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/12")
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/13")
CACHES["default"]["LOCATION"] = REDIS_URL
METRICS_BASIC_AUTH = env.str("METRICS_BASIC_AUTH", default="prometheus:smoke-test-only")
