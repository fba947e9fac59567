"""The Celery application: `celery -A config worker|beat|flower|inspect ...`."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Every task gets the job-aware base class: a task named in the job catalog records
# its runs in core.JobRun and refuses to overlap itself; other tasks are untouched.
app = Celery("config", task_cls="core.task_base:JobAwareTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
