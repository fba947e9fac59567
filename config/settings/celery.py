"""Celery: broker, results, routing by task-name prefix, delivery guarantees."""

from __future__ import annotations

import environ
from kombu import Exchange, Queue

env = environ.Env()

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = 60 * 60 * 24 * 14  # celery.backend_cleanup keeps two weeks of results
CELERY_CACHE_BACKEND = "default"

# JSON only: a pickle payload on a shared broker is remote code execution.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = env.str("TIME_ZONE", default="UTC")
CELERY_ENABLE_UTC = True

# A task is acknowledged after it ran, and put back when its worker process dies,
# so every task must be idempotent (they are: see docs/architecture.md).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_WORKER_MAX_TASKS_PER_CHILD = 1000
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task keeps running through a lost broker connection and records its outcome. Every task is
# safe to run twice at once (claims, conditional updates, leases keyed by task id), so the copy
# the broker may deliver again finds its work done. Terminating it instead turns each send in
# flight into a duplicate: with five Redis restarts during delivery, 300 to 447 messages went
# out twice with termination (tests/e2e/test_notifications_faults.py; docs/notifications.md).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Redis redelivers an unacknowledged message after this long. It must exceed the
# longest countdown (a retry backs off 10 minutes at most, a driver offer expires
# after DRIVER_ASSIGNMENT_TIMEOUT_SECONDS) and the 30-minute hard limit, or a task
# still running or still waiting would be delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * 60 * 60}

# Events for Flower, and STARTED states in the results table.
CELERY_WORKER_SEND_TASK_EVENTS = True
# No task-sent events: each would be one more broker round trip per message, which would undo
# the outbox's pipelined publishing. Flower shows a task from the moment a worker receives it.
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_TRACK_STARTED = True

# Not CELERY_-prefixed: Celery would read that name as its own `task_queues`.
JOB_QUEUES = (
    "default",
    "payments",
    "logistics",
    "notifications",
    "notifications_retry",
    "maintenance",
    "subscriptions",
)
# Declared, so a bare `celery -A config worker` (as the seed guides start it) consumes every
# queue; `-Q` still narrows it.
CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in JOB_QUEUES)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_TASK_ROUTES = {
    "core.*": {"queue": "default"},
    # Subscription charging has its own queue (and workers), so it never holds up the payment
    # sweep; exact names first: Celery and the catalog both take the first matching route.
    "payments.process_due_subscriptions": {"queue": "subscriptions"},
    "payments.process_single_subscription": {"queue": "subscriptions"},
    "payments.send_subscription_renewal_reminders": {"queue": "subscriptions"},
    "payments.*": {"queue": "payments"},
    "logistics.*": {"queue": "logistics"},
    # Rows tried before (retries, rate-limit waits, recovery) have their own lane: a worker takes
    # from both queues in turn, so a backlog of old rows never delays fresh messages.
    "notifications.redeliver_batch": {"queue": "notifications_retry"},
    "notifications.*": {"queue": "notifications"},
    "maintenance.*": {"queue": "maintenance"},
    "celery.backend_cleanup": {"queue": "maintenance"},
}

# django-celery-beat's DatabaseScheduler with a leader lease and one send per slot: any number
# of beats may run (core/beat.py, docs/operations.md).
CELERY_BEAT_SCHEDULER = "core.beat:LeaderScheduler"
# Beat re-reads changed schedules from the database at most this often.
CELERY_BEAT_MAX_LOOP_INTERVAL = env.int("CELERY_BEAT_MAX_LOOP_INTERVAL", default=5)

FLOWER_BASIC_AUTH = env.str("FLOWER_BASIC_AUTH", default="")
