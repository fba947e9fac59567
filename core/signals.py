from __future__ import annotations

import logging
from typing import Any

from celery.signals import beat_init, before_task_publish, task_revoked

from core.task_base import SOURCE_HEADER, job_source


@before_task_publish.connect
def record_catalog_job_publish(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """In the process that sends a catalog job (beat, web, shell): the run exists as `queued` from now.

    It also gives /health/ the time beat last fired, measured in beat itself rather
    than by whichever worker later ran the heartbeat.
    """
    from core.catalog import JobCatalog
    from core.models import JobRun

    headers = headers or {}
    job = JobCatalog.for_task(sender or "")
    if job is None or not headers.get("id"):
        return
    from_beat = bool(headers.get("periodic_task_name"))
    if from_beat and job.key == "beat_heartbeat":
        from core.services.health import beat_fired_record

        beat_fired_record()
    source = job_source(explicit=headers.get(SOURCE_HEADER), periodic_task_name=headers.get("periodic_task_name"))
    JobRun.objects.get_or_create(
        task_id=headers["id"],
        defaults={"job_key": job.key, "task_name": job.task, "source": source, "params": {}},
    )


@task_revoked.connect
def close_revoked_jobrun(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    from core.services.jobruns import jobrun_mark_revoked

    if request is not None and getattr(request, "id", None):
        # Sent by the worker, so the task really will not run (or was terminated).
        jobrun_mark_revoked(task_id=request.id, running_too=True)


@beat_init.connect
def warn_about_a_scheduler_without_the_leader_lease(sender: Any = None, **_: Any) -> None:
    """`beat --scheduler django_celery_beat.schedulers:DatabaseScheduler` (as some guides write it) works
    for one beat, but two such beats would each send every slot: say so where the operator looks."""
    from core.beat import LeaderScheduler

    scheduler = getattr(sender, "scheduler", None)
    if scheduler is not None and not isinstance(scheduler, LeaderScheduler):
        logging.getLogger("core.beat").warning(
            "beat runs %s, not core.beat:LeaderScheduler (the default, CELERY_BEAT_SCHEDULER): fine for "
            "one beat, but a second beat would send every slot again. Drop --scheduler to get the leader lease.",
            type(scheduler).__name__,
        )
