"""Settings shared by every environment.

Every value comes from the environment through django-environ. Defaults here are
the secure ones; `local` relaxes them for development, `production` demands the
secrets. Integration blocks (Celery, providers) live in their own modules below.
"""

from __future__ import annotations

from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Generic admin classes (ModelAdmin[Order]) for the type checker, subscriptable at run time too.
django_stubs_ext.monkeypatch()

env = environ.Env()
# A developer's .env is read when present (never by the test suite, which sets its own);
# real environments set variables directly.
_settings_module = env.str("DJANGO_SETTINGS_MODULE", default="")
_read_dot_env = env.bool("DJANGO_READ_DOT_ENV", default=not _settings_module.endswith(".test"))
if (BASE_DIR / ".env").exists() and _read_dot_env:
    env.read_env(str(BASE_DIR / ".env"))


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer setting that fails fast on garbage instead of at first use."""
    raw = env.str(name, default=str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}")
    return value


# GENERAL
# ------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
LANGUAGE_CODE = "en-us"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# DATABASES
# ------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))

# APPS
# ------------------------------------------------------------------------------
DJANGO_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
]
THIRD_PARTY_APPS = [
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_beat",
    "django_celery_results",
    "anymail",
]
LOCAL_APPS = [
    "core",
    "notifications",
    "payments",
    "logistics",
    "maintenance",
]
INSTALLED_APPS = DJANGO_APPS + THIRD_PARTY_APPS + LOCAL_APPS

AUTH_USER_MODEL = "core.User"
LOGIN_URL = "admin:login"

# MIDDLEWARE
# ------------------------------------------------------------------------------
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the body: a request over the size limit gets 413 unread.
    "core.limits.RequestBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# STATIC
# ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# MEDIA (uploads: escrow milestone evidence), through Django's storage API
# ------------------------------------------------------------------------------
MEDIA_URL = "/media/"
# A relative MEDIA_ROOT is taken from the project directory (an absolute one as is).
MEDIA_ROOT = BASE_DIR / env.str("MEDIA_ROOT", default="media")

# SECURITY
# ------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# CACHE, LOCKS, ONE-TIME TOKENS
# ------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/1")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
    }
}


# THROTTLES (docs/security.md)
# ------------------------------------------------------------------------------
def throttle_rate(name: str, default: str) -> str:
    """A DRF rate ("60/min"), checked at start: DRF would only fail on the first throttled request."""
    import re

    value: str = env.str(name, default=default)
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name} must look like 60/min (per s, min, hour or day), got {value!r}")
    return value


# Throttle counters live in the default cache (Redis, shared by every web process). The
# anonymous endpoints (a product's price, the payment webhook) are throttled per client IP.
# The price throttles default to their classes' own rates (payments/apis/pricing.py: 60/min
# anonymous, 600/min signed in); the environment may set others.
API_THROTTLE_RATES = {"webhook": throttle_rate("API_THROTTLE_WEBHOOK_RATE", "600/min")}
for _scope, _name in (("pricing_anon", "API_THROTTLE_ANON_RATE"), ("pricing_user", "API_THROTTLE_USER_RATE")):
    if env.str(_name, default=""):
        API_THROTTLE_RATES[_scope] = throttle_rate(_name, "")
# The client IP a throttle counts by is REMOTE_ADDR, unless this many proxies in front of us
# append to X-Forwarded-For (DRF's default, None, would trust a client's own header).
API_NUM_PROXIES = env_int("API_NUM_PROXIES", 0, maximum=10)

# REST FRAMEWORK
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous requests a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # drf-spectacular's AutoSchema, documenting the framework's own errors on every operation.
    "DEFAULT_SCHEMA_CLASS": "core.openapi.ErrorDocumentingAutoSchema",
    "EXCEPTION_HANDLER": "core.apis.exception_handler",
    "DEFAULT_THROTTLE_RATES": API_THROTTLE_RATES,
    "NUM_PROXIES": API_NUM_PROXIES,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Marketplace jobs API",
    "DESCRIPTION": "Staff API to list, trigger and watch background jobs, and the logistics endpoints.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.openapi.nested_field_errors_hook",
    ],
    "ENUM_NAME_OVERRIDES": {
        "AssignmentModeEnum": "logistics.models.StockRequest.AssignmentMode",
        "EscrowTransactionStatusEnum": "payments.models.escrow.EscrowTransaction.Status",
    },
}

# LOGGING
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# DOMAIN
# ------------------------------------------------------------------------------
PAYMENT_TIMEOUT_DAYS = env_int("PAYMENT_TIMEOUT_DAYS", 3, minimum=1, maximum=365)
# Below the broker's visibility timeout (2 h), or the one-shot expiry message would be delivered twice.
DRIVER_ASSIGNMENT_TIMEOUT_SECONDS = env_int("DRIVER_ASSIGNMENT_TIMEOUT_SECONDS", 300, minimum=1, maximum=3600)
EXCHANGE_RATES_URL = env.str(
    "EXCHANGE_RATES_URL", default="https://www.ecb.europa.eu/stats/eurofxref/eurofxref-daily.xml"
)
EXCHANGE_RATES_TIMEOUT_SECONDS = env_int("EXCHANGE_RATES_TIMEOUT_SECONDS", 10, minimum=1)
# Subscriptions: the Razorpay gateway (tests point RAZORPAY_BASE_URL at a local server). Every
# call has this timeout; a slower answer is a transient error, retried with the same idempotency key.
RAZORPAY_BASE_URL = env.str("RAZORPAY_BASE_URL", default="https://api.razorpay.com")
RAZORPAY_KEY_ID = env.str("RAZORPAY_KEY_ID", default="")
RAZORPAY_KEY_SECRET = env.str("RAZORPAY_KEY_SECRET", default="")
RAZORPAY_WEBHOOK_SECRET = env.str("RAZORPAY_WEBHOOK_SECRET", default="")
RAZORPAY_TIMEOUT_SECONDS = env_int("RAZORPAY_TIMEOUT_SECONDS", 10, minimum=1, maximum=120)
# Days a period's charge may be declined before the subscription is past_due and the customer told.
SUBSCRIPTION_MAX_FAILED_DAYS = env_int("SUBSCRIPTION_MAX_FAILED_DAYS", 3, minimum=1, maximum=30)
# Carts not updated for this many days are deleted by expired_carts_cleanup (its `days_old` default).
CART_EXPIRY_DAYS = env_int("CART_EXPIRY_DAYS", 30, minimum=1, maximum=3650)
# Beat is reported down when its heartbeat job has not run for this long.
BEAT_HEARTBEAT_MAX_AGE_SECONDS = env_int("BEAT_HEARTBEAT_MAX_AGE_SECONDS", 120, minimum=1)
# /metrics (core.metrics) answers only with one of these: a bearer token, or user:password.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_BASIC_AUTH = env.str("METRICS_BASIC_AUTH", default="")
# Where the admin links a run to its task in Flower (empty: no link).
FLOWER_URL = env.str("FLOWER_URL", default="http://127.0.0.1:5555")
# The beat leader's lease (core.beat): a standby takes over within this plus one second of the
# leader dying. The leader renews it every second, so keep it at 2 or more.
BEAT_LEADER_TTL_SECONDS = env_int("BEAT_LEADER_TTL_SECONDS", 3, minimum=2, maximum=60)
# /health/ is computed at most this often (seconds); 0 computes it on every request.
HEALTH_CACHE_SECONDS = env_int("HEALTH_CACHE_SECONDS", 5)
JOBRUN_RETENTION_DAYS = env_int("JOBRUN_RETENTION_DAYS", 30, minimum=1)
AUDIT_LOG_RETENTION_DAYS = env_int("AUDIT_LOG_RETENTION_DAYS", 90, minimum=1)
# Published outbox intents are kept this long (to trace a task back to what caused it), then pruned.
OUTBOX_RETENTION_DAYS = env_int("OUTBOX_RETENTION_DAYS", 7, minimum=1)
# Intents due within this many seconds are published at once with their ETA; later ones wait
# in the table for the relay. Well below the broker's visibility timeout (2 h), so an ETA
# message is never redelivered while it still waits in a worker.
OUTBOX_ETA_HORIZON_SECONDS = env_int("OUTBOX_ETA_HORIZON_SECONDS", 900, minimum=0, maximum=3600)
# A published intent whose task has not ended this long after (and after its not-before time)
# was lost by the broker and is published again. Above the longest retry chain (3 retries
# of at most 10 minutes) and the 30-minute hard time limit.
OUTBOX_REDELIVER_AFTER_SECONDS = env_int("OUTBOX_REDELIVER_AFTER_SECONDS", 3600, minimum=60)
# An intent is published at most this many times; one that never completes after that is
# left in the admin's list for an operator (a task that kills its worker every time).
OUTBOX_MAX_PUBLISHES = env_int("OUTBOX_MAX_PUBLISHES", 5, minimum=1)
# Escrow: buyers are reminded of transactions unfunded this many days; sellers of milestones
# pending (not submitted) this many days; evidence files above this size are rejected.
ESCROW_FUNDING_REMINDER_DAYS = env_int("ESCROW_FUNDING_REMINDER_DAYS", 7, minimum=1, maximum=365)
ESCROW_OVERDUE_MILESTONE_DAYS = env_int("ESCROW_OVERDUE_MILESTONE_DAYS", 14, minimum=1, maximum=365)
ESCROW_EVIDENCE_MAX_BYTES = env_int("ESCROW_EVIDENCE_MAX_BYTES", 10 * 1024 * 1024, minimum=1)

# REQUEST BODY LIMITS (core.limits, docs/security.md)
# ------------------------------------------------------------------------------
# A body over these sizes is refused with 413 before it is read; DRF's JSON parser would
# otherwise read past Django's DATA_UPLOAD_MAX_MEMORY_SIZE. Uploads (multipart: milestone
# evidence, up to 5 files of ESCROW_EVIDENCE_MAX_BYTES) have their own, larger limit.
REQUEST_BODY_MAX_BYTES = env_int("REQUEST_BODY_MAX_BYTES", 1024 * 1024, minimum=1024)
REQUEST_UPLOAD_MAX_BYTES = env_int(
    "REQUEST_UPLOAD_MAX_BYTES", 5 * ESCROW_EVIDENCE_MAX_BYTES + REQUEST_BODY_MAX_BYTES, minimum=1024
)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_BODY_MAX_BYTES
# Django's own default, stated: an admin changelist page of 100 selected rows, or a form with inlines, stays under it.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
DATA_UPLOAD_MAX_NUMBER_FILES = 10


from config.settings.celery import *  # noqa: E402,F403
from config.settings.notifications import *  # noqa: E402,F403
